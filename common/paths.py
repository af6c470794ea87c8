"""Inputs and outputs of a command never meet: one check that every command makes before work.

Paths are compared as the file system sees them: real paths (links and ``..`` resolved), and
``os.path.samefile`` for two names of one file (a hard link, a case-insensitive file system).
An output may not be an input, lie inside an input folder (a source that discovery reads, or a
run that `--force` would replace), and a folder written as a whole may not hold an input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from actrec.common.errors import ActrecError


def real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    if real(a) == real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is not there yet
        return False


def _inside(inner: Path, outer: Path) -> bool:
    """``inner`` lies under the folder ``outer`` (not equal to it)."""
    a, b = real(inner), real(outer)
    return a != b and a.is_relative_to(b)


def _named(path: Path, label: str) -> str:
    return f"{label} {path}" if label else str(path)


def check_outputs(
    inputs: Iterable[tuple[str, str | os.PathLike]],
    outputs: Iterable[tuple[str, str | os.PathLike]],
    *,
    whole: Iterable[tuple[str, str | os.PathLike]] = (),
    files_may_lie_in: Iterable[str | os.PathLike] = (),
) -> None:
    """Refuse, in one line, an output that meets an input.

    ``inputs`` are (option, path) pairs of the files and folders the command reads; ``outputs``
    the files and folders it writes into; ``whole`` the folders it creates or replaces as a
    whole (which may not hold an input either). Two outputs that are one file are refused too.
    ``files_may_lie_in`` are input folders whose discovery can never take the outputs (a
    dataset's root for `manifest`, which reads videos and writes a CSV): files may be written
    inside them, never over what is there (ownership.py says which files may be replaced).
    """
    lenient = [real(p) for p in files_may_lie_in]
    ins = [(label, Path(p)) for label, p in inputs if p is not None and str(p) != ""]
    whole = [(label, Path(p)) for label, p in whole if p is not None]
    outs = [(label, Path(p)) for label, p in outputs if p is not None] + whole
    for out_label, out in outs:
        for in_label, source in ins:
            if _same(out, source):
                raise ActrecError(
                    f"{_named(out, out_label)} is also an input ({_named(source, in_label)}): "
                    "write the output elsewhere"
                )
            if source.is_dir() and _inside(out, source) and real(source) not in lenient:
                raise ActrecError(
                    f"{_named(out, out_label)} lies inside the input folder {source}: write it "
                    "outside the folders actrec reads"
                )
    for out_label, out in whole:
        for in_label, source in ins:
            if _inside(source, out):
                raise ActrecError(
                    f"{_named(out, out_label)} holds an input ({_named(source, in_label)}): "
                    "choose a folder of its own"
                )
    for i, (label_a, a) in enumerate(outs):
        for label_b, b in outs[i + 1 :]:
            if (
                _same(a, b)
                or (b in [w for _, w in whole] and _inside(a, b))
                or (a in [w for _, w in whole] and _inside(b, a))
            ):
                raise ActrecError(
                    f"{_named(a, label_a)} and {_named(b, label_b)} are one place: give each "
                    "output its own"
                )


def distinct_inputs(paths: Sequence[str | os.PathLike], what: str) -> None:
    """Refuse two names of one file among ``paths`` (``a.mp4`` and ``./a.mp4``, a link)."""
    seen: list[Path] = []
    for p in map(Path, paths):
        for q in seen:
            if _same(p, q):
                shown = f"{q} twice" if str(p) == str(q) else f"{q} and {p}, one file"
                raise ActrecError(f"{what}: {shown}; name each once")
        seen.append(p)
