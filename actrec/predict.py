"""`actrec predict`: new videos end to end, through the run's own backbone and then its head.

The only place, with the demo, where the two stages meet: stage one's `features_for_videos`
rebuilds the backbone, preprocessing and sampling from the attributes of the cache the run was
trained on, and stage two's `predict_proba` / `predict_timeline` apply the head.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from actrec.common import options as O  # noqa: N812 - the types read as O.TOP_K
from actrec.common.atomic import replacing
from actrec.common.cache import open_cache
from actrec.common.errors import ActrecError
from actrec.common.ownership import PREDICTIONS, TIMELINE, check_file, mark_folder
from actrec.common.paths import check_outputs, distinct_inputs


@dataclass
class Prediction:
    """What `predict` found for one video."""

    video: str
    top: list[tuple[str, float]]  # (class, probability), best first
    times: np.ndarray  # (W,) seconds, the centre of each window
    timeline: np.ndarray  # (W, C) class probabilities per window
    classes: list[str]


def run_cache_attrs(run_config: dict[str, Any], cache: Path | None = None) -> dict[str, Any]:
    """The root attributes of the cache a run was trained on, which say how to extract: from
    ``cache`` where given, else as the run recorded them, else from the run's cache file."""
    if cache is None and run_config.get("cache_attrs"):
        return dict(run_config["cache_attrs"])
    path = Path(cache or run_config.get("cache", ""))
    if not path.is_file():
        raise ActrecError(
            f"the run's cache {path} is not there: pass --cache with a cache made with the same "
            "settings (it says which backbone, weights and sampling to use)"
        )
    with open_cache(path) as c:
        expected = run_config.get("cache_fingerprint")
        if expected and c.fingerprint != expected:
            raise ActrecError(
                f"{path}: fingerprint {c.fingerprint}, the run was trained on {expected}: "
                "pass --cache with the cache the run was trained on"
            )
        return dict(c.attrs)


def predict_videos(
    videos: list[Path],
    run_dir: Path,
    *,
    top_k: int = 5,
    cache: Path | None = None,
    weights: Path | None = None,
    backbone: Path | None = None,
    window: int | None = None,
    device: str = "auto",
    failures: dict[str, str] | None = None,
) -> list[Prediction]:
    """Top-k labels and a timeline of class probabilities for each video. A video that cannot
    be read raises :class:`ActrecError`, unless ``failures`` is a dict: then it is left out and
    recorded there (path -> why), and the others are predicted."""
    from actrec.extract import features_for_videos
    from actrec.temporal import load_run, predict_proba, predict_timeline

    run = load_run(run_dir)
    attrs = run_cache_attrs(run.config, cache)
    sequences = features_for_videos(
        videos, attrs, device=device, weights=weights, backbone=backbone, failures=failures
    )
    results = []
    for seq in sequences:
        features = seq.features.astype(np.float32)  # (T, D)
        probs = predict_proba(run, features)  # (C,)
        order = np.argsort(-probs)[:top_k]
        times, timeline = predict_timeline(run, features, seq.timestamps, window=window)
        results.append(
            Prediction(
                video=seq.id,
                top=[(run.classes[i], float(probs[i])) for i in order],
                times=times,
                timeline=timeline,
                classes=list(run.classes),
            )
        )
    return results


def safe_stem(name: str) -> str:
    """A file name's stem that any file system takes: letters, digits, ``._-``; at most 200
    characters, so that the suffixes still fit the 255 of a name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:200]


def timeline_stems(videos: list[Path]) -> dict[str, str]:
    """The timeline stem of each video (by the path as given), distinct by construction.

    Made safe first, then made unique: two videos whose safe names are one (``my clip.mp4`` and
    ``my_clip.mp4``; ``a/x.mp4`` and ``b/x.mp4``; names that differ only in case, one file on
    some file systems) get their position in front; a prefixed name that meets another is
    numbered again. Every name is checked against those already taken, in its final form.
    """
    safe = [safe_stem(Path(v).name) for v in videos]
    counts = Counter(s.lower() for s in safe)
    taken = {s.lower() for s in safe if counts[s.lower()] == 1}
    stems = {}
    for i, (video, stem) in enumerate(zip(videos, safe, strict=True)):
        if counts[stem.lower()] > 1:
            candidate, k = f"{i:03d}_{stem[:192]}", 0
            while candidate.lower() in taken:
                k += 1
                candidate = f"{i:03d}-{k}_{stem[:188]}"
            stem = candidate
            taken.add(stem.lower())
        stems[str(video)] = stem
    return stems


def timeline_paths(out_dir: Path, stem: str) -> tuple[Path, Path]:
    return out_dir / f"{stem}.timeline.csv", out_dir / f"{stem}.timeline.png"


def check_predictions_dir(out_dir: Path, stems: list[str]) -> None:
    """Refuse an ``-o`` where a timeline would replace a file actrec did not write as one."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ActrecError(f"{out_dir} exists and is not a folder: choose another -o")
    for stem in stems:
        for path in timeline_paths(out_dir, stem):
            check_file(path, TIMELINE)


