"""Decoding with PyAV: which frames to keep (sampling), resizing them, and reading them.

A video is read in two passes over the file. The first demuxes packets without decoding (cheap)
to learn every frame's presentation time; the sampling then picks the times to keep; the second
decodes and keeps those frames, resized to the backbone's input as uint8 RGB, in chunks, so that
memory never grows with a video's length.

Decoders emit frames in presentation order, but some containers (AVI) label them with
decode-order timestamps. Each emitted frame therefore gets the smallest timestamp not yet given
out, from a small reorder window: for well-formed streams that is the frame's own timestamp.

Frames are turned upright as players show them: a display matrix (a phone's "rotate 90",
mirroring) is applied before resizing; so is a JPEG's EXIF orientation in frame folders.

A file that ends before the frames its container declares, or whose decoder stops before the
frames demuxed, fails the item (it is recorded under /failed): features of half a video under
the video's label would pass silently into training. A shortfall of a few frames or 1% is
tolerated: containers that count a frame or two more than they hold are common and harmless.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from actrec.extract.sources import Item, frame_files

REORDER_WINDOW = 16  # frames held back to put timestamps in order: H.264 reorders at most 16

# Metadata that is not UTF-8 must not make a video unreadable. PyAV before 19 decodes it strictly
# unless told to ignore errors; PyAV 19 dropped the option (av.open refuses it).
_OPEN_OPTIONS = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}


def _reformat_takes_threads() -> bool:
    # PyAV 17 and later default to a scaler thread per CPU in every worker; older ones take no
    # `threads` argument and scale in one thread
    try:
        VideoReformatter().reformat(av.VideoFrame(16, 16, "yuv420p"), 8, 8, "rgb24", threads=1)
    except TypeError:
        return False
    return True


_SCALER_THREADS = _reformat_takes_threads()


class DecodeError(Exception):
    """An item that cannot be read: recorded under /failed with this message, the run goes on."""


# -- which frames ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """Which of a video's frames to keep, chosen from their presentation times alone."""

    fps: float | None = None  # resample to this rate by timestamps
    every: int | None = None  # keep every N-th frame
    max_frames: int | None = None  # at most this many, spread uniformly (after fps/every)
    frame_rate: float = 25.0  # the rate assumed for frame folders, which carry no timestamps

    def __post_init__(self) -> None:
        assert not (self.fps and self.every), "fps and every exclude each other"

    def describe(self) -> str:
        """The cache's `sampling` attribute: `all`, `fps=5`, `every=2,max_frames=16`, ..."""
        parts = []
        if self.fps:
            parts.append(f"fps={_num(self.fps)}")
        if self.every and self.every > 1:
            parts.append(f"every={self.every}")
        if self.max_frames:
            parts.append(f"max_frames={self.max_frames}")
        if self.frame_rate != 25.0:
            parts.append(f"frame_rate={_num(self.frame_rate)}")
        return ",".join(parts) or "all"

    @classmethod
    def parse(cls, text: str) -> Sampling:
        """The inverse of :meth:`describe`."""
        if text == "all":
            return cls()
        values: dict = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            values[key] = int(value) if key in ("every", "max_frames") else float(value)
        return cls(**values)

    def select(self, times: np.ndarray) -> np.ndarray:
        """Indices (increasing) of the frames to keep, given sorted presentation times (s)."""
        n = len(times)
        index = np.arange(n)
        if n == 0:
            return index
        if self.fps:
            # the frame nearest to each tick of the new clock; a frame is never taken twice, so
            # a rate above the source's keeps every frame instead of repeating them
            # ticks of the new clock from the first frame to the last (no tick past the end)
            count = int(np.floor((times[-1] - times[0]) * self.fps + 1e-6)) + 1
            ticks = times[0] + np.arange(count) / self.fps
            right = np.clip(np.searchsorted(times, ticks), 1, n - 1) if n > 1 else np.zeros(1, int)
            left = np.maximum(right - 1, 0)
            # ties go to the earlier frame, with a margin for float rounding of the ticks
            nearer_left = ticks - times[left] <= times[right] - ticks + 1e-9
            index = np.unique(np.where(nearer_left, left, right))
        elif self.every and self.every > 1:
            index = index[:: self.every]
        if self.max_frames and len(index) > self.max_frames:
            spread = np.linspace(0, len(index) - 1, self.max_frames).round().astype(np.int64)
            index = index[spread]
        return index


# -- resizing -------------------------------------------------------------------------------------

_SWS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "POINT", "lanczos": "LANCZOS"}


