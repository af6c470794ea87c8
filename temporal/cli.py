"""`actrec import`, `train`, `evaluate`, `report`: parse, call the library, print."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from actrec.common import options as O  # noqa: N812 - the types read as O.SEED, O.STEPS
from actrec.temporal.heads import list_heads
from actrec.temporal.model import NORMS
from actrec.temporal.train import AUTO_EPOCHS, EVALUATIONS, MIN_STEPS, SELECT, TrainConfig

_D = TrainConfig()  # the defaults, shown in --help
_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_CACHE = click.Path(exists=True, dir_okay=False, path_type=Path)
_RUN = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("import", context_settings=_CTX)
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The cache to write.")  # fmt: skip
@click.option("--fps", type=O.RATE, default=None,
              help="Steps per second of the sequences, for timestamps in seconds.")  # fmt: skip
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default=None,
              help="Stored precision [default: float16 if every array is, else float32].")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def import_(
    sources: tuple[Path, ...], output: Path, fps: float | None, dtype: str | None, force: bool
) -> None:
    """Turn sequences made elsewhere into a cache that every command here reads.

    SOURCES is one folder of class folders (SOURCES/<class>/<item>.npy, each an array [T, D]),
    one CSV manifest with columns path,label[,split][,group], or UCR/UEA .ts files
    (NAME_TRAIN.ts NAME_TEST.ts: the split comes from each file's name; several channels and
    variable lengths are read; missing values are refused).

    \b
    Examples:
      actrec import my_features/ -o feats.h5
      actrec import ArrowHead_TRAIN.ts ArrowHead_TEST.ts -o arrowhead.h5
    """
    from actrec.common.cache_cli import summarize
    from actrec.temporal.importer import import_sequences

    import_sequences(sources, output, fps=fps, dtype=dtype, force=force)
    click.echo(summarize(output))


@click.command(context_settings=_CTX)
@click.argument("cache", type=_CACHE)
@click.option("--head", type=click.Choice(list_heads()), default=_D.head, show_default=True,
              help="The temporal head.")  # fmt: skip
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The run folder to create.")  # fmt: skip
@click.option("--steps", type=O.STEPS, default=None,
              help=f"Optimizer steps in all [default: at least {MIN_STEPS}, and at least "
                   f"{AUTO_EPOCHS} passes over train].")  # fmt: skip
@click.option("--epochs", type=O.EPOCHS, default=None,
              help="Or the budget in passes over the training set.")  # fmt: skip
@click.option(
    "--lr", type=O.LR, default=_D.lr, show_default=True, help="Peak learning rate (AdamW)."
)
@click.option("--weight-decay", type=O.DECAY, default=_D.weight_decay, show_default=True,
              help="AdamW, on weight matrices.")  # fmt: skip
@click.option("--warmup", type=O.PROBABILITY, default=_D.warmup, show_default=True,
              help="Fraction of the steps spent warming up, then cosine decay to lr/100.")  # fmt: skip
@click.option(
    "--batch-size",
    type=O.BATCH,
    default=_D.batch_size,
    show_default=True,
    help="Sequences per step.",
)
@click.option("--hidden", type=O.WIDTH, default=_D.hidden, show_default=True,
              help="Width after the input projection (for embeddings, 3 of these channels are "
                   "frame-to-frame similarities).")  # fmt: skip
@click.option("--layers", type=O.LAYERS, default=None,
              help="Recurrent layers / TCN blocks / encoder layers [default: the head's own].")  # fmt: skip
@click.option("--bidirectional/--unidirectional", default=_D.bidirectional, show_default=True,
              help="gru and lstm: read the sequence both ways.")  # fmt: skip
@click.option(
    "--dropout",
    type=O.PROBABILITY,
    default=_D.dropout,
    show_default=True,
    help="In the projection, between blocks and before the classifier.",
)
@click.option("--norm", type=click.Choice(NORMS), default=_D.norm,
              show_default=True,
              help="Input normalisation: the training set's statistics, each sequence's own "
                   "(level and scale removed), or both side by side.")  # fmt: skip
@click.option("--delta/--no-delta", default=_D.delta, show_default=True,
              help="Add differences between neighbouring steps to the input.")  # fmt: skip
@click.option("--clip-len", type=O.FRAMES, default=_D.clip_len, show_default=True,
              help="Frames per random training window; 0 = whole sequences.")  # fmt: skip
@click.option("--max-len", type=O.FRAMES, default=None,
              help="Longer sequences are averaged over this many equal segments; 0 = never "
                   "[default: 256 for tcn, 128 for the other heads]. Series (a head input under 32 "
                   "wide: a few channels, not embeddings) are filtered at full length first.")  # fmt: skip
@click.option("--eval-windows", type=O.WINDOWS, default=_D.eval_windows, show_default=True,
              help="0 = evaluate whole sequences; K = average K windows of --clip-len frames.")  # fmt: skip
@click.option(
    "--label-smoothing", type=O.PROBABILITY, default=_D.label_smoothing, show_default=True
)
@click.option("--eval-every", type=O.STEPS, default=None,
              help=f"Steps between validation passes [default: about {EVALUATIONS} in a run, "
                   "at most one per epoch].")  # fmt: skip
@click.option("--patience", type=O.PATIENCE, default=_D.patience, show_default=True,
              help="Validation passes without improvement before stopping; 0 = never.")  # fmt: skip
@click.option("--select", type=click.Choice(SELECT), default=_D.select,
              show_default=True,
              help="The weights kept: the best on validation, the last, or auto: the last unless "
                   "the best beats it by more than the validation set's noise.")  # fmt: skip
@click.option("--val-fraction", type=O.OPEN_FRACTION, default=_D.val_fraction, show_default=True,
              help="Held out for validation when the cache has no val split.")  # fmt: skip
@click.option("--test-fraction", type=O.FRACTION, default=_D.test_fraction, show_default=True,
              help="Held out for test when the cache has no split column.")  # fmt: skip
@click.option("--split-seed", type=O.SEED, default=_D.split_seed, show_default=True,
              help="Seed of the split itself.")  # fmt: skip
@O.seed_option("Initialisation, dropout, batch order.", default=_D.seed)
@O.DEVICE_OPTION
@click.option("--lazy/--in-memory", default=None,
              help="Read windows from disk in workers [default: when the cache will not fit in memory].")  # fmt: skip
@click.option("--workers", type=O.WORKERS, default=_D.workers, show_default=True,
              help="DataLoader workers when lazy.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace the run folder if it exists.")
@O.QUIET_OPTION
def train(cache: Path, output: Path, quiet: bool, **options) -> None:
    """Train a temporal head on a cache into a run folder, then evaluate it on test.

    The defaults were chosen on real sequences (see docs/defaults.md): whole
    sequences, averaged down to --max-len steps (series after a first convolution at full
    length); a budget in optimizer steps, so that small sets train long enough; validation
    about 40 times a run; the last weights are kept unless the best on validation is clearly
    better. Writes config.json, model.pt, history.csv, metrics.json, predictions.csv,
    confusion.csv, report.md and report.html.

    Example: actrec train feats.h5 --head gru -o runs/gru
    """
    from actrec.temporal.train import train as train_run

    config = TrainConfig.from_dict({**options, "cache": str(cache), "out": str(output),
                                    "progress": not quiet})  # fmt: skip
    for note in unused_options(config):
        click.echo(f"note: {note}", err=True)
    run = train_run(config)
    metrics = json.loads((run / "metrics.json").read_text())
    click.echo(f"{metrics['split']} accuracy {metrics['accuracy']:.4f}  "
               f"macro F1 {metrics['f1_macro']:.4f}  ({metrics['n_samples']} videos)")  # fmt: skip
    click.echo(f"report: {run / 'report.html'}")
    if json.loads((run / "config.json").read_text()).get("interrupted"):
        raise SystemExit(130)  # the run is kept, but it did not run its course: Ctrl-C's code


@click.command(context_settings=_CTX)
@click.argument("run", type=_RUN)
@click.option("--cache", type=_CACHE, default=None, help="[default: the cache the run trained on]")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="test",
              show_default=True)  # fmt: skip
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write metrics.json, predictions.csv and confusion.csv into this folder.")  # fmt: skip
@O.DEVICE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print every metric as JSON.")
def evaluate(run: Path, cache: Path | None, split: str, output: Path | None, device: str,
             as_json: bool) -> None:  # fmt: skip
    """Metrics of a trained run on a split of a cache.

    Example: actrec evaluate runs/gru --cache other_feats.h5 --split all
    """
    from actrec.common.errors import ActrecError
    from actrec.temporal.evaluate import evaluate_run

    if output is not None and output.resolve() == run.resolve():
        raise ActrecError(f"{output} is the run folder: write the evaluation elsewhere")
    m = evaluate_run(run, cache=cache, split=split, out_dir=output, device=device)
    if as_json:
        click.echo(json.dumps(m, indent=1))
        return
    click.echo(f"{m['split']}: {m['n_samples']} videos")
    for key in ("accuracy", "balanced_accuracy", "top5_accuracy", "precision_macro",
                "recall_macro", "f1_macro"):  # fmt: skip
        click.echo(f"{key:<18} {m[key]:.4f}")


@click.command(context_settings=_CTX)
@click.argument("runs", nargs=-1, required=True, type=_RUN)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where a leaderboard goes [default: the runs' common parent folder].")  # fmt: skip
def report(runs: tuple[Path, ...], output: Path | None) -> None:
    """The report of one run, or a leaderboard of several (mean ± std over seeds).

    Rewrites each run's report.md and report.html; with several runs also writes
    leaderboard.md and leaderboard.html and prints the leaderboard.

    Example: actrec report runs/gru runs/mean
    """
    from actrec.common.paths import check_outputs
    from actrec.temporal.report import (
        check_leaderboard_dir,
        leaderboard_text,
        leaderboard_warnings,
        write_leaderboard,
        write_report,
    )

    out = None
    if len(runs) > 1:  # where the leaderboard goes, checked before any report is rewritten
        out = output
        if out is None:  # the runs' common parent; never one of the runs itself
            out = Path(os.path.commonpath([r.resolve() for r in runs]))
            if out in {r.resolve() for r in runs}:
                out = out.parent
        check_outputs([("RUN", r) for r in runs],
                      [("-o", out / "leaderboard.md"), ("-o", out / "leaderboard.html")])  # fmt: skip
        check_leaderboard_dir(out)
    elif output is not None:
        click.echo("note: -o is where a leaderboard of several runs goes; one run's report is "
                   "written into its own folder", err=True)  # fmt: skip
    for run in runs:
        _, html_path = write_report(run)
        click.echo(f"report: {html_path}")
    if out is not None:
        for warning in leaderboard_warnings(list(runs)):
            click.echo(warning, err=True)
        click.echo(leaderboard_text(list(runs)))
        _, html_path = write_leaderboard(list(runs), out)
        click.echo(f"leaderboard: {html_path}")


def unused_options(config: TrainConfig) -> list[str]:
    """Options given that do nothing with the others: said, so that no one reads a result as
    the effect of a setting that was not used."""
    notes = []
    if config.bidirectional and config.head not in ("gru", "lstm"):
        notes.append(f"--bidirectional does nothing for --head {config.head} (gru, lstm only)")
    if config.layers is not None and config.head == "mean":
        notes.append("--layers does nothing for --head mean (it has no layers)")
    if config.lazy is False and config.workers != _D.workers:
        notes.append("--workers does nothing with --in-memory (workers read from disk)")
    return notes


def _search_space_help() -> str:
    from actrec.temporal.search_space import describe

    return "\n".join(f"  {name:<40} {values}" for name, values in describe())


def _fixed(pairs: tuple[str, ...]) -> dict:
    """--set KEY=VALUE pairs as training options, each parsed by train's own option type."""
    from actrec.temporal.train import RANGES

    return O.parse_settings(train, pairs, extra={"grad_clip": RANGES["grad_clip"]})


