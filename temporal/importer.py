"""`actrec import`: sequences made elsewhere (.npy arrays of shape [T, D]) into a cache.

The source is a folder of class folders (``SOURCE/<class>/.../<item>.npy``, the id is the path
relative to SOURCE) or a CSV manifest with columns ``path,label[,split][,group]`` (paths relative
to the manifest's folder). Items stream through one at a time, so the cache may exceed memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actrec.common.cache import Video, write_cache
from actrec.common.errors import ActrecError
from actrec.common.manifest import read_manifest


@dataclass
class _Item:
    id: str
    file: Path
    label: str
    split: str = ""
    group: str = ""


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


def _load(item: _Item, dim: int | None) -> np.ndarray:
    if not item.file.is_file():
        raise ActrecError(f"{item.file}: no such file (listed as {item.id})")
    try:
        x = np.load(item.file, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ActrecError(f"{item.file}: not a readable .npy array ({e})") from None
    if x.ndim != 2 or len(x) == 0:
        raise ActrecError(
            f"{item.file}: expected an array of shape [T, D] with T >= 1, got {x.shape}"
        )
    if dim is not None and x.shape[1] != dim:
        raise ActrecError(f"{item.file}: dimension {x.shape[1]}, but the first item has {dim}")
    if not np.issubdtype(x.dtype, np.number):
        raise ActrecError(f"{item.file}: dtype {x.dtype} is not numeric")
    return x


def import_sequences(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    fps: float | None = None,
    dtype: str | None = None,
    force: bool = False,
) -> Path:
    """Write the cache ``output`` from the .npy sequences of ``source``; returns its path.

    Timestamps are ``t / fps`` seconds (frame numbers where no ``fps`` is given). ``dtype``
    defaults to float16 when every array is float16, else float32, so values round-trip.
    """
    source, output = Path(source), Path(output)
    if output.exists() and not force:
        raise ActrecError(f"{output} exists: pass --force to overwrite it")
    if source.is_dir():
        items = _from_folder(source)
    elif source.is_file() and source.suffix.lower() == ".csv":
        items = _from_manifest(source)
    else:
        raise ActrecError(f"{source}: give a folder of class folders or a .csv manifest")
    items.sort(key=lambda it: it.id)
    for a, b in zip(items, items[1:], strict=False):
        if a.id == b.id:
            raise ActrecError(f"{source}: {a.id} is listed twice")
    first = _load(items[0], None)
    dim = first.shape[1]
    if dtype is None:
        # headers only: np.load with mmap reads no data
        all16 = all(np.load(it.file, mmap_mode="r").dtype == np.float16 for it in items)
        dtype = "float16" if all16 else "float32"

    def videos() -> Iterator[Video]:
        for it in items:
            x = _load(it, dim)
            t = np.arange(len(x), dtype=np.float64)
            yield Video(
                id=it.id, features=x, timestamps=t / fps if fps else t, label=it.label,
                split=it.split, group=it.group, fps=float(fps) if fps else float("nan"),
            )  # fmt: skip

    attrs = {
        "backbone": "import", "weights": "none", "source": str(source.resolve()),
        "sampling": "as given", "fps": float(fps) if fps else "as given",
    }  # fmt: skip
    return write_cache(output, videos(), attrs, dim=dim, dtype=dtype)
