"""What every backbone builder (torchvision, timm, a model file) shares: the seed of a random
init, a file's digest, and the one result they all return before the model is frozen."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from actrec.extract.decode import Resize

NONE_SEED = 0  # `--weights none` is a random init, seeded so that every run gets the same one


@dataclass
class Built:
    """A backbone as its builder made it: not yet frozen, moved or probed for its width."""

    module: nn.Module  # (N, 3, H, W) normalised float -> (N, D) or a feature map
    attrs: dict[str, Any]  # backbone, weights, and their files, for the cache's attributes
    resize: Resize
    mean: tuple[float, ...]
    std: tuple[float, ...]


def sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
