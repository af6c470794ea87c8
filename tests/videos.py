"""Small videos for tests, made with PyAV, whose frames carry their own index.

Frame i is two flat bands: the top half has grey level 16 * (i // 16) + 8 and the bottom half
16 * (i % 16) + 8, so the index survives lossy coding (errors under 8 levels), resizing and
cropping, and :func:`index_of` reads it back from decoded pixels (up to 255 frames).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn


def pattern(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame ``i`` as (height, width, 3) uint8 RGB."""
    assert 0 <= i < 256, f"the pattern holds indices 0..255, got {i}"
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[: height // 2] = 16 * (i // 16) + 8
    frame[height // 2 :] = 16 * (i % 16) + 8
    return frame


def index_of(frame: np.ndarray) -> int:
    """The index a frame (H, W, 3) carries, from the middle of each band."""
    h = frame.shape[0]
    top = float(frame[h // 8 : h // 2 - h // 8].mean())
    bottom = float(frame[h // 2 + h // 8 : h - h // 8].mean())
    return 16 * int(top // 16) + int(bottom // 16)


def bands(top: float, bottom: float) -> int:
    """The index from the two band means (0-255 scale), e.g. from a band-mean backbone."""
    return 16 * int(top // 16) + int(bottom // 16)


def make_video(
    path: str | Path,
    n_frames: int = 12,
    *,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    codec: str = "libx264",
    times: list[float] | None = None,
    gop: int = 12,
    bframes: bool = True,
) -> Path:
    """Encode frames 0..n_frames-1; ``times`` (seconds) gives a variable frame rate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        odd = width % 2 or height % 2
        stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        if codec == "libx264":
            stream.options = {"g": str(gop), "bf": "2" if bframes else "0", "crf": "10"}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            if times is not None:
                frame.pts = round(times[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def drop_first_packets(src: str | Path, dst: str | Path, n: int = 1) -> Path:
    """A copy of ``src`` without its first ``n`` packets: a video missing its first key frame."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for k, packet in enumerate(inp.demux(s_in)):
            if packet.size == 0 or k < n:
                continue
            packet.stream = s_out
            out.mux(packet)
    return Path(dst)


def truncate(src: str | Path, dst: str | Path, keep: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def make_frame_folder(folder: str | Path, n_frames: int, ext: str = "png", **size) -> Path:
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_frames):
        Image.fromarray(pattern(i, **size)).save(folder / f"{i + 1:06d}.{ext}")
    return folder


def decode_all(path: str | Path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame PyAV decodes, as RGB arrays, with its time: the reference for the tests."""
    frames, times = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.time))
    return frames, times


class Bands(nn.Module):
    """A backbone of no weights that reads these frames: (N, 3, H, W) in 0..1 -> (N, 2), the mean
    of the top and of the bottom band (margins left out) times ``scale`` (0..255 by default), so
    each frame's features give back its index, whatever the batch."""

    def __init__(self, scale: float = 255.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        top = x[:, :, h // 8 : h // 2 - h // 8].mean(dim=(1, 2, 3))
        bottom = x[:, :, h // 2 + h // 8 : h - h // 8].mean(dim=(1, 2, 3))
        return torch.stack([top, bottom], dim=1) * self.scale
