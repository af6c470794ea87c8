"""Training a head on a cache: one loop, read top to bottom (after nanoGPT's `train.py`).

The budget is counted in optimizer steps (as nanoGPT counts iterations), so that a set of 40
sequences trains as long as one of 10,000. Batches are planned per pass over the training set
(seeded); per step: set the learning rate, forward, backward, clip, step; every ``eval_every``
steps evaluate on validation and keep the best checkpoint. At the end the best checkpoint is
evaluated on test and the whole run folder is written.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from actrec.common import options
from actrec.common.config import StrictConfig
from actrec.common.device import resolve_device
from actrec.common.errors import ActrecError
from actrec.common.paths import check_outputs
from actrec.common.seeding import seed_everything
from actrec.temporal.data import (
    BatchPlan,
    ClipSampler,
    Sequences,
    batches,
    feature_stats,
    load_sequences,
)
from actrec.temporal.evaluate import nll, predict_positions, write_results
from actrec.temporal.heads import list_heads
from actrec.temporal.model import NORMS, build_model, input_dim, save_checkpoint
from actrec.temporal.runfolder import RunFolder, check_replaceable
from actrec.temporal.splits import training_splits

# The automatic budget: at least MIN_STEPS optimizer steps, and at least AUTO_EPOCHS passes over
# the training set. A set of 40 sequences is one step per pass: counting passes alone gave it a
# dozen steps. See docs/defaults.md for the measurements behind each number.
MIN_STEPS = 600
AUTO_EPOCHS = 30
EVALUATIONS = 40  # validation passes in a run, at most one per epoch
# `--max-len` by head: a convolution costs in proportion to length and gained from resolution
# (256 against 128: +2.9 points on four real sets); the recurrent heads lost accuracy on the
# longer sequences, and attention costs the square of the length
AUTO_MAX_LEN = {"tcn": 256}
MAX_LEN = 128  # the other heads'
SELECT = ("auto", "best", "last")
MAX_LAYERS = {"tcn": 16}  # dilation doubles per block: 2**70 overflows, 2**20 only pads
# every number TrainConfig holds, checked by the type `actrec train` parses it with
RANGES = {
    "steps": options.STEPS, "epochs": options.EPOCHS, "batch_size": options.BATCH,
    "lr": options.LR, "weight_decay": options.DECAY, "warmup": options.PROBABILITY,
    "label_smoothing": options.PROBABILITY, "grad_clip": options.Float(0, 1e6),
    "patience": options.PATIENCE, "eval_every": options.STEPS, "hidden": options.WIDTH,
    "layers": options.LAYERS, "dropout": options.PROBABILITY, "clip_len": options.FRAMES,
    "max_len": options.FRAMES, "eval_windows": options.WINDOWS,
    "val_fraction": options.OPEN_FRACTION, "test_fraction": options.FRACTION,
    "split_seed": options.SEED, "seed": options.SEED, "workers": options.WORKERS,
}  # fmt: skip


@dataclass
class TrainConfig(StrictConfig):
    """Every option of `actrec train`; :meth:`from_dict` rejects unknown keys."""

    KIND = "training options"  # how errors name them (a class constant, not a field)

    cache: str = ""  # the cache to train on
    out: str = ""  # the run folder to create
    head: str = "tcn"  # one of list_heads()
    steps: int | None = None  # optimizer steps in all; None = from epochs, else automatic
    epochs: int | None = None  # passes over train when steps is None; None = automatic
    batch_size: int = 32  # sequences per step
    lr: float = 1e-3  # peak learning rate (AdamW), reached after warm-up
    weight_decay: float = 0.05  # AdamW, on weight matrices only
    warmup: float = 0.05  # fraction of the steps spent warming up linearly, then cosine to lr/100
    label_smoothing: float = 0.1
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    patience: int = 0  # validation passes without improvement before stopping; 0 = never
    select: str = "auto"  # the weights kept: best (on validation), last, or auto (see below)
    eval_every: int | None = None  # steps between validation passes; None = automatic
    hidden: int = 64  # width after the input projection
    layers: int | None = (
        None  # recurrent layers / TCN blocks / encoder layers; None = head's default
    )
    bidirectional: bool = False  # gru, lstm
    dropout: float = 0.1  # in the projection, between blocks, before the classifier
    norm: str = "both"  # input normalisation: dataset statistics, each sequence's own, or both
    delta: bool = False  # add differences between neighbouring frames to the input
    clip_len: int = 0  # frames per random training window; 0 = whole sequences
    max_len: int | None = None  # longer sequences averaged over this many segments; 0 = never;
    # None = the head's own (AUTO_MAX_LEN)
    eval_windows: int = 0  # 0 = evaluate whole sequences; K = mean of K windows of clip_len
    val_fraction: float = 0.15  # held out for validation when the cache has no val split
    test_fraction: float = 0.15  # held out for test when the cache has no split column
    split_seed: int = 0  # the split, apart from `seed`: runs that differ by seed share test sets
    seed: int = 0  # initialisation, dropout and batch order
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    lazy: bool | None = None  # read windows from disk; None = when the cache will not fit in memory
    workers: int = 2  # DataLoader workers when lazy
    force: bool = False  # replace an existing run folder
    progress: bool = True  # tqdm bars

    def check(self) -> None:
        """Refuse impossible settings before any work is done."""
        if self.head not in list_heads():
            raise ActrecError(
                f"unknown head {self.head!r}: choose one of {', '.join(list_heads())}"
            )
        if not self.cache:
            raise ActrecError("no cache given: pass the cache file to train on")
        if not self.out:
            raise ActrecError("no run folder given: pass -o RUN/")
        for name, kind in RANGES.items():  # the command line's own types and ranges
            if getattr(self, name) is not None:
                setattr(self, name, options.check(kind, getattr(self, name), name))
        most = MAX_LAYERS.get(self.head)
        if self.layers is not None and most is not None and self.layers > most:
            raise ActrecError(
                f"layers {self.layers}: {self.head} takes 1..{most} (block i looks 2**i steps "
                f"back: {most} blocks already see {6 * (2**most - 1) + 1} steps)"
            )
        for name in ("steps", "epochs", "eval_every", "layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ActrecError(f"{name} must be at least 1, got {value}")
        for name in ("batch_size", "hidden"):
            if getattr(self, name) < 1:
                raise ActrecError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ActrecError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ActrecError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ActrecError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.warmup < 1:
            raise ActrecError(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ActrecError(f"grad_clip must be 0 (off) or more, got {self.grad_clip}")
        if not 0 <= self.dropout < 1:
            raise ActrecError(f"dropout must be in [0, 1), got {self.dropout}")
        if min(self.clip_len, self.eval_windows, self.patience, self.max_len_used()) < 0:
            raise ActrecError("clip_len, max_len, eval_windows and patience must be 0 or more")
        if self.eval_windows and not self.clip_len:
            # windows of clip_len frames: with whole sequences there is nothing to average
            raise ActrecError(
                f"eval_windows {self.eval_windows} needs clip_len > 0 (its windows are clip_len "
                "frames long): pass --clip-len N too, or leave --eval-windows at 0"
            )
        if self.norm not in NORMS:
            raise ActrecError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.select not in SELECT:
            raise ActrecError(f"select must be one of {', '.join(SELECT)}, got {self.select!r}")
        if self.workers < 0:
            raise ActrecError(f"workers must be 0 or more, got {self.workers}")
        if not (0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ActrecError("val_fraction must be in (0, 1) and test_fraction in [0, 1)")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ActrecError(
                f"val_fraction + test_fraction is {self.val_fraction + self.test_fraction:g}: "
                "leave at least a tenth of the videos to train on"
            )

    def max_len_used(self) -> int:
        """``max_len``, or the head's own where it is None."""
        if self.max_len is not None:
            return self.max_len
        return AUTO_MAX_LEN.get(self.head, MAX_LEN)

    def budget(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the run: ``steps``, else ``epochs`` passes, else the automatic one."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return self.epochs * steps_per_epoch
        return max(MIN_STEPS, AUTO_EPOCHS * steps_per_epoch)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``peak`` down to ``peak / 100``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    low = peak / 100
    return low + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - low)


