"""What every dataset recipe returns, and what is done with it: the manifest CSV, the list of
missing and extra files, and the per-split summary.

A recipe reads a dataset's official annotation files and matches them against the files on
disk. Nothing is dropped silently: a clip the annotations name but the disk lacks is *missing*,
a video on disk that no annotation names is *extra*, and a clip the annotations deliberately
keep out of the fold (HMDB51's ``0``, Kinetics' unlabelled test rows) is counted as *left out*.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from actrec.common.atomic import replacing
from actrec.common.errors import ActrecError
from actrec.common.ownership import MANIFEST, MISSING, is_actrec_output
from actrec.extract.sources import VIDEO_EXTENSIONS

SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class Entry:
    """One clip of the manifest: a file on disk and what the annotations say about it."""

    file: Path
    label: str
    split: str  # train, val or test
    group: str  # clips of one source share it, so that no source straddles a split


@dataclass
class DatasetManifest:
    """A recipe's result: the clips found, and an account of everything else."""

    dataset: str
    root: Path
    annotations: list[Path]  # the files read
    entries: list[Entry] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # as the annotations name them
    extra: list[Path] = field(default_factory=list)  # on disk, in no annotation
    left_out: Counter = field(default_factory=Counter)  # reason -> clips kept out on purpose
    notes: list[str] = field(default_factory=list)  # anything else the summary should say


@dataclass(frozen=True)
class ManifestOptions:
    """The recipe options of `actrec manifest`; each recipe reads only those it declares."""

    fold: int = 1  # ucf101, hmdb51: the official split 1, 2 or 3
    val: float = 0.15  # folders: fraction held out for validation
    test: float = 0.15  # folders: fraction held out for test
    seed: int = 0  # folders: the split's seed
    group_regex: str | None = None  # folders: the group is this regex's first group (or match)


def video_files(root: Path, skip: Iterable[Path] = ()) -> Iterator[Path]:
    """Every video file under ``root``, hidden files and folders and ``skip`` folders aside."""
    skip_set = {p.resolve() for p in skip}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        # prune in place, so that os.walk never enters them
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and (here / d).resolve() not in skip_set
            and not is_actrec_output(here / d)  # a run, predictions: never a dataset's videos
        )
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                yield here / name


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines; the official lists have CRLF endings."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise ActrecError(f"{path}: cannot be read ({e.strerror})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def find_annotations(given: Path | None, candidates: list[Path], what: str) -> Path:
    """``given``, or the first of ``candidates`` that exists; else one line naming them."""
    if given is not None:
        return given
    for path in candidates:
        if path.exists():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ActrecError(f"{what} not found (looked for {tried}); pass --annotations PATH")


def write_manifest(result: DatasetManifest, output: Path) -> None:
    """``path,label,split,group``, paths relative to the manifest's folder, sorted by path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    base = output.parent.resolve()
    rows = sorted(
        (Path(os.path.relpath(e.file.resolve(), base)).as_posix(), e.label, e.split, e.group)
        for e in result.entries
    )
    # replaces only a manifest actrec wrote (ownership.py): never an official list, or a video
    with replacing(output, MANIFEST) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "label", "split", "group"])
        writer.writerows(rows)


def write_missing(result: DatasetManifest, path: Path) -> None:
    """One line per file: ``missing<TAB>name`` (named, not on disk), ``extra<TAB>path`` (on
    disk, in no annotation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, MISSING) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for name in sorted(result.missing):
            fh.write(f"missing\t{name}\n")
        for file in sorted(result.extra):
            fh.write(f"extra\t{file}\n")


def summary(result: DatasetManifest) -> str:
    """The per-split table (videos, classes, groups), then what was not put in the manifest."""
    splits = [s for s in SPLIT_ORDER if any(e.split == s for e in result.entries)]
    lines = [f"{'split':<8}{'videos':>9}{'classes':>9}{'groups':>9}"]
    for name in [*splits, "all"]:
        chosen = [e for e in result.entries if name in ("all", e.split)]
        lines.append(
            f"{name:<8}{len(chosen):>9,}{len({e.label for e in chosen}):>9,}"
            f"{len({e.group or str(e.file) for e in chosen}):>9,}"
        )
    lines.append(f"missing (named in the annotations, not on disk): {len(result.missing):,}")
    lines.append(f"extra (on disk, in no annotation): {len(result.extra):,}")
    for reason, n in sorted(result.left_out.items()):
        lines.append(f"left out, {reason}: {n:,}")
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


def index_by_tail(files: Iterable[Path]) -> dict[str, Path]:
    """Files by ``<folder>/<name>``, lower-cased: the lists name clips that way, whatever lies
    above the class folders, and not always in the disk's case (UCF101's ``HandstandPushups``
    folder holds ``v_HandStandPushups_*`` clips)."""
    return {f"{f.parent.name}/{f.name}".lower(): f for f in files}


def match(result: DatasetManifest, on_disk: dict[str, Path], named: dict[str, Entry]) -> None:
    """Fill ``result`` from the clips the annotations name (key -> entry with a placeholder
    file) and the files on disk (same keys): found, missing, extra."""
    for key, entry in named.items():
        file = on_disk.get(key)
        if file is None:
            result.missing.append(str(entry.file))
        else:
            result.entries.append(Entry(file, entry.label, entry.split, entry.group))
    result.extra.extend(f for key, f in on_disk.items() if key not in named)
