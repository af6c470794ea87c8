"""A small synthetic action set whose classes differ only by motion, for the built-in demo.

A bright square moves over a fixed, graded background. Six classes come in three pairs that hold
the same frames in opposite orders (left/right, up/down, grow/shrink), so averaging frame
features over time can tell the pairs apart but never the members of a pair: only a model of
temporal order can. The background is graded rather than flat because a CNN's pooled embedding
is nearly blind to where an object sits on a flat background; occluding a graded one moves it.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

CLASSES = ("grow", "move_down", "move_left", "move_right", "move_up", "shrink")


def background(size: int) -> np.ndarray:
    """(H, W, 3) uint8: red grows to the right, green grows downwards, blue is a soft checker."""
    ramp = np.linspace(0.0, 1.0, size)
    red = np.tile(ramp, (size, 1))
    green = red.T
    blue = 0.5 + 0.25 * np.sign(np.sin(ramp[:, None] * 9.0) * np.sin(ramp[None, :] * 9.0))
    return (np.stack([red, green, blue], axis=-1) * 200 + 20).astype(np.uint8)


def clip_frames(action: str, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of one clip of ``action``, with a random path and square size."""
    base = background(size)
    side = int(rng.integers(size // 6, size // 4))
    lo, hi = side // 2, size - side // 2
    along = np.linspace(lo, hi, n_frames)  # positions along the motion
    across = float(rng.uniform(lo, hi))  # the fixed coordinate
    centre = rng.uniform(size / 3, 2 * size / 3, 2)  # where grow / shrink happen
    largest = float(rng.uniform(size / 5, size / 3))  # the half-side grow ends at
    if action in ("move_left", "move_up", "shrink"):
        along = along[::-1]
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for t in range(n_frames):
        if action in ("grow", "shrink"):
            growth = (along[t] - lo) / max(hi - lo, 1)  # 0..1
            half = int(2 + growth * largest)
            cx, cy = centre
        else:
            half = side // 2
            cx, cy = (
                (along[t], across) if action in ("move_left", "move_right") else (across, along[t])
            )
        frame = base.copy()
        y0, y1 = int(max(cy - half, 0)), int(min(cy + half, size))
        x0, x1 = int(max(cx - half, 0)), int(min(cx + half, size))
        frame[y0:y1, x0:x1] = (255, 255, 240)
        frames[t] = frame
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 12) -> None:
    """Encode (T, H, W, 3) uint8 frames as H.264 (nearly lossless) with PyAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10", "preset": "veryfast"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_motion_set(
    root: str | Path, clips_per_class: int = 20, n_frames: int = 12, size: int = 64, seed: int = 0
) -> Path:
    """Write ``root/<class>/<nnn>.mp4`` for every class; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for action in CLASSES:
        for k in range(clips_per_class):
            write_video(root / action / f"{k:03d}.mp4", clip_frames(action, n_frames, size, rng))
    return root
