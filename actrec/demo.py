"""`actrec demo` (what `make demo` runs): the whole pipeline on a generated motion set.

Generate six motion classes (three pairs that only temporal order separates), extract them with
resnet18, train `mean` and `gru` on the cache, write both reports and a leaderboard. Uses the
public functions of both stages, as a user's script would.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from actrec.common import options as O  # noqa: N812 - the types read as O.SEED
from actrec.synthetic import CLASSES, make_motion_set

BACKBONE = "resnet18"


def cached_weights(backbone: str = BACKBONE) -> str:
    """`DEFAULT` where torchvision's download cache already holds the weights, else `none`."""
    from torchvision.models import get_model_weights

    from actrec.extract.backbones import cached_weights_file

    default = get_model_weights(backbone).DEFAULT
    return "DEFAULT" if cached_weights_file(default).is_file() else "none"


def run_demo(
    out: Path,
    *,
    clips_per_class: int = 40,
    frames: int = 12,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    force: bool = True,
    echo=click.echo,
) -> list[Path]:
    """Run every step into ``out``; returns the run folders (mean, gru).

    ``force`` replaces the demo's own earlier runs, so that a rerun starts them afresh.
    """
    from actrec.common.ownership import DEMO, check_folder, mark_folder
    from actrec.extract import ExtractConfig, run_extraction
    from actrec.temporal import TrainConfig, train, write_leaderboard

    started = time.perf_counter()
    out = Path(out)
    check_folder(out, DEMO, force=True)  # new, empty or the demo's own: a rerun goes on in it
    mark_folder(out, DEMO)
    videos = out / "videos"
    if not all((videos / c / f"{clips_per_class - 1:03d}.mp4").is_file() for c in CLASSES):
        echo(
            f"[1/4] generating {len(CLASSES)} x {clips_per_class} clips of {frames} frames in {videos}"
        )
        make_motion_set(videos, clips_per_class=clips_per_class, n_frames=frames, seed=seed)
    else:
        echo(f"[1/4] clips already in {videos}")

    weights = cached_weights()
    if weights == "none":
        echo(f"notice: no pretrained {BACKBONE} weights in torchvision's cache; using random init")
    cache = out / f"features_{BACKBONE}_{weights.lower()}.h5"
    echo(f"[2/4] extracting with {BACKBONE} (weights {weights}) into {cache}")
    result = run_extraction(
        ExtractConfig(
            source=videos, output=cache, backbone=BACKBONE, weights=weights, device=device
        )
    )
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} demo clips failed to extract")

    runs = []
    for head in ("mean", "gru"):
        run_dir = out / "runs" / head
        echo(f"[3/4] training {head} into {run_dir}")
        # train's own defaults: what a user's first `actrec train` does
        config = TrainConfig(
            cache=str(cache), out=str(run_dir), head=head, epochs=epochs, seed=seed, device=device,
            force=force,
        )  # fmt: skip
        runs.append(train(config))

    md, html = write_leaderboard(runs, out / "leaderboard")
    echo(f"[4/4] leaderboard ({time.perf_counter() - started:.0f} s in all)\n")
    echo(md.read_text())
    echo(f"reports: {runs[0] / 'report.html'}  {runs[1] / 'report.html'}")
    echo(f"leaderboard: {html}")
    return runs


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_out"), show_default=True, help="Folder for clips, cache, runs and reports.")  # fmt: skip
@click.option("--clips-per-class", default=40, show_default=True, type=O.CLIPS, help="Generated clips per class (6 classes).")  # fmt: skip
@click.option("--frames", default=12, show_default=True, type=O.CLIP_FRAMES, help="Frames per clip.")  # fmt: skip
@click.option("--epochs", default=None, type=O.EPOCHS, help="Passes over the training set per head [default: train's automatic budget].")  # fmt: skip
@O.seed_option("Seed for the clips, the split and training.")
@O.DEVICE_OPTION
def demo(
    output: Path, clips_per_class: int, frames: int, epochs: int | None, seed: int, device: str
) -> None:
    """The built-in example end to end: generate, extract, train mean and gru, report.

    The six classes (move left/right/up/down, grow, shrink) come in pairs that hold the same
    frames in opposite order, so mean pooling can only tell the pairs apart while a GRU, which
    sees order, can tell every class. Reruns reuse the clips and the cache.

    Example: actrec demo -o demo_out
    """
    run_demo(
        output, clips_per_class=clips_per_class, frames=frames, epochs=epochs, seed=seed,
        device=device, force=True,
    )  # fmt: skip
