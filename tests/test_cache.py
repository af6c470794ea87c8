"""The cache format: round trips, atomic writes, combining, resumable segments, verify."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import main
from actrec.common.cache import Video, fingerprint, open_cache, partial_dir, write_cache
from actrec.common.errors import CacheError
from actrec.common.partial import PartialCache, combine

ATTRS = {"backbone": "resnet18", "weights": "none", "sampling": "all", "precision": "float32"}


def make_video(vid: str, t: int, dim: int = 8, label: str = "a", seed: int = 0) -> Video:
    rng = np.random.default_rng(seed)
    return Video(
        id=vid,
        features=rng.standard_normal((t, dim)).astype(np.float32),
        timestamps=np.arange(t) / 25.0,
        label=label,
        split="train",
        group=vid.split("/")[0],
        fps=25.0,
    )


def test_cache_owns_its_handle_like_h5py_file(tmp_path):
    path = tmp_path / "c.h5"
    write_cache(path, [make_video("a/1.mp4", 4)], ATTRS, dim=8, dtype="float32", classes=["a"])
    c = open_cache(path)  # no `with` needed: the object owns the handle
    assert not c.closed and c.features(0).shape == (4, 8)
    c.close()
    c.close()  # twice is harmless
    assert c.closed
    with open_cache(path) as d:
        assert not d.closed
    assert d.closed
    # an HDF5 file that is not a cache: the handle opened to look at it is closed again
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="not an actrec cache"):
        open_cache(tmp_path / "other.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:  # not locked: nothing was left open
        f["y"] = np.ones(2)


def test_round_trip_values_and_index(tmp_path):
    vids = [make_video("a/1.mp4", 5, seed=1), make_video("b/2.mp4", 3, label="b", seed=2)]
    write_cache(tmp_path / "c.h5", vids, ATTRS, dim=8, dtype="float32", classes=["a", "b", "c"])
    with open_cache(tmp_path / "c.h5") as c:
        assert c.index.ids == ["a/1.mp4", "b/2.mp4"]
        assert c.index.classes == ["a", "b", "c"]
        assert c.index.label.tolist() == [0, 1]
        assert c.index.start.tolist() == [0, 5] and c.index.length.tolist() == [5, 3]
        np.testing.assert_array_equal(c.features(1), vids[1].features)
        np.testing.assert_array_equal(c.timestamps(0), vids[0].timestamps)
        # rows across the boundary between the two videos
        both = np.concatenate([vids[0].features, vids[1].features])
        np.testing.assert_array_equal(c.rows(3, 7), both[3:7])
        assert c.attrs["format_version"] == 1 and c.attrs["backbone"] == "resnet18"
        assert c.fingerprint == fingerprint(c.attrs)
        assert c.verify() == []
    with h5py.File(tmp_path / "c.h5") as f:  # the layout docs/design.md fixes
        for name in ("features", "timestamps", "videos/id", "videos/start", "videos/length",
                     "videos/label", "videos/split", "videos/group", "videos/fps", "classes",
                     "failed/id", "failed/error"):  # fmt: skip
            assert name in f, name


def test_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield make_video("a/1.mp4", 2)
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError):
        write_cache(tmp_path / "c.h5", broken(), ATTRS, dim=8)
    assert list(tmp_path.iterdir()) == []


def test_unsorted_videos_are_refused(tmp_path):
    with pytest.raises(ValueError, match="sorted"):
        write_cache(tmp_path / "c.h5", [make_video("b", 2), make_video("a", 2)], ATTRS, dim=8)


def test_combine_sorts_dedupes_and_clears_failures(tmp_path):
    write_cache(tmp_path / "s0.h5", [make_video("c", 2, seed=3)], ATTRS, dim=8, failed={"a": "bad"})
    write_cache(tmp_path / "s1.h5", [make_video("a", 4, seed=1), make_video("c", 2, seed=3)], ATTRS, dim=8,
                failed={"z": "truncated"})  # fmt: skip
    combine([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "all.h5")
    with open_cache(tmp_path / "all.h5") as c:
        assert c.index.ids == ["a", "c"]
        assert c.index.failed == {"z": "truncated"}
        assert c.verify() == []


def test_combine_refuses_other_settings(tmp_path):
    write_cache(tmp_path / "s0.h5", [make_video("a", 2)], ATTRS, dim=8)
    write_cache(tmp_path / "s1.h5", [make_video("b", 2)], {**ATTRS, "backbone": "resnet50"}, dim=8)
    with pytest.raises(CacheError, match="different settings"):
        combine([tmp_path / "s0.h5", tmp_path / "s1.h5"], tmp_path / "all.h5")


def test_partial_resume_equals_one_shot(tmp_path):
    vids = [make_video(f"x/{i}", 2 + i, seed=i) for i in range(5)]
    write_cache(tmp_path / "one.h5", vids, ATTRS, dim=8, dtype="float16", classes=["a"])

    p = PartialCache(tmp_path / "two.h5", ATTRS, dim=8, dtype="float16")
    p.start()
    p.add(vids[3:], {"x/9": "no frames"})
    (partial_dir(tmp_path / "two.h5") / "segment-000009.h5.tmp123").write_bytes(b"torn")  # a crash
    p = PartialCache(tmp_path / "two.h5", ATTRS, dim=8, dtype="float16")  # a rerun
    p.start()
    stored, failed = p.done()
    assert stored == {"x/3", "x/4"} and failed == {"x/9": "no frames"}
    p.add(vids[:3])
    p.finish(classes=["a"])
    assert not partial_dir(tmp_path / "two.h5").exists()
    with open_cache(tmp_path / "one.h5") as a, open_cache(tmp_path / "two.h5") as b:
        np.testing.assert_array_equal(a.all_features(), b.all_features())
        assert a.index.ids == b.index.ids and a.fingerprint == b.fingerprint
        assert b.index.failed == {"x/9": "no frames"}


def test_partial_refuses_other_settings(tmp_path):
    PartialCache(tmp_path / "c.h5", ATTRS, dim=8, dtype="float16").start()
    with pytest.raises(CacheError, match="backbone"):
        PartialCache(
            tmp_path / "c.h5", {**ATTRS, "backbone": "resnet50"}, dim=8, dtype="float16"
        ).start()


def test_verify_catches_broken_index(tmp_path):
    write_cache(tmp_path / "c.h5", [make_video("a", 3), make_video("b", 3)], ATTRS, dim=8)
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f["videos/length"][1] = 9
    with open_cache(tmp_path / "c.h5") as c:
        assert any("lengths add up" in p for p in c.verify())


def test_inspect_and_merge_cli(tmp_path):
    write_cache(tmp_path / "s0.h5", [make_video("a/1", 3)], ATTRS, dim=8)
    write_cache(tmp_path / "s1.h5", [make_video("b/1", 2, label="b")], ATTRS, dim=8)
    runner = CliRunner()
    r = runner.invoke(
        main,
        ["merge", str(tmp_path / "s0.h5"), str(tmp_path / "s1.h5"), "-o", str(tmp_path / "m.h5")],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["inspect", str(tmp_path / "m.h5"), "--verify"])
    assert r.exit_code == 0, r.output
    assert "videos     2 (2 labelled), 0 failed" in r.output and "verify     ok" in r.output
    r = runner.invoke(main, ["merge", str(tmp_path / "s0.h5"), "-o", str(tmp_path / "m.h5")])
    assert r.exit_code == 2 and "--force" in r.output
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    r = runner.invoke(main, ["inspect", str(tmp_path / "junk.h5")])
    assert r.exit_code == 2 and "not a readable HDF5 cache" in r.output


def test_a_partial_cache_of_failures_only_keeps_its_dimension(tmp_path):
    p = PartialCache(tmp_path / "c.h5", ATTRS, dim=8, dtype="float16")
    p.start()
    p.add([], {"a/1.mp4": "empty file"})
    p.finish(classes=["a"])
    with open_cache(tmp_path / "c.h5") as c:
        assert len(c) == 0 and c.dim == 8 and c.index.failed == {"a/1.mp4": "empty file"}
        assert c.verify() == []


def test_combine_many_inputs_under_a_low_open_file_limit(tmp_path):
    # an extraction of thousands of videos leaves thousands of segments; many systems allow
    # 1,024 open files: combine must not hold every input open at once
    import os
    import resource

    inputs = []
    for i in range(150):
        inputs.append(tmp_path / f"s{i:03d}.h5")
        write_cache(inputs[-1], [make_video(f"v{i:03d}", 2, seed=i)], ATTRS, dim=8, dtype="float32")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 64, hard))
    try:
        combine(inputs, tmp_path / "all.h5")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with open_cache(tmp_path / "all.h5") as c:
        assert len(c) == 150 and c.verify() == []
        np.testing.assert_array_equal(c.features(149), make_video("v149", 2, seed=149).features)


def test_a_second_run_into_the_same_partial_cache_is_refused(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; from actrec.common.partial import PartialCache\n"
            f"p = PartialCache({str(tmp_path / 'c.h5')!r}, {ATTRS!r}, dim=8, dtype='float16')\n"
            "p.start(); print('locked', flush=True); sys.stdin.readline()"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = PartialCache(tmp_path / "c.h5", ATTRS, dim=8, dtype="float16")
        with pytest.raises(CacheError, match="another extraction is writing it now"):
            second.start()
    finally:
        holder.kill()  # as kill -9 would: the kernel drops the lock with the process
        holder.wait()
    second.start()
    second.add([make_video("a", 2)])
    second.finish(classes=["a"])
    with open_cache(tmp_path / "c.h5") as c:
        assert c.index.ids == ["a"]
