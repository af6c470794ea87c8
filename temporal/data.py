"""Sequences from a cache: in memory as one tensor, splits, and batches built by index arithmetic.

A batch is planned first (which videos, which window of each) by :class:`ClipSampler`, from a
seeded generator; then rows are gathered either from the in-memory tensor with one indexing
operation (:func:`gather`) or, for caches larger than memory, read from HDF5 in DataLoader
workers (:class:`LazyBatches`). Both follow the same plan, so they give the same batches.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from actrec.common.cache import open_cache
from actrec.common.errors import ActrecError
from actrec.common.validate import check_features

_STATS_BLOCK = 1 << 16  # about this many rows per block when summing statistics


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Sequences:
    """A cache's index, and its features as one (rows, D) tensor unless ``lazy``."""

    path: Path
    ids: list[str]
    start: np.ndarray  # (V,) int64 first row of each video
    length: np.ndarray  # (V,) int64
    label: np.ndarray  # (V,) int64, -1 where unknown
    split: list[str]
    group: list[str]
    classes: list[str]
    dim: int
    fingerprint: str
    attrs: dict
    chunk_rows: int
    features: torch.Tensor | None  # (rows, D) in the cache's dtype; None when lazy

    @property
    def lazy(self) -> bool:
        return self.features is None

    def __len__(self) -> int:
        return len(self.ids)


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def load_sequences(
    path: str | os.PathLike, lazy: bool | None = None, log: Callable[[str], None] = _stderr
) -> Sequences:
    """Read a cache's index, and unless lazy all its features in one read.

    ``lazy=None`` decides by size: lazy when the features would take more than half the memory
    available now.
    """
    with open_cache(path) as c:
        problems = c.check_index()  # milliseconds; a bad index would fail later as an IndexError
        if problems:
            raise ActrecError(
                f"{path}: {problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; "
                "`actrec inspect --verify` lists every problem"
            )
        ix = c.index
        nbytes = c.total_frames * c.dim * c.dtype.itemsize
        if lazy is None:
            lazy = nbytes > available_memory() // 2
            if lazy:
                log(f"{path}: {nbytes / 2**30:.1f} GiB of features will not fit in memory: "
                    "reading windows from disk (--lazy)")  # fmt: skip
        features = None
        if not lazy:  # every value leaving the cache is checked as every value entering it
            rows = c.all_features()  # (rows, D)
            if len(rows):
                # float32: what training computes in (a float64 cache of 1e300 would be inf)
                check_features(rows, f"{path}: /features", dim=c.dim, dtype="float32")
            features = torch.from_numpy(rows)
        return Sequences(
            path=Path(path), ids=list(ix.ids), start=ix.start.copy(), length=ix.length.copy(),
            label=ix.label.copy(), split=list(ix.split), group=list(ix.group),
            classes=list(ix.classes), dim=c.dim, fingerprint=c.fingerprint, attrs=dict(c.attrs),
            chunk_rows=c.chunk_rows, features=features,
        )  # fmt: skip


# -- normalisation ------------------------------------------------------------------------------


def _row_blocks(seqs: Sequences, positions: np.ndarray) -> Iterator[tuple[int, int]]:
    """(first, stop) row ranges covering the videos at ``positions``, merged, in fixed blocks."""
    order = np.sort(positions)
    first, stop = None, None
    for i in order:
        s, e = int(seqs.start[i]), int(seqs.start[i] + seqs.length[i])
        if first is not None and s == stop:
            stop = e
            continue
        if first is not None:
            yield from _blocks(first, stop, seqs.chunk_rows)
        first, stop = s, e
    if first is not None:
        yield from _blocks(first, stop, seqs.chunk_rows)


