"""The HDF5 feature cache: the one module that spells its paths (see docs/design.md, "The cache").

Ragged layout: every stored frame of every video is one row of ``/features``; ``/videos/*`` says
where each video's rows are. Videos are always stored sorted by id, so a cache depends only on
what was extracted, never on the order or the number of processes that extracted it.

Writing is crash-safe by construction: a cache file is written under a temporary name and renamed
into place when complete, and an extraction in progress keeps its finished videos in a
:class:`PartialCache` folder of segment files, each also renamed into place when complete.
HDF5 itself is not safe against ``kill -9`` in the middle of a write, so nothing ever writes into
a file that is already visible under its final name. Nor does it survive a full disk: disk space
is reserved ahead of every write (diskspace.py), so that a full disk is a CacheError naming the
file, and the temporary file is removed.

Readers check the index before they trust it (:meth:`Cache.check_index`, milliseconds): caches
edited by other tools may lack ``/classes`` or hold rows the index points past.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from actrec.common.atomic import replacing
from actrec.common.diskspace import Reservation, is_disk_full
from actrec.common.errors import CacheError
from actrec.common.progress import progress as progress_bar
from actrec.common.validate import check_features, check_text, index_problems

FORMAT_VERSION = 1

# Root attributes that change the features: two caches (or a cache and a rerun) may only be
# combined when these agree. Stored as the `fingerprint` attribute.
FINGERPRINT_KEYS = (
    "backbone",
    "weights",
    "input_size",
    "mean",
    "std",
    "resize",
    "sampling",
    "dtype",
    "precision",
)

_STR = h5py.string_dtype("utf-8")
_CHUNK_BYTES = 1 << 20  # about 1 MiB of features per HDF5 chunk


def fingerprint(attrs: dict[str, Any]) -> str:
    """A short hash of the attributes that change the features (`FINGERPRINT_KEYS`)."""
    relevant = {k: _plain(attrs[k]) for k in FINGERPRINT_KEYS if k in attrs}
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """JSON-comparable form of an attribute value (h5py returns numpy types and arrays)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass
class Video:
    """One item's features and where it came from."""

    id: str
    features: np.ndarray  # (T, D)
    timestamps: np.ndarray  # (T,) seconds
    label: str = ""  # class name; "" where unknown
    split: str = ""
    group: str = ""
    fps: float = float("nan")
    source_size: int = -1  # bytes of the source file when it was read; -1 where unknown
    source_mtime_ns: int = -1  # its modification time (ns); a rerun re-extracts on a change

    def __post_init__(self) -> None:
        assert self.features.ndim == 2, (
            f"features of {self.id} must be (T, D), got {self.features.shape}"
        )
        assert self.timestamps.shape == (len(self.features),), (
            f"timestamps of {self.id} must be ({len(self.features)},), got {self.timestamps.shape}"
        )


