"""Dataset recipes: `actrec manifest DATASET ROOT` turns a standard benchmark's official
annotation files into a ``path,label,split,group`` manifest that `actrec extract` reads."""

from actrec.extract.datasets import folders, hmdb51, kinetics, ssv2, ucf101  # noqa: F401 - registers
from actrec.extract.datasets.base import (
    DatasetManifest,
    Entry,
    ManifestOptions,
    summary,
    write_manifest,
    write_missing,
)
from actrec.extract.datasets.registry import (
    build_manifest,
    list_datasets,
    recipe_options,
    register_dataset,
)

__all__ = [
    "DatasetManifest",
    "Entry",
    "ManifestOptions",
    "build_manifest",
    "list_datasets",
    "recipe_options",
    "register_dataset",
    "summary",
    "write_manifest",
    "write_missing",
]
