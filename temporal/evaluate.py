"""Predictions and metrics of a model on a split; the run folder's result files; `evaluate_run`."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch

from actrec.common.atomic import replacing
from actrec.common.errors import ActrecError
from actrec.common.ownership import EVALUATION, check_file, mark_folder
from actrec.common.paths import check_outputs
from actrec.temporal.data import ClipSampler, Sequences, batches, load_sequences
from actrec.temporal.metrics import compute_metrics
from actrec.temporal.model import TemporalModel, load_run
from actrec.temporal.splits import resolve_splits


@torch.inference_mode()
def predict_positions(
    model: TemporalModel,
    seqs: Sequences,
    positions: np.ndarray,
    *,
    batch_size: int,
    clip_len: int,
    windows: int,
    device: torch.device,
    workers: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (N, C) for the videos at ``positions``, returned with those positions (N,).

    Whole sequences, or the mean probability of ``windows`` windows of ``clip_len`` frames.
    """
    model.eval()
    sampler = ClipSampler(
        seqs, positions, batch_size=batch_size, clip_len=clip_len, train=False, windows=windows
    )
    order, out = [], []
    for x, mask, plan in batches(seqs, sampler.plan(), workers):
        probs = torch.softmax(model(x.to(device), mask.to(device)), -1)  # (B * K, C)
        probs = probs.reshape(len(plan.positions), plan.per_item, -1).mean(1)  # (B, C)
        order.append(plan.positions)
        out.append(probs.float().cpu())
    if not out:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return torch.cat(order).numpy(), torch.cat(out).numpy()


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    return (
        float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean()) if len(y) else 0.0
    )


def write_results(
    out_dir: Path, ids: list[str], y_true: np.ndarray, probs: np.ndarray, classes: list[str],
    split: str, kind: str | None = None,
) -> dict:  # fmt: skip
    """`metrics.json`, `predictions.csv` and `confusion.csv` in ``out_dir``; returns the metrics.
    With ``kind``, files there are replaced only if actrec wrote them as that kind."""
    metrics = compute_metrics(y_true, probs, classes, split)
    # each file whole or not at all (`evaluate -o` writes into a folder that may hold older ones)
    with replacing(out_dir / "metrics.json", kind) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    with replacing(out_dir / "predictions.csv", kind) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "true", "predicted", *[f"p_{c}" for c in classes]])
        for vid, t, p in zip(ids, y_true, probs, strict=True):
            w.writerow([vid, classes[t], classes[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    with replacing(out_dir / "confusion.csv", kind) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, metrics["confusion_matrix"], strict=True):
            w.writerow([name, *row])
    return metrics


def labels_in_run_classes(seqs: Sequences, run_classes: list[str]) -> np.ndarray:
    """The cache's labels (V,) as indices into the run's classes; -1 stays -1."""
    lookup = {c: i for i, c in enumerate(run_classes)}
    unknown = sorted({seqs.classes[x] for x in seqs.label if x >= 0} - set(lookup))
    if unknown:
        raise ActrecError(
            f"{seqs.path}: classes {unknown[:5]} are not among the run's {len(run_classes)} "
            "classes; evaluate on a cache of the same classes"
        )
    table = np.asarray([lookup.get(c, -1) for c in seqs.classes] + [-1], dtype=np.int64)
    return table[seqs.label]


def evaluate_run(
    run_dir: str | os.PathLike,
    cache: str | os.PathLike | None = None,
    split: str = "test",
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
) -> dict:
    """Metrics (the `metrics.json` keys) of a trained run on a split of a cache.

    ``cache`` defaults to the one the run trained on; splits are resolved as in training (the
    cache's split column, else the run's seeded split); ``split="all"`` takes every labelled
    video. With ``out_dir`` the metrics, predictions and confusion matrix are written there.
    """
    run = load_run(run_dir, device)
    cfg = run.config
    cache = Path(cache) if cache is not None else Path(cfg["cache"])
    if split not in ("train", "val", "test", "all"):
        raise ActrecError(f"unknown split {split!r}: choose train, val, test or all")
    if out_dir is not None:
        out_dir = Path(out_dir)
        if (out_dir / "model.pt").is_file() or (out_dir / "config.json").is_file():
            raise ActrecError(
                f"{out_dir} is a run folder: its results would be replaced by another run's; "
                "write the evaluation to a folder of its own"
            )
        check_outputs([("RUN", run_dir), ("--cache", cache)], [("-o", out_dir)])
        check_evaluation_dir(out_dir)
    seqs = load_sequences(cache, lazy=cfg.get("lazy"))
    trained_on = cfg.get("cache_fingerprint")
    if trained_on and seqs.fingerprint != trained_on:
        raise ActrecError(
            f"{cache}: its features were made another way (fingerprint {seqs.fingerprint}) than "
            f"those run {run.dir} was trained on ({trained_on}: backbone "
            f"{cfg.get('cache_backbone', '?')}); evaluate it on a cache extracted the same way"
        )
    if seqs.dim != run.in_dim:
        raise ActrecError(
            f"{cache}: features are {seqs.dim}-D but run {run.dir} was trained on {run.in_dim}-D; "
            "evaluate it on a cache made with the same backbone"
        )
    seqs.label = labels_in_run_classes(seqs, run.classes)
    if split == "all":
        positions = np.flatnonzero(seqs.label >= 0)
        if len(positions) == 0:
            raise ActrecError(f"{cache}: no labelled videos to evaluate on")
    else:
        positions = resolve_splits(
            seqs, val_fraction=cfg["val_fraction"], test_fraction=cfg["test_fraction"],
            seed=cfg["split_seed"],
        )[split]  # fmt: skip
    if len(positions) == 0:
        raise ActrecError(f"{cache}: the {split} split is empty; choose another with --split")
    order, probs = predict_positions(
        run.model, seqs, positions, batch_size=cfg["batch_size"], clip_len=cfg["clip_len"],
        windows=cfg["eval_windows"], device=run.device, workers=cfg.get("workers", 2),
    )  # fmt: skip
    y = seqs.label[order]
    if out_dir is not None:
        check_evaluation_dir(out_dir)  # again: the evaluation took a while
        if not out_dir.exists() or not any(out_dir.iterdir()):
            mark_folder(out_dir, EVALUATION)
        ids = [seqs.ids[i] for i in order]
        return write_results(out_dir, ids, y, probs, run.classes, split, kind=EVALUATION)
    return compute_metrics(y, probs, run.classes, split)


def check_evaluation_dir(out_dir: Path) -> None:
    """Refuse an ``evaluate -o`` folder whose files actrec did not write as an evaluation's."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ActrecError(f"{out_dir} exists and is not a folder: choose another -o")
    for name in ("metrics.json", "predictions.csv", "confusion.csv"):
        check_file(out_dir / name, EVALUATION)