@dataclass
class Index:
    """The per-video table of a cache, in memory (small: a few numbers per video)."""

    ids: list[str]
    start: np.ndarray  # (V,) int64
    length: np.ndarray  # (V,) int64
    label: np.ndarray  # (V,) int64, -1 where unknown
    split: list[str]
    group: list[str]
    fps: np.ndarray  # (V,) float64
    classes: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # id -> error
    source_size: np.ndarray | None = None  # (V,) int64, -1 where unknown
    source_mtime_ns: np.ndarray | None = None  # (V,) int64, -1 where unknown
    missing: list[str] = field(default_factory=list)  # optional index paths the file lacks

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.source_size is None:
            self.source_size = np.full(n, -1, dtype=np.int64)
        if self.source_mtime_ns is None:
            self.source_mtime_ns = np.full(n, -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def label_name(self, i: int) -> str:
        return self.classes[self.label[i]] if self.label[i] >= 0 else ""


@dataclass(frozen=True)
class Stored:
    """What a cache records of a stored video's source: a rerun compares it with the source."""

    source_size: int  # -1 where unknown (caches made before it was recorded)
    source_mtime_ns: int
    label: str
    split: str
    group: str


class Cache:
    """A read-only cache over one open HDF5 handle, which it owns, as ``h5py.File`` does.

    Open it with :func:`open_cache`; close it with :meth:`close`, or use it in a ``with`` block.
    """

    def __init__(self, path: str | os.PathLike, handle: h5py.File) -> None:
        self.path = Path(path)
        self._f = handle
        self.attrs: dict[str, Any] = {k: _plain(v) for k, v in handle.attrs.items()}
        version = self.attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(
                f"{self.path}: cache format_version {version!r}, this actrec reads {FORMAT_VERSION}; "
                "re-extract it with this version"
            )
        self.index = _read_index(self.path, handle)
        self._row = {vid: i for i, vid in enumerate(self.index.ids)}

    def close(self) -> None:
        """Close the file; closing twice is harmless."""
        self._f.close()

    @property
    def closed(self) -> bool:
        return not self._f.id.valid

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what is in it ----------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self._f["features"].shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self._f["features"].dtype

    @property
    def total_frames(self) -> int:
        return int(self._f["features"].shape[0])

    @property
    def fingerprint(self) -> str:
        return str(self.attrs.get("fingerprint", ""))

    @property
    def chunk_rows(self) -> int:
        chunks = self._f["features"].chunks
        return int(chunks[0]) if chunks else self.total_frames

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._row

    def position(self, video_id: str) -> int:
        return self._row[video_id]

    # -- reading ----------------------------------------------------------------------------
    def features(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of video ``i`` (all of them by default): one slice read."""
        first, n = int(self.index.start[i]), int(self.index.length[i])
        stop = n if stop is None else min(stop, n)
        return self._f["features"][first + start : first + stop]

    def rows(self, first: int, stop: int) -> np.ndarray:
        """Rows ``first:stop`` of ``/features``, across video boundaries: one slice read."""
        return self._f["features"][first:stop]

    def timestamps(self, i: int) -> np.ndarray:
        first, n = int(self.index.start[i]), int(self.index.length[i])
        return self._f["timestamps"][first : first + n]

    def all_features(self) -> np.ndarray:
        """Every row in one read: (total_frames, D)."""
        return self._f["features"][...]

    def all_timestamps(self) -> np.ndarray:
        return self._f["timestamps"][...]

    def video(self, i: int) -> Video:
        ix = self.index
        return Video(
            id=ix.ids[i],
            features=self.features(i),
            timestamps=self.timestamps(i),
            label=ix.label_name(i),
            split=ix.split[i],
            group=ix.group[i],
            fps=float(ix.fps[i]),
            source_size=int(ix.source_size[i]),
            source_mtime_ns=int(ix.source_mtime_ns[i]),
        )

    def videos(self) -> Iterator[Video]:
        for i in range(len(self)):
            yield self.video(i)

    def records(self) -> dict[str, Stored]:
        """What the index says of each stored video's source (no feature is read)."""
        ix = self.index
        return {
            vid: Stored(
                int(ix.source_size[i]),
                int(ix.source_mtime_ns[i]),
                ix.label_name(i),
                ix.split[i],
                ix.group[i],
            )  # fmt: skip
            for i, vid in enumerate(ix.ids)
        }

    # -- checking ---------------------------------------------------------------------------
    def check_index(self) -> list[str]:
        """Problems of the index, found without reading a feature (milliseconds, even for a large
        cache): what stage two needs before it slices ``/features`` by the index. An empty list
        for a sound cache; the problems that name a video come first."""
        ix, problems = self.index, []
        n_rows = self.total_frames
        problems += [f"no /{name}" for name in ix.missing]
        sizes = {len(ix.start), len(ix.length), len(ix.label), len(ix.split), len(ix.group),
                 len(ix.fps)}  # fmt: skip
        if sizes != {len(ix.ids)}:
            return [*problems, "the /videos datasets differ in length"]
        if not len(ix.ids):
            return problems + self._check_whole(n_rows)
        if np.any(ix.start < 0):
            problems.append(f"{ix.ids[int(np.argmax(ix.start < 0))]}: negative start")
        if np.any(ix.length <= 0):
            problems.append(f"{ix.ids[int(np.argmax(ix.length <= 0))]}: no rows (length <= 0)")
        ends = ix.start + ix.length
        if int(ends.max()) > n_rows:
            i = int(np.argmax(ends > n_rows))
            problems.append(
                f"{ix.ids[i]}: rows {int(ix.start[i])}..{int(ends[i]) - 1} are past the end of "
                f"/features ({n_rows} rows)"
            )
        outside = (ix.label >= len(ix.classes)) | (ix.label < -1)
        if np.any(outside):
            i = int(np.argmax(outside))
            problems.append(
                f"{ix.ids[i]}: label {int(ix.label[i])} is outside /classes "
                f"({len(ix.classes)} classes)"
            )
        return problems + self._check_whole(n_rows)

    def _check_whole(self, n_rows: int) -> list[str]:
        """The index checks that concern the cache as a whole."""
        ix, problems = self.index, []
        if len(set(ix.ids)) != len(ix.ids):
            problems.append("duplicate video ids")
        if ix.ids != sorted(ix.ids):
            problems.append("videos are not sorted by id")
        expected_start = (
            np.concatenate([[0], np.cumsum(ix.length)[:-1]]) if len(ix.ids) else ix.start
        )
        if not np.array_equal(ix.start, expected_start):
            problems.append("/videos/start does not follow /videos/length")
        if int(ix.length.sum()) != n_rows:
            problems.append(
                f"lengths add up to {int(ix.length.sum())} rows, /features has {n_rows}"
            )
        if "timestamps" in self._f and self._f["timestamps"].shape != (n_rows,):
            problems.append("/timestamps and /features differ in length")
        if ix.classes != sorted(ix.classes):
            problems.append("/classes is not sorted")
        if set(ix.failed) & set(ix.ids):
            problems.append("an id is both stored and failed")
        if self.fingerprint != fingerprint(self.attrs):
            problems.append("the fingerprint does not match the root attributes")
        texts = {"videos/split": ix.split, "videos/group": ix.group}
        return problems + index_problems(self._f, ix.ids, ix.classes, texts)

    def ensure_index(self) -> None:
        """Raise :class:`CacheError` with one line naming the first problem of the index (see
        :meth:`check_index`); for commands that are about to slice the cache by its index."""
        problems = self.check_index()
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CacheError(
                f"{self.path}: {problems[0]}{more}; not a sound actrec cache "
                "(`actrec inspect --verify` lists the problems): re-extract or re-import it"
            )

    def verify(self, check_values: bool = True) -> list[str]:
        """Problems found (an empty list for a sound cache): the index checks of
        :meth:`check_index`, then, where the index is sound, every value."""
        problems = self.check_index()
        if check_values and not problems:
            problems += self._verify_values()
        return problems

    def _verify_values(self) -> list[str]:
        problems = []
        step = max(self.chunk_rows, 1) * 16
        for first in range(0, self.total_frames, step):
            block = self._f["features"][first : first + step]
            if not np.isfinite(block).all():
                problems.append(f"non-finite features in rows {first}..{first + len(block) - 1}")
                break
        ts = self.all_timestamps()
        for i, vid in enumerate(self.index.ids):
            s, n = int(self.index.start[i]), int(self.index.length[i])
            if n > 1 and np.any(np.diff(ts[s : s + n]) <= 0):
                problems.append(f"{vid}: timestamps are not increasing")
        return problems


def open_cache(path: str | os.PathLike) -> Cache:
    """Open a finished cache for reading: ``with open_cache(path) as c:``, or call ``c.close()``.

    A file that is not a readable cache is closed again before the error reaches the caller.
    """
    path = Path(path)
    if not path.is_file():
        hint = " (an extraction in progress: rerun the same command to finish it)"
        raise CacheError(f"{path}: no such cache" + (hint if partial_dir(path).exists() else ""))
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise CacheError(f"{path}: not a readable HDF5 cache ({e})") from None
    try:
        for name in ("features", "videos"):
            if name not in handle:
                raise CacheError(f"{path}: an HDF5 file but not an actrec cache (no /{name})")
        return Cache(path, handle)
    except BaseException:
        handle.close()
        raise


def _read_index(path: Path, handle: h5py.File) -> Index:
    """The index, tolerant of what other tools leave out: the datasets without which no row can
    be found are required (a one-line CacheError); the others get defaults (no label, no
    split, ...), and a missing /classes or /timestamps is reported by :meth:`Cache.check_index`."""
    features = handle["features"]
    if not isinstance(features, h5py.Dataset) or features.ndim != 2:
        raise CacheError(f"{path}: /features is not a 2-D dataset (frames x dimension)")
    missing: list[str] = []
    for name in ("videos/id", "videos/start", "videos/length"):
        if not isinstance(handle.get(name), h5py.Dataset):
            raise CacheError(f"{path}: no /{name}: the index of /features is missing")
    ids = _strings(handle["videos/id"])
    n = len(ids)

    def numbers(name: str, dtype: type, default: float) -> np.ndarray:
        if isinstance(handle.get(name), h5py.Dataset):
            data = handle[name]
            if data.dtype.kind not in "iuf" or (dtype is np.int64 and data.dtype.kind == "f"):
                wanted = "integers" if dtype is np.int64 else "numbers"
                raise CacheError(
                    f"{path}: /{name} holds {data.dtype}, not {wanted}; not a sound actrec cache: "
                    "re-extract or re-import it"
                )
            return data[...].astype(dtype).reshape(-1)
        return np.full(n, default, dtype=dtype)

    def strings(name: str) -> list[str]:
        if isinstance(handle.get(name), h5py.Dataset):
            return _strings(handle[name])
        if name == "classes":  # labels index into it: without it, no label can be read
            missing.append(name)
        return [""] * n if name.startswith("videos/") else []

    if not isinstance(handle.get("timestamps"), h5py.Dataset):
        missing.append("timestamps")
    failed_ids, failed_err = strings("failed/id"), strings("failed/error")
    return Index(
        ids=ids,
        start=numbers("videos/start", np.int64, 0),
        length=numbers("videos/length", np.int64, 0),
        label=numbers("videos/label", np.int64, -1),
        split=strings("videos/split"),
        group=strings("videos/group"),
        fps=numbers("videos/fps", np.float64, float("nan")),
        classes=strings("classes"),
        failed=dict(zip(failed_ids, failed_err, strict=False)),
        source_size=numbers("videos/source_size", np.int64, -1),
        source_mtime_ns=numbers("videos/source_mtime_ns", np.int64, -1),
        missing=missing,
    )


def _strings(dataset: h5py.Dataset) -> list[str]:
    values = dataset[...].reshape(-1)
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    except UnicodeDecodeError:
        raise CacheError(
            f"{dataset.file.filename}: {dataset.name} holds text that is not UTF-8; not a sound "
            "actrec cache: re-extract or re-import it"
        ) from None


# -- writing ------------------------------------------------------------------------------------


def write_cache(
    path: str | os.PathLike,
    videos: Iterable[Video],
    attrs: dict[str, Any],
    *,
    dim: int,
    dtype: str = "float16",
    classes: Sequence[str] | None = None,
    failed: dict[str, str] | None = None,
) -> Path:
    """Write a complete cache atomically (a temporary file, renamed into place when done).

    ``videos`` may be a generator, so that a cache larger than memory streams through; they
    must come sorted by id. ``classes`` defaults to the labels seen. ``attrs`` are the root
    attributes; ``format_version``, ``dtype``, ``created`` and ``fingerprint`` are filled in.
    A full disk, or a folder that cannot be written, is a :class:`CacheError` naming ``path``;
    either way nothing is left under ``path`` or the temporary name.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_hdf5(tmp, videos, attrs, dim=dim, dtype=dtype, classes=classes, failed=failed)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):  # where tmp could not even be made (a file in the way)
            tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and is_disk_full(e):
            raise CacheError(
                f"{path}: no space left on device; nothing was written there; free some space "
                "(or write elsewhere) and run the command again"
            ) from None
        if isinstance(e, OSError) and _about(e, tmp, path, path.parent):
            folder = path.parent
            why = f"{folder} is a file" if folder.exists() and not folder.is_dir() else _reason(e)
            raise CacheError(f"{path}: cannot write it ({why})") from None
        raise
    return path


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before its rename: next to it, so the rename is atomic; a
    shorter name where ``NAME.tmpPID`` would pass the file system's limit on a name."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    if len(tmp.name.encode()) > 255:
        digest = hashlib.sha256(path.name.encode()).hexdigest()[:16]
        tmp = path.with_name(f"{digest}.tmp{os.getpid()}")
    return tmp


def _about(error: OSError, *paths: Path) -> bool:
    """Whether an OSError is about one of ``paths`` (h5py quotes the name in its message)."""
    names = {str(p) for p in paths}
    return error.filename in names or any(n in str(error) for n in names)


def _reason(error: OSError) -> str:
    """The system's reason, without HDF5's time stamps and buffer addresses."""
    found = re.search(r"error message = '([^']+)'", str(error))
    if found:
        return found.group(1)
    return error.strerror or str(error).splitlines()[0]


def _write_hdf5(
    tmp: Path,
    videos: Iterable[Video],
    attrs: dict[str, Any],
    *,
    dim: int,
    dtype: str,
    classes: Sequence[str] | None,
    failed: dict[str, str] | None,
) -> None:
    failed = dict(failed or {})
    dtype_np = np.dtype(dtype)
    chunk_rows = max(1, min(4096, _CHUNK_BYTES // max(1, dim * dtype_np.itemsize)))
    if isinstance(videos, Sequence):
        # HDF5 gives every chunk its full size on disk: a segment of 64 frames in a chunk of
        # 1,024 would take 16 times its size, and an extraction's .partial folder with it
        chunk_rows = max(1, min(chunk_rows, sum(len(v.features) for v in videos)))
    chunk_bytes = chunk_rows * (dim * dtype_np.itemsize + 8)  # a chunk of features + of times
    rows: dict[str, list] = {
        k: [] for k in ("id", "length", "label", "split", "group", "fps", "size", "mtime")
    }
    index_bytes = 0  # what the index will take, written last
    with h5py.File(tmp, "w") as f:
        # blocks reserved ahead of every growth: a full disk fails here, in Python, while HDF5
        # can still close the file cleanly (see diskspace.py)
        space = Reservation(tmp)
        try:
            feats = f.create_dataset(
                "features", (0, dim), dtype=dtype_np, maxshape=(None, dim), chunks=(chunk_rows, dim)
            )
            times = f.create_dataset(
                "timestamps", (0,), dtype=np.float64, maxshape=(None,), chunks=(chunk_rows,)
            )
            n = 0
            previous = None
            for v in videos:
                if previous is not None and v.id <= previous:
                    raise ValueError(f"videos must come sorted by id: {v.id!r} after {previous!r}")
                previous = v.id
                # every array enters a cache here: extract, import, merge alike
                check_features(v.features, v.id, dtype=dtype_np, dim=dim)
                for what, text in (("id", v.id), ("label", v.label), ("split", v.split),
                                   ("group", v.group)):  # fmt: skip
                    check_text(text, f"{v.id[:80]!r}: its {what}" if what != "id" else "an id")
                t = len(v.features)
                index_bytes += 160 + 2 * len(v.id.encode()) + len(v.split) + len(v.group)
                space.grow(int(1.05 * -(-(n + t) // chunk_rows) * chunk_bytes) + index_bytes)
                feats.resize(n + t, axis=0)
                feats[n : n + t] = v.features.astype(dtype_np, copy=False)
                times.resize(n + t, axis=0)
                times[n : n + t] = v.timestamps
                n += t
                for key, value in (
                    ("id", v.id), ("length", t), ("label", v.label), ("split", v.split),
                    ("group", v.group), ("fps", v.fps), ("size", v.source_size),
                    ("mtime", v.source_mtime_ns),
                ):  # fmt: skip
                    rows[key].append(value)
                failed.pop(v.id, None)  # stored now: an earlier failure no longer stands
            index_bytes += sum(96 + len(k.encode()) + len(e.encode()) for k, e in failed.items())
            space.grow(int(1.05 * -(-n // chunk_rows) * chunk_bytes) + 2 * index_bytes)
            _write_index(f, rows, classes, failed)
            root = {**attrs, "format_version": FORMAT_VERSION, "dtype": str(dtype_np)}
            root.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            root["fingerprint"] = fingerprint(root)
            for k, v in root.items():
                f.attrs[k] = _attr_value(v)
        finally:
            space.close()
    space.release()


def _write_index(
    f: h5py.File, rows: dict[str, list], classes: Sequence[str] | None, failed: dict[str, str]
) -> None:
    names = sorted(set(classes if classes is not None else []) | {x for x in rows["label"] if x})
    lookup = {c: i for i, c in enumerate(names)}
    lengths = np.asarray(rows["length"], dtype=np.int64)
    g = f.create_group("videos")
    g.create_dataset("id", data=np.array(rows["id"], dtype=object), dtype=_STR)
    g.create_dataset(
        "start",
        data=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        if len(lengths)
        else lengths,
    )
    g.create_dataset("length", data=lengths)
    g.create_dataset(
        "label", data=np.array([lookup.get(x, -1) for x in rows["label"]], dtype=np.int64)
    )
    g.create_dataset("split", data=np.array(rows["split"], dtype=object), dtype=_STR)
    g.create_dataset("group", data=np.array(rows["group"], dtype=object), dtype=_STR)
    g.create_dataset("fps", data=np.asarray(rows["fps"], dtype=np.float64))
    g.create_dataset("source_size", data=np.asarray(rows["size"], dtype=np.int64))
    g.create_dataset("source_mtime_ns", data=np.asarray(rows["mtime"], dtype=np.int64))
    f.create_dataset("classes", data=np.array(names, dtype=object), dtype=_STR)
    fail_ids = sorted(failed)
    f.create_dataset("failed/id", data=np.array(fail_ids, dtype=object), dtype=_STR)
    f.create_dataset(
        "failed/error",
        data=np.array([failed[i] for i in fail_ids], dtype=object),
        dtype=_STR,
    )


def _attr_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


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


# -- an extraction in progress ------------------------------------------------------------------


def partial_dir(path: str | os.PathLike) -> Path:
    """Where the finished part of an unfinished extraction into ``path`` lives."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


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
            raise CacheError(f"{self.dir}: cannot create it ({_reason(e)})") from None
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
            _atomic_write_text(meta, json.dumps(body, indent=1))
        except OSError as e:
            self.release()
            if is_disk_full(e):
                raise CacheError(f"{meta}: no space left on device; free some space") from None
            raise CacheError(f"{meta}: cannot write it ({_reason(e)})") from None

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
    keys = [k for k in FINGERPRINT_KEYS if _plain(old.get(k)) != _plain(_jsonable(new.get(k)))]
    return (
        ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys)
        or "settings differ"
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_plain))


def _atomic_write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


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