@click.command(context_settings=_CTX, epilog="\b\nSearch space (per trial):\n"
               + _search_space_help())  # fmt: skip
@click.argument("cache", type=_CACHE)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the study, trials.csv, the leaderboard and best/; rerun to resume.")  # fmt: skip
@click.option("--heads", default="gru,lstm,tcn,transformer,mean", show_default=True,
              help="Heads to search, comma-separated.")  # fmt: skip
@click.option("--trials", type=O.TRIALS, default=None,
              help="Trials in the study in all, a resumed study's finished ones included "
                   "[default: 50, or no limit with --time-budget].")  # fmt: skip
@click.option("--time-budget", type=O.MINUTES, default=None,
              help="Minutes: no trial starts after them (the one in flight and best/ finish).")  # fmt: skip
@click.option("--folds", type=O.FOLDS, default=None,
              help="Score trials on K folds of train+val; 0 = on the validation split [default: "
                   "5 under 1000 sequences, unless the cache has its own val split].")  # fmt: skip
@click.option("--seeds", type=O.SEEDS, default=1, show_default=True,
              help="Seeds per fold; a trial's score is the mean over folds x seeds.")  # fmt: skip
@click.option("--set", "fixed", multiple=True, metavar="KEY=VALUE",
              help="A training option every trial shares (train's names: epochs=20, "
                   "delta=false); a fixed setting is not searched.")  # fmt: skip
