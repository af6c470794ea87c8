"""The streaming engine: decoding workers -> fixed-size batches -> backbone -> finished videos.

How frames travel: each worker process decodes and resizes straight into a slot of a ring in
shared memory (CHUNK frames of the backbone's input size); the result queue carries only a small
descriptor (item, worker, slot, count, timestamps). The main process copies the slot's frames
once, into the batch buffer (pinned on a GPU), and hands the slot back to its worker through
that worker's own pipe. Each worker owns its slots, so a worker that crashes takes only its own
slots and its item with it; and since a worker waits for a free slot, memory is bounded whatever
a video's length (a long video streams through the slots chunk by chunk).

The device never waits for the host: on a GPU, ``IN_FLIGHT`` pinned batch buffers take turns; a
full one is copied to the device on a side stream, normalised and run there, and its features
are copied back without blocking and collected one batch later, while the next batch fills. On
the CPU the same steps run one after the other at once (one buffer, collected when launched).

After each collected batch the videos whose last frame was in it are handed back, so that the
caller can store them.
"""

from __future__ import annotations

import contextlib
import gc
import math
import mmap
import multiprocessing as mp
import os
import queue
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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
from actrec.extract.threads import MainThreads, Threads, thread_budget

CHUNK = 16  # frames per slot of the shared ring, and per message from a worker
SLOTS_PER_WORKER = 4  # enough for a worker to decode ahead while the main process is busy
POLL_S = 1.0  # how often the main process checks that its workers are alive
IN_FLIGHT = 2  # batches launched on a GPU before the first of them is collected
WINDOW_S = 1.0  # how often the main process's threads are fitted to who waits for whom


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
    """What one collected forward pass finished: videos (in completion order) and failures
    (id -> why)."""

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
    in_flight: int | None = None,
) -> Iterator[Batch]:
    """Extract the items' features; yields after every collected forward pass (and once at the
    end). ``in_flight``: batches launched before the first is collected (default: ``IN_FLIGHT``
    on a GPU, 1 on the CPU, where a forward pass is finished when it returns)."""
    device = torch.device(device)
    budget = thread_budget(workers, device)
    depth = in_flight or (IN_FLIGHT if device.type == "cuda" else 1)
    engine = _Engine(backbone, device, precision, batch_size, depth)
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

    def absorb(rows: np.ndarray, out: torch.Tensor) -> Batch:
        """Hand a collected batch's features (n, D) to the videos of its rows."""
        nonlocal frames_done
        n = len(rows)
        with np.errstate(over="ignore"):  # beyond float16's range: inf, refused in complete()
            feats = out.numpy().astype(out_dtype)  # (n, D), a copy: the buffer is reused
        cuts = np.flatnonzero(np.diff(rows)) + 1
        for run in np.split(np.arange(n), cuts):
            i = int(rows[run[0]])
            if i in pending:  # else it failed after sending frames: dropped
                pending[i].feats.append(feats[run])
        for i in [i for i, p in pending.items() if p.done and p.computed == p.sent]:
            complete(i)
        frames_done += n
        bar.set_postfix_str(f"{frames_done / (time.perf_counter() - started):.0f} frames/s")
        return take(n)

    def take(n: int) -> Batch:
        batch = Batch(list(finished), dict(failed), n)
        finished.clear()
        failed.clear()
        return batch

    transport = _Workers if workers > 0 else _Inline
    threads_before = torch.get_num_threads()
    main_threads = MainThreads(budget.main, budget.main_waiting)
    try:
        with transport(items, sampling, backbone.resize, workers, budget) as source:
            messages = source.messages()
            since, waited = time.perf_counter(), 0.0  # the share of time spent waiting
            while True:
                asked = time.perf_counter()
                msg = next(messages, None)
                now = time.perf_counter()
                if msg is None:
                    break
                waited += now - asked
                if now - since >= WINDOW_S:
                    main_threads.update(waited / (now - since))
                    since, waited = now, 0.0
                kind, i = msg[0], msg[1]
                if kind == "start":
                    pending[i] = _Pending(fps=msg[2])
                elif kind == "frames":
                    _, _, wid, slot, k, times = msg  # k frames in slot, (k,) seconds
                    p = pending[i]
                    p.times.append(times)
                    p.sent += k
                    frames = source.slots[slot]  # (CHUNK, H, W, 3) uint8, shared
                    at = 0
                    while at < k:
                        at += engine.put(frames[at:k], i)
                        if engine.full:
                            for rows, out in engine.launch():
                                yield absorb(rows, out)
                    source.release(wid, slot)
                elif kind == "done":
                    p = pending[i]
                    p.done = True
                    if p.computed == p.sent:
                        complete(i)
                elif kind == "failed":
                    pending.pop(i, None)
                    failed[items[i].id] = msg[2]
                    bar.update(1)
        due = engine.launch() if engine.fill else []
        for rows, out in [*due, *engine.drain()]:
            yield absorb(rows, out)
        if finished or failed:
            yield take(0)
    finally:
        torch.set_num_threads(threads_before)
        bar.close()


