"""The streaming engine: decoding workers -> fixed-size batches -> backbone -> finished videos.

Worker processes decode and resize and send uint8 chunks through a bounded queue, so memory is
bounded whatever a video's length. The main process copies frames into a fixed batch buffer
(frames of several videos share a batch), normalises on the device, runs the backbone, and hands
back, after every batch, the videos whose last frame was in it, so that the caller can store
them at once.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from actrec.common.cache import Video
from actrec.common.device import autocast
from actrec.common.errors import ActrecError
from actrec.common.progress import progress as progress_bar
from actrec.extract.backbones import Backbone
from actrec.extract.decode import DecodeError, Reader, Resize, Sampling
from actrec.extract.sources import Item

CHUNK = 16  # frames per message from a worker
POLL_S = 1.0  # how often the main process checks that its workers are alive


@dataclass
class _Pending:
    """A video whose frames are in flight."""

    fps: float
    sent: int = 0  # frames received from the worker
    done: bool = False  # the worker has sent its last frame
    times: list[np.ndarray] = field(default_factory=list)
    feats: list[np.ndarray] = field(default_factory=list)

    @property
    def computed(self) -> int:
        return sum(len(f) for f in self.feats)


@dataclass
class Batch:
    """What one forward pass finished: videos (in completion order) and failures (id -> why)."""

    videos: list[Video]
    failed: dict[str, str]
    frames: int  # frames in this forward pass


def stream_features(
    items: Sequence[Item],
    backbone: Backbone,
    sampling: Sampling,
    *,
    device: torch.device,
    precision: str,
    batch_size: int = 64,
    workers: int = 1,
    dtype: str = "float16",
    progress: bool = False,
) -> Iterator[Batch]:
    """Extract the items' features; yields after every forward pass (and once at the end)."""
    device = torch.device(device)
    h, w = backbone.input_size
    try:
        buffer = torch.empty((batch_size, h, w, 3), dtype=torch.uint8)
        if device.type == "cuda":
            buffer = buffer.pin_memory()
    except (RuntimeError, MemoryError):
        gib = batch_size * h * w * 3 / 2**30
        raise ActrecError(
            f"--batch-size {batch_size}: a batch of {h}x{w} frames takes {gib:.1f} GiB, more "
            "than this machine can give; pass a smaller --batch-size"
        ) from None
    owner = np.full(batch_size, -1, dtype=np.int64)  # the item of each row
    fill = 0
    mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1)
    scale, shift = 1.0 / (255.0 * std), mean / std  # (x / 255 - mean) / std in one multiply-add
    out_dtype = np.dtype(dtype)
    pending: dict[int, _Pending] = {}
    finished: list[Video] = []
    failed: dict[str, str] = {}
    bar = progress_bar(len(items), "extract", "video", progress, dynamic_ncols=True)
    started, frames_done = time.perf_counter(), 0

    def complete(i: int) -> None:
        p = pending.pop(i)
        it = items[i]
        features = np.concatenate(p.feats)  # (T, D)
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        if bad:  # never store NaN or inf: every later stage would train or predict on garbage
            hint = " (or beyond float16's range: try --dtype float32)" if dtype == "float16" else ""
            failed[it.id] = (
                f"non-finite features in {bad} of {len(features)} frames: the backbone returned "
                f"NaN or inf{hint}"
            )
            bar.update(1)
            return
        finished.append(
            Video(
                id=it.id,
                features=features,
                timestamps=np.concatenate(p.times),
                label=it.label,
                split=it.split,
                group=it.group,
                fps=p.fps,
            )
        )
        bar.update(1)

    def forward() -> Batch:
        nonlocal fill, frames_done
        n = fill
        x = buffer[:n].to(device, non_blocking=True)  # (n, H, W, 3) uint8
        x = x.permute(0, 3, 1, 2).float()  # (n, 3, H, W), channels_last strides
        x = x.mul_(scale).sub_(shift)
        try:
            with torch.inference_mode(), autocast(device, precision):
                out = backbone.module(x)
        except torch.OutOfMemoryError:
            # what is finished is kept (the caller stored it batch by batch): say how to go on
            raise ActrecError(
                f"out of memory on {device} at --batch-size {batch_size}: rerun with a smaller "
                "--batch-size (what is finished is kept)"
            ) from None
        if isinstance(out, (tuple, list)):
            out = out[0]
        with np.errstate(over="ignore"):  # beyond float16's range: inf, refused in complete()
            feats = out.float().cpu().numpy().astype(out_dtype)  # (n, D)
        rows = owner[:n]
        cuts = np.flatnonzero(np.diff(rows)) + 1
        for run in np.split(np.arange(n), cuts):
            i = int(rows[run[0]])
            if i in pending:  # else it failed after sending frames: dropped
                pending[i].feats.append(feats[run])
        for i in [i for i, p in pending.items() if p.done and p.computed == p.sent]:
            complete(i)
        fill = 0
        frames_done += n
        bar.set_postfix_str(f"{frames_done / (time.perf_counter() - started):.0f} frames/s")
        return take(n)

    def take(n: int) -> Batch:
        batch = Batch(list(finished), dict(failed), n)
        finished.clear()
        failed.clear()
        return batch

    messages = _worker_messages if workers > 0 else _inline_messages
    try:
        for msg in messages(items, sampling, backbone.resize, workers):
            kind, i = msg[0], msg[1]
            if kind == "start":
                pending[i] = _Pending(fps=msg[2])
            elif kind == "frames":
                frames, times = msg[2], msg[3]  # (k, H, W, 3) uint8, (k,)
                p = pending[i]
                p.times.append(times)
                p.sent += len(frames)
                at = 0
                while at < len(frames):
                    k = min(len(frames) - at, batch_size - fill)
                    buffer[fill : fill + k] = torch.from_numpy(frames[at : at + k])
                    owner[fill : fill + k] = i
                    fill += k
                    at += k
                    if fill == batch_size:
                        yield forward()
            elif kind == "done":
                p = pending[i]
                p.done = True
                if p.computed == p.sent:
                    complete(i)
            elif kind == "failed":
                pending.pop(i, None)
                failed[items[i].id] = msg[2]
                bar.update(1)
        if fill:
            yield forward()
        if finished or failed:
            yield take(0)
    finally:
        bar.close()


