"""`actrec manifest`: parse, call build_manifest, write the CSV, print the summary."""

from __future__ import annotations

from pathlib import Path

import click

from actrec.common import options as O  # noqa: N812 - the types read as O.SEED
from actrec.common.errors import ActrecError
from actrec.common.ownership import MANIFEST, MISSING, check_file
from actrec.common.paths import check_outputs
from actrec.extract.datasets import (
    ManifestOptions,
    build_manifest,
    list_datasets,
    recipe_options,
    summary,
    write_manifest,
    write_missing,
)

SHOWN = 5  # missing or extra files printed before pointing to --missing


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("dataset", type=click.Choice(list_datasets()))
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The manifest to write (path,label,split,group; paths relative to it).")  # fmt: skip
@click.option("--annotations", type=click.Path(exists=True, path_type=Path),
              help="The official annotation folder or file [default: found beside ROOT].")  # fmt: skip
@click.option("--fold", type=click.IntRange(1, 3), default=None,
              help="ucf101, hmdb51: the official split [default: 1].")  # fmt: skip
@click.option("--val", type=O.FRACTION, default=None, help="folders: validation fraction [0.15].")
@click.option("--test", type=O.FRACTION, default=None, help="folders: test fraction [0.15].")
@O.seed_option("folders: the split's seed [0].", default=None)
@click.option("--group-regex", default=None, metavar="REGEX",
              help="folders: a clip's group is this regex's first group (or match) in its path.")  # fmt: skip
@click.option("--missing", "missing_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every missing and extra file here, one per line.")  # fmt: skip
def manifest(dataset: str, root: Path, output: Path, annotations: Path | None, fold: int | None,
             val: float | None, test: float | None, seed: int | None, group_regex: str | None,
             missing_path: Path | None) -> None:  # fmt: skip
    """Write a path,label,split,group manifest of a standard dataset from its official files.

    DATASET is ucf101 (ucfTrainTestlist/), hmdb51 (testTrainMulti_7030_splits/), kinetics
    (annotation CSVs), ssv2 (labels/*.json) or folders (class folders, a seeded split made
    here); the annotations are looked for in and beside ROOT. Files the annotations name but
    the disk lacks, and files on disk that no annotation names, are counted and listed.

    Example: actrec manifest ucf101 UCF-101/ -o ucf101.csv --fold 1
    """
    given = {"fold": fold, "val": val, "test": test, "seed": seed, "group_regex": group_regex}
    foreign = [k for k, v in given.items() if v is not None and k not in recipe_options(dataset)]
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise ActrecError(f"{dataset} does not take {flags}")
    options = ManifestOptions(**{k: v for k, v in given.items() if v is not None})
    outputs = [("-o", output), ("--missing", missing_path)]
    # a manifest beside the videos is never taken for one: ROOT may hold it
    check_outputs([("ROOT", root), ("--annotations", annotations)], outputs,
                  files_may_lie_in=[root])  # fmt: skip
    check_file(output, MANIFEST, "-o")
    if missing_path is not None:
        check_file(missing_path, MISSING, "--missing")
    result = build_manifest(dataset, root, annotations, options)
    # the annotation files a recipe found by itself are inputs too
    check_outputs([("annotations", a) for a in result.annotations], outputs)
    if not result.entries:
        raise ActrecError(
            f"{root}: none of the {len(result.missing):,} clips the annotations name is on disk "
            f"(the first: {sorted(result.missing)[0] if result.missing else 'none'}); pass the "
            "folder that holds the videos"
        )
    write_manifest(result, output)
    click.echo(summary(result))
    click.echo(f"manifest: {output} ({len(result.entries):,} videos)")
    if missing_path is not None:
        write_missing(result, missing_path)
        click.echo(f"missing and extra files: {missing_path}")
    else:
        for kind, names in (("missing", sorted(result.missing)), ("extra", sorted(result.extra))):
            for name in names[:SHOWN]:
                click.echo(f"  {kind}: {name}", err=True)
            if len(names) > SHOWN:
                click.echo(f"  ... {len(names) - SHOWN:,} more {kind}: list them all with "
                           "--missing FILE", err=True)  # fmt: skip