@dataclass(frozen=True)
class Resize:
    """Shorter side to ``shorter`` (keeping the aspect ratio), then a centre crop of
    ``height x width``: torchvision's ``Resize(shorter)`` + ``CenterCrop``, done by swscale.

    With ``squash`` (H, W), the frame is resized to exactly that size whatever its aspect ratio,
    then centre-cropped: what timm does for its `squash` crop mode and for non-square inputs."""

    shorter: int
    height: int
    width: int
    interpolation: str = "bilinear"
    squash: tuple[int, int] | None = None

    def describe(self) -> str:
        """The cache's `resize` attribute, e.g. `shorter=256,crop=224x224,bilinear` or
        `squash=248x248,crop=224x224,bicubic`."""
        scale = (
            f"squash={self.squash[0]}x{self.squash[1]}"
            if self.squash
            else f"shorter={self.shorter}"
        )
        return f"{scale},crop={self.height}x{self.width},{self.interpolation}"

    @classmethod
    def parse(cls, text: str) -> Resize:
        scale, crop, interpolation = text.split(",")
        h, w = crop.removeprefix("crop=").split("x")
        if scale.startswith("squash="):
            sh, sw = (int(x) for x in scale.removeprefix("squash=").split("x"))
            return cls(min(sh, sw), int(h), int(w), interpolation, squash=(sh, sw))
        return cls(int(scale.removeprefix("shorter=")), int(h), int(w), interpolation)

    def scaled_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the shorter-side resize, rounded as torchvision rounds."""
        if self.squash:
            return self.squash[1], self.squash[0]
        if width <= height:
            return self.shorter, int(self.shorter * height / width)
        return int(self.shorter * width / height), self.shorter

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as (height, width, 3) uint8 RGB."""
        out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.into(frame, out)
        return out

    def into(
        self,
        frame: av.VideoFrame,
        out: np.ndarray,
        scaler: VideoReformatter | None = None,
        threads: int | None = None,
    ) -> None:
        """Write the frame, resized and cropped, into ``out`` ((height, width, 3) uint8, e.g. a
        slot of shared memory). ``scaler`` reuses one swscale context across frames (a frame's
        own builds a new one, with new threads, every time); ``threads``: swscale's threads."""
        w, h = self.scaled_size(frame.width, frame.height)
        if w < self.width or h < self.height:  # a crop larger than the resized frame: stretch up
            w, h = max(w, self.width), max(h, self.height)
        options = {"threads": threads} if threads is not None and _SCALER_THREADS else {}
        rgb = (scaler or VideoReformatter()).reformat(
            frame, width=w, height=h, format="rgb24", interpolation=_SWS[self.interpolation],
            **options,
        ).to_ndarray()  # fmt: skip
        top = int(round((h - self.height) / 2.0))
        left = int(round((w - self.width) / 2.0))
        out[...] = rgb[top : top + self.height, left : left + self.width]


# -- reading --------------------------------------------------------------------------------------


