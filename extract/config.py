"""The settings of one extraction, as a typed dataclass checked before any work starts."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from actrec.common.config import StrictConfig
from actrec.common.device import PRECISIONS
from actrec.common.errors import ActrecError

DTYPES = ("float16", "float32")


@dataclass
class ExtractConfig(StrictConfig):
    """Everything `actrec extract` takes. Build it from keywords, or from a dict with
    :meth:`from_dict`, which refuses unknown keys."""

    KIND = "extract settings"  # how errors name them (a class constant, not a field)

    source: Path  # a folder of class folders, or a CSV manifest
    output: Path  # the cache, CACHE.h5
    backbone: str = "resnet18"  # a torchvision model name, timm:NAME, or a .pt2 / .pt file
    weights: str = "DEFAULT"  # DEFAULT | a torchvision weights name | none | a state-dict file
    input_size: tuple[int, int] | None = None  # (H, W); overrides the weights' crop size
    mean: tuple[float, float, float] | None = None  # overrides the weights' normalisation
    std: tuple[float, float, float] | None = None
    fps: float | None = None  # resample by timestamps to this many frames per second
    every: int | None = None  # or keep every N-th frame
    max_frames: int | None = None  # at most N frames per video, spread uniformly
    frame_rate: float = 25.0  # frames per second assumed for frame folders
    batch_size: int = 64  # frames per forward pass, across video boundaries
    workers: int | None = None  # decoding processes; None: about half the CPU cores; 0: inline
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = (
        "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
    )
    dtype: str = "float16"  # how features are stored
    shard: tuple[int, int] | str | None = None  # (K, N) or "K/N": items K, K+N, ...; None: RANK
    progress: bool = True  # a tqdm bar on stderr

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        self.output = Path(self.output)
        if isinstance(self.input_size, int):
            self.input_size = (self.input_size, self.input_size)
        if isinstance(self.shard, str):
            self.shard = parse_shard(self.shard)
        self.validate()

    def validate(self) -> None:
        """Option conflicts and impossible values, before any work starts."""
        if self.fps is not None and self.every is not None:
            raise ActrecError("--fps and --every exclude each other: choose one")
        for name in ("fps", "frame_rate"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ActrecError(
                    f"--{name.replace('_', '-')} must be a positive number, got {value}"
                )
        for name in ("every", "max_frames", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ActrecError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.workers is not None and self.workers < 0:
            raise ActrecError(f"--workers must be 0 or more, got {self.workers}")
        if self.dtype not in DTYPES:
            raise ActrecError(f"--dtype {self.dtype}: choose one of {', '.join(DTYPES)}")
        if self.precision not in PRECISIONS:
            raise ActrecError(
                f"--precision {self.precision}: choose one of {', '.join(PRECISIONS)}"
            )
        for name in ("mean", "std"):  # a NaN mean or a zero std makes every feature NaN or inf
            value = getattr(self, name)
            if value is None:
                continue
            shown = " ".join(f"{float(v):g}" for v in value)
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ActrecError(f"--{name} {shown}: give 3 finite numbers (R G B, 0-1 scale)")
            if name == "std" and min(value) <= 0:
                raise ActrecError(f"--std {shown}: must be positive (the pixels are divided by it)")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 8):
            raise ActrecError(f"--input-size {self.input_size}: give N or HxW, at least 8 pixels")
        if self.shard is not None:
            k, n = self.shard
            if not 0 <= k < n:
                raise ActrecError(f"--shard {k}/{n}: K must be in 0..N-1")

    def resolved_shard(self) -> tuple[int, int]:
        """(K, N): --shard, else torchrun's RANK and WORLD_SIZE, else Slurm's SLURM_PROCID and
        SLURM_NTASKS (one task per process, started by srun), else (0, 1)."""
        if self.shard is not None:
            return self.shard
        from actrec.common.shards import from_environment

        return from_environment()

    def resolved_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, min(8, (os.cpu_count() or 2) // 2))


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` -> (K, N)."""
    from actrec.common.shards import parse_shard as parse

    return parse(text)


def shard_output(output: Path, k: int, n: int) -> Path:
    """Where shard K of N is written: feats.h5 -> feats.shard0of4.h5 (one shard: unchanged)."""
    if n == 1:
        return output
    return output.with_name(f"{output.stem}.shard{k}of{n}{output.suffix}")
