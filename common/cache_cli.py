"""`actrec inspect` and `actrec merge`: commands on caches, whichever stage wrote them."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from actrec.common.cache import open_cache
from actrec.common.errors import CacheError
from actrec.common.ownership import check_cache_output
from actrec.common.partial import combine
from actrec.common.paths import check_outputs, distinct_inputs
from actrec.common.shards import check_set


def summarize(path: str | Path) -> str:
    """A human-readable summary of a cache."""
    with open_cache(path) as c:
        ix, a = c.index, c.attrs
        if c.check_index():  # a summary of a broken index could raise: name the file only
            return (
                f"cache      {c.path}\nframes     {c.total_frames}\ndimension  {c.dim} ({c.dtype})"
            )
        labelled = ix.label >= 0
        lines = [
            f"cache      {c.path}",
            f"videos     {len(c)} ({int(labelled.sum())} labelled), {len(ix.failed)} failed",
            f"frames     {c.total_frames}"
            + (
                f" (per video: min {ix.length.min()}, median "
                f"{int(np.median(ix.length))}, max {ix.length.max()})"
                if len(c)
                else ""
            ),
            f"dimension  {c.dim} ({c.dtype})",
            f"classes    {len(ix.classes)}: {', '.join(ix.classes[:12])}{' ...' if len(ix.classes) > 12 else ''}",
        ]
        splits = sorted({s for s in ix.split if s})
        if splits:
            counts = ", ".join(f"{s} {ix.split.count(s)}" for s in splits)
            lines.append(f"splits     {counts}")
        for key in ("backbone", "weights", "input_size", "sampling", "precision", "created"):
            if key in a:
                lines.append(f"{key:<10} {a[key]}")
        lines.append(f"fingerprint {c.fingerprint}")
        for vid, err in sorted(ix.failed.items()):
            lines.append(f"failed     {vid}: {err}")
        return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("cache", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--verify",
    is_flag=True,
    help="Also read every value: non-finite features, timestamps out of order.",
)
def inspect(cache: Path, verify: bool) -> None:
    """Summarise a cache: videos, classes, frames, dimension, backbone, failures.

    The index is always checked (rows past the end of /features, labels outside /classes,
    negative starts, ...): each problem is a line, and the exit code is 1.

    Example: actrec inspect feats.h5 --verify
    """
    click.echo(summarize(cache))
    with open_cache(cache) as c:
        # the index checks always (cheap); the values only with --verify
        problems = c.verify() if verify else c.check_index()
    if problems or verify:
        if problems:
            for p in problems:
                click.echo(f"problem    {p}", err=True)
            raise SystemExit(1)
        click.echo("verify     ok")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "shards", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cache to write.",
)
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option(
    "--partial",
    is_flag=True,
    help="Merge an incomplete or mixed set of shards (the result records which it holds).",
)
def merge(shards: tuple[Path, ...], output: Path, force: bool, partial: bool) -> None:
    """Join the shards of a distributed extraction into one cache, sorted by video id.

    The shards must have been made with the same settings (fingerprint), and be the whole set
    (every K of N, once) unless --partial. The result equals a single-process extraction of the
    same source. Caches that are not shards are joined as they are; an id found twice must
    have the same features in both.

    Example: actrec merge feats.shard0of2.h5 feats.shard1of2.h5 -o feats.h5
    """
    if output.exists() and not force:
        raise CacheError(f"{output} exists: pass --force to overwrite it")
    if output.resolve() in {s.resolve() for s in shards}:
        raise CacheError(f"{output} is one of the shards: write the merged cache elsewhere")
    distinct_inputs(shards, "SHARDS")
    check_outputs([("SHARDS", s) for s in shards], [("-o", output)])
    check_cache_output(output, force)  # over an actrec cache only
    attrs = []
    for path in shards:
        with open_cache(path) as c:
            c.ensure_index()
            attrs.append((path, c.attrs))
    root = {k: v for k, v in attrs[0][1].items() if k != "shard"}
    holds = check_set(attrs, partial)
    if holds is not None:
        root["shard"] = holds
    # a bar only on a terminal: in a log or a pipe it is noise around the one line that counts
    combine(list(shards), output, attrs=root, progress=True)  # a bar, or log lines off a terminal
    click.echo(summarize(output))
    if holds is not None:
        click.echo(f"partial    holds shards {holds} only (--partial)", err=True)
