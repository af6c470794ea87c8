"""A run folder that appears whole or not at all, with one writer at a time.

`actrec train` builds a run in a hidden sibling folder (``.RUN.building-PID``) and renames it
into place only when every file is written: a crash, a full disk or a refused option leaves an
existing run untouched, and ``--force`` replaces it in one step at the end, never file by file.
A lock file beside the run (``.RUN.lock``, a POSIX record lock that the kernel drops when the
process dies, ``kill -9`` included) refuses a second `train` into the same folder.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from actrec.common.errors import ActrecError


class RunFolder:
    """``with RunFolder(out, force) as work:`` write into ``work``, then :meth:`commit`."""

    def __init__(self, out: Path, force: bool) -> None:
        self.out, self.force = Path(out), force
        self._stem = stem = self.out.name[:200]  # hidden names stay within a name's 255 bytes
        self.lock_path = self.out.parent / f".{stem}.lock"
        self.work = self.out.parent / f".{stem}.building-{os.getpid()}"
        self._old = self.out.parent / f".{stem}.old-{os.getpid()}"
        self._lock = None

    def __enter__(self) -> Path:
        check_replaceable(self.out, self.force)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.lock_path, "a+b")  # noqa: SIM115 - held until __exit__
        except OSError as e:
            raise ActrecError(f"{self.out}: cannot write here ({e.strerror})") from None
        import fcntl

        try:
            fcntl.lockf(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise ActrecError(
                f"{self.out}: another `actrec train` is writing this run folder; wait for it "
                "or choose another -o"
            ) from None
        check_replaceable(self.out, self.force)  # again, now that no one else writes it
        # what a killed writer left behind: no one else holds the lock, so none of it is in use
        for stale in self.out.parent.glob(f".{glob.escape(self._stem)}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.work.mkdir()
        return self.work

    def commit(self) -> Path:
        """Put the finished run in place of ``out`` (replacing an old run with ``force``)."""
        old = self._old
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(self.work, self.out)
        shutil.rmtree(old, ignore_errors=True)
        return self.out

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.work, ignore_errors=True)  # gone already after a commit
        if self._lock is not None:
            # the lock file stays: unlinked, a third process could lock a new file beside ours
            self._lock.close()


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse an ``out`` that is a file, or an existing non-empty folder without ``force``."""
    if len(out.name.encode()) > 255:
        raise ActrecError(
            f"{out.name[:40]}...: a folder name of {len(out.name.encode())} bytes; the file system "
            "takes at most 255: choose a shorter -o"
        )
    if out.exists() and not out.is_dir():
        raise ActrecError(f"{out} exists and is not a folder: choose another -o")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ActrecError(f"{out} exists: pass --force to overwrite it, or choose another -o")
        if not (out / "config.json").is_file() and not (out / "model.pt").is_file():
            raise ActrecError(
                f"{out} holds files but no run (no config.json or model.pt): --force replaces "
                "only a run folder; choose another -o"
            )
