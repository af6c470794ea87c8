"""Finished videos stored off the hot path: a thread writes them into the unfinished cache.

A segment (a small complete cache, written and fsynced, then renamed) costs a few milliseconds
however few videos it holds; one per forward pass, on the thread that feeds the model, made
every worker wait while it was written. The writer takes finished videos from a queue and
writes one segment for all that arrived since the last: the first finished videos at once, then
at most one segment every ``every_s`` seconds, or sooner once ``max_videos`` are waiting. So a
``kill -9`` loses at most the videos finished in the last ``every_s`` seconds (and the segment
being written), and a Ctrl-C or an error loses none of them: leaving the ``with`` block writes
whatever is waiting.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Sequence

from actrec.common.cache import Video
from actrec.common.partial import PartialCache

EVERY_S = 2.0  # seconds between segments at most, while videos keep finishing
MAX_VIDEOS = 512  # videos waiting that make a segment at once


class SegmentWriter:
    """``with SegmentWriter(partial) as w: w.add(videos, failed)``; the block's end writes what
    is waiting and waits for the thread. An error of the thread (a full disk) is raised by the
    next :meth:`add`, or at the end of the block."""

    def __init__(
        self, partial: PartialCache, every_s: float = EVERY_S, max_videos: int = MAX_VIDEOS
    ) -> None:
        self.partial, self.every_s, self.max_videos = partial, every_s, max_videos
        self.segments = 0  # written so far
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="actrec-writer", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> SegmentWriter:
        self._thread.start()
        return self

    def add(self, videos: Sequence[Video], failed: dict[str, str] | None = None) -> None:
        """Queue finished videos and failures for the next segment."""
        self._raise()
        if videos or failed:
            self._queue.put((list(videos), dict(failed or {})))

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        videos: list[Video] = []
        failed: dict[str, str] = {}
        last = -math.inf  # when the last segment was written
        try:
            while True:
                wait = None if not (videos or failed) else last + self.every_s - time.monotonic()
                try:
                    got = self._queue.get(timeout=None if wait is None else max(wait, 0.0))
                except queue.Empty:
                    got = ()  # time for a segment
                if got is None:
                    break
                if got:
                    videos.extend(got[0])
                    failed.update(got[1])
                due = time.monotonic() - last >= self.every_s or len(videos) >= self.max_videos
                if (videos or failed) and due:
                    self._write(videos, failed)
                    videos, failed = [], {}
                    last = time.monotonic()
            self._write(videos, failed)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            self._error = e

    def _write(self, videos: list[Video], failed: dict[str, str]) -> None:
        if videos or failed:
            self.partial.add(videos, failed)
            self.segments += 1
