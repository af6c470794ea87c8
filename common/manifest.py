"""CSV manifests, `path,label[,split][,group]`: read alike by `actrec extract` and `actrec import`."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from actrec.common.errors import ActrecError

COLUMNS = "path,label[,split][,group]"


@dataclass(frozen=True)
class ManifestRow:
    """One row: ``path`` as written (forward slashes), ``file`` resolved against the CSV's folder."""

    line: int  # in the CSV, the header being line 1
    path: str
    file: Path
    label: str = ""
    split: str = ""
    group: str = ""


def read_manifest(csv_path: str | os.PathLike) -> list[ManifestRow]:
    """Every data row of a manifest, in file order, blanks stripped; rows with an empty path are
    kept (``path == ""``) for the caller to skip or refuse."""
    csv_path = Path(csv_path)
    # utf-8-sig: a spreadsheet's byte-order mark would otherwise hide the `path` header
    try:
        return _read(csv_path)
    except UnicodeDecodeError as e:
        raise ActrecError(
            f"{csv_path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8 (a spreadsheet's CSV UTF-8)"
        ) from None


def _read(csv_path: Path) -> list[ManifestRow]:
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if "path" not in [c.strip() for c in reader.fieldnames or []]:
            raise ActrecError(f"{csv_path}: no 'path' column (the header must be {COLUMNS})")
        rows = []
        for line, raw in enumerate(reader, start=2):
            # a row longer than the header puts its extra cells under None, as a list: ignored
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            path = row.get("path", "")
            rows.append(
                ManifestRow(
                    line=line,
                    path=Path(path).as_posix() if path else "",
                    file=(csv_path.parent / path).resolve(),
                    label=row.get("label", ""),
                    split=row.get("split", ""),
                    group=row.get("group", ""),
                )
            )
    return rows
