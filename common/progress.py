"""Progress on stderr: a tqdm bar on a terminal, a plain line now and then anywhere else.

A bar redraws itself with carriage returns, which fill a log file (CI, `nohup`, `2> log`) with
thousands of half-lines; there a line every ``interval`` seconds says the same.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class LogLines:
    """The part of tqdm's surface the commands use, printing a whole line at most every
    ``interval`` seconds, and one at the end."""

    def __init__(self, total: int, desc: str, unit: str, interval: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n, self.postfix = 0, ""
        self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.perf_counter() - self._last >= self.interval:
            self._print()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def _print(self) -> None:
        self._last = time.perf_counter()
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{extra}", file=sys.stderr,
              flush=True)  # fmt: skip

    def close(self) -> None:
        if self.n:
            self._print()

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int, desc: str, unit: str, enabled: bool = True, **kwargs) -> tqdm | LogLines:
    """A bar where stderr is a terminal, log lines where it is not; nothing when not ``enabled``."""
    if enabled and not sys.stderr.isatty():
        return LogLines(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, **kwargs)
