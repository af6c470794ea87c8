"""An extraction in progress and the joining of caches: the machinery around the format.

:class:`PartialCache` keeps an unfinished extraction's finished videos as segment files in
``CACHE.h5.partial/``, each a small complete cache renamed into place, so that ``kill -9`` at any
moment leaves a folder the same command resumes from; :func:`combine` joins segments, shards or
an older cache into one cache sorted by id, atomically. The format itself (paths, reader, writer)
is cache.py's.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from actrec.common.atomic import write_text
from actrec.common.cache import (
    FINGERPRINT_KEYS,
    FORMAT_VERSION,
    Cache,
    Stored,
    Video,
    fingerprint,
    open_cache,
    os_error_reason,
    partial_dir,
    plain_value,
    write_cache,
)
from actrec.common.diskspace import is_disk_full
from actrec.common.errors import CacheError
from actrec.common.progress import progress as progress_bar


def combine(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    attrs: dict[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    failed: dict[str, str] | None = None,
    dim: int | None = None,
    progress: bool = False,
    latest_wins: bool = False,
    metadata: dict[str, tuple[str, str, str]] | None = None,
) -> Path:
    """Join caches (shards, segments, an older cache) into one, sorted by id, atomically.

    All inputs must share a fingerprint. A video found in several inputs is stored once: they
    must hold the same features and timestamps, else the join is refused, naming the video;
    failures stand only where no input stored the video. With ``latest_wins`` (an extraction
    joining its older cache and its segments, in the order they were written), the last record
    of an id wins instead, a failure included: a re-extracted video replaces its old rows.
    ``metadata`` maps ids to (label, split, group) that replace the stored ones; then
    ``/classes`` holds ``classes`` and the labels in use, not the inputs' old class names.
    ``dim`` is the feature size where no input holds a video (every item failed). Features are
    copied video by video, and only a few inputs are open at a time, so neither memory nor open
    files grow with the number of inputs (an extraction of 13,000 videos leaves thousands of
    segments, and many systems allow 1,024 open files).
    """
    if not inputs:
        raise CacheError("nothing to combine: no input caches")
    paths = [Path(p) for p in inputs]
    owner: dict[str, tuple[int, int]] = {}  # video id -> (input, row in its index)
    twins: list[tuple[str, tuple[int, int], tuple[int, int]]] = []  # ids held twice
    all_failed: dict[str, str] = {}
    names = set(classes or [])
    prints, dims = {}, set()
    for k, path in enumerate(paths):
        with open_cache(path) as c:
            c.ensure_index()  # never copy rows by an index that does not fit them
            if k == 0:
                first_attrs, dtype = c.attrs, str(c.dtype)
                dim = c.dim if dim is None else dim
            prints[path.name] = c.fingerprint
            if len(c):
                dims.add(c.dim)
            for i, vid in enumerate(c.index.ids):
                if latest_wins:
                    owner[vid] = (k, i)
                    all_failed.pop(vid, None)
                elif vid in owner:
                    twins.append((vid, owner[vid], (k, i)))
                else:
                    owner[vid] = (k, i)
            for vid, why in c.index.failed.items():
                if latest_wins:
                    owner.pop(vid, None)
                all_failed[vid] = why
            if metadata is None:
                names |= set(c.index.classes)
    if len(set(prints.values())) > 1:
        detail = ", ".join(f"{name}={fp}" for name, fp in prints.items())
        raise CacheError(f"cannot combine caches made with different settings ({detail})")
    if len(dims) > 1:
        raise CacheError(f"cannot combine caches of different dimensions {sorted(dims)}")
    all_failed.update(failed or {})
    root = dict(first_attrs if attrs is None else attrs)
    for key in ("format_version", "fingerprint"):
        root.pop(key, None)
    with (
        _OpenCaches(paths) as caches,
        progress_bar(len(owner), f"writing {Path(out).name}", "video", progress,
                     leave=False) as bar,
    ):  # fmt: skip
        for vid, (ka, ia), (kb, ib) in twins:
            a, b = caches[ka].video(ia), caches[kb].video(ib)
            for what, x, y in (("label", a.label, b.label), ("split", a.split, b.split)):
                if x != y and metadata is None:
                    raise CacheError(
                        f"{vid} has the {what} {x!r} in {paths[ka]} and {y!r} in {paths[kb]}: "
                        "one video, two answers; fix the caches' labels or merge only one"
                    )
            if not (_same(a.features, b.features) and _same(a.timestamps, b.timestamps)):
                raise CacheError(
                    f"{vid} is in {paths[ka]} and in {paths[kb]} with different features: "
                    "shards of one extraction never overlap; merge only one of them"
                )

        def videos() -> Iterator[Video]:
            for vid in sorted(owner):
                k, i = owner[vid]
                v = caches[k].video(i)
                if metadata is not None and vid in metadata:
                    v.label, v.split, v.group = metadata[vid]
                yield v
                bar.update()

        if metadata is not None:
            names |= {metadata.get(vid, ("",))[0] for vid in owner} - {""}
            names |= {caches[k].index.label_name(i) for vid, (k, i) in owner.items()
                      if vid not in metadata} - {""}  # fmt: skip
        return write_cache(
            out,
            videos(),
            root,
            dim=dims.pop() if dims else dim,
            dtype=dtype,
            classes=sorted(names),
            failed=all_failed,
        )


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


class _OpenCaches:
    """``caches[k]`` opens input ``k`` on demand, keeping the most recently used few open.

    Videos are copied in id order, and segments hold runs of neighbouring ids, so a handful of
    handles serves nearly every read without reopening.
    """

    def __init__(self, paths: Sequence[Path], limit: int = 32) -> None:
        self.paths, self.limit = paths, limit
        self._open: OrderedDict[int, Cache] = OrderedDict()

    def __getitem__(self, k: int) -> Cache:
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        if len(self._open) >= self.limit:
            self._open.popitem(last=False)[1].close()
        cache = self._open[k] = open_cache(self.paths[k])
        return cache

    def __enter__(self) -> _OpenCaches:
        return self

    def __exit__(self, *exc: object) -> None:
        for cache in self._open.values():
            cache.close()
        self._open.clear()


class PartialCache:
    """The finished part of an extraction in progress, as segment files in ``CACHE.h5.partial/``.

    Each segment is a small complete cache written atomically, so a crash at any moment leaves
    only whole segments (and perhaps a stray temporary file, ignored and removed). ``meta.json``
    holds the root attributes, so a rerun with other settings is refused before any work.
    """

    def __init__(
        self, cache_path: str | os.PathLike, attrs: dict[str, Any], dim: int, dtype: str
    ) -> None:
        self.cache_path = Path(cache_path)
        self.dir = partial_dir(cache_path)
        self.attrs = {**attrs, "dtype": str(np.dtype(dtype))}
        self.dim = dim
        self.dtype = str(np.dtype(dtype))
        self.fingerprint = fingerprint({**self.attrs, "format_version": FORMAT_VERSION})
        self._next: int | None = None  # the number of the next segment
        self._lock_handle = None  # the open lock file while this run holds the folder

    def start(self) -> None:
        """Create the folder, or check that an existing one was made with the same settings;
        either way, hold its lock until :meth:`finish` or :meth:`release`."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"{self.dir}: cannot create it ({os_error_reason(e)})") from None
        self._lock()
        # the lock holder alone writes the cache: a temporary file of it is a killed run's
        for stray in self.cache_path.parent.glob(f"{glob.escape(self.cache_path.name)}.tmp*"):
            # only what temporary_name makes, and HDF5: a user's `feats.h5.tmp-notes` stays
            number = stray.name[len(self.cache_path.name) + 4 :]
            if number.isdigit() and stray.is_file() and h5py.is_hdf5(stray):
                stray.unlink(missing_ok=True)
        meta = self.dir / "meta.json"
        if meta.exists():
            theirs = json.loads(meta.read_text())
            if theirs.get("fingerprint") != self.fingerprint:
                self.release()
                raise CacheError(
                    f"{self.dir}: an unfinished extraction made with other settings "
                    f"({_differences(theirs.get('attrs', {}), self.attrs)}); rerun it with its own "
                    "settings, or delete that folder to start again"
                )
            return
        body = {"fingerprint": self.fingerprint, "dim": self.dim, "attrs": _jsonable(self.attrs)}
        try:
            write_text(meta, json.dumps(body, indent=1))
        except OSError as e:
            self.release()
            if is_disk_full(e):
                raise CacheError(f"{meta}: no space left on device; free some space") from None
            raise CacheError(f"{meta}: cannot write it ({os_error_reason(e)})") from None

    def _lock(self) -> None:
        # two runs into one folder would number their segments alike and overwrite each other's
        # videos. A POSIX record lock (lockf), not flock: it belongs to this process alone, so
        # forked decoding workers do not inherit it, and the kernel drops it the moment this
        # process dies, `kill -9` included, whatever its orphaned workers are still doing.
        try:
            import fcntl
        except ImportError:  # no advisory locks here (Windows): one run at a time is up to you
            return
        handle = open(self.dir / "lock", "a")  # noqa: SIM115 - held open until release()
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise CacheError(
                f"{self.cache_path}: another extraction is writing it now ({self.dir} is locked); "
                "wait for it to finish, or write to another -o"
            ) from None
        self._lock_handle = handle

    def discard_if_empty(self) -> None:
        """Remove the folder if it holds no segment: a run that stopped before finishing any
        video (bad option, no memory) leaves nothing that would refuse other settings later."""
        if self._lock_handle is not None and self.dir.is_dir() and not self.segments():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Let another run continue this extraction (also done by :meth:`finish`)."""
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def segments(self) -> list[Path]:
        for stray in self.dir.glob("*.tmp*"):
            stray.unlink(missing_ok=True)
        return sorted(self.dir.glob("segment-*.h5"))

    def done(self) -> tuple[set[str], dict[str, str]]:
        """Ids already stored, and failures already recorded, in the segments."""
        stored, failed = set(), {}
        for seg in self.segments():
            with open_cache(seg) as c:
                stored.update(c.index.ids)
                failed.update(c.index.failed)
        return stored, failed

    def records(self) -> dict[str, Stored]:
        """What the segments record of each stored video, the latest segment winning."""
        found: dict[str, Stored] = {}
        for seg in self.segments():
            with open_cache(seg) as c:
                found.update(c.records())
                for vid in c.index.failed:
                    found.pop(vid, None)
        return found

    def add(self, videos: Sequence[Video], failed: dict[str, str] | None = None) -> Path | None:
        """Store finished videos (and failures) as one new segment, durably, before returning."""
        if not videos and not failed:
            return None
        if self._next is None:  # list the folder once, not once per forward pass
            existing = self.segments()
            self._next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        seg = self.dir / f"segment-{self._next:06d}.h5"
        self._next += 1
        ordered = sorted(videos, key=lambda v: v.id)
        write_cache(seg, ordered, self.attrs, dim=self.dim, dtype=self.dtype, failed=failed)
        return seg

    def finish(
        self,
        *,
        classes: Sequence[str],
        extra_inputs: Sequence[Path] = (),
        progress: bool = False,
        metadata: dict[str, tuple[str, str, str]] | None = None,
    ) -> Path:
        """Combine the segments (and e.g. an older cache) into the cache, then remove the folder.

        Later records win (segments after ``extra_inputs``, newer segments after older ones):
        a video extracted again, because its file changed, replaces its old rows. ``metadata``
        (id -> label, split, group) replaces the stored labels, splits and groups."""
        inputs = [*extra_inputs, *self.segments()]
        if not inputs:  # nothing at all was extracted: still write an empty, valid cache
            write_cache(
                self.cache_path, [], self.attrs, dim=self.dim, dtype=self.dtype, classes=classes
            )
        else:
            combine(
                inputs, self.cache_path, attrs=self.attrs, classes=classes, dim=self.dim,
                progress=progress, latest_wins=True, metadata=metadata,
            )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)
        self.release()
        return self.cache_path


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [
        k for k in FINGERPRINT_KEYS if plain_value(old.get(k)) != plain_value(_jsonable(new.get(k)))
    ]
    return (
        ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys)
        or "settings differ"
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=plain_value))


def stored_records(path: str | os.PathLike, expected_fingerprint: str) -> dict[str, Stored]:
    """What an existing cache records of its videos, to extend it; one made with other
    settings is refused."""
    with open_cache(path) as c:
        if c.fingerprint != expected_fingerprint:
            raise CacheError(
                f"{path}: this cache was made with other settings (fingerprint {c.fingerprint}, "
                f"now {expected_fingerprint}): write to another file, or delete it to start again"
            )
        c.ensure_index()
        return c.records()


def stored_ids(path: str | os.PathLike, expected_fingerprint: str) -> set[str]:
    """The ids an existing cache holds (see :func:`stored_records`)."""
    return set(stored_records(path, expected_fingerprint))
