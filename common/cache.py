"""The HDF5 feature cache: the one module that spells its paths (see docs/design.md, "The cache").

Ragged layout: every stored frame of every video is one row of ``/features``; ``/videos/*`` says
where each video's rows are. Videos are always stored sorted by id, so a cache depends only on
what was extracted, never on the order or the number of processes that extracted it.

Writing is crash-safe by construction: a cache file is written under a temporary name and renamed
into place when complete, and an extraction in progress keeps its finished videos in a
:class:`~actrec.common.partial.PartialCache` folder of segment files (partial.py), each also renamed into place when complete.
HDF5 itself is not safe against ``kill -9`` in the middle of a write, so nothing ever writes into
a file that is already visible under its final name. Nor does it survive a full disk: disk space
is reserved ahead of every write (diskspace.py), so that a full disk is a CacheError naming the
file, and the temporary file is removed.

Readers check the index before they trust it (:meth:`Cache.check_index`, milliseconds): caches
edited by other tools may lack ``/classes`` or hold rows the index points past.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from actrec.common.diskspace import Reservation, is_disk_full
from actrec.common.errors import CacheError
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
    relevant = {k: plain_value(attrs[k]) for k in FINGERPRINT_KEYS if k in attrs}
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plain_value(value: Any) -> Any:
    """JSON-comparable form of an attribute value (h5py returns numpy types and arrays)."""
    if isinstance(value, np.ndarray):
        return [plain_value(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
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
        self.attrs: dict[str, Any] = {k: plain_value(v) for k, v in handle.attrs.items()}
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
            why = (
                f"{folder} is a file"
                if folder.exists() and not folder.is_dir()
                else os_error_reason(e)
            )
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


def os_error_reason(error: OSError) -> str:
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


# -- an extraction in progress ------------------------------------------------------------------


def partial_dir(path: str | os.PathLike) -> Path:
    """Where the finished part of an unfinished extraction into ``path`` lives."""
    path = Path(path)
    return path.with_name(path.name + ".partial")
