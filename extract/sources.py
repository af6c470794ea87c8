"""Finding the items of a source: class folders of videos, class folders of frame folders, or a
CSV manifest. An item's id is its path relative to the source, so ids never collide across
classes, and items always come sorted by id, so that shards and resumed runs agree on the order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from actrec.common.errors import ActrecError
from actrec.common.manifest import read_manifest
from actrec.common.ownership import is_actrec_output

# Files with other extensions inside class folders are ignored (notes, thumbnails, .DS_Store);
# a file with one of these that is not really a video is recorded as failed, not skipped.
VIDEO_EXTENSIONS = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".mpg",
        ".mpeg",
        ".mts",
        ".m2ts",
        ".ts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".gif",
    ]
)
IMAGE_EXTENSIONS = frozenset([".jpg", ".jpeg", ".png", ".bmp"])


@dataclass(frozen=True)
class Item:
    """One video (a file) or one frame folder, with what the source says about it."""

    id: str  # path relative to the source, with forward slashes
    path: Path
    kind: str  # "video" or "frames"
    label: str = ""
    split: str = ""
    group: str = ""


def find_items(source: str | Path) -> list[Item]:
    """The items of ``source`` (a folder of class folders, or a ``.csv`` manifest), sorted by id."""
    source = Path(source)
    if not source.exists():
        raise ActrecError(f"{source}: no such file or folder; pass a folder of videos or a CSV")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise ActrecError(
                f"{source}: a file, but not a .csv manifest; pass a folder of class folders "
                "or a CSV with columns path,label[,split][,group]"
            )
        items = _from_manifest(source)
    else:
        items = _from_folders(source)
    if not items:
        raise ActrecError(
            f"{source}: no videos or frame folders found (expected SOURCE/<class>/<video> with "
            f"one of {', '.join(sorted(VIDEO_EXTENSIONS))}, or SOURCE/<class>/<video>/<frames>)"
        )
    items.sort(key=lambda it: it.id)
    return items


def frame_files(folder: Path) -> list[Path]:
    """The images of a frame folder, in name order (000001.jpg, 000002.jpg, ...)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def source_stat(item: Item) -> tuple[int, int]:
    """(size, modification time in ns) of an item's source, which a rerun compares with what
    the cache recorded: a video file's size in bytes; a frame folder's number of entries, and
    its own time, which changes when a frame is added, removed or renamed (a frame rewritten
    in place under its old name is not seen). (-1, -1) where the source is not there."""
    try:
        st = item.path.stat()
        if item.kind == "frames":
            with os.scandir(item.path) as entries:
                return sum(1 for _ in entries), st.st_mtime_ns
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def shard(items: list[Item], k: int, n: int) -> list[Item]:
    """Shard ``k`` of ``n``: every n-th item of the sorted list, starting at the k-th."""
    return [it for i, it in enumerate(items) if i % n == k]


def _hidden(path: Path) -> bool:
    # actrec's own outputs (a run, predictions, an unfinished .partial) are never inputs
    return path.name.startswith(".") or is_actrec_output(path)


def _from_folders(root: Path) -> list[Item]:
    items = []
    for entry in sorted(root.iterdir()):
        if _hidden(entry):
            continue
        if entry.is_file():  # a video straight in SOURCE: no class
            if entry.suffix.lower() in VIDEO_EXTENSIONS:
                items.append(Item(entry.name, entry, "video"))
            continue
        label = entry.name
        for path in sorted(entry.iterdir()):
            if _hidden(path):
                continue
            item = _item(root, path, label)
            if item is not None:
                items.append(item)
    return items


def _item(root: Path, path: Path, label: str, split: str = "", group: str = "") -> Item | None:
    vid = path.relative_to(root).as_posix()
    if path.is_dir():
        # a frame folder, even an empty one: that is a failed item, not an ignored one
        return Item(vid, path, "frames", label, split, group)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return Item(vid, path, "video", label, split, group)
    return None


def _from_manifest(csv_path: Path) -> list[Item]:
    root = csv_path.parent.resolve()
    items, seen = [], set()
    for row in read_manifest(csv_path):
        if not row.path:
            continue
        try:
            vid = row.file.relative_to(root).as_posix()
        except ValueError:
            vid = row.path  # outside the CSV's folder: keep it as written
        if vid in seen:
            raise ActrecError(f"{csv_path}:{row.line}: {row.path} is listed twice")
        seen.add(vid)
        kind = "frames" if row.file.is_dir() else "video"
        items.append(Item(vid, row.file, kind, row.label, row.split, row.group))
    return items
