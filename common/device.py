"""Choosing the device and the numeric precision, once, for both stages."""

from __future__ import annotations

import contextlib

import torch

from actrec.common.errors import ActrecError

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is the first CUDA device when there is one, else the CPU; `cuda:1` is checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ActrecError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda", "mps"):  # meta, xla, ...: nothing here runs on them
        raise ActrecError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ActrecError(f"--device {name}: no CUDA device here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ActrecError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bfloat16 on CUDA (fast, accurate enough for embeddings) and float32 elsewhere."""
    if name not in PRECISIONS:
        raise ActrecError(f"unknown precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A context that runs the forward pass in `precision`: a null context for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision))
