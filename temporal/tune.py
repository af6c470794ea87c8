"""`actrec tune`: a search over heads and settings on a cache loaded once, with Optuna.

The cache is read once; each trial trains in this process with :func:`~actrec.temporal.train.fit`
on positions of the loaded tensor, so a trial costs its training and nothing else. Optuna
samples (TPE), prunes (the median rule on validation accuracy after each validation pass),
and keeps the study in SQLite in the output folder: a stopped search resumes where it stopped,
and other processes may add trials to the same study through ``--storage``.

A trial is scored on validation, or on K folds of train+val (stratified, each group on one
side), the default for small sets (see :func:`default_folds`). The test split is touched once,
by the best trial's settings, retrained by :func:`~actrec.temporal.train.train` itself into
``DIR/best/``, a run folder like any other.
"""

from __future__ import annotations

import math
import signal
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from actrec.common.config import StrictConfig
from actrec.common.device import resolve_device
from actrec.common.errors import ActrecError
from actrec.common.ownership import TUNE, check_folder, mark_folder
from actrec.common.paths import check_outputs
from actrec.temporal.data import Sequences, load_sequences
from actrec.temporal.heads import list_heads
from actrec.temporal.runfolder import FolderLock, check_replaceable
from actrec.temporal.search_space import COMMON, Choice, Range, defaults, space
from actrec.temporal.splits import fold_splits, given_splits, training_splits
from actrec.temporal.train import TrainConfig, fit, train
from actrec.temporal.tune_report import (
    setting_text,
    trial_rows,
    write_trials_csv,
    write_tune_leaderboard,
)

# Cross-validation is the default below this many labelled sequences outside test: there a
# validation split of 15% holds fewer than 150, whose accuracy has a standard error of 3 to 4
# points, as large as the differences between settings; K folds score on every sequence.
SMALL = 1000
FOLDS = 5
STUDY = "actrec-tune"
TRIALS = 50  # the default number of trials when no time budget is given
# what a trial may not fix: the search, the seeds and the folder are tune's own
NOT_FIXED = {"cache", "out", "head", "seed", "device", "force", "progress"}
_EVAL_STRIDE = 10_000  # pruning steps: fit i of a trial reports at i * stride + its pass number