class Reader:
    """The kept frames of one item, resized: ``fps`` is known once open; :meth:`read_into`,
    :meth:`chunks` and :meth:`frames` read. ``threads``: the decoder's (0: FFmpeg's choice);
    ``scaler_threads``: swscale's (None: PyAV's default)."""

    def __init__(
        self,
        item: Item,
        sampling: Sampling,
        resize: Resize,
        threads: int = 0,
        scaler_threads: int | None = None,
    ) -> None:
        self.item, self.sampling, self.resize, self.threads = item, sampling, resize, threads
        self.scaler_threads = scaler_threads
        self._scaler = VideoReformatter()
        if item.kind == "frames":
            self._images = self._open_folder()
        else:
            self._probe_video()

    # frame folders --------------------------------------------------------------------------
    def _open_folder(self) -> list[Path]:
        if not self.item.path.is_dir():
            raise DecodeError("frame folder not found")
        images = frame_files(self.item.path)
        if not images:
            raise DecodeError("no frames: the folder holds no .jpg or .png images")
        self.fps = self.sampling.frame_rate
        times = np.arange(len(images)) / self.fps
        self._keep = self.sampling.select(times)
        self._times = times
        return images

    def _folder_frames(self) -> Iterator[tuple[av.VideoFrame, float]]:
        from PIL import Image, ImageOps, UnidentifiedImageError

        for i in self._keep:
            try:
                with Image.open(self._images[i]) as im:
                    rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            except (OSError, UnidentifiedImageError) as e:
                raise DecodeError(f"{self._images[i].name}: not a readable image ({e})") from None
            yield av.VideoFrame.from_ndarray(rgb, format="rgb24"), self._times[i]

    # videos ---------------------------------------------------------------------------------
    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        path = self.item.path
        if not path.exists():
            raise DecodeError("no such file")
        if path.is_file() and path.stat().st_size == 0:
            raise DecodeError("empty file")
        try:
            container = av.open(str(path), **_OPEN_OPTIONS)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise DecodeError(f"not a readable video ({_reason(e)})") from None
        if not container.streams.video:
            container.close()
            raise DecodeError("no video stream")
        return container, container.streams.video[0]

    def _probe_video(self) -> None:
        container, stream = self._open()
        try:
            self.time_base = stream.time_base or Fraction(1, 1000)
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else float("nan")
            labels, last, first_key = [], None, None
            packets = 0  # every packet but the flush packet (AVI counts empty "drop" packets)
            others_end = 0.0  # where the other streams (audio) end, in seconds
            step = _step(self.fps, self.time_base)
            # all streams: a truncated file ends every stream early, a whole one with audio
            # that runs on past the video does not (demuxing audio costs next to nothing)
            for packet in container.demux():
                if packet.stream.index != stream.index:
                    if packet.pts is not None and packet.time_base:
                        end = (packet.pts + (packet.duration or 0)) * float(packet.time_base)
                        others_end = max(others_end, end)
                    continue
                if packet.size or packet.pts is not None or packet.dts is not None:
                    packets += 1
                if packet.size == 0:  # the flush packet at the end
                    continue
                label = packet.pts if packet.pts is not None else packet.dts
                if label is None:
                    label = 0 if last is None else last + step
                if first_key is None and packet.is_keyframe:
                    first_key = len(labels)
                labels.append(label)
                last = label
            # packets before the first key frame cannot be decoded (a cut or damaged start):
            # choosing among the frames that will really come keeps --max-frames exact there
            labels = labels[first_key or 0 :]
            tb = float(self.time_base)
            declared = _Declared(
                frames=int(stream.frames or 0),  # 0 where the container does not say
                stream_end=((stream.start_time or 0) + stream.duration) * tb
                if stream.duration
                else None,
                container_end=((container.start_time or 0) + container.duration) / 1e6
                if container.duration
                else None,
            )
        except av.FFmpegError as e:
            raise DecodeError(f"unreadable ({_reason(e)})") from None
        finally:
            container.close()
        if not labels:
            raise DecodeError("no frames: the video stream is empty")
        video = (min(labels) * tb, (max(labels) + step) * tb)  # (first, end) in seconds
        declared.check(packets, video, max(video[1], others_end), self.fps)
        labels = np.unique(np.asarray(labels, dtype=np.int64))  # sorted: presentation order
        times = labels * float(self.time_base)
        self._wanted = set(labels[self.sampling.select(times)].tolist())
        if not math.isfinite(self.fps) and len(times) > 1:
            self.fps = (len(times) - 1) / (times[-1] - times[0])

    def _video_frames(self) -> Iterator[tuple[av.VideoFrame, float]]:
        container, stream = self._open()
        stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        step = _step(self.fps, self.time_base)
        window: list[av.VideoFrame] = []
        labels: list[int] = []  # a heap of the labels not yet given out
        last_label = None
        given = None
        kept = [0]  # wanted frames given out

        def emit() -> Iterator[tuple[av.VideoFrame, float]]:
            nonlocal given
            frame, label = window.pop(0), heapq.heappop(labels)
            if given is not None and label <= given:
                return  # a duplicate timestamp: the container holds this frame once
            given = label
            if label in self._wanted:
                kept[0] += 1
                yield upright(frame), label * float(self.time_base)

        try:
            for frame in container.decode(stream):
                label = frame.pts
                if label is None:
                    label = 0 if last_label is None else last_label + step
                last_label = label
                heapq.heappush(labels, label)
                window.append(frame)
                if len(window) > REORDER_WINDOW:
                    yield from emit()
            while window:
                yield from emit()
            if _short(kept[0], len(self._wanted)):
                raise DecodeError(
                    f"decoding stopped early: {kept[0]} of {len(self._wanted)} frames decoded "
                    "(truncated or damaged)"
                )
        except av.FFmpegError as e:
            raise DecodeError(f"decoding failed ({_reason(e)})") from None
        finally:
            container.close()

    def _upright_frames(self) -> Iterator[tuple[av.VideoFrame, float]]:
        return self._folder_frames() if self.item.kind == "frames" else self._video_frames()

    def read_into(self, buffers: Iterator[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Write the kept frames, resized, into buffers ((n, H, W, 3) uint8 each) taken from
        ``buffers`` one at a time, only when a frame is there to go in; yield (frames written,
        (frames,) float64 seconds) when a buffer is full and after the last frame. A buffer is
        the caller's again once its count is yielded."""
        out, times, total = None, [], 0
        for frame, t in self._upright_frames():
            if out is None:
                out = next(buffers)
            self.resize.into(frame, out[len(times)], self._scaler, self.scaler_threads)
            times.append(t)
            if len(times) == len(out):
                total += len(times)
                yield len(times), np.asarray(times, dtype=np.float64)
                out, times = None, []
        if times:
            total += len(times)
            yield len(times), np.asarray(times, dtype=np.float64)
        if total == 0:
            raise DecodeError("no frames could be decoded")

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Kept frames in chunks of new arrays: ((n, H, W, 3) uint8, (n,) float64 seconds)."""
        shape = (size, self.resize.height, self.resize.width, 3)
        held: list[np.ndarray] = []

        def buffers() -> Iterator[np.ndarray]:
            while True:
                held.append(np.empty(shape, dtype=np.uint8))
                yield held[-1]

        for n, times in self.read_into(buffers()):
            yield held.pop()[:n], times

    def frames(self) -> Iterator[tuple[np.ndarray, float]]:
        """(frame (H, W, 3) uint8, time in seconds) for each kept frame, in time order."""
        for frames, times in self.chunks(1):
            yield frames[0], float(times[0])


@dataclass(frozen=True)
class _Declared:
    """How long a video's container says it is, to tell a whole file from a truncated one."""

    frames: int  # frames in the header (AVI, MP4); 0 where it does not say
    stream_end: float | None  # seconds, from the video stream's own duration
    container_end: float | None  # seconds, from the container's (all streams)

    def check(self, packets: int, held: tuple[float, float], any_end: float, fps: float) -> None:
        """Raise DecodeError when the file holds clearly less than declared: ``packets``
        demuxed, spanning ``held`` (first, end) seconds; ``any_end`` where the last of all
        streams ends."""
        if self.frames:
            if _short(packets, self.frames):
                raise DecodeError(
                    f"the file ends early: {packets} of the {self.frames} frames its header "
                    "declares (truncated or damaged)"
                )
            return
        said, end = self.stream_end, held[1]
        if said is None:  # the container's duration covers every stream: so must the end
            said, end = self.container_end, any_end
        if said is None:
            return
        span = max(said - held[0], 0.0)
        frame = 1 / fps if math.isfinite(fps) and fps > 0 else 0.04
        # a few frames of slack: containers round their durations, some count a last frame's
        # length twice; a whole container's duration is rougher still
        slack = max(3 * frame, 0.01 * span)
        if self.stream_end is None:
            slack = max(5 * frame, 0.02 * span)
        if said - end > slack:
            raise DecodeError(
                f"the file ends early: {held[1] - held[0]:.2f} s of the {span:.2f} s its header "
                "declares (truncated or damaged)"
            )


def _short(have: int, expected: int) -> bool:
    """Whether ``have`` of ``expected`` frames is short by more than two frames and 1%."""
    return expected - have > max(2, expected // 100)


def upright(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame as players show it: its display matrix (rotation in multiples of 90 degrees,
    mirroring) applied; the frame itself where it has none, or the identity."""
    for entry in frame.side_data:
        # PyAV 19 iterates the kinds of side data a frame holds, earlier versions the data itself
        data = entry if hasattr(entry, "type") else frame.side_data[entry]
        if data.type.name == "DISPLAYMATRIX":
            turns, mirrored = orientation(struct.unpack("9i", bytes(data)))
            break
    else:
        return frame
    if not turns and not mirrored:
        return frame
    rgb = np.rot90(frame.to_ndarray(format="rgb24"), turns)  # (H, W, 3), counter-clockwise
    if mirrored:
        rgb = rgb[:, ::-1]
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def orientation(matrix: tuple[int, ...]) -> tuple[int, bool]:
    """(quarter turns counter-clockwise, then mirrored left-right) that show a frame upright,
    from FFmpeg's 3x3 display matrix (row-major, 16.16 fixed point). Angles that are not a
    multiple of 90 degrees are rounded to the nearest one."""
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    mirrored = a * d - b * c < 0
    if mirrored:  # the matrix is rotation x mirror: undo the mirror to read the rotation
        a, c = -a, -c
    if abs(a) >= abs(b):
        return (0 if a > 0 else 2), mirrored
    return (1 if b < 0 else 3), mirrored


def _step(fps: float, time_base: Fraction) -> int:
    """One frame's duration in time-base units, for frames that carry no timestamp."""
    if not math.isfinite(fps) or fps <= 0:
        return 1
    return max(1, round(1 / (fps * float(time_base))))


def _reason(error: BaseException) -> str:
    """FFmpeg's message without the file name PyAV appends (the item id says which file)."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return str(error.strerror)
    return str(error).split(": '")[0] or type(error).__name__


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
