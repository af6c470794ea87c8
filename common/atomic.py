"""Plain files (CSV, JSON, plots) that appear complete or not at all.

``with replacing(path) as tmp:`` hands out a temporary file next to ``path``; when the block
ends normally the file is flushed to disk and renamed over ``path`` (one atomic step on POSIX
file systems), and when it raises — a full disk, Ctrl-C — the temporary file is removed and
``path`` keeps what it held before. The temporary file is created anew (``O_EXCL``) under a
name no one else has, ``.NAME.XXXXXXXX.actrec-tmp``: a user's file can never be written to or
cleaned up as one. With ``kind``, ``path`` is first checked to be new or actrec's own file of
that kind (see ownership.py), and recorded as such once written. HDF5 caches have their own
writer (cache.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

TMP_SUFFIX = ".actrec-tmp"


@contextmanager
def replacing(path: str | os.PathLike, kind: str | None = None) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed onto ``path`` on success."""
    path = Path(path)
    if kind is not None:
        from actrec.common.ownership import check_file

        check_file(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 is for the name's sake only
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno and e.filename in (None, str(tmp), tmp):
            # a write cut short (a full disk, `ulimit -f`) names the file the user asked for
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    if kind is not None:
        from actrec.common.ownership import record

        record(path, kind)


def write_text(path: str | os.PathLike, text: str, kind: str | None = None) -> Path:
    """``path`` holds ``text`` (UTF-8), whole or not at all."""
    with replacing(path, kind) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