@dataclass
class TuneConfig(StrictConfig):
    """Every option of `actrec tune`; :meth:`from_dict` rejects unknown keys."""

    KIND = "tune options"

    cache: str = ""  # the cache to search on
    out: str = ""  # the folder for the study, trials.csv, the leaderboard and best/
    heads: tuple[str, ...] = ("gru", "lstm", "tcn", "transformer", "mean")
    trials: int | None = None  # in the study in all, pruned included; None = 50, or no limit
    # when there is a time budget
    time_budget: float | None = None  # minutes; no trial starts after it
    folds: int | None = None  # K folds of train+val; 0 = the validation split; None = automatic
    seeds: int = 1  # seeds per fold; a trial's score is the mean over folds x seeds
    fixed: dict = field(default_factory=dict)  # training options every trial shares
    storage: str = ""  # an Optuna database URL; "" = sqlite in out
    device: str = "auto"
    seed: int = 0  # the sampler's and the folds' seed
    progress: bool = True  # a bar over trials, where stderr is a terminal

    def check(self) -> None:
        if not self.cache:
            raise ActrecError("no cache given: pass the cache file to search on")
        if not self.out:
            raise ActrecError("no output folder given: pass -o DIR/")
        if len(set(self.heads)) < len(self.heads):
            raise ActrecError(f"a head is named twice in {','.join(self.heads)}")
        unknown = [h for h in self.heads if h not in list_heads()]
        if unknown or not self.heads:
            raise ActrecError(f"unknown head(s) {', '.join(unknown) or '(none given)'}: choose "
                              f"from {', '.join(list_heads())}")  # fmt: skip
        if self.trials is not None and self.trials < 1:
            raise ActrecError(f"trials must be at least 1, got {self.trials}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ActrecError(f"time budget must be positive minutes, got {self.time_budget}")
        if self.folds is not None and (self.folds < 0 or self.folds == 1):
            raise ActrecError(
                f"folds must be 0 (the validation split) or at least 2, got {self.folds}"
            )
        if self.seeds < 1:
            raise ActrecError(f"seeds must be at least 1, got {self.seeds}")
        bad = sorted(set(self.fixed) & NOT_FIXED)
        if bad:
            raise ActrecError(f"{', '.join(bad)} cannot be fixed: tune sets them itself "
                              "(--heads, --seeds, --device, -o)")  # fmt: skip
        self.base(self.heads[0], self.out).check()  # unknown or impossible fixed options

    def max_trials(self) -> int | None:
        if self.trials is None and self.time_budget is None:
            return TRIALS
        return self.trials

    def base(self, head: str, out: str) -> TrainConfig:
        return TrainConfig.from_dict({**self.fixed, "cache": self.cache, "out": out, "head": head,
                                      "device": self.device, "progress": False})  # fmt: skip


@dataclass
class TuneResult:
    out: Path
    best: dict | None  # the best trial's row (see :func:`trial_rows`); None before any completes
    best_run: Path | None  # DIR/best, unless no trial completed or the search was cut short
    trials_run: int  # in this call
    interrupted: bool


def default_folds(n_pool: int, val_given: bool) -> int:
    """K folds when train+val is small and the cache names no val split of its own, else 0.

    A val split that the cache gives was made by someone who knew the data (windows cut by
    time, say, so that overlapping ones never face each other); folds would mix what it keeps
    apart, so it is used as given.
    """
    return FOLDS if n_pool < SMALL and not val_given else 0


def folds_possible(seqs: Sequences, pool: np.ndarray) -> int:
    """The most folds ``pool`` can be cut into with every class in the training side of each:
    the fewest groups (a video without one is its own) that a class of the pool has."""
    per_class: dict[int, set[str]] = {}
    for i in pool:
        per_class.setdefault(int(seqs.label[i]), set()).add(seqs.group[i] or f"\0{seqs.ids[i]}")
    return min((len(g) for g in per_class.values()), default=0)


def _why_few(can: int) -> str:
    return (
        f"the smallest class has {can} sequence{'s' * (can != 1)} (or groups) in train+val"
        if can
        else "train+val holds no labelled sequence"
    )


def check_storage(storage: str, cache: Path) -> None:
    """Refuse a ``--storage`` that Optuna could not open, or would open onto the wrong file,
    with one line: a URL that is not one, an unknown database, a driver not installed, an
    SQLite file whose folder is missing, that is the cache or a file of another kind."""
    if not storage:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(storage)
    except ArgumentError:
        raise ActrecError(f"--storage {storage!r}: not a database URL (e.g. sqlite:///study.db, "
                          "postgresql://user@host/db)") from None  # fmt: skip
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ActrecError(f"--storage {storage!r}: unknown database {url.drivername!r} (sqlite, "
                          "postgresql, mysql)") from None  # fmt: skip
    except ImportError as e:
        raise ActrecError(f"--storage {url.drivername}: its Python driver is not installed "
                          f"({e.name or e}): pip install it, or use sqlite") from None  # fmt: skip
    if url.get_backend_name() != "sqlite":
        return
    if not url.database or url.database == ":memory:":
        raise ActrecError(f"--storage {storage!r}: an in-memory database keeps no study; give a "
                          "file, sqlite:///path/study.db") from None  # fmt: skip
    db = Path(url.database)
    if not db.parent.is_dir():
        raise ActrecError(f"--storage {storage!r}: no folder {db.parent}; create it first")
    if db.exists():
        if db.is_dir():
            raise ActrecError(f"--storage {storage!r}: {db} is a folder; give a database file")
        if cache.exists() and db.samefile(cache):
            raise ActrecError(f"--storage {storage!r} is the cache itself; give another file")
        with open(db, "rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\0":
            raise ActrecError(f"--storage {storage!r}: {db} is not an SQLite database; give a "
                              "new file name or an existing study's") from None  # fmt: skip


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ActrecError(
            "actrec tune needs Optuna: pip install 'actrec[tune]' (make install does)"
        ) from None
    return optuna


class _StopNow(Exception):  # noqa: N818 - a second Ctrl-C, raised out of the trial in flight
    pass


class _CtrlC:
    """The first Ctrl-C asks to stop after the trial in flight; a second one stops at once."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log, self.requested, self.previous = log, False, None

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise _StopNow
        self.requested = True
        self.log("Ctrl-C: stopping after the trial in flight (Ctrl-C again to stop now)")

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def tune(config: TuneConfig, log: Callable[[str], None] = _log) -> TuneResult:
    """Run (or resume) the search ``config`` describes; writes everything into ``config.out``."""
    cfg = config
    cfg.check()
    optuna = _optuna()
    out = Path(cfg.out)
    check_outputs([("cache", cfg.cache)], [], whole=[("-o", out)])
    check_folder(out, TUNE, force=True)  # new, empty or a study (resumed): never a run, or others'
    check_replaceable(out / "best", force=True)  # a best/ of other files: refused before the search
    check_storage(cfg.storage, Path(cfg.cache))
    device = resolve_device(cfg.device)
    with FolderLock(
        out,
        "another `actrec tune` (or `train`) is writing this folder; wait for it, or add "
        "trials from another process through a shared --storage",
    ):
        seqs = load_sequences(cfg.cache, log=log)
        splits, parts = _splits(cfg, seqs, log)
        return _run(cfg, out, device, seqs, splits, parts, optuna, log)


def _run(cfg: TuneConfig, out: Path, device, seqs: Sequences, splits: dict, parts: list, optuna,
         log: Callable[[str], None]) -> TuneResult:  # fmt: skip
    """The search and its outputs, with the cache loaded and the folder locked."""
    longest = int(seqs.length.max())
    setup = {
        "cache_fingerprint": seqs.fingerprint, "heads": list(cfg.heads), "folds": len(parts)
        if len(parts) > 1 else 0, "seeds": cfg.seeds, "fixed": cfg.fixed, "seed": cfg.seed,
        "longest": longest,
    }  # fmt: skip
    mark_folder(out, TUNE)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # tune writes its own line per trial
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = _open_study(optuna, cfg, setup)
            objective = _objective(optuna, cfg, seqs, parts, longest, device)
            ran, ctrl_c, hard_stop = _search(optuna, study, objective, cfg, log)
    finally:
        optuna.logging.set_verbosity(verbosity)

    # -- outputs: the table of trials, best/ (the test set's one use), the leaderboard ----------
    rows = trial_rows(study)
    write_trials_csv(rows, out / "trials.csv")
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(complete, key=_rank_key) if complete else None
    best_run = None
    if best is not None and not hard_stop:
        best_run = _train_best(cfg, best, seqs, splits, out / "best", log)
    elif hard_stop:
        log("best/ not trained (stopped at once): run the same command again to finish")
    command = train_command(best_config(cfg, best["settings"], out / "best")) if best else None
    write_tune_leaderboard(rows, out, setup, cache=cfg.cache, best_run=best_run, command=command)
    if hard_stop:
        raise KeyboardInterrupt
    return TuneResult(out, best, best_run, ran, ctrl_c)


def _splits(
    cfg: TuneConfig, seqs: Sequences, log: Callable[[str], None]
) -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """The split `train` would make, and the (train, val) parts a trial is scored on."""
    base = cfg.base(cfg.heads[0], str(Path(cfg.out) / "best"))
    notes: list[str] = []  # shown once the folds are known to be possible: a refusal is one line
    splits = training_splits(
        seqs, val_fraction=base.val_fraction, test_fraction=base.test_fraction,
        seed=base.split_seed, log=notes.append,
    )  # fmt: skip
    pool = np.sort(np.concatenate([splits["train"], splits["val"]]))
    k = cfg.folds
    can = folds_possible(seqs, pool)
    if k is None:
        k = default_folds(len(pool), "val" in given_splits(seqs))
        if k and can < 2:
            log(f"tune: {_why_few(can)}: scored on the validation split instead of folds")
            k = 0
        elif k > can:
            k = can  # what the data can give: each fold needs a member of every class
    elif k > can:
        raise ActrecError(
            f"--folds {k}: {_why_few(can)}, so at most {can} folds"
            + (" (--folds 0 scores on the validation split)" if can < 2 else "")
        )
    for note in notes:
        log(note)
    if not k:
        log(f"tune: scored on the validation split ({len(splits['val'])} sequences), "
            f"{cfg.seeds} seed(s); test ({len(splits['test'])}) is for best/ only")  # fmt: skip
        return splits, [(splits["train"], splits["val"])]
    parts = fold_splits(seqs, pool, k, cfg.seed)
    log(f"tune: {len(parts)} folds of train+val ({len(pool)} sequences, groups kept together)"
        f"{'' if cfg.folds else f'; the default under {SMALL} sequences'}, "
        f"{cfg.seeds} seed(s) each; test ({len(splits['test'])}) is for best/ only")  # fmt: skip
    return splits, parts


def _open_study(optuna, cfg: TuneConfig, setup: dict):
    """The study in ``cfg.out`` (or ``cfg.storage``): resumed, or new with the defaults queued."""
    storage = optuna.storages.RDBStorage(
        cfg.storage or f"sqlite:///{(Path(cfg.out) / 'study.db').resolve()}",
        # a trial whose process died (kill -9, a lost machine) is marked failed, not left
        # running for ever; failed trials do not count towards --trials
        heartbeat_interval=60, grace_period=180,
    )  # fmt: skip
    study = optuna.create_study(storage=storage, study_name=STUDY, direction="maximize",
                                load_if_exists=True)  # fmt: skip
    before = study.user_attrs.get("setup")
    if before is not None and before != setup:
        changed = sorted(key for key in setup if before.get(key) != setup[key])
        raise ActrecError(
            f"{cfg.out} holds a study made with other settings ({', '.join(changed)} differ): "
            "run with the same options to resume it, or choose another -o"
        )
    if before is None:
        study.set_user_attr("setup", setup)
        # the first trial of each head is `train`'s defaults: the search starts from what a
        # user without it would get, and every head is tried at least once
        longest = setup["longest"]
        for head in cfg.heads:
            own = TrainConfig(head=head)
            start = defaults(head, longest, {**asdict(own), "max_len": own.max_len_used()})
            searched = space(head, longest)
            study.enqueue_trial(
                {"head": head, **{_key(head, n): v for n, v in start.items()
                                  if n not in cfg.fixed and not _constant(searched[n])}},
                user_attrs={"train_defaults": True},
            )  # fmt: skip
    # seeded by what the study holds: a resumed search must not draw its first trials again
    study.sampler = optuna.samplers.TPESampler(
        seed=cfg.seed + len(study.trials), multivariate=True, group=True,
        n_startup_trials=max(10, len(cfg.heads)),
    )  # fmt: skip
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10)
    return study


def _objective(optuna, cfg: TuneConfig, seqs: Sequences, parts: list, longest: int, device):
    """A trial: draw the settings, train on each part and seed, return the mean accuracy."""

    def objective(trial) -> float:
        head = trial.suggest_categorical("head", list(cfg.heads))
        settings = {"head": head}
        for name, dist in space(head, longest).items():
            if name not in cfg.fixed:
                settings[name] = _suggest(trial, _key(head, name), dist)
        settings.update(cfg.fixed)  # so that trials.csv holds every setting of a trial
        trial.set_user_attr("settings", settings)
        scores, losses = [], []
        fits = [(part, seed) for part in parts for seed in range(cfg.seeds)]
        for i, ((train_pos, val_pos), seed) in enumerate(fits):
            passes = iter(range(1, _EVAL_STRIDE))

            def on_eval(row: dict, i: int = i, passes=passes) -> None:
                # fit i reports at its own steps, so that the pruner compares like with like
                trial.report(row["val_accuracy"], i * _EVAL_STRIDE + next(passes))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"step {row['step']} of fit {i + 1}")

            with tempfile.TemporaryDirectory(prefix="actrec-trial-") as tmp:
                run = TrainConfig.from_dict({**asdict(cfg.base(head, tmp)), **settings,
                                             "seed": seed, "lazy": seqs.lazy})  # fmt: skip
                run.check()
                fold = {"train": train_pos, "val": val_pos, "test": val_pos[:0]}
                try:
                    result = fit(run, seqs, fold, "val", device, Path(tmp), lambda _: None, on_eval)
                except ActrecError as e:
                    trial.set_user_attr("error", str(e))
                    raise
            scores.append(result.metrics["accuracy"])
            losses.append(result.chosen["val_loss"])
            trial.set_user_attr("scores", scores)
        trial.set_user_attr("val_loss", statistics.fmean(losses))
        return statistics.fmean(scores)

    return objective


def _search(optuna, study, objective, cfg: TuneConfig, log) -> tuple[int, bool, bool]:
    """Run trials until --trials, the time budget or Ctrl-C; (trials run, Ctrl-C, at once)."""
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    max_trials = cfg.max_trials()
    remaining = None if max_trials is None else max_trials - done
    t_start, ran = time.monotonic(), 0
    bar = tqdm(total=remaining, desc="tune", unit="trial", leave=False, file=sys.stderr,
               disable=not cfg.progress or not sys.stderr.isatty())  # fmt: skip
    ctrl_c = _CtrlC(log)

    def each(study_, trial) -> None:
        nonlocal ran
        ran += 1
        bar.update()
        log(_trial_line(trial, study_, max_trials))  # the default log writes above the bar
        if ctrl_c.requested:
            study_.stop()

    callbacks = [each]
    if max_trials:  # other processes' trials count too
        callbacks.append(optuna.study.MaxTrialsCallback(max_trials, states=finished))
    hard_stop = False
    try:
        if remaining is None or remaining > 0:
            with ctrl_c:
                # a trial that fails on its own (a loss that diverges at a high learning rate)
                # is recorded as failed, and the search goes on
                study.optimize(objective, n_trials=remaining, callbacks=callbacks,
                               timeout=cfg.time_budget * 60 if cfg.time_budget else None,
                               catch=(ActrecError,))  # fmt: skip
        else:
            log(f"tune: the study already holds {done} finished trials (--trials {max_trials})")
    except _StopNow:
        hard_stop = True
    finally:
        bar.close()
    log(f"tune: {ran} trial(s) in {(time.monotonic() - t_start) / 60:.1f} min"
        f"{'; stopped by Ctrl-C' if ctrl_c.requested else ''}")  # fmt: skip
    return ran, ctrl_c.requested, hard_stop


def _rank_key(row: dict) -> tuple:
    # accuracy first; the validation loss breaks ties, which are common on small sets
    return (row["score"], -row["val_loss"] if row["val_loss"] is not None else -math.inf)


def _key(head: str, name: str) -> str:
    # common settings share one name across heads (each trial teaches the sampler about all);
    # a head's own shape is its own, as its choices differ
    return name if name in COMMON else f"{head}.{name}"


def _constant(dist: Range | Choice) -> bool:
    return isinstance(dist, Choice) and len(dist.values) == 1


def _suggest(trial, key: str, dist: Range | Choice):
    if isinstance(dist, Range):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    if len(dist.values) == 1:
        return dist.values[0]
    return trial.suggest_categorical(key, list(dist.values))


def _trial_line(trial, study, total: int | None) -> str:
    settings = trial.user_attrs.get("settings", {})
    shown = "  ".join(f"{k}={setting_text(v)}" for k, v in settings.items() if k != "head")
    number = f"trial {trial.number + 1}" + (f"/{total}" if total else "")
    head = settings.get("head", trial.params.get("head", "?"))
    state = trial.state.name
    if state == "COMPLETE":
        scores = trial.user_attrs.get("scores", [trial.value])
        spread = f" ± {statistics.stdev(scores):.3f}" if len(scores) > 1 else ""
        what = f"val {trial.value:.3f}{spread} ({len(scores)} fit{'s' * (len(scores) > 1)})"
    elif state == "PRUNED":
        last = trial.intermediate_values
        what = f"pruned (val {last[max(last)]:.3f})" if last else "pruned"
    else:
        what = state.lower() + (
            f": {trial.user_attrs['error']}" if "error" in trial.user_attrs else ""
        )
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    done = study.get_trials(deepcopy=False, states=(type(trial.state).COMPLETE,))
    best = ""
    if done:  # ranked as the leaderboard ranks: accuracy, then the lower validation loss
        top = max(done, key=lambda t: (t.value, -t.user_attrs.get("val_loss", math.inf)))
        best = f"  best {top.value:.3f} (trial {top.number + 1})"
    return f"{number}  {head:<11} {shown}  {what}  {seconds:.0f} s{best}"


_NOT_COMPARED = {"out", "force", "progress", "device", "lazy", "workers"}


def best_config(cfg: TuneConfig, settings: dict, out: Path) -> TrainConfig:
    """The training options of the best trial: its settings on top of the fixed ones, seed 0."""
    return TrainConfig.from_dict({**asdict(cfg.base(settings["head"], str(out))), **settings,
                                  "seed": 0, "force": True, "progress": cfg.progress})  # fmt: skip


def _train_best(cfg: TuneConfig, best: dict, seqs, splits, out: Path, log) -> Path:
    run = best_config(cfg, best["settings"], out)
    same = out.is_dir() and (out / "metrics.json").is_file() and _same_run(out, run)
    if same:
        log(f"best/ already holds trial {best['trial']}'s settings: kept")
        return out
    log(f"best: trial {best['trial']} ({best['head']}), retrained on train, chosen on val, "
        f"scored on test: {train_command(run)}")  # fmt: skip
    return train(run, log, seqs=seqs, splits=splits)


def _same_run(folder: Path, run: TrainConfig) -> bool:
    import json

    old = json.loads((folder / "config.json").read_text())
    new = {**asdict(run), "cache": str(Path(run.cache).resolve())}  # as train records it
    return all(old.get(f.name) == new[f.name] for f in fields(TrainConfig)
               if f.name not in _NOT_COMPARED)  # fmt: skip


def train_command(run: TrainConfig) -> str:
    """The `actrec train` line that makes the same run (the options that are not defaults)."""
    flags = {"bidirectional": ("--bidirectional", "--unidirectional"),
             "delta": ("--delta", "--no-delta")}  # fmt: skip
    default = asdict(TrainConfig())
    parts = ["actrec", "train", run.cache, "--head", run.head]
    for f in fields(TrainConfig):
        value = getattr(run, f.name)
        if f.name in {"cache", "out", "head", "force", "progress", "lazy"}:
            continue
        if value == default[f.name]:
            continue
        if f.name in flags:
            parts.append(flags[f.name][0 if value else 1])
        else:
            parts += [f"--{f.name.replace('_', '-')}", f"{value:.6g}" if isinstance(value, float)
                      else str(value)]  # fmt: skip
    return " ".join([*parts, "-o", run.out])
