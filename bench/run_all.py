"""`make bench`: run every benchmark in its own process, then print their tables together.

Each benchmark prints its table and writes JSON under bench/results/; this only sequences them,
so that one crashing does not hide the others. Extra arguments (e.g. --quick) go to each one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = ("bench_extract.py", "bench_train.py")


def main(argv: list[str]) -> int:
    failed = []
    for name in BENCHES:
        print(f"\n=== {name} {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / name), *argv])
        print(f"=== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
