"""A run folder that appears whole or not at all, with one writer at a time.

`actrec train` builds a run in a hidden sibling folder (``.RUN.building-XXXXXXXX``, a name made
anew, marked as a run being built) and renames it into place only when every file is written: a
crash, a full disk or a refused option leaves an existing run untouched, and ``--force``
replaces it in one step at the end, never file by file, and only a run (ownership.py).
What a killed writer left is cleaned up only where it carries a run's marker: a user's folder
of a similar name is never touched.
A lock file beside the run (``.RUN.lock``, a POSIX record lock that the kernel drops when the
process dies, ``kill -9`` included) refuses a second `train` into the same folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path

from actrec.common.atomic import current_umask
from actrec.common.errors import ActrecError
from actrec.common.ownership import RUN, check_folder, mark_folder, read_marker


class RunFolder:
    """``with RunFolder(out, force) as work:`` write into ``work``, then :meth:`commit`."""

    def __init__(self, out: Path, force: bool) -> None:
        self.out, self.force = Path(out), force
        self._stem = stem = self.out.name[:200]  # hidden names stay within a name's 255 bytes
        self._lock = FolderLock(
            self.out,
            "another `actrec train` is writing this run folder; wait for it or choose another -o",
        )
        self.work = self.out.parent / f".{stem}.building-"  # made unique in __enter__

    def __enter__(self) -> Path:
        check_replaceable(self.out, self.force)
        self._lock.__enter__()
        check_replaceable(self.out, self.force)  # again, now that no one else writes it
        # what a killed writer left behind: no one else holds the lock, so none of it is in use
        for stale in self.out.parent.glob(f".{glob.escape(self._stem)}.building-*"):
            for_sure = stale.is_dir() and not stale.is_symlink()
            if for_sure and (read_marker(stale) or {}).get("kind") == RUN:
                shutil.rmtree(stale, ignore_errors=True)
        self.work = Path(tempfile.mkdtemp(prefix=f".{self._stem}.building-", dir=self.out.parent))
        os.chmod(self.work, 0o777 & ~current_umask())  # mkdtemp's 0700 is for the name's sake only
        mark_folder(self.work, RUN)  # the run's own marker, and what makes it debris if we die
        return self.work

    def commit(self) -> Path:
        """Put the finished run in place of ``out`` (replacing an old run with ``force``)."""
        check_replaceable(self.out, self.force)  # what is there now, not what was at the start
        old = None
        if self.out.exists():
            # an empty folder of our own to rename onto: no one else's name is ever taken
            old = Path(tempfile.mkdtemp(prefix=f".{self._stem}.old-", dir=self.out.parent))
            os.replace(self.out, old)
        os.replace(self.work, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def __exit__(self, *exc) -> None:
        if self.work.name != f".{self._stem}.building-":  # made by __enter__, ours alone
            shutil.rmtree(self.work, ignore_errors=True)  # gone already after a commit
        self._lock.__exit__()


class FolderLock:
    """One writer per folder: a POSIX record lock on ``.OUT.lock`` beside ``out``, which the
    kernel drops when the process dies, ``kill -9`` included. ``busy`` says what to do when
    another process holds it."""

    def __init__(self, out: Path, busy: str) -> None:
        self.out, self.busy = Path(out), busy
        self.path = self.out.parent / f".{self.out.name[:200]}.lock"  # within a name's 255 bytes
        self.handle = None

    def __enter__(self) -> FolderLock:
        import fcntl

        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+b")  # noqa: SIM115 - held until __exit__
        except OSError as e:
            raise ActrecError(f"{self.out}: cannot write here ({e.strerror})") from None
        try:
            fcntl.lockf(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            self.handle = None
            raise ActrecError(f"{self.out}: {self.busy}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            # the lock file stays: unlinked, a third process could lock a new file beside ours
            self.handle.close()
            self.handle = None


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse an ``out`` that is a file, a folder of other files or of another kind, or an
    existing run without ``force``."""
    if len(out.name.encode()) > 255:
        raise ActrecError(
            f"{out.name[:40]}...: a folder name of {len(out.name.encode())} bytes; the file system "
            "takes at most 255: choose a shorter -o"
        )
    check_folder(out, RUN, force=force)
