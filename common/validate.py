"""The values that cross a boundary, checked in one place each: the arrays that enter or leave a
cache, the text that names things in it, its index, and each file of a run folder.

Every check ends in an :class:`ActrecError`: one line naming the file (or the item) and what is
wrong, which the command line prints with exit code 2. Nothing here repairs a value: a float64
of 1e300 is refused for a float32 cache rather than stored as ``inf``, a class named twice is
refused rather than merged.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from actrec.common.errors import ActrecError

# -- arrays ---------------------------------------------------------------------------------------

STORED = ("float16", "float32")  # what a cache stores features as


def check_features(
    x: Any, what: str, *, dtype: str | np.dtype | None = None, dim: int | None = None
) -> np.ndarray:
    """``x`` as a (T, D) array of finite real numbers, T >= 1 and D >= 1, D == ``dim`` where
    given, every value representable in ``dtype`` (the cache's stored type) where given."""
    if not isinstance(x, np.ndarray):
        raise ActrecError(f"{what}: not an array (got {type(x).__name__})")
    if x.dtype.kind not in "fiu":  # complex loses its imaginary part; bool, text, objects
        kind = {"c": "complex", "b": "booleans", "O": "Python objects"}.get(x.dtype.kind, "text")
        raise ActrecError(
            f"{what}: dtype {x.dtype} is not real numbers ({kind}); features must be real"
        )
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ActrecError(
            f"{what}: expected an array of shape [T, D] with T >= 1 and D >= 1, got {list(x.shape)}"
        )
    if dim is not None and x.shape[1] != dim:
        raise ActrecError(f"{what}: dimension {x.shape[1]}, but the cache's is {dim}")
    narrow = dtype is not None and np.dtype(dtype).kind == "f"
    limit = float(np.finfo(dtype).max) if narrow else math.inf
    step = max(1, 2**20 // x.shape[1])  # blocks of rows: no copy of a cache-sized array
    for first in range(0, len(x), step):
        block = x[first : first + step]
        if block.dtype.kind == "f":
            finite = np.isfinite(block)
            if not finite.all():
                t, d = np.argwhere(~finite)[0]
                raise ActrecError(
                    f"{what}: non-finite value {block[t, d]} at step {first + t}, dimension {d}; "
                    "features must be finite"
                )
        peak = max(float(block.max()), -float(block.min()))
        if peak > limit:
            wider = " (import with --dtype float32)" if np.dtype(dtype) == np.float16 else ""
            raise ActrecError(
                f"{what}: a value of {peak:g} is beyond {np.dtype(dtype)}'s range "
                f"({limit:g}) and would be stored as inf{wider}"
            )
    return x


# -- text -----------------------------------------------------------------------------------------


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot name a thing in a cache or on disk (None when it can): HDF5 stores
    UTF-8 and ends a string at NUL."""
    if "\0" in value:
        return "holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a file name of bytes that are not UTF-8 (surrogate escapes)
        return "is not valid UTF-8"
    return None


def check_text(value: str, what: str) -> str:
    """``value`` unchanged, or one line naming ``what`` (a file, a manifest line)."""
    problem = text_problem(value)
    if problem:
        message = f"{what}: {value[:80]!r} {problem}; rename it"
        # printable whatever the name holds: a file name's stray bytes are shown escaped
        raise ActrecError(message.encode("utf-8", "backslashreplace").decode())
    return value


# -- the index of a cache -------------------------------------------------------------------------


def check_names(items: Any, where: str) -> None:
    """Every ``id``, ``label``, ``split`` and ``group`` of ``items`` can be stored (see
    :func:`text_problem`): checked when a source is listed, before any work."""
    for it in items:
        for field in ("id", "label", "split", "group"):
            check_text(getattr(it, field, "") or "", f"{where}: item {it.id[:80]!r}, its {field}"
                       if field != "id" else f"{where}: an item's name")  # fmt: skip


def index_problems(handle: Any, ids: list[str], classes: list[str], texts: dict[str, list[str]]
                   ) -> list[str]:  # fmt: skip
    """What the index of an open cache (an h5py File) holds that no actrec cache may: features
    that are not real floats, a class named twice, names with NUL or not UTF-8. (An index of
    non-integers is refused as the index is read.)"""
    problems = []
    features = handle["features"]
    if features.dtype.kind != "f":
        problems.append(f"/features holds {features.dtype}, not real floating-point numbers")
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            problems.append(f"class {name!r} appears twice in /classes")
            break
        seen.add(name)
    for where, values in {"videos/id": ids, "classes": classes, **texts}.items():
        for value in values:
            problem = text_problem(value)
            if problem:
                problems.append(f"/{where}: {value[:40]!r} {problem}")
                break
    return problems


# -- the files of a run folder --------------------------------------------------------------------

CONFIG_KEYS = ("head", "cache", "batch_size", "clip_len", "eval_windows", "val_fraction",
               "test_fraction", "split_seed")  # fmt: skip
METRICS_KEYS = ("split", "n_samples", "accuracy", "f1_macro", "classes", "per_class")
CHECKPOINT_KEYS = ("head", "head_kwargs", "classes", "mean", "std", "delta", "state_dict")
_FIX = "retrain the run (its config.json holds every option), or restore the file"


def damaged(path: Path, why: str) -> ActrecError:
    return ActrecError(f"{path}: damaged ({why}); {_FIX}")


def read_json(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object of a run folder (config.json, metrics.json) holding ``keys``."""
    path = Path(path)
    if not path.is_file():
        raise ActrecError(f"{path.parent}: no {path.name}; is it a finished run of `actrec train`?")
    try:
        text = path.read_text(encoding="utf-8")
        value = json.loads(text)
    except UnicodeDecodeError:
        raise damaged(path, "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise damaged(path, "empty" if not text.strip() else f"not JSON: {e.msg}, line {e.lineno}"
                      ) from None  # fmt: skip
    except OSError as e:
        raise ActrecError(f"{path}: cannot read it ({e.strerror})") from None
    if not isinstance(value, dict):
        raise damaged(path, f"a JSON {type(value).__name__}, not an object")
    missing = [k for k in keys if k not in value]
    if missing:
        raise damaged(path, f"no {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    return value


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``model.pt``: loaded as tensors only (``weights_only``: no code of the file's runs), and
    checked to hold what rebuilding the model needs."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise ActrecError(
            f"{path.parent}: no model.pt here; is it a run folder made by `actrec train`?"
        )
    if path.stat().st_size == 0:
        raise damaged(path, "empty")
    with open(path, "rb") as fh:
        pickled = fh.read(1) == b"\x80"  # a pickle of protocol 2 or later: torch's legacy format
    if not pickled and not zipfile.is_zipfile(path):  # what torch.save writes
        raise damaged(path, "not a PyTorch file, or cut short")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError,
            OSError) as e:  # fmt: skip
        text = " ".join(str(e).split())
        first = text.split(". ")[0][:120] or type(e).__name__
        if "Weights only load failed" in text or "Unsupported global" in text:
            first = "it holds more than tensors, and actrec loads nothing else"
        raise damaged(path, f"not a readable checkpoint: {first}") from None
    if not isinstance(ckpt, dict):
        raise damaged(path, f"holds a {type(ckpt).__name__}, not a checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise damaged(path, f"no {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    mean, std = ckpt["mean"], ckpt["std"]
    good = (
        isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        and mean.ndim == 1 and mean.shape == std.shape and len(mean) >= 1
        and bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all())
        and isinstance(ckpt["state_dict"], dict) and isinstance(ckpt["head_kwargs"], dict)
        and isinstance(ckpt["classes"], list) and all(isinstance(c, str) for c in ckpt["classes"])
    )  # fmt: skip
    if not good:
        raise damaged(path, "its mean, std, classes or weights are not what a run saves")
    return ckpt


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """``history.csv``: one row per validation pass, every cell a number; [] where absent."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as e:
        raise damaged(path, f"not a CSV of numbers ({e})") from None
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            values = {k: float(v) for k, v in row.items() if k is not None}
        except (TypeError, ValueError):
            raise damaged(path, f"line {line} holds a cell that is not a number") from None
        if None in row or any(v is None for v in row.values()) or "step" not in values:
            raise damaged(path, f"line {line} does not fit the header")
        if not all(math.isfinite(v) or k.endswith("loss") for k, v in values.items()):
            raise damaged(path, f"line {line} holds a non-finite value")
        out.append(values)
    return out
