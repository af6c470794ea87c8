"""HMDB51: ``<class>/<clip>.avi`` and the ``testTrainMulti_7030_splits`` folder.

Each ``<class>_test_splitN.txt`` lists every clip of one class with ``1`` (train), ``2`` (test)
or ``0`` (not used in split N). A clip's name is its source film followed by its metadata,
``<film>_<action>_<body>_<camera>_<people>_<view>_<quality>_<n>.avi``, so the film is the group:
the official splits keep a film's clips on one side, and the carved validation set must too.
"""

from __future__ import annotations

import re
from pathlib import Path

from actrec.common.errors import ActrecError
from actrec.extract.datasets.base import (
    DatasetManifest,
    Entry,
    ManifestOptions,
    find_annotations,
    index_by_tail,
    match,
    read_lines,
    video_files,
)
from actrec.extract.datasets.registry import register_dataset

ANNOTATIONS = "testTrainMulti_7030_splits"
SPLITS = {"1": "train", "2": "test"}  # "0": left out of this fold
_SPLIT_FILE = re.compile(r"^(.+)_test_split([123])\.txt$")
# the metadata after the action: visible body parts (f, h, u, l), camera motion (cm, nm),
# number of people (np1..), viewpoint (fr, ba, le, ri), quality (goo, med, bad), clip number
_META = r"_[fhul]_(?:cm|nm)_np\d+_(?:fr|ba|le|ri)_(?:goo|med|bad)_\d+$"


@register_dataset("hmdb51", options=("fold",))
def hmdb51(root: Path, annotations: Path | None, options: ManifestOptions) -> DatasetManifest:
    folder = find_annotations(
        annotations, [root / ANNOTATIONS, root.parent / ANNOTATIONS], f"HMDB51's {ANNOTATIONS}/"
    )
    if folder.is_file():
        folder = folder.parent
    files = sorted(
        (m.group(1), p)
        for p in folder.iterdir()
        if (m := _SPLIT_FILE.match(p.name)) and m.group(2) == str(options.fold)
    )
    if not files:
        raise ActrecError(
            f"{folder}: no <class>_test_split{options.fold}.txt files; --annotations must be "
            f"HMDB51's {ANNOTATIONS} folder"
        )
    named: dict[str, Entry] = {}
    unused: set[str] = set()  # marked 0: on disk on purpose, so not extra
    result = DatasetManifest("hmdb51", root, [p for _, p in files])
    for label, path in files:
        for n, line in read_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2") or "/" in parts[0]:
                raise ActrecError(
                    f"{path}:{n}: expected '<clip>.avi 0|1|2' as in HMDB51's split files, "
                    f"got {line!r}"
                )
            key = f"{label}/{parts[0]}".lower()
            if parts[1] == "0":
                result.left_out[f"marked 0 (not in split {options.fold})"] += 1
                unused.add(key)
                continue
            if key in named:
                raise ActrecError(f"{path}:{n}: {parts[0]} is listed twice")
            # the official splits keep a film's clips on one side within a class; across
            # classes a film may be on both, so the group is the film within its class
            group = f"{label}/{film(parts[0], label)}"
            named[key] = Entry(Path(label, parts[0]), label, SPLITS[parts[1]], group)
    on_disk = index_by_tail(video_files(root, skip=[folder]))
    match(result, {k: f for k, f in on_disk.items() if k not in unused}, named)
    return result


def film(clip: str, label: str) -> str:
    """The source film of a clip name; the clip's own stem where the name does not parse."""
    stem = clip.rsplit(".", 1)[0]
    for pattern in (rf"_{re.escape(label)}{_META}", rf"_[a-z_]+?{_META}"):
        found = re.search(pattern, stem)
        if found and found.start() > 0:
            return stem[: found.start()]
    return stem
