"""Stage one across processes: a run killed with SIGKILL, or stopped with Ctrl-C, resumes to the
cache an uninterrupted run writes, and two processes under torchrun write shards that merge into
that cache too.

Features are stored as float32 here and compared with a tolerance of a few float32 ulps: on the
CPU a frame's embedding depends on which frames share its batch by about 1e-6 (oneDNN blocks
batches of other sizes differently), and a resumed or sharded run batches frames differently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from videos import make_video

from actrec.cli import main
from actrec.common.cache import open_cache, partial_dir

BIN = Path(sys.executable).parent
ARGS = ["--weights", "none", "--input-size", "64", "--dtype", "float32", "--batch-size", "4",
        "--workers", "1", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    for i in range(10):
        make_video(root / ("run" if i % 2 else "walk") / f"{i:02d}.mp4", 12 + i)
    (root / "walk" / "broken.mp4").write_bytes(b"\x00" * 100)
    return root


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    r = CliRunner().invoke(main, ["extract", str(source), "-o", str(out), *ARGS])
    assert r.exit_code == 1, r.output  # the broken file
    return out


def assert_same_cache(a_path: Path, b_path: Path) -> None:
    with open_cache(a_path) as a, open_cache(b_path) as b:
        assert a.index.ids == b.index.ids
        assert a.index.classes == b.index.classes
        assert a.index.failed == b.index.failed
        np.testing.assert_array_equal(a.index.length, b.index.length)
        np.testing.assert_array_equal(a.all_timestamps(), b.all_timestamps())
        np.testing.assert_allclose(a.all_features(), b.all_features(), rtol=1e-5, atol=1e-5)
        assert a.fingerprint == b.fingerprint
        assert b.verify() == []


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_killed_run_resumes_to_the_uninterrupted_cache(source, reference, tmp_path, stop):
    out = tmp_path / "c.h5"
    cmd = [sys.executable, "-m", "actrec", "extract", str(source), "-o", str(out), *ARGS]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # a job started in the background by a script inherits SIGINT ignored, and so would
        # this child: give it the default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    segments = partial_dir(out)
    deadline = time.monotonic() + 120
    while not list(segments.glob("segment-*.h5")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no segment written in 2 minutes"
        time.sleep(0.02)
    os.kill(proc.pid, stop)
    proc.wait(timeout=60)
    said = proc.stderr.read().decode()
    proc.stderr.close()
    assert not out.exists(), "the run finished before it was killed: nothing was tested"
    if stop == signal.SIGINT:  # Ctrl-C: a clear word on what is kept, and the shell's code
        assert proc.returncode == 130, said
        assert said.strip().endswith(
            f"Interrupted: the videos finished so far are kept in {segments}; "
            "rerun the same command to go on."
        )
    assert list(segments.glob("segment-*.h5"))

    r = CliRunner().invoke(main, ["extract", str(source), "-o", str(out), *ARGS])
    assert r.exit_code == 1, r.output
    done_before = int(r.output.split(" already there")[0].rsplit(", ", 1)[1])
    assert 0 < done_before < 10
    assert not segments.exists()
    assert_same_cache(reference, out)


@pytest.mark.slow
def test_torchrun_shards_merge_to_the_single_process_cache(source, reference, tmp_path):
    out = tmp_path / "c.h5"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
           sys.executable, "-m", "actrec", "extract", str(source), "-o", str(out), *ARGS]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    shards = [tmp_path / "c.shard0of2.h5", tmp_path / "c.shard1of2.h5"]
    assert all(s.exists() for s in shards), done.stderr[-3000:]
    # the broken video fails in one shard; that shard must not stop the other (torchrun stops
    # the whole group when one process exits non-zero), and says so
    assert done.returncode == 0, done.stderr[-3000:]
    assert "walk/broken.mp4: not a readable video" in done.stderr
    assert "exit code 0 under torchrun" in done.stderr
    assert not out.exists()
    r = CliRunner().invoke(main, ["merge", *map(str, shards), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert_same_cache(reference, out)