def _blocks(first: int, stop: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    # boundaries on whole chunks, so that a lazy read never loads a chunk twice; the same blocks
    # in memory, so that both sum in the same order and agree to the last bit
    step = max(1, _STATS_BLOCK // chunk_rows) * chunk_rows
    a = first
    while a < stop:
        b = min((a // step + 1) * step, stop)
        yield a, b
        a = b


def feature_stats(seqs: Sequences, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every frame of the given videos, in float64: (D,), (D,)."""
    total = torch.zeros(seqs.dim, dtype=torch.float64)
    squares = torch.zeros(seqs.dim, dtype=torch.float64)
    n = 0
    cache = open_cache(seqs.path) if seqs.lazy else None
    try:
        for a, b in _row_blocks(seqs, positions):
            if cache is None:
                block = seqs.features[a:b].double()  # (rows, D)
            else:
                block = torch.from_numpy(cache.rows(a, b)).double()  # (rows, D)
            total += block.sum(0)
            squares += (block * block).sum(0)
            n += b - a
    finally:
        if cache is not None:
            cache.close()
    mean = total / max(n, 1)  # (D,)
    std = (squares / max(n, 1) - mean * mean).clamp_min(0).sqrt().clamp_min(1e-4)  # (D,)
    return mean.float(), std.float()


# -- batches ------------------------------------------------------------------------------------


@dataclass
class BatchPlan:
    """One batch: ``windows`` rows of the cache to gather, grouped ``per_item`` per video."""

    positions: torch.Tensor  # (B,) video positions in the cache
    labels: torch.Tensor  # (B,) int64
    first: torch.Tensor  # (B * K,) absolute first row of each window
    width: torch.Tensor  # (B * K,) frames in each window
    video: torch.Tensor  # (B * K,) the video each window comes from
    per_item: int  # K windows per video, averaged at evaluation


class ClipSampler:
    """Plans the batches of an epoch over the videos at ``positions``.

    Training: a seeded shuffle, and a random window of ``clip_len`` frames per video (the whole
    video when it is shorter, or when ``clip_len`` is 0). Evaluation: whole sequences, or
    ``windows`` evenly spaced windows of ``clip_len`` frames whose predictions are averaged;
    videos go by length so that padding stays small.
    """

    def __init__(
        self,
        seqs: Sequences,
        positions: np.ndarray,
        *,
        batch_size: int,
        clip_len: int,
        train: bool,
        windows: int = 0,
    ) -> None:
        assert batch_size > 0, f"batch_size must be positive, got {batch_size}"
        self.positions = torch.as_tensor(positions, dtype=torch.int64)  # (N,)
        self.start = torch.as_tensor(seqs.start)  # (V,)
        self.length = torch.as_tensor(seqs.length)  # (V,)
        self.label = torch.as_tensor(seqs.label)  # (V,)
        self.batch_size, self.clip_len, self.train, self.windows = (
            batch_size, clip_len, train, windows,
        )  # fmt: skip

    def __len__(self) -> int:
        return -(-len(self.positions) // self.batch_size)

    def plan(self, generator: torch.Generator | None = None) -> list[BatchPlan]:
        if self.train:
            assert generator is not None, "training batches need a seeded generator"
            order = self.positions[torch.randperm(len(self.positions), generator=generator)]
        else:
            order = self.positions[torch.argsort(self.length[self.positions], stable=True)]
        return [
            self._batch(order[i : i + self.batch_size], generator)
            for i in range(0, len(order), self.batch_size)
        ]

    def _batch(self, videos: torch.Tensor, generator: torch.Generator | None) -> BatchPlan:
        length = self.length[videos]  # (B,)
        clip = length if self.clip_len <= 0 else length.clamp(max=self.clip_len)  # (B,)
        if self.train:
            room = (length - clip + 1).double()  # (B,) possible starts
            offset = torch.rand(len(videos), generator=generator, dtype=torch.float64) * room
            offset = offset.long()  # (B,)
            k = 1
        elif self.windows > 0 and self.clip_len > 0:
            k = self.windows
            frac = torch.linspace(0, 1, k, dtype=torch.float64) if k > 1 else torch.tensor([0.5])
            offset = ((length - clip).unsqueeze(1).double() * frac).round().long()  # (B, K)
            offset = offset.reshape(-1)  # (B * K,)
        else:
            clip, offset, k = length, torch.zeros_like(length), 1
        rep = videos.repeat_interleave(k)  # (B * K,)
        return BatchPlan(
            positions=videos,
            labels=self.label[videos],
            first=self.start[rep] + offset,
            width=clip.repeat_interleave(k),
            video=rep,
            per_item=k,
        )


def window_rows(first: torch.Tensor, width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (B, T) of windows padded to the longest by repeating each last row, and the mask."""
    steps = torch.arange(int(width.max()))  # (T,)
    rows = first.unsqueeze(1) + torch.minimum(
        steps.unsqueeze(0), (width - 1).unsqueeze(1)
    )  # (B, T)
    mask = steps.unsqueeze(0) < width.unsqueeze(1)  # (B, T)
    return rows, mask


def gather(features: torch.Tensor, plan: BatchPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of a plan from the in-memory tensor, in one indexing operation.

    The batch keeps the cache's dtype (float16, usually): half the bytes to move to a device,
    where the model casts and normalises it.
    """
    rows, mask = window_rows(plan.first, plan.width)  # (B, T), (B, T)
    x = features.index_select(0, rows.reshape(-1))  # (B * T, D)
    return x.view(*rows.shape, -1), mask  # (B, T, D), (B, T)


class LazyBatches(torch.utils.data.Dataset):
    """The batches of a plan read from HDF5: item i is batch i, read whole by one worker.

    Each worker opens the cache itself (an h5py handle must not cross a fork). A window is one
    contiguous slice of ``/features``, so a read touches only the chunks that hold it; a batch's
    windows are read in row order. Padding repeats each window's last row, as :func:`gather` does.
    """

    def __init__(self, seqs: Sequences, plans: list[BatchPlan]) -> None:
        self.path, self.plans = seqs.path, plans
        self._cache = None

    def __len__(self) -> int:
        return len(self.plans)

    def _open(self):
        if self._cache is None:
            self._cache = open_cache(self.path)
        return self._cache

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        cache, plan = self._open(), self.plans[i]
        n, t = len(plan.first), int(plan.width.max())
        out = None
        for j in torch.argsort(plan.first).tolist():
            a, w = int(plan.first[j]), int(plan.width[j])
            rows = torch.from_numpy(cache.rows(a, a + w))  # (w, D)
            if out is None:
                out = torch.empty(n, t, rows.shape[1], dtype=rows.dtype)  # (B, T, D)
            out[j, :w] = rows
            out[j, w:] = rows[-1]
        mask = torch.arange(t).unsqueeze(0) < plan.width.unsqueeze(1)  # (B, T)
        return out, mask

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


def batches(
    seqs: Sequences, plans: list[BatchPlan], workers: int = 2
) -> Iterator[tuple[torch.Tensor, torch.Tensor, BatchPlan]]:
    """(x (B, T, D) in the cache's dtype, mask (B, T), plan) for each planned batch, in order."""
    if not seqs.lazy:
        # Gathered in the caller's thread, not one batch ahead in another: a gather takes about a
        # millisecond, and torch's intra-op threads started from a second thread spin beside the
        # step's own; on 2 cores that made a GRU step 1.5x slower (bench/bench_train.py).
        for plan in plans:
            yield *gather(seqs.features, plan), plan
        return
    dataset = LazyBatches(seqs, plans)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers,
        prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
        # its own generator: a DataLoader otherwise draws its worker seed from the global RNG,
        # and the dropout masks of a lazy run would differ from an in-memory one's
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    try:
        for (x, mask), plan in zip(loader, plans, strict=True):
            yield x, mask, plan
    finally:
        dataset.close()