def write_timeline(
    prediction: Prediction, out_dir: Path, stem: str | None = None
) -> tuple[Path, Path]:
    """`<stem>.timeline.csv` (time and one column per class) and a PNG plot of it; the stem
    defaults to the video's file name. Files there are replaced only if actrec wrote them as
    timelines; a new folder is marked as a predictions folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        mark_folder(out_dir, PREDICTIONS)
    stem = safe_stem(stem or Path(prediction.video).name)
    csv_path, png_path = timeline_paths(out_dir, stem)
    with replacing(csv_path, TIMELINE) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time", *prediction.classes])
        for t, row in zip(prediction.times, prediction.timeline, strict=True):
            writer.writerow([f"{t:.3f}", *(f"{p:.5f}" for p in row)])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    shown = [name for name, _ in prediction.top]  # the top-k only: a legend of 400 is unreadable
    for name in shown:
        ax.plot(
            prediction.times, prediction.timeline[:, prediction.classes.index(name)], label=name
        )
    ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1), title=Path(prediction.video).name)
    ax.legend(loc="upper left", fontsize="small", ncol=2)
    fig.tight_layout()
    with replacing(png_path, TIMELINE) as tmp:  # complete or not at all, like every file
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return csv_path, png_path


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="A run folder made by `actrec train`.")  # fmt: skip
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("predictions"), show_default=True, help="Where the timelines (CSV and PNG) go.")  # fmt: skip
@click.option("-k", "--top-k", default=5, show_default=True, type=O.TOP_K, help="How many labels to print per video.")  # fmt: skip
@click.option("--window", type=O.WINDOW, help="Frames per timeline window (default: the run's --clip-len).")  # fmt: skip
@click.option("--cache", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The cache whose settings to extract with (default: the run's own).")  # fmt: skip
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The weights file, where the cache was made from one that has moved.")  # fmt: skip
@click.option("--backbone", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The backbone file, where the cache was made from one that has moved.")  # fmt: skip
@O.DEVICE_OPTION
def predict(
    videos: tuple[Path, ...],
    run_dir: Path,
    output: Path,
    top_k: int,
    window: int | None,
    cache: Path | None,
    weights: Path | None,
    backbone: Path | None,
    device: str,
) -> None:
    """Top-k labels and a per-time timeline for new videos with a trained run.

    Each video goes through the backbone, preprocessing and sampling recorded in the cache the
    run was trained on, then through the run's head. Prints the top-k labels per video and writes
    VIDEO.timeline.csv (class probabilities over sliding windows) and VIDEO.timeline.png.

    Example: actrec predict clip.mp4 --run runs/gru -o predictions/
    """
    distinct_inputs(videos, "VIDEOS")
    stems = timeline_stems(list(videos))
    written = [f for stem in stems.values() for f in timeline_paths(output, stem)]
    check_outputs(
        [*(("VIDEOS", v) for v in videos), ("--run", run_dir), ("--cache", cache),
         ("--weights", weights), ("--backbone", backbone)],
        [("-o", output), *(("-o", f) for f in written)],
    )  # fmt: skip
    check_predictions_dir(output, list(stems.values()))
    failures: dict[str, str] = {}
    results = predict_videos(
        list(videos), run_dir, top_k=top_k, cache=cache, weights=weights, backbone=backbone,
        window=window, device=device, failures=failures,
    )  # fmt: skip
    for p in results:
        click.echo(p.video)
        for rank, (name, prob) in enumerate(p.top, 1):
            click.echo(f"  {rank}. {name:<24} {prob:.3f}")
        csv_path, png_path = write_timeline(p, output, stems[p.video])
        click.echo(f"  timeline: {csv_path} {png_path}")
    if failures:  # as extract does: the good videos predicted, the bad listed, exit code 1
        click.echo(f"{len(failures)} failed:", err=True)
        for video, why in failures.items():
            click.echo(f"  {video}: {why}", err=True)
        raise SystemExit(1)
