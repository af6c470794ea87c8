"""`actrec import`: sequences made elsewhere into a cache.

Sources: a folder of class folders of .npy arrays [T, D] (``SOURCE/<class>/.../<item>.npy``, the
id is the path relative to SOURCE); a CSV manifest with columns ``path,label[,split][,group]``
(paths relative to the manifest's folder); or UCR/UEA `.ts` files (``NAME_TRAIN.ts NAME_TEST.ts``,
the split from the file names, see :mod:`actrec.temporal.ts_format`). .npy items stream through
one at a time, so the cache may exceed memory. Non-finite values are refused, naming the item.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actrec.common.cache import Video, write_cache
from actrec.common.errors import ActrecError
from actrec.common.manifest import read_manifest
from actrec.common.ownership import check_cache_output
from actrec.common.paths import check_outputs, distinct_inputs
from actrec.common.validate import check_features, check_names
from actrec.temporal.ts_format import read_ts


@dataclass
class _Item:
    id: str
    label: str
    split: str = ""
    group: str = ""
    file: Path | None = None  # an .npy file, loaded when its turn comes
    array: np.ndarray | None = None  # or the values themselves (.ts series), (T, D)


def _from_folder(source: Path) -> list[_Item]:
    items = [
        _Item(id=p.relative_to(source).as_posix(), file=p, label=p.relative_to(source).parts[0])
        for p in source.rglob("*.npy")
        if len(p.relative_to(source).parts) >= 2
    ]
    if not items:
        raise ActrecError(f"{source}: no .npy files in class folders (SOURCE/<class>/<item>.npy)")
    return items


def _from_manifest(manifest: Path) -> list[_Item]:
    items = []
    for row in read_manifest(manifest):
        if not row.path:
            raise ActrecError(f"{manifest}, line {row.line}: empty path")
        items.append(_Item(id=row.path, file=row.file, label=row.label, split=row.split,
                           group=row.group))  # fmt: skip
    if not items:
        raise ActrecError(f"{manifest}: the manifest lists no items")
    return items


def _from_ts(files: Sequence[Path]) -> list[_Item]:
    stems = [f.stem for f in files]
    if len(set(stems)) < len(stems):
        raise ActrecError(f"{files[0]}: two .ts files share the name {stems[0]!r}; rename one")
    return [
        _Item(id=s.id, label=s.label, split=s.split, array=s.values)
        for f in files
        for s in read_ts(f)
    ]


def _collect(sources: Sequence[Path]) -> list[_Item]:
    ts = [s for s in sources if s.suffix.lower() == ".ts"]
    if ts:
        if len(ts) < len(sources):
            raise ActrecError("give either .ts files, or one folder or .csv manifest, not both")
        for f in ts:
            if not f.is_file():
                raise ActrecError(f"{f}: no such file")
        return _from_ts(ts)
    if len(sources) > 1:
        raise ActrecError("several sources are only for .ts files; give one folder or manifest")
    source = sources[0]
    if source.is_dir():
        return _from_folder(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _from_manifest(source)
    raise ActrecError(f"{source}: give a folder of class folders, a .csv manifest or .ts files")


def _load(item: _Item, dim: int | None, dtype: str | None = None) -> np.ndarray:
    x = item.array if item.array is not None else _load_npy(item)
    what = str(item.file or item.id)
    if dim is not None and x.ndim == 2 and x.shape[1] != dim and min(x.shape) >= 1:
        raise ActrecError(f"{what}: dimension {x.shape[1]}, but the first item has {dim}")
    return check_features(x, what, dtype=dtype)


def _load_npy(item: _Item) -> np.ndarray:
    assert item.file is not None
    if not item.file.is_file():
        raise ActrecError(f"{item.file}: no such file (listed as {item.id})")
    try:
        x = np.load(item.file, allow_pickle=False)
    except EOFError:  # an empty or cut-short file: click would call it a Ctrl-C ("Aborted!")
        raise ActrecError(f"{item.file}: not a readable .npy array (empty, or cut short)") from None
    except (OSError, ValueError) as e:
        raise ActrecError(f"{item.file}: not a readable .npy array ({e})") from None
    if not isinstance(x, np.ndarray):  # an .npz archive renamed .npy loads as a mapping
        raise ActrecError(f"{item.file}: an .npz archive, not one .npy array; save one array")
    return x


def _stored_dtype(items: list[_Item], dtype: str | None) -> str:
    if dtype is not None:
        return dtype
    return "float16" if all(_dtype_of(it) == np.float16 for it in items) else "float32"


def _dtype_of(item: _Item) -> np.dtype:
    if item.array is not None:
        return item.array.dtype
    assert item.file is not None
    try:  # the header only: np.load with mmap reads no data
        return np.load(item.file, mmap_mode="r", allow_pickle=False).dtype
    except (OSError, ValueError, EOFError):
        return _load_npy(item).dtype  # which names the problem, or reads what mmap could not


def import_sequences(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    fps: float | None = None,
    dtype: str | None = None,
    force: bool = False,
) -> Path:
    """Write the cache ``output`` from the sequences of ``sources``; returns its path.

    ``sources`` is one folder of class folders of .npy arrays, one CSV manifest, or any number
    of `.ts` files. Timestamps are ``t / fps`` seconds (step numbers where no ``fps`` is
    given). ``dtype`` defaults to float16 when every array is float16, else float32, so values
    round-trip.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources, output = [Path(s) for s in sources], Path(output)
    if not sources:
        raise ActrecError("no source given: pass a folder, a .csv manifest or .ts files")
    distinct_inputs(sources, "SOURCES")
    check_outputs([("SOURCES", s) for s in sources], [("-o", output)])
    if output.is_dir():
        raise ActrecError(f"{output} is a folder: give a file name for the cache")
    check_cache_output(output, force)  # over an actrec cache only, and only with --force
    items = _collect(sources)
    check_names(items, str(sources[0]))  # what HDF5 cannot hold, before any item is read
    items.sort(key=lambda it: it.id)
    for a, b in zip(items, items[1:], strict=False):
        if a.id == b.id:
            raise ActrecError(f"{a.file or a.id} is listed twice")
    check_outputs([(str(it.id), it.file) for it in items if it.file], [("-o", output)])
    first = _load(items[0], None)
    dim = first.shape[1]
    dtype = _stored_dtype(items, dtype)

    def videos() -> Iterator[Video]:
        for it in items:
            x = _load(it, dim, dtype)
            t = np.arange(len(x), dtype=np.float64)
            yield Video(
                id=it.id, features=x, timestamps=t / fps if fps else t, label=it.label,
                split=it.split, group=it.group, fps=float(fps) if fps else float("nan"),
            )  # fmt: skip

    where = sources[0] if len(sources) == 1 else sources[0].parent
    attrs = {
        "backbone": "import", "weights": "none", "source": str(where.resolve()),
        "sampling": "as given", "fps": float(fps) if fps else "as given",
    }  # fmt: skip
    return write_cache(output, videos(), attrs, dim=dim, dtype=dtype)