def versions() -> dict[str, str]:
    import h5py
    import sklearn

    from actrec import __version__

    return {
        "actrec": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "scikit-learn": sklearn.__version__, "h5py": h5py.__version__,
        "python": platform.python_version(),
    }  # fmt: skip


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above a progress bar, if one is drawn


def train(
    config: TrainConfig, log: Callable[[str], None] = _log, *, seqs: Sequences | None = None,
    splits: dict[str, np.ndarray] | None = None,
) -> Path:  # fmt: skip
    """Train a head as ``config`` says; returns the run folder, with the files docs/design.md lists.

    ``seqs`` and ``splits``, when given, stand for ``config.cache`` already loaded and split
    (`actrec tune` loads a cache once for many runs); they must be what the config would give.
    """
    cfg = config
    cfg.check()
    out = Path(cfg.out)
    check_outputs([("cache", cfg.cache)], [], whole=[("-o", out)])
    check_replaceable(out, cfg.force)  # before reading a large cache
    device = resolve_device(cfg.device)
    if seqs is None:
        seqs = load_sequences(cfg.cache, lazy=cfg.lazy, log=log)
    if splits is None:
        splits = training_splits(
            seqs, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
            seed=cfg.split_seed, log=log,
        )  # fmt: skip
    test_split = "test" if len(splits["test"]) else "val"
    if test_split == "val":
        log("note: no test split: the final metrics are on the validation split")
    folder = RunFolder(out, cfg.force)
    with folder as work:
        fit(cfg, seqs, splits, test_split, device, work, log)
        folder.commit()

    from actrec.temporal.report import write_report

    write_report(out)
    return out