# -- the device side ------------------------------------------------------------------------------


@dataclass
class _Flight:
    """A launched forward pass: whose rows, and where its features arrive on the host."""

    rows: np.ndarray  # (n,) the item of each row
    out: torch.Tensor  # (n, D) float32 on the host, valid once `ready` has happened
    ready: torch.cuda.Event | None  # None on the CPU: ready when launched


class _Engine:
    """Batch buffers on the host, and forward passes launched from them, ``depth`` at a time.

    Frames are copied into the current buffer (:meth:`put`); a full one is launched
    (:meth:`launch`), which returns the passes that are due: the oldest, once ``depth`` are in
    flight. A buffer is filled again only after the pass that used it was collected, and that
    pass's device copy had to finish before it could run: so no buffer needs a wait of its own.
    """

    def __init__(
        self, backbone: Backbone, device: torch.device, precision: str, batch_size: int, depth: int
    ) -> None:
        assert depth >= 1, "at least one batch in flight"
        h, w = backbone.input_size
        self.backbone, self.device, self.precision = backbone, device, precision
        self.batch_size, self.depth = batch_size, depth
        self.cuda = device.type == "cuda"
        try:
            # On a GPU, uint8 frames wait in pinned buffers and travel as such (a quarter of the
            # bytes of floats); on the CPU they are turned into floats as they arrive, straight
            # from the worker's slot: one pass over each frame instead of a copy and then a
            # conversion of the whole batch.
            kind = torch.uint8 if self.cuda else torch.float32
            self.hosts = []
            for _ in range(depth):
                buffer = torch.empty((batch_size, h, w * 3), dtype=kind)
                self.hosts.append(buffer.pin_memory() if self.cuda else buffer)
            if self.cuda:  # where the frames land on the device, allocated once
                self.floats = torch.empty((batch_size, h, w * 3), device=device)
        except (RuntimeError, MemoryError):
            gib = depth * batch_size * h * w * 3 * (1 if self.cuda else 4) / 2**30
            batches = "a batch" if depth == 1 else f"{depth} batches in flight"
            raise ActrecError(
                f"--batch-size {batch_size}: {batches} of {h}x{w} frames takes {gib:.1f} GiB, "
                "more than this machine can give; pass a smaller --batch-size"
            ) from None
        self.owners = [np.full(batch_size, -1, dtype=np.int64) for _ in range(depth)]
        self.current, self.fill = 0, 0
        self.flights: deque[_Flight] = deque()
        self.copies = torch.cuda.Stream(device) if self.cuda else None
        mean = torch.tensor(backbone.mean, device=device)
        std = torch.tensor(backbone.std, device=device)
        # (x / 255 - mean) / std as one multiply and one subtraction, on rows of W RGB pixels:
        # broadcast over the channels of a channels_last batch, each op would run in loops of 3
        self.scale = (1.0 / (255.0 * std)).repeat(w)  # (W * 3,) R G B R G B ...
        self.neg_shift = (-mean / std).repeat(w)

    @property
    def full(self) -> bool:
        return self.fill == self.batch_size

    def put(self, frames: np.ndarray, owner: int) -> int:
        """Copy as many of ``frames`` ((k, H, W, 3) uint8) as fit; return how many."""
        k = min(len(frames), self.batch_size - self.fill)
        rows = self.hosts[self.current][self.fill : self.fill + k]  # (k, H, W * 3)
        # numpy's copy (and cast, on the CPU): one thread, where torch's would wake its pool
        # beside the workers
        np.copyto(rows.numpy(), frames[:k].reshape(rows.shape), casting="unsafe")
        self.owners[self.current][self.fill : self.fill + k] = owner
        self.fill += k
        return k

    def launch(self) -> list[tuple[np.ndarray, torch.Tensor]]:
        """Start the forward pass of the current buffer; return the passes now due."""
        n, host = self.fill, self.hosts[self.current][: self.fill]
        if self.cuda:
            with torch.cuda.stream(self.copies):
                x = host.to(self.device, non_blocking=True)  # (n, H, W * 3) uint8
            compute = torch.cuda.current_stream(self.device)
            compute.wait_stream(self.copies)
            x.record_stream(compute)  # made on the copy stream, used on this one
        else:
            x = host
        h, w = self.backbone.input_size
        x = self.floats[:n].copy_(x) if self.cuda else x  # (n, H, W * 3) float
        x = torch.addcmul(self.neg_shift, x, self.scale, out=x)
        x = x.view(n, h, w, 3).permute(0, 3, 1, 2)  # (n, 3, H, W), channels_last strides
        try:
            with torch.inference_mode(), autocast(self.device, self.precision):
                out = self.backbone.module(x)
        except torch.OutOfMemoryError:
            # what is finished is kept (the caller stored it batch by batch): say how to go on
            raise ActrecError(
                f"out of memory on {self.device} at --batch-size {self.batch_size}: rerun with a "
                "smaller --batch-size (what is finished is kept)"
            ) from None
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.float()  # (n, D)
        ready = None
        if self.cuda:
            back = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
            back.copy_(out, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
            out = back
        self.flights.append(_Flight(self.owners[self.current][:n].copy(), out, ready))
        self.current = (self.current + 1) % self.depth
        self.fill = 0
        return [self._collect() for _ in range(len(self.flights) - self.depth + 1)]

    def drain(self) -> list[tuple[np.ndarray, torch.Tensor]]:
        """Collect every pass still in flight, oldest first."""
        return [self._collect() for _ in range(len(self.flights))]

    def _collect(self) -> tuple[np.ndarray, torch.Tensor]:
        flight = self.flights.popleft()
        if flight.ready is not None:
            flight.ready.synchronize()  # a batch later: the device has the next one meanwhile
        return flight.rows, flight.out


# -- where the frames come from -------------------------------------------------------------------


def _item_messages(
    item: Item,
    i: int,
    sampling: Sampling,
    resize: Resize,
    threads: Threads,
    slots: np.ndarray,
    take: Callable[[], int],
    give_back: Callable[[int], None],
) -> Iterator[tuple]:
    """One item's messages: start, frames..., done; or failed, at any point. Frames are decoded
    into ``slots[take()]``, a slot taken only when a frame is there to go in; a slot sent in a
    message is the receiver's until it releases it, one left half-filled by a failure is given
    back. Messages are made as they are taken, so a slot may be reused once its message is
    handled."""
    held: list[int] = []

    def buffers() -> Iterator[np.ndarray]:
        while True:
            held.append(take())
            yield slots[held[-1]]

    try:
        reader = Reader(item, sampling, resize, threads=threads.decoder,
                        scaler_threads=threads.scaler)  # fmt: skip
        yield ("start", i, reader.fps)
        for k, times in reader.read_into(buffers()):
            yield ("frames", i, held.pop(), k, times)
        yield ("done", i)
    except DecodeError as e:
        yield ("failed", i, str(e))
    except Exception as e:  # noqa: BLE001 - one bad file must never stop the run
        yield ("failed", i, f"{type(e).__name__}: {e}")
    finally:
        while held:
            give_back(held.pop())


def _with_worker(msg: tuple, wid: int) -> tuple:
    """("frames", i, slot, k, times) -> ("frames", i, wid, slot, k, times): whose slot it is."""
    return (*msg[:2], wid, *msg[2:]) if msg[0] == "frames" else msg


class _Inline:
    """Decoding in the main process (``--workers 0``), through a ring of one slot: each chunk
    is copied out before the next is decoded into it."""

    def __init__(self, items, sampling: Sampling, resize: Resize, workers: int, threads: Threads):
        self.items, self.sampling, self.resize, self.threads = items, sampling, resize, threads
        self.ring = torch.empty((1, CHUNK, resize.height, resize.width, 3), dtype=torch.uint8)
        self.slots = self.ring.numpy()

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def messages(self) -> Iterator[tuple]:
        for i, item in enumerate(self.items):
            for msg in _item_messages(
                item,
                i,
                self.sampling,
                self.resize,
                self.threads,
                self.slots,
                lambda: 0,
                lambda s: None,
            ):
                yield _with_worker(msg, 0)

    def release(self, wid: int, slot: int) -> None:
        pass


def _worker(
    wid: int,
    tasks,
    results,
    returns,
    ring: np.ndarray | torch.Tensor,
    mine: range,
    sampling: Sampling,
    resize: Resize,
    threads: Threads,
) -> None:
    # Ctrl-C reaches every process of the terminal's group: the main process stops the workers
    # and says what is kept; a traceback from each worker would bury that
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    # (slots, CHUNK, H, W, 3) uint8, shared with the main process
    slots = ring.numpy() if isinstance(ring, torch.Tensor) else ring
    free = list(mine)

    def alive_or_exit() -> None:
        # a long wait may mean the main process was killed (kill -9 leaves no one to stop us):
        # then exit rather than linger as an orphan
        if os.getppid() != parent:
            os._exit(0)

    def put(msg: tuple) -> None:
        while True:
            try:
                results.put(msg, timeout=POLL_S)
                return
            except queue.Full:
                alive_or_exit()

    def take() -> int:
        while not free:
            if returns.poll(POLL_S):
                free.append(int.from_bytes(returns.recv_bytes(), "little"))
            else:
                alive_or_exit()
        return free.pop()

    while True:
        task = tasks.get()
        if task is None:
            return
        i, item = task
        put(("take", i, wid))
        for msg in _item_messages(item, i, sampling, resize, threads, slots, take, free.append):
            put(_with_worker(msg, wid))


@contextlib.contextmanager
def _frozen_garbage() -> Iterator[None]:
    """Garbage this process still holds (decoded frames in reference cycles, e.g. from an
    inline run) must not be collected in a forked child: freeing an FFmpeg scaler there joins
    its slice threads, which fork did not copy, and the worker hangs. So collect it here, and
    freeze the rest out of the children's collections while they are started."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _Workers:
    """``workers`` decoding processes writing into a shared ring; a crashed worker fails only
    its item, and a new one takes its place and its slots."""

    def __init__(self, items, sampling: Sampling, resize: Resize, workers: int, threads: Threads):
        self.items = items
        self.ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.n = min(workers, len(items))
        shape = (self.n * SLOTS_PER_WORKER, CHUNK, resize.height, resize.width, 3)
        if self.ctx.get_start_method() == "fork":
            # anonymous shared memory, inherited by the workers: not bounded by /dev/shm,
            # which containers often make 64 MiB (a ring for 14 workers at 224x224 is 135 MiB)
            self.ring = np.frombuffer(mmap.mmap(-1, math.prod(shape)), np.uint8).reshape(shape)
        else:  # spawned workers get it by name from torch's sharing
            self.ring = torch.empty(shape, dtype=torch.uint8).share_memory_()
        self.slots = self.ring.numpy() if isinstance(self.ring, torch.Tensor) else self.ring
        self.tasks = self.ctx.Queue()
        # bounded: a worker that cannot put learns soon enough that the main process is gone
        self.results = self.ctx.Queue(maxsize=self.n * (SLOTS_PER_WORKER + 4))
        self.args = (sampling, resize, threads)
        self.procs: dict[int, mp.process.BaseProcess] = {}
        self.returns: dict[int, object] = {}  # worker -> the pipe that gives its slots back

    def __enter__(self) -> _Workers:
        for task in enumerate(self.items):
            self.tasks.put(task)
        with _frozen_garbage():  # once for all: a collection takes a good part of a second
            for wid in range(self.n):
                self._spawn(wid)
                self.tasks.put(None)
        return self

    def _spawn(self, wid: int) -> None:
        """Start worker ``wid`` with all of its slots free: only called when none of them is in
        a message not yet handled."""
        if wid in self.returns:
            self.returns.pop(wid).close()
        theirs, ours = self.ctx.Pipe(duplex=False)
        mine = range(wid * SLOTS_PER_WORKER, (wid + 1) * SLOTS_PER_WORKER)
        proc = self.ctx.Process(
            target=_worker,
            args=(wid, self.tasks, self.results, theirs, self.ring, mine, *self.args),
            daemon=True,
        )
        if gc.get_freeze_count():
            proc.start()
        else:
            with _frozen_garbage():
                proc.start()
        theirs.close()
        self.procs[wid], self.returns[wid] = proc, ours

    def release(self, wid: int, slot: int) -> None:
        """The slot's frames are copied: the worker may decode into it again."""
        with contextlib.suppress(OSError):  # gone: its successor starts with every slot free
            self.returns[wid].send_bytes(slot.to_bytes(4, "little"))

    def messages(self) -> Iterator[tuple]:
        busy: dict[int, int] = {}  # worker -> item
        unresolved = len(self.items)
        while unresolved:
            try:
                msg = self.results.get(timeout=POLL_S)
            except queue.Empty:
                # nothing came for a while: every message a dead worker sent has been handled
                for wid, proc in list(self.procs.items()):
                    if not proc.is_alive() and proc.exitcode != 0 and wid in busy:
                        i = busy.pop(wid)
                        unresolved -= 1
                        yield ("failed", i, f"the decoder crashed (exit code {proc.exitcode})")
                        self._spawn(wid)  # takes the sentinel the dead one left
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

    def __exit__(self, *exc) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs.values():
            proc.join(timeout=5)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        for pipe in self.returns.values():
            pipe.close()