@click.option("--storage", default="", help="An Optuna database URL that several processes or "
              "machines share [default: sqlite in OUTPUT].")  # fmt: skip
@O.DEVICE_OPTION
@O.seed_option("Seed of the sampler and the folds.")
@O.QUIET_OPTION
def tune(cache: Path, output: Path, heads: str, fixed: tuple[str, ...], quiet: bool,
         **options) -> None:  # fmt: skip
    """Search heads and training settings on a cache loaded once (Optuna: TPE, pruning).

    Trials run in this process on the cache read once; each is scored on validation (or on K
    folds of train+val, the default for small sets). The first trial of each head is train's
    defaults. The best trial's settings are retrained into OUTPUT/best/, a run folder like
    train's: the only use of the test split. Writes trials.csv, leaderboard.md and
    leaderboard.html (best trials, the settings that differ, plots). Ctrl-C stops after the
    trial in flight and still writes everything; the same command resumes the study.

    Example: actrec tune feats.h5 -o tuned/ --time-budget 10
    """
    from actrec.temporal.tune import TuneConfig
    from actrec.temporal.tune import tune as run_tune

    config = TuneConfig.from_dict({
        **options, "cache": str(cache), "out": str(output), "progress": not quiet,
        "heads": tuple(h.strip() for h in heads.split(",") if h.strip()), "fixed": _fixed(fixed),
    })  # fmt: skip
    result = run_tune(config)
    if result.best is not None:
        b = result.best
        spread = f" ± {b['score_std']:.4f}" if len(b["scores"]) > 1 else ""
        click.echo(f"best: trial {b['trial']} ({b['head']}), validation {b['score']:.4f}{spread}")
    if result.best_run is not None:
        m = json.loads((result.best_run / "metrics.json").read_text())
        click.echo(f"{m['split']} accuracy {m['accuracy']:.4f}  macro F1 {m['f1_macro']:.4f}  "
                   f"({m['n_samples']} videos): {result.best_run}")  # fmt: skip
    click.echo(f"leaderboard: {output / 'leaderboard.html'}")
    if result.interrupted:
        raise SystemExit(130)  # everything is written, but the search did not run its course
