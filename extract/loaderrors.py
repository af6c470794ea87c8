"""Why a weights file did not load, in one line.

torch.load's own messages run to several lines and advise loading with ``weights_only=False``,
which runs whatever code the file holds: actrec never does that for a user's file, so it never
repeats that advice either.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

PICKLE_START = b"\x80"  # the first byte of a pickle of protocol 2 or later (torch.save's legacy)


def looks_like_torch_file(path: Path) -> bool:
    """A zip archive (what torch.save writes) or a pickle; text and other files are not."""
    try:
        with open(path, "rb") as fh:
            start = fh.read(1)
    except OSError:
        return False
    return start == PICKLE_START or zipfile.is_zipfile(path)


def load_reason(path: Path, error: BaseException) -> str:
    """A one-line reason for a failed torch.load of ``path``, with the fix."""
    if not looks_like_torch_file(path):
        return (
            "not a readable state dict (not a PyTorch file: save one with "
            "torch.save(model.state_dict(), PATH), or pass a .safetensors file for timm)"
        )
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", text, re.S)
    if found:
        detail = " ".join(found.group(1).split())[:160]
        return (
            f"holds more than tensors ({detail}); actrec loads only plain state dicts, for "
            "safety: save model.state_dict() with torch.save"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"not a readable state dict ({first[:160] or type(error).__name__})"


def model_file_reason(path: Path, error: BaseException | None) -> str:
    """A one-line reason why a model file (--backbone FILE) did not load; ``error`` None when
    the file was not even a zip archive (checked first: torch.export logs whole tracebacks)."""
    if error is None:
        return "not a zip archive, which torch.export.save and torch.jit.save write"
    text = " ".join(str(error).split())
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".") or type(error).__name__
    hint = ""
    if "constants.pkl" in text or "archive/data.pkl" in text or "data.pkl" in text:
        hint = "; a state dict? pass it as --weights FILE with --backbone NAME"
    return f"{first[:160]}{hint}"