# -- where the frames come from -------------------------------------------------------------------


def _decode_item(item: Item, i: int, sampling: Sampling, resize: Resize, threads: int, put) -> None:
    """Send one item's messages: start, frames..., done; or failed, at any point."""
    try:
        reader = Reader(item, sampling, resize, threads=threads)
        put(("start", i, reader.fps))
        for frames, times in reader.chunks(CHUNK):
            put(("frames", i, frames, times))
        put(("done", i))
    except DecodeError as e:
        put(("failed", i, str(e)))
    except Exception as e:  # noqa: BLE001 - one bad file must never stop the run
        put(("failed", i, f"{type(e).__name__}: {e}"))


def _inline_messages(items, sampling, resize, workers) -> Iterator[tuple]:
    out: list[tuple] = []
    for i, item in enumerate(items):
        _decode_item(item, i, sampling, resize, 0, out.append)
        yield from out
        out.clear()


def _worker(wid: int, tasks, results, sampling: Sampling, resize: Resize, threads: int) -> None:
    parent = os.getppid()

    def put(msg: tuple) -> None:
        # a full queue for a long time may mean the main process was killed (kill -9 leaves
        # no one to stop us): then exit rather than linger as an orphan
        while True:
            try:
                results.put(msg, timeout=POLL_S)
                return
            except queue.Full:
                if os.getppid() != parent:
                    os._exit(0)

    while True:
        task = tasks.get()
        if task is None:
            return
        i, item = task
        put(("take", i, wid))
        _decode_item(item, i, sampling, resize, threads, put)


def _worker_messages(items, sampling, resize, workers) -> Iterator[tuple]:
    """Messages from ``workers`` decoding processes; a crashed worker fails only its item."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    tasks = ctx.Queue()
    results = ctx.Queue(maxsize=2 * workers + 2)  # bounded: decoding waits for the backbone
    for task in enumerate(items):
        tasks.put(task)
    threads = max(1, (os.cpu_count() or 1) // workers)
    args = (tasks, results, sampling, resize, threads)

    def spawn(wid: int):
        proc = ctx.Process(target=_worker, args=(wid, *args), daemon=True)
        # Garbage this process still holds (decoded frames in reference cycles, e.g. from an
        # inline run) must not be collected in a forked child: freeing an FFmpeg scaler there
        # joins its slice threads, which fork did not copy, and the worker hangs. So collect it
        # here, and freeze the rest out of the child's collections.
        gc.collect()
        gc.freeze()
        try:
            proc.start()
        finally:
            gc.unfreeze()
        return proc

    procs = {wid: spawn(wid) for wid in range(min(workers, len(items)))}
    for _ in procs:
        tasks.put(None)
    busy: dict[int, int] = {}  # worker -> item
    unresolved = len(items)
    try:
        while unresolved:
            try:
                msg = results.get(timeout=POLL_S)
            except queue.Empty:
                for wid, proc in list(procs.items()):
                    if not proc.is_alive() and proc.exitcode != 0 and wid in busy:
                        i = busy.pop(wid)
                        unresolved -= 1
                        yield ("failed", i, f"the decoder crashed (exit code {proc.exitcode})")
                        procs[wid] = spawn(wid)  # takes the sentinel the dead one left
                continue
            if msg[0] == "take":
                busy[msg[2]] = msg[1]
                continue
            if msg[0] in ("done", "failed"):
                unresolved -= 1
                for wid, i in list(busy.items()):
                    if i == msg[1]:
                        del busy[wid]
            yield msg
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in procs.values():
            proc.join(timeout=5)
        for q in (tasks, results):
            q.cancel_join_thread()
            q.close()