@dataclass
class FitResult:
    """What :func:`fit` leaves besides its files: the metrics on ``test_split`` and the curve."""

    metrics: dict
    history: list[dict] = field(default_factory=list)  # one row per validation pass
    chosen_step: int = 0  # the step whose weights were kept and evaluated

    @property
    def chosen(self) -> dict:
        return next(r for r in self.history if r["step"] == self.chosen_step)


def fit(
    cfg: TrainConfig, seqs: Sequences, splits: dict[str, np.ndarray], test_split: str,
    device: torch.device, out: Path, log: Callable[[str], None],
    on_eval: Callable[[dict], None] | None = None,
) -> FitResult:  # fmt: skip
    """Train and evaluate into ``out``, the run folder being built.

    ``on_eval(row)`` is called with each validation pass's history row; what it raises (other
    than KeyboardInterrupt) ends the run there, which is how `actrec tune` prunes a trial.
    """
    # -- the model ------------------------------------------------------------------------------
    generator = seed_everything(cfg.seed)
    mean, std = feature_stats(seqs, splits["train"])  # (D,), (D,)
    head_kwargs = dict(
        in_dim=input_dim(seqs.dim, cfg.norm, cfg.delta), num_classes=len(seqs.classes),
        hidden=cfg.hidden, layers=cfg.layers, dropout=cfg.dropout, bidirectional=cfg.bidirectional,
    )  # fmt: skip
    model = build_model(cfg.head, head_kwargs, mean, std, cfg.delta, cfg.max_len_used(), cfg.norm)
    model = model.to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]  # weight matrices, not biases or norms
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )  # fmt: skip
    sampler = ClipSampler(
        seqs, splits["train"], batch_size=cfg.batch_size, clip_len=cfg.clip_len, train=True
    )
    per_epoch = len(sampler)
    total_steps = cfg.budget(per_epoch)
    # about EVALUATIONS validation passes per run, never more than one per epoch
    eval_every = cfg.eval_every or max(per_epoch, -(-total_steps // EVALUATIONS))
    warmup = max(1, round(cfg.warmup * total_steps))
    n_params = sum(p.numel() for p in model.parameters())
    meta = {
        "head": cfg.head, "head_kwargs": head_kwargs, "classes": seqs.classes,
        "config": asdict(cfg),
    }  # fmt: skip
    run_config = {
        **asdict(cfg),
        "cache": str(Path(cfg.cache).resolve()),
        "cache_fingerprint": seqs.fingerprint,
        "cache_backbone": seqs.attrs.get("backbone", ""),
        "cache_attrs": seqs.attrs,  # how its features were made: `predict` extracts the same way
        "dim": seqs.dim, "classes": seqs.classes, "head_kwargs": head_kwargs,
        "parameters": n_params, "device_used": str(device), "lazy_used": seqs.lazy,
        "split_sizes": {k: int(len(v)) for k, v in splits.items()}, "versions": versions(),
        "steps_planned": total_steps, "steps_per_epoch": per_epoch, "eval_every_used": eval_every,
        "max_len_used": cfg.max_len_used(),
    }  # fmt: skip
    (out / "config.json").write_text(json.dumps(run_config, indent=1) + "\n")
    log(f"{cfg.head}: {n_params:,} parameters, {len(seqs.classes)} classes, {seqs.dim}-D input; "
        f"{total_steps} steps ({total_steps / per_epoch:.1f} epochs of {per_epoch}), validation "
        f"every {eval_every}, on {device}")  # fmt: skip

    def endless() -> Iterator[tuple[torch.Tensor, torch.Tensor, BatchPlan]]:
        while True:  # a new seeded plan for every pass over the training set
            yield from batches(seqs, sampler.plan(generator), cfg.workers)

    # -- the loop -------------------------------------------------------------------------------
    history: list[dict] = []
    best_key, best_step, stale = None, -1, 0
    interrupted = False
    stream = endless()
    # no bar where stderr is a log file or a pipe: carriage returns would fill it
    bar = tqdm(total=total_steps, desc=f"train {cfg.head}", leave=False, file=sys.stderr,
               disable=not cfg.progress or not sys.stderr.isatty())  # fmt: skip
    t0 = time.perf_counter()
    data_seconds, loss_sum, correct, seen = 0.0, 0.0, 0, 0
    try:
        for step in range(1, total_steps + 1):
            model.train()
            t_data = time.perf_counter()  # planning counts as batch building
            x, mask, plan = next(stream)
            x, mask = x.to(device), mask.to(device)  # (B, T, D), (B, T)
            y = plan.labels.to(device)  # (B,)
            data_seconds += time.perf_counter() - t_data
            lr = lr_at(step - 1, total_steps, warmup, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(x, mask)  # (B, C)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise ActrecError(
                    f"the training loss is {loss.item()} at step {step}: check the cache for "
                    "non-finite features (actrec inspect --verify), or lower --lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update()
            if step % eval_every and step != total_steps:
                continue

            # -- validation: keep the best checkpoint ---------------------------------------
            train_seconds = time.perf_counter() - t0
            order, probs = predict_positions(
                model, seqs, splits["val"], batch_size=cfg.batch_size, clip_len=cfg.clip_len,
                windows=cfg.eval_windows, device=device, workers=cfg.workers,
            )  # fmt: skip
            val_y = seqs.label[order]
            val_acc = float((probs.argmax(1) == val_y).mean())
            val_loss = nll(probs, val_y)
            row = {
                "step": step, "epoch": round(step / per_epoch, 3),
                "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
                "seconds": time.perf_counter() - t0, "train_seconds": train_seconds,
                "data_seconds": data_seconds,
            }  # fmt: skip
            history.append(row)
            key = (val_acc, -val_loss)  # accuracy first; the loss breaks ties on small sets
            improved = best_key is None or key > best_key
            if improved:
                best_key, best_step, stale = key, step, 0
                save_checkpoint(
                    out / "model.pt", model,
                    {**meta, "step": step, "epoch": row["epoch"], "val_accuracy": val_acc},
                )  # fmt: skip
            else:
                stale += 1
            msg = (f"step {step:5d}/{total_steps}  epoch {row['epoch']:7.2f}  train loss "
                   f"{row['train_loss']:.4f} acc {row['train_accuracy']:.3f}  val loss "
                   f"{val_loss:.4f} acc {val_acc:.3f}  {row['seconds']:.1f} s"
                   f"{'  *' if improved else ''}")  # fmt: skip
            log(msg)
            _write_history(out / "history.csv", history)
            if on_eval is not None:
                on_eval(row)
            t0 = time.perf_counter()
            data_seconds, loss_sum, correct, seen = 0.0, 0.0, 0, 0
            if cfg.patience and stale >= cfg.patience:
                log(f"early stop: no better validation score in {cfg.patience} passes")
                break
    except KeyboardInterrupt:
        # Ctrl-C keeps the work: the best checkpoint so far is evaluated and reported as usual
        if best_step < 0:
            raise
        interrupted = True
        _write_history(out / "history.csv", history)  # whole, even if the stop came mid-write
        log(f"interrupted after step {history[-1]['step']}: evaluating the best checkpoint so far")
    finally:
        bar.close()
        stream.close()

    # -- the chosen checkpoint on test ----------------------------------------------------------
    final = history[-1]
    chosen = choose_checkpoint(cfg.select, history, best_step, len(splits["val"]), interrupted)
    if chosen == final["step"] and not interrupted:
        save_checkpoint(
            out / "model.pt", model,
            {**meta, "step": chosen, "epoch": final["epoch"], "val_accuracy": final["val_accuracy"]},
        )  # fmt: skip
    else:
        ckpt = torch.load(out / "model.pt", map_location=device, weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
    order, probs = predict_positions(
        model, seqs, splits[test_split], batch_size=cfg.batch_size, clip_len=cfg.clip_len,
        windows=cfg.eval_windows, device=device, workers=cfg.workers,
    )  # fmt: skip
    metrics = write_results(
        out, [seqs.ids[i] for i in order], seqs.label[order], probs, seqs.classes, test_split
    )
    chosen_epoch = round(chosen / per_epoch, 3)
    run_config.update(
        best_step=chosen, best_epoch=chosen_epoch, best_val_step=best_step,
        steps_run=final["step"], epochs_run=final["epoch"], interrupted=interrupted,
    )  # fmt: skip
    (out / "config.json").write_text(json.dumps(run_config, indent=1) + "\n")
    how = "the best on validation" if chosen == best_step else "the last"
    log(f"checkpoint: {how}, step {chosen} (epoch {chosen_epoch:g}); {test_split} accuracy "
        f"{metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f} "
        f"({metrics['n_samples']} videos)")  # fmt: skip
    return FitResult(metrics, history, chosen)


def choose_checkpoint(
    select: str, history: list[dict], best_step: int, n_val: int, interrupted: bool
) -> int:
    """The step whose weights the run keeps: the best on validation, or the last.

    ``auto`` keeps the last unless the best beats it on validation by more than the noise of a
    validation set that size. On real sets of a few dozen sequences, the best of 40 passes on 7
    validation items was a lucky draw more often than a better model; on thousands it is a real
    difference. The best of K passes is the maximum of K noisy scores, about sqrt(2 ln K)
    standard errors above what its weights are worth, so the margin is that many standard errors
    (at least two). An interrupted run keeps the best.
    """
    final = history[-1]
    if select == "best" or interrupted or best_step < 0:
        return best_step if best_step >= 0 else final["step"]
    if select == "last":
        return final["step"]
    best = next(r for r in history if r["step"] == best_step)
    p = (best["val_accuracy"] + final["val_accuracy"]) / 2
    z = max(2.0, math.sqrt(2 * math.log(len(history))))
    noise = max(z * math.sqrt(p * (1 - p) / max(n_val, 1)), 1 / max(n_val, 1))
    return best_step if best["val_accuracy"] - final["val_accuracy"] > noise else final["step"]


def _write_history(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
