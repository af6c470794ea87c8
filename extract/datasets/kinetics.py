"""Kinetics-400/600/700: annotation CSVs ``label,youtube_id,time_start,time_end,split`` (an
``is_cc`` column may follow; the test CSVs of some releases have no label), and files named
``<youtube_id>_<start:06d>_<end:06d>.mp4`` anywhere under ROOT (``ROOT/<split>/``, class
folders, or one flat folder). Clips whose YouTube video is gone are missing, as expected; the
YouTube id is the group.
"""

from __future__ import annotations

import csv
from pathlib import Path

from actrec.common.errors import ActrecError
from actrec.extract.datasets.base import (
    DatasetManifest,
    Entry,
    ManifestOptions,
    find_annotations,
    match,
    video_files,
)
from actrec.extract.datasets.registry import register_dataset

HEADER = "label,youtube_id,time_start,time_end,split"
_SPLITS = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


@register_dataset("kinetics")
def kinetics(root: Path, annotations: Path | None, options: ManifestOptions) -> DatasetManifest:
    where = find_annotations(
        annotations,
        [root / "annotations", root.parent / "annotations", root],  # root: CSVs beside the videos
        "Kinetics' CSV folder",
    )
    csvs = sorted(where.glob("*.csv")) if where.is_dir() else [where]
    if not csvs:
        raise ActrecError(f"{where}: no .csv files; pass Kinetics' annotation CSVs ({HEADER})")
    result = DatasetManifest("kinetics", root, csvs)
    named: dict[str, Entry] = {}
    unlabelled: set[str] = set()  # on disk on purpose, so not extra
    for path in csvs:
        for key, entry in _read_csv(path, result, unlabelled):
            if key in named:  # the same clip twice: keep the first, say so
                result.left_out["listed twice"] += 1
                continue
            named[key] = entry
    on_disk = {f.stem.lower(): f for f in video_files(root)}
    match(result, {k: f for k, f in on_disk.items() if k not in unlabelled}, named)
    return result


def clip_name(youtube_id: str, start: float, end: float) -> str:
    """The file stem the download scripts write: ``<id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def _read_csv(path: Path, result: DatasetManifest, unlabelled: set[str]) -> list[tuple[str, Entry]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not {"youtube_id", "time_start", "time_end"} <= set(columns):
            raise ActrecError(
                f"{path}: not a Kinetics annotation CSV: the header is {','.join(columns)!r}, "
                f"expected {HEADER}"
            )
        out = []
        for n, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            split = _SPLITS.get(row.get("split", "").lower() or _split_of(path))
            try:
                start, end = float(row["time_start"]), float(row["time_end"])
            except ValueError:
                raise ActrecError(
                    f"{path}:{n}: time_start and time_end must be seconds, got "
                    f"{row['time_start']!r}, {row['time_end']!r}"
                ) from None
            if split is None:
                raise ActrecError(
                    f"{path}:{n}: split {row.get('split')!r} is not train, val(idate) or test"
                )
            name = clip_name(row["youtube_id"], start, end)
            if not row.get("label"):
                # the test labels of some releases are not public: nothing to train or score
                result.left_out[f"no label ({split})"] += 1
                unlabelled.add(name.lower())
                continue
            out.append((name.lower(), Entry(Path(name), row["label"], split, row["youtube_id"])))
    return out


def _split_of(path: Path) -> str:
    # a CSV without a split column is named after its split: train.csv, validate.csv, test.csv
    return path.stem.lower().rsplit("_", 1)[-1]
