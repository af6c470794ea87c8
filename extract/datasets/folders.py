"""Class folders, as `actrec extract` reads them, with a seeded split made here: stratified by
class, and by whole groups when ``--group-regex`` says what a clip's source is."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

from actrec.common.errors import ActrecError
from actrec.extract.datasets.base import DatasetManifest, Entry, ManifestOptions
from actrec.extract.datasets.registry import register_dataset
from actrec.extract.sources import Item, find_items


@register_dataset("folders", options=("val", "test", "seed", "group_regex"))
def folders(root: Path, annotations: Path | None, options: ManifestOptions) -> DatasetManifest:
    if annotations is not None:
        raise ActrecError("folders: the class folders are the annotations; drop --annotations")
    if not (0 <= options.val < 1 and 0 <= options.test < 1 and options.val + options.test < 0.9):
        # as `train --val-fraction/--test-fraction`: a tenth at least is left to train on
        raise ActrecError(
            f"--val {options.val:g} --test {options.test:g}: each in [0, 1), together under 0.9 "
            "(leave at least a tenth of the clips to train on)"
        )
    try:
        pattern = re.compile(options.group_regex) if options.group_regex else None
    except re.error as e:
        raise ActrecError(f"--group-regex {options.group_regex!r}: {e}") from None
    result = DatasetManifest("folders", root, [])
    found = find_items(root)
    items = [it for it in found if it.label]
    # a video straight in ROOT has no class folder: not in the manifest, listed as extra
    result.extra.extend(it.path for it in found if not it.label)
    groups: dict[str, str] = {}  # item id -> group
    for it in items:
        hit = pattern.search(it.id) if pattern else None
        if hit:
            groups[it.id] = hit.group(1) if pattern.groups else hit.group(0)
        else:
            groups[it.id] = ""
    unmatched = sum(not g for g in groups.values())
    if pattern and unmatched:
        result.notes.append(
            f"--group-regex matched no group in {unmatched:,} paths: each is its own"
        )
    split_of = _split_groups(items, groups, options)
    for it in items:
        split = split_of[groups[it.id] or f"\0{it.id}"]
        result.entries.append(Entry(it.path, it.label, split, groups[it.id]))
    return result


def _split_groups(
    items: list[Item], groups: dict[str, str], options: ManifestOptions
) -> dict[str, str]:
    """Group key -> split. Per class, its groups in seeded order fill test, then val, then
    train; a group spanning classes goes where its first class puts it."""
    by_class: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for it in items:
        by_class[it.label][groups[it.id] or f"\0{it.id}"] += 1
    rng = random.Random(options.seed)
    split_of: dict[str, str] = {}
    for label in sorted(by_class):
        sizes = by_class[label]
        keys = sorted(k for k in sizes if k not in split_of)
        rng.shuffle(keys)
        total = sum(sizes.values())
        want = {"test": options.test * total, "val": options.val * total}
        held = {"test": 0, "val": 0}
        for key in keys:
            # into the first held-out split still short of its share (rounded to the nearest)
            split = next((s for s in ("test", "val") if held[s] + sizes[key] / 2 <= want[s]),
                         "train")  # fmt: skip
            if split != "train":
                held[split] += sizes[key]
            split_of[key] = split
    return split_of
