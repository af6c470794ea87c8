"""UCF101: ``<Class>/v_<Class>_gXX_cYY.avi`` and the ``ucfTrainTestlist`` folder.

``classInd.txt`` holds ``<index> <Class>``; ``trainlist0N.txt`` holds ``<Class>/<clip>.avi
<index>``; ``testlist0N.txt`` holds ``<Class>/<clip>.avi``. ``gXX`` is the source video: the
clips ``_c01``, ``_c02``, ... of one group are cut from it, so the group keeps them together.
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

ANNOTATIONS = "ucfTrainTestlist"
_CLIP = re.compile(r"^v_(\w+?)_g(\d+)_c(\d+)\.avi$", re.IGNORECASE)


@register_dataset("ucf101", options=("fold",))
def ucf101(root: Path, annotations: Path | None, options: ManifestOptions) -> DatasetManifest:
    folder = find_annotations(
        annotations, [root / ANNOTATIONS, root.parent / ANNOTATIONS], f"UCF101's {ANNOTATIONS}/"
    )
    if folder.is_file():  # any one of its files names the folder
        folder = folder.parent
    n = options.fold
    class_file = folder / "classInd.txt"
    lists = {"train": folder / f"trainlist{n:02d}.txt", "test": folder / f"testlist{n:02d}.txt"}
    for path in [class_file, *lists.values()]:
        if not path.is_file():
            raise ActrecError(
                f"{path}: not found; --annotations must be UCF101's {ANNOTATIONS} folder "
                f"(classInd.txt, trainlist0{n}.txt, testlist0{n}.txt)"
            )
    classes = _read_classes(class_file)
    named: dict[str, Entry] = {}
    for split, path in lists.items():
        for key, entry in _read_list(path, split, classes).items():
            if key in named:
                raise ActrecError(
                    f"{path}: {entry.file} is also in the {named[key].split} list; "
                    f"trainlist0{n}.txt and testlist0{n}.txt must not share clips"
                )
            named[key] = entry
    result = DatasetManifest("ucf101", root, [class_file, *lists.values()])
    match(result, index_by_tail(video_files(root, skip=[folder])), named)
    return result


def _read_classes(path: Path) -> dict[str, str]:
    """Index (as written, "1".."101") -> class name."""
    classes = {}
    for n, line in read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ActrecError(
                f"{path}:{n}: expected '<index> <Class>' as in UCF101's classInd.txt, got {line!r}"
            )
        classes[str(int(parts[0]))] = parts[1]
    if not classes:
        raise ActrecError(f"{path}: empty; expected UCF101's classInd.txt ('1 ApplyEyeMakeup')")
    return classes


def _read_list(path: Path, split: str, classes: dict[str, str]) -> dict[str, Entry]:
    """tail key -> entry (``file`` holds the name as listed) of a train or test list."""
    by_name = {c.lower(): c for c in classes.values()}
    # the train lists carry the class index, the test lists do not
    expected = "'<Class>/<clip>.avi <index>'" if split == "train" else "'<Class>/<clip>.avi'"
    entries = {}
    for n, line in read_lines(path):
        parts = line.split()
        clip = _CLIP.match(parts[0].rsplit("/", 1)[-1])
        folder = parts[0].rsplit("/", 1)[0] if "/" in parts[0] else ""
        bad_index = split == "train" and len(parts) == 2 and not parts[1].isdigit()
        if len(parts) != (2 if split == "train" else 1) or bad_index or not clip or not folder:
            raise ActrecError(
                f"{path}:{n}: expected {expected} as in UCF101's {path.name[:-6]}NN.txt, "
                f"got {line!r}"
            )
        label = by_name.get(folder.lower())
        if label is None:
            raise ActrecError(f"{path}:{n}: class {folder!r} is not in classInd.txt")
        if split == "train" and classes.get(str(int(parts[1]))) != label:
            raise ActrecError(
                f"{path}:{n}: index {parts[1]} is {classes.get(str(int(parts[1])))!r} in "
                f"classInd.txt, not {label!r}"
            )
        group = f"{label}_g{int(clip.group(2)):02d}"
        entries[parts[0].lower()] = Entry(Path(parts[0]), label, split, group)
    return entries
