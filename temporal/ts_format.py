"""UCR/UEA `.ts` files: the time-series archive's text format, read into (id, [T, C], label).

The format: ``#`` (or ARFF's ``%``) comment lines, ``@`` header lines (``@problemName``, ``@classLabel true 1 2``,
``@univariate``, ``@dimensions``, ``@equalLength``, ``@missing``, ``@timeStamps`` ...), then after
``@data`` one series a line: the values of each channel comma-separated, channels separated by
``:``, the class label last. Series may differ in length; every channel of one series has the
same length. The archive ships ``NAME_TRAIN.ts`` and ``NAME_TEST.ts``: the split comes from the
file name.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actrec.common.errors import ActrecError

_SPLIT = re.compile(r"_(TRAIN|TEST|VALID|VAL)$", re.IGNORECASE)
_SPLIT_NAME = {"train": "train", "test": "test", "valid": "val", "val": "val"}


@dataclass
class TsSeries:
    id: str  # "<file stem>/<line number of the series in its file, 1-based, 6 digits>"
    values: np.ndarray  # (T, C) float64
    label: str
    split: str


def split_of(path: Path) -> str:
    """``train``/``test``/``val`` from an archive file name (``ArrowHead_TRAIN.ts``), else ``""``."""
    m = _SPLIT.search(path.stem)
    return _SPLIT_NAME[m.group(1).lower()] if m else ""


def read_ts(path: str | os.PathLike) -> Iterator[TsSeries]:
    """The series of one `.ts` file, in file order; refuses what the format cannot hold here.

    Missing values (``?``, ``NaN``), time-stamped series and regression targets give one line
    that names the file and the line.
    """
    path = Path(path)
    split = split_of(path)
    header: dict[str, str] = {}
    in_data = False
    n = 0
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # archive files are small
    except OSError as e:
        raise ActrecError(f"{path}: cannot read ({e.strerror})") from None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#%":  # `%` comments are ARFF's, and some .ts files keep them
            continue
        if not in_data:
            if not line.startswith("@"):
                raise ActrecError(
                    f"{path}, line {line_no}: expected a @header line or @data before the "
                    "series; is this a UCR/UEA .ts file?"
                )
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            if key == "data":
                _check_header(path, header)
                in_data = True
            else:
                header[key] = value.strip()
            continue
        n += 1
        yield _parse_series(path, line_no, line, n, split)
    if not in_data:
        raise ActrecError(f"{path}: no @data line; is this a UCR/UEA .ts file?")
    if n == 0:
        raise ActrecError(f"{path}: no series after @data")


def _check_header(path: Path, header: dict[str, str]) -> None:
    if header.get("timestamps", "false").lower() == "true":
        raise ActrecError(
            f"{path}: time-stamped series (@timeStamps true) are not supported; export the "
            "values without time stamps, or as .npy arrays"
        )
    if not header.get("classlabel", "").lower().startswith("true"):
        what = "a regression target" if "targetlabel" in header else "no class labels"
        raise ActrecError(f"{path}: {what} (@classLabel is not true); actrec needs class labels")


def _parse_series(path: Path, line_no: int, line: str, n: int, split: str) -> TsSeries:
    *channels, label = line.split(":")
    where = f"{path}, line {line_no} (series {n})"
    label = label.strip()
    if not channels or not label:
        raise ActrecError(f"{where}: expected values then ':' then the class label")
    columns = []
    for c, text in enumerate(channels):
        cells = [v.strip() for v in text.split(",")]
        if cells and cells[-1] == "":  # a trailing comma, as some writers leave
            cells.pop()
        try:
            values = [float(v) for v in cells]
        except ValueError:
            bad = next(v for v in cells if not _is_float(v))
            if bad in ("?", ""):
                raise ActrecError(
                    f"{where}: missing value in channel {c + 1}; fill or drop it first "
                    "(actrec needs complete series)"
                ) from None
            raise ActrecError(f"{where}: {bad!r} in channel {c + 1} is not a number") from None
        if not values:
            raise ActrecError(f"{where}: channel {c + 1} is empty")
        if not all(math.isfinite(v) for v in values):
            raise ActrecError(
                f"{where}: NaN or infinite value in channel {c + 1}; fill or drop it first "
                "(actrec needs complete series)"
            )
        columns.append(values)
    lengths = {len(col) for col in columns}
    if len(lengths) > 1:
        raise ActrecError(
            f"{where}: channels of different lengths {sorted(lengths)}; every channel of a series "
            "must have as many steps"
        )
    values = np.asarray(columns, dtype=np.float64).T  # (T, C)
    return TsSeries(id=f"{path.stem}/{n:06d}", values=values, label=label, split=split)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
