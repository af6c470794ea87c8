"""`actrec extract`: parse, build an ExtractConfig, call run_extraction, print."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.common import options as O  # noqa: N812 - the types read as O.RATE, O.BATCH
from actrec.common.device import PRECISIONS
from actrec.common.errors import ActrecError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The cache to write (HDF5). Reruns resume it.",
)
@click.option(
    "--backbone",
    default="resnet18",
    show_default=True,
    help="A torchvision classification model name, timm:NAME (any timm model, e.g. "
    "timm:vit_small_patch14_dinov2.lvd142m; needs timm), or a frozen extractor file "
    "(.pt2 from torch.export, .pt TorchScript) with --input-size/--mean/--std. "
    "`actrec backbones` lists the names.",
)
@click.option(
    "--weights",
    default="DEFAULT",
    show_default=True,
    help="DEFAULT (timm: from the Hugging Face cache), a torchvision weights name "
    "(ResNet18_Weights.IMAGENET1K_V1), none (a seeded random init), or a state-dict file "
    "(.pth; .safetensors for timm).",
)
@click.option(
    "--input-size",
    type=O.InputSize(),
    metavar="N|HxW",
    help="Input size; overrides the weights' crop (the resize scales with it).",
)
@click.option(
    "--mean",
    type=O.PIXEL_MEAN,
    nargs=3,
    default=None,
    metavar="R G B",
    help="Normalisation mean (0-1 scale); default from the weights.",
)
@click.option(
    "--std",
    type=O.PIXEL_STD,
    nargs=3,
    default=None,
    metavar="R G B",
    help="Normalisation std (0-1 scale); default from the weights.",
)
@click.option("--fps", type=O.RATE, help="Resample to F frames per second by timestamps.")
@click.option("--every", type=O.EVERY, help="Keep every N-th frame.")
@click.option(
    "--max-frames", type=O.MAX_FRAMES, help="At most N frames per video, spread uniformly."
)
@click.option(
    "--frame-rate",
    type=O.RATE,
    default=25.0,
    show_default=True,
    help="Frames per second assumed for frame folders.",
)
@click.option(
    "--batch-size",
    type=O.BATCH,
    default=64,
    show_default=True,
    help="Frames per forward pass, across video boundaries.",
)
@click.option("--workers", type=O.WORKERS, help="Decoding processes [default: half the CPU cores].")
@O.DEVICE_OPTION
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Forward-pass precision: auto is bfloat16 on CUDA, float32 on CPU.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="How the features are stored.",
)
@click.option(
    "--shard",
    type=O.Shard(),
    help="Only items K, K+N, ... into NAME.shardKofN.h5 [default: from torchrun's "
    "RANK/WORLD_SIZE or srun's SLURM_PROCID/SLURM_NTASKS]; join shards with actrec merge.",
)
@O.QUIET_OPTION
def extract(source: Path, output: Path, backbone: str, weights: str, input_size, mean, std,
            fps, every, max_frames, frame_rate, batch_size, workers, device, precision, dtype,
            shard, quiet) -> None:  # fmt: skip
    """Run a frozen CNN over every frame of every video into an HDF5 cache.

    SOURCE is a folder of class folders of videos (SOURCE/<class>/<video>), of frame folders
    (SOURCE/<class>/<video>/000001.jpg), or a CSV manifest with columns path,label[,split][,group].
    Unreadable items are recorded as failed (exit code 1); the rest is kept.

    Example: actrec extract videos/ -o feats.h5 --backbone resnet18 --fps 5
    """
    from actrec.common.cache import partial_dir
    from actrec.common.shards import under_torchrun
    from actrec.extract.config import ExtractConfig, shard_output
    from actrec.extract.run import run_extraction

    if not source.exists():
        raise ActrecError(f"{source}: no such file or folder; pass a folder of videos or a CSV")
    config = ExtractConfig(
        source=source,
        output=output,
        backbone=backbone,
        weights=weights,
        input_size=input_size,
        mean=mean,
        std=std,
        fps=fps,
        every=every,
        max_frames=max_frames,
        frame_rate=frame_rate,
        batch_size=batch_size,
        workers=workers,
        device=device,
        precision=precision,
        dtype=dtype,
        shard=shard,  # K/N, parsed and checked by ExtractConfig
        progress=not quiet,
    )
    try:
        result = run_extraction(config)
    except KeyboardInterrupt:
        kept = partial_dir(shard_output(output, *config.resolved_shard()))
        where = (
            f"the videos finished so far are kept in {kept}"
            if kept.is_dir()  # a run stopped before its first video leaves no folder
            else "no video was finished yet"
        )
        click.echo(f"\nInterrupted: {where}; rerun the same command to go on.", err=True)
        raise SystemExit(130) from None  # the shell's code for a run stopped by Ctrl-C
    if result.nothing_to_do:
        click.echo(f"{result.output} already holds all {result.already} videos; nothing to do")
    else:
        rate = result.extracted_frames / max(result.seconds, 1e-9)
        click.echo(
            f"{result.output}: {result.videos} videos, {result.frames} frames, "
            f"{result.dim}-D ({result.extracted} extracted now, {result.already} already there; "
            f"{result.seconds:.1f} s, {rate:.{1 if rate < 10 else 0}f} frames/s)"
        )
    if result.changed:
        click.echo(f"{result.changed} videos changed on disk since, and were extracted again")
    if result.relabelled:
        click.echo(f"{result.relabelled} videos got their label, split or group from the source")
    if result.gone:
        click.echo(
            f"{result.gone} videos in {result.output} are no longer in the source: kept, with "
            "their old labels (extract into a new -o to leave them out)",
            err=True,
        )
    if result.failed:
        click.echo(f"{len(result.failed)} failed:", err=True)
        for vid, why in sorted(result.failed.items()):
            click.echo(f"  {vid}: {why}", err=True)
        if shard is None and under_torchrun() and config.resolved_shard()[1] > 1:
            # a shard with one bad video would stop the shards still extracting; a single
            # process under torchrun has no other shard to stop, and exits 1 as anywhere else
            click.echo(
                "exit code 0 under torchrun, so that the other shards go on; the failed videos "
                "are recorded in the shard, and `actrec merge` lists them",
                err=True,
            )
            return
        raise SystemExit(1)


DIMS_UP_TO = 25  # embedding sizes cost building each model (on the meta device): short lists only


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pattern", required=False)
@click.option(
    "--dims/--no-dims",
    default=None,
    help=f"Embedding sizes [default: where {DIMS_UP_TO} names or fewer match].",
)
def backbones(pattern: str | None, dims: bool | None) -> None:
    """List the names that `actrec extract --backbone` takes.

    torchvision classification models, then timm models with pretrained weights (timm:NAME)
    where timm is installed, each with its default input size and, for short lists, the size
    of its embedding. PATTERN is a substring or a shell wildcard (quote it).

    Example: actrec backbones dinov2
    """
    from actrec.extract.backbones import available_backbones, embedding_dim
    from actrec.extract.timm_backbones import INSTALL

    found = available_backbones(pattern)
    if not found:
        raise ActrecError(f"no backbone name matches {pattern!r}; `actrec backbones` lists all")
    show_dims = len(found) <= DIMS_UP_TO if dims is None else dims
    width = max(len(name) for name, _ in found)
    for name, (h, w) in found:
        dim = f"{embedding_dim(name):>5}-D" if show_dims else ""
        click.echo(f"{name:<{width}}  {h}x{w}{'':<3}{dim}".rstrip())
    if not any(name.startswith("timm:") for name, _ in found):
        try:
            import timm  # noqa: F401
        except ImportError:
            click.echo(f"(timm:NAME backbones need timm: {INSTALL})", err=True)
    if not show_dims:
        click.echo(
            f"{len(found)} names; embedding sizes with --dims, or a narrower PATTERN", err=True
        )
