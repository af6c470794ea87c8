"""Disk space reserved ahead of HDF5, so that a full disk is a clean error and never a crash.

HDF5 does not survive a failed write: once the disk is full under it, closing the file fails,
h5py's objects are left half-released, and the process may end in a segmentation fault. So the
writer reserves the blocks a file will need (``fallocate`` with ``FALLOC_FL_KEEP_SIZE``) before it
lets HDF5 grow the file: when the disk is full, the reservation fails, in Python, while HDF5 can
still flush what it holds into blocks already reserved, and the file is closed and removed
cleanly. Where the file system cannot reserve (no ``fallocate``), writing goes on unreserved.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE: reserve blocks without changing the file's size
SLACK = 256 << 10  # bytes reserved beyond the estimate, for HDF5's own metadata
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _fallocate():
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process's own symbols: libc's too
        fn = libc.fallocate
    except (OSError, AttributeError):  # not Linux: no reservation
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _fallocate()


class Reservation:
    """Blocks reserved for one file being written; :meth:`grow` before HDF5 writes more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reserved = 0
        self._fd: int | None = os.open(path, os.O_RDWR) if _FALLOCATE else None

    def grow(self, nbytes: int) -> None:
        """Make sure ``nbytes`` (plus slack) are reserved; raises OSError(ENOSPC) if the disk
        cannot hold them. Grows in steps of a quarter, so that it is called rarely."""
        need = int(nbytes) + SLACK
        if self._fd is None or need <= self.reserved:
            return
        target = max(need, self.reserved + self.reserved // 4)
        if _FALLOCATE(self._fd, KEEP_SIZE, 0, target) != 0:
            code = ctypes.get_errno()
            if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                self.close()  # this file system cannot reserve: write unreserved
                return
            if target > need and _FALLOCATE(self._fd, KEEP_SIZE, 0, need) == 0:
                self.reserved = need  # the step did not fit, the need itself does
                return
            raise OSError(code, os.strerror(code), str(self.path))
        self.reserved = target

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        """Give back the blocks reserved beyond the file's end (a truncate to its own size)."""
        self.close()
        if self.reserved and self.path.exists():
            os.truncate(self.path, self.path.stat().st_size)


def is_disk_full(error: BaseException) -> bool:
    """Whether an error (an OSError, or h5py's RuntimeError that quotes one) is a full disk."""
    if isinstance(error, OSError) and error.errno in FULL:
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text
