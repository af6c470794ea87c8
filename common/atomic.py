"""Plain files (CSV, JSON, plots) that appear complete or not at all.

``with replacing(path) as tmp:`` hands out a temporary name next to ``path``; when the block
ends normally the file is flushed to disk and renamed over ``path`` (one atomic step on POSIX
file systems), and when it raises — a full disk, Ctrl-C — the temporary file is removed and
``path`` keeps what it held before. HDF5 caches have their own writer (cache.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:200]}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
