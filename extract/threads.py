"""How many threads each part of stage one may use, so that together they fit the CPUs.

Decoding workers, their decoders' and scalers' own threads, and the main process's torch threads
all run at once. Left to themselves, each FFmpeg decoder and scaler starts a thread per CPU of
the machine, in every worker, and torch's intra-op pool spins beside them: a 16-core machine with
14 workers ran hundreds of threads. The budget counts the CPUs this process may run on (a
container or ``taskset`` gives fewer than the machine has) and shares them out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not all the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity masks here (macOS, Windows)
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Threads:
    """Threads per decoding worker (decoder, scaler) and for the main process's torch ops."""

    cpus: int
    decoder: int  # FFmpeg's frame and slice threads per decoder
    scaler: int  # swscale's threads per resize; the frames are small, one is enough
    main: int  # torch.set_num_threads in the main process while the model is the bottleneck
    main_waiting: int  # and while it waits for the decoders (see MainThreads)


def thread_budget(workers: int, device: torch.device | str, cpus: int | None = None) -> Threads:
    """Share ``cpus`` (default: :func:`usable_cpus`) among ``workers`` decoding processes
    (0: decoding in the main process) and the main process on ``device``.

    On a GPU the main process only copies frames and launches work: a few threads keep it from
    competing with the workers. On the CPU the model is the main process's work: every CPU
    while the decoders wait for it, what the workers leave while it waits for them."""
    cpus = cpus or usable_cpus()
    device = torch.device(device)
    if workers <= 0:
        return Threads(cpus=cpus, decoder=cpus, scaler=1, main=cpus, main_waiting=cpus)
    decoder = max(1, cpus // workers)
    spare = max(1, cpus - workers)  # what the workers leave, one each
    if device.type == "cuda":
        main = min(4, spare)
        return Threads(cpus=cpus, decoder=decoder, scaler=1, main=main, main_waiting=main)
    return Threads(cpus=cpus, decoder=decoder, scaler=1, main=cpus, main_waiting=spare)


class MainThreads:
    """The main process's torch threads on the CPU, set by who waits for whom.

    While the decoders wait for the model, the model should have every CPU (``busy``); while
    the model waits for the decoders, its threads only take turns with them, and a parallel op
    then waits for its slowest thread, which waits for a core: it keeps one (``idle``), and the
    decoders the rest. :meth:`update` takes the share of the last stretch of time the main
    process spent waiting for frames, and switches with some hysteresis so as not to flap.
    """

    WAITING = 0.3  # waiting more than this: the model is not the bottleneck
    BUSY = 0.05  # waiting less than this: it is

    def __init__(self, busy: int, idle: int) -> None:
        self.busy, self.idle = busy, idle
        self.now = busy
        torch.set_num_threads(busy)

    def update(self, waiting: float) -> int:
        if self.now == self.busy and waiting > self.WAITING:
            self.now = self.idle
        elif self.now == self.idle and waiting < self.BUSY:
            self.now = self.busy
        if torch.get_num_threads() != self.now:
            torch.set_num_threads(self.now)
        return self.now
