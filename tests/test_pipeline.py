"""Both stages chained: the demo end to end on a tiny set, then `predict` on its clips."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import main
from actrec.common.cache import open_cache, write_cache
from actrec.demo import run_demo
from actrec.synthetic import CLASSES, clip_frames


def test_synthetic_pairs_hold_the_same_path_in_opposite_order():
    left = clip_frames("move_left", 8, 32, np.random.default_rng(1))
    right = clip_frames("move_right", 8, 32, np.random.default_rng(1))
    np.testing.assert_array_equal(left, right[::-1])
    grow = clip_frames("grow", 8, 32, np.random.default_rng(2))
    shrink = clip_frames("shrink", 8, 32, np.random.default_rng(2))
    np.testing.assert_array_equal(grow, shrink[::-1])


@pytest.mark.parametrize("action", CLASSES)
def test_synthetic_clips_of_a_class_differ(action):
    # identical clips would land in train and test alike and flatter every head
    rng = np.random.default_rng(0)
    first, second = clip_frames(action, 8, 32, rng), clip_frames(action, 8, 32, rng)
    assert not np.array_equal(first, second)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines = []
    runs = run_demo(out, clips_per_class=8, frames=6, epochs=3, device="cpu", echo=lines.append)
    return out, runs, "\n".join(lines)


@pytest.mark.slow
def test_demo_writes_cache_runs_reports_and_leaderboard(demo_dir):
    out, runs, printed = demo_dir
    caches = list(out.glob("features_resnet18_*.h5"))
    assert len(caches) == 1
    with open_cache(caches[0]) as c:
        assert len(c) == 8 * len(CLASSES) and c.total_frames == 8 * len(CLASSES) * 6
        assert c.index.classes == list(CLASSES) and c.verify() == []
    assert [r.name for r in runs] == ["mean", "gru"]
    for run in runs:
        for name in ("config.json", "model.pt", "metrics.json", "report.md", "report.html"):
            assert (run / name).is_file(), f"{run}/{name}"
        accuracy = json.loads((run / "metrics.json").read_text())["accuracy"]
        assert f"{accuracy:.4f}" in (out / "leaderboard" / "leaderboard.md").read_text()
    assert "| gru |" in printed and "| mean |" in printed and "leaderboard.html" in printed


@pytest.mark.slow
def test_predict_prints_top_k_and_writes_timelines(demo_dir, tmp_path):
    out, runs, _ = demo_dir
    clips = [out / "videos" / "move_left" / "001.mp4", out / "videos" / "grow" / "001.mp4"]
    result = CliRunner().invoke(
        main,
        ["predict", *map(str, clips), "--run", str(runs[1]), "-o", str(tmp_path), "-k", "3",
         "--window", "4", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("  1. ") == 2 and "  4. " not in result.output
    # two clips share a file name: each gets its own timeline
    timelines = sorted(tmp_path.glob("*.timeline.csv"))
    assert [p.name for p in timelines] == ["000_001.mp4.timeline.csv", "001_001.mp4.timeline.csv"]
    assert len(list(tmp_path.glob("*.timeline.png"))) == 2
    with open(timelines[0]) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["time", *CLASSES]
    probs = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    times = [float(r[0]) for r in rows[1:]]
    assert len(probs) == 2 + 1  # windows of 4 over 6 frames, stride 1: starts 0, 1, 2
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    assert times == sorted(times)


@pytest.mark.slow
def test_predict_needs_no_cache_but_checks_one_given(demo_dir, tmp_path):
    out, runs, _ = demo_dir
    config = json.loads((runs[0] / "config.json").read_text())
    moved = tmp_path / "run"
    moved.mkdir()
    (moved / "model.pt").write_bytes((runs[0] / "model.pt").read_bytes())
    config["cache"] = str(tmp_path / "gone.h5")
    (moved / "config.json").write_text(json.dumps(config))
    clip = str(out / "videos" / "grow" / "000.mp4")
    args = ["predict", clip, "--run", str(moved), "-o", str(tmp_path / "p"), "--device", "cpu"]
    # the run recorded how its cache was made: the cache itself may be gone
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # a cache given by hand must be the one the run trained on
    other = tmp_path / "other.h5"
    write_cache(other, [], {"backbone": "resnet50"}, dim=2048)
    result = CliRunner().invoke(main, [*args, "--cache", str(other)])
    assert (
        result.exit_code == 2
        and "pass --cache with the cache the run was trained on" in result.output
    )
    # a run without that record, and its cache gone: one clear line
    del config["cache_attrs"]
    (moved / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "gone.h5 is not there: pass --cache" in result.output


@pytest.mark.slow
def test_predict_predicts_the_good_videos_and_lists_the_bad(demo_dir, tmp_path):
    out, runs, _ = demo_dir
    good = out / "videos" / "grow" / "000.mp4"
    (tmp_path / "notes.txt").write_text("not a video")
    args = ["predict", str(good), str(tmp_path / "notes.txt"), str(tmp_path / "gone.mp4"),
            "--run", str(runs[0]), "-o", str(tmp_path / "p"), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output  # as extract: done, with failed items listed
    assert result.stdout.startswith(f"{good}\n  1. ")
    assert result.stderr == (
        "2 failed:\n"
        f"  {tmp_path / 'notes.txt'}: not a readable video (Invalid data found when processing "
        "input)\n"
        f"  {tmp_path / 'gone.mp4'}: no such file\n"
    )
    written = sorted(p.name for p in (tmp_path / "p").iterdir())
    # the folder's marker (a predictions folder, the timelines it holds) and the timelines
    assert written == [".actrec.json", "000.mp4.timeline.csv", "000.mp4.timeline.png"]
