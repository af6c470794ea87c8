"""The dataset registry: a recipe registers under a name with the options it reads; one front
door, :func:`build_manifest`, looks it up and refuses unknown names and foreign options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from actrec.common.errors import ActrecError
from actrec.extract.datasets.base import DatasetManifest, ManifestOptions

Build = Callable[[Path, "Path | None", ManifestOptions], DatasetManifest]


@dataclass(frozen=True)
class Recipe:
    name: str
    build: Build
    options: tuple[str, ...]  # the ManifestOptions fields it reads


_RECIPES: dict[str, Recipe] = {}


def register_dataset(name: str, options: tuple[str, ...] = ()) -> Callable[[Build], Build]:
    known = {f.name for f in fields(ManifestOptions)}
    assert set(options) <= known, f"unknown options {set(options) - known} for {name}"

    def register(build: Build) -> Build:
        _RECIPES[name] = Recipe(name, build, options)
        return build

    return register


def list_datasets() -> list[str]:
    return list(_RECIPES)


def recipe_options(name: str) -> tuple[str, ...]:
    return _recipe(name).options


def build_manifest(
    name: str,
    root: str | Path,
    annotations: str | Path | None = None,
    options: ManifestOptions | None = None,
) -> DatasetManifest:
    """The clips of dataset ``name`` under ``root``, from its official annotation files."""
    recipe = _recipe(name)
    root = Path(root)
    if not root.is_dir():
        raise ActrecError(f"{root}: no such folder; pass the folder the dataset was unpacked in")
    if annotations is not None and not Path(annotations).exists():
        raise ActrecError(f"--annotations {annotations}: no such file or folder")
    return recipe.build(
        root, None if annotations is None else Path(annotations), options or ManifestOptions()
    )


def _recipe(name: str) -> Recipe:
    if name not in _RECIPES:
        raise ActrecError(f"unknown dataset {name!r}: choose one of {', '.join(_RECIPES)}")
    return _RECIPES[name]
