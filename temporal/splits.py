"""How labelled sequences are divided: the cache's own split column, splits carved by class with
groups kept together, cross-validation folds, and the leakage warnings that go with them."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from actrec.common.errors import ActrecError

if TYPE_CHECKING:
    from actrec.temporal.data import Sequences

SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_splits(
    seqs: Sequences,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    log: Callable[[str], None] = _stderr,
) -> dict[str, np.ndarray]:
    """Positions of the labelled videos in train, val and test.

    The cache's ``split`` column where it has one; a split it lacks (often val) is carved out of
    train. Otherwise a seeded split, stratified by class, that keeps each ``group`` on one side.
    """
    labelled = np.flatnonzero(seqs.label >= 0)
    if len(labelled) == 0:
        raise ActrecError(
            f"{seqs.path}: no labelled videos; training needs labels (class folders, or a "
            "manifest with a label column)"
        )
    classes_seen = np.unique(seqs.label[labelled])
    if len(classes_seen) < 2:
        raise ActrecError(
            f"{seqs.path}: every labelled video is of one class ({seqs.classes[classes_seen[0]]!r}); "
            "a classifier needs at least two"
        )
    given: dict[str, list[int]] = {s: [] for s in SPLITS}
    unknown, blank = set(), 0
    for i in labelled:
        name = seqs.split[i].strip().lower()
        if name in _SPLIT_NAMES:
            given[_SPLIT_NAMES[name]].append(int(i))
        elif name:
            unknown.add(seqs.split[i])
        else:
            blank += 1
    if unknown:
        log(
            f"warning: split names {sorted(unknown)} are not train/val/test: those videos are left out"
        )
    from_column = any(given.values())
    if from_column and blank:
        log(f"warning: {blank} labelled videos have no split value while others have one: "
            "they are left out (give them train, val or test)")  # fmt: skip
    if from_column:
        _warn_leakage(seqs, given, log)
        out = {s: np.asarray(given[s], dtype=np.int64) for s in SPLITS}
        how = "from the cache's split column"
    else:
        out = {"train": labelled, "val": labelled[:0], "test": labelled[:0]}
        how = f"stratified by class, groups kept together, seed {seed}"
    carve_test = not from_column or (len(out["test"]) == 0 and len(out["val"]) == 0)
    if carve_test:
        out["train"], out["test"] = _carve(seqs, out["train"], test_fraction, seed)
        how += "; test carved out of train" if from_column else ""
    if len(out["val"]) == 0:
        # a fraction of what is left, so that val is val_fraction of the whole
        fraction = val_fraction / max(1e-9, 1.0 - (test_fraction if carve_test else 0.0))
        out["train"], out["val"] = _carve(seqs, out["train"], fraction, seed + 1)
        how += "; val carved out of train" if from_column else ""
    log(f"split: train {len(out['train'])}, val {len(out['val'])}, test {len(out['test'])} ({how})")
    untrained = sorted(
        {seqs.classes[c] for s in ("val", "test") for c in seqs.label[out[s]]}
        - {seqs.classes[c] for c in seqs.label[out["train"]]}
    )
    if untrained:
        log(f"warning: {len(untrained)} class(es) have no training videos and can never be "
            f"predicted: {', '.join(untrained[:5])}{', ...' if len(untrained) > 5 else ''}")  # fmt: skip
    return out


def given_splits(seqs: Sequences) -> set[str]:
    """The splits (train, val, test) that the cache's split column names, however spelt."""
    names = {s.strip().lower() for s in seqs.split}
    return {_SPLIT_NAMES[n] for n in names if n in _SPLIT_NAMES}


def training_splits(
    seqs: Sequences, *, val_fraction: float, test_fraction: float, seed: int,
    log: Callable[[str], None] = _stderr,
) -> dict[str, np.ndarray]:  # fmt: skip
    """:func:`resolve_splits`, refusing a split that leaves nothing to train or validate on."""
    splits = resolve_splits(
        seqs, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, log=log
    )
    for name in ("train", "val"):
        if len(splits[name]) == 0:
            raise ActrecError(
                f"{seqs.path}: the {name} split is empty; label more videos or fix the split column"
            )
    return splits


def _group_keys(seqs: Sequences, positions: np.ndarray) -> np.ndarray:
    # a video without a group is its own group
    return np.asarray([seqs.group[i] or f"\0{seqs.ids[i]}" for i in positions], dtype=object)


def _carve(
    seqs: Sequences, positions: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (kept, held out), about ``fraction`` held out, by whole groups."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = _group_keys(seqs, positions)
    n_groups = len(set(groups))
    # scikit-learn refuses more folds than the largest class has members: on small sets hold
    # out a little more than asked rather than fail
    largest_class = int(np.bincount(seqs.label[positions]).max()) if len(positions) else 0
    n_splits = min(max(2, round(1.0 / max(fraction, 1e-9))), n_groups, largest_class)
    if n_splits < 2 or fraction <= 0:
        return positions, positions[:0]
    with warnings.catch_warnings():
        # "the least populated class has fewer members than n_splits" is expected on small sets
        warnings.simplefilter("ignore", UserWarning)
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed % 2**32)
        candidates = list(folds.split(positions, seqs.label[positions], groups))
    # whole groups make folds uneven: take the fold that holds the most classes, then the one
    # closest to the size asked for
    want = fraction * len(positions)
    labels = seqs.label[positions]
    keep, held = max(
        candidates, key=lambda f: (len(set(labels[f[1]].tolist())), -abs(len(f[1]) - want))
    )
    return np.sort(positions[keep]), np.sort(positions[held])


def fold_splits(
    seqs: Sequences, positions: np.ndarray, k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, val) pairs over ``positions``: stratified by class, each group on one side.

    Every position is in exactly one val part. Fewer folds than ``k`` when there are fewer
    groups than that (each fold needs a group of its own).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = _group_keys(seqs, positions)
    k = min(k, len(set(groups)))
    if k < 2:
        raise ActrecError(
            f"{seqs.path}: {len(set(groups))} group(s) of labelled videos outside test: "
            "cross-validation needs at least two; pass --folds 0"
        )
    with warnings.catch_warnings():
        # a class with fewer members than k is absent from some val parts: expected on small sets
        warnings.simplefilter("ignore", UserWarning)
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed % 2**32)
        parts = list(folds.split(positions, seqs.label[positions], groups))
    return [(np.sort(positions[a]), np.sort(positions[b])) for a, b in parts]


def _warn_leakage(seqs: Sequences, given: dict[str, list[int]], log: Callable[[str], None]) -> None:
    where: dict[str, set[str]] = {}
    for split, positions in given.items():
        for i in positions:
            if seqs.group[i]:
                where.setdefault(seqs.group[i], set()).add(split)
    leaked = sorted(g for g, s in where.items() if len(s) > 1)
    if leaked:
        example = ", ".join(f"{g!r} in {'+'.join(sorted(where[g]))}" for g in leaked[:3])
        log(f"WARNING: LEAKAGE: {len(leaked)} group(s) have clips in more than one split "
            f"({example}{', ...' if len(leaked) > 3 else ''}); test scores will be optimistic")  # fmt: skip
