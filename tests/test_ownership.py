"""Only actrec's own outputs are replaced, outputs never meet inputs, every file is written whole,
names in Markdown show as written (issue 18: the listed cases; the matrix is in
test_matrix_outputs.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_datasets import make_ucf
from videos import Bands, make_video

from actrec.cli import main
from actrec.common.atomic import replacing
from actrec.common.ownership import (
    RUN,
    TIMELINE,
    check_file,
    folder_kind,
    mark_folder,
    owns_file,
    record,
)
from actrec.predict import timeline_stems
from actrec.temporal.report import md_escape

BIN = Path(sys.executable).parent
FAST = ["--head", "mean", "--steps", "2", "--quiet"]


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> hash of its bytes)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def npy_set(root: Path, classes=("a", "b"), n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for k, label in enumerate(classes):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            x = rng.standard_normal((6, 4)).astype(np.float32) + 2 * k
            np.save(root / label / f"{i}.npy", x)
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own")
    cache = root / "cache.h5"
    assert cli("import", npy_set(root / "npy"), "-o", cache).exit_code == 0
    for name, seed in (("run", 0), ("run2", 1)):
        r = cli("train", cache, "-o", root / "runs" / name, *FAST, "--seed", seed)
        assert r.exit_code == 0, r.output
    return {
        "root": root,
        "cache": cache,
        "run": root / "runs" / "run",
        "run2": root / "runs" / "run2",
    }


# -- ownership ------------------------------------------------------------------------------------


def test_train_force_refuses_a_hugging_face_folder(made, tmp_path):
    hf = tmp_path / "bert"
    hf.mkdir()
    (hf / "config.json").write_text('{"architectures": ["BertModel"], "hidden_size": 768}')
    (hf / "pytorch_model.bin").write_bytes(b"weights")
    (hf / "tokenizer.json").write_text("{}")
    (hf / "notes.md").write_text("mine")
    before = tree(hf)
    line = one_line(cli("train", made["cache"], "-o", hf, *FAST, "--force"))
    assert line == (
        f"Error: {hf} holds files but no run (actrec replaces only what it wrote): choose "
        "another -o"
    )
    assert tree(hf) == before and sorted(p.name for p in tmp_path.iterdir()) == ["bert"]


def test_a_run_is_marked_and_force_replaces_it_and_a_run_of_an_earlier_version(made, tmp_path):
    assert folder_kind(made["run"]) == RUN
    marker = json.loads((made["run"] / ".actrec.json").read_text())
    assert marker["kind"] == "run" and marker["actrec"] == 1
    # a run written before markers: known by train's keys in its config.json and its weights
    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.json", "model.pt", "metrics.json"):
        (old / name).write_bytes((made["run"] / name).read_bytes())
    assert folder_kind(old) == RUN
    r = cli("train", made["cache"], "-o", old, *FAST, "--force")
    assert r.exit_code == 0, r.output
    assert folder_kind(old) == RUN and (old / ".actrec.json").is_file()


def test_a_user_folder_named_like_a_build_folder_survives(made, tmp_path):
    """What a killed train leaves (``.RUN.building-*``, marked as a run) is cleaned up; a user's
    folder or file of such a name is not."""
    mine = tmp_path / ".run.building-123"
    mine.mkdir()
    (mine / "thesis.tex").write_text("...")
    debris = tmp_path / ".run.building-999"
    mark_folder(debris, RUN)
    (debris / "model.pt").write_bytes(b"half")
    (tmp_path / ".run.old-7").write_text("also mine")
    r = cli("train", made["cache"], "-o", tmp_path / "run", *FAST)
    assert r.exit_code == 0, r.output
    assert (mine / "thesis.tex").read_text() == "..." and not debris.exists()
    assert (tmp_path / ".run.old-7").read_text() == "also mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".run.building-123", ".run.lock", ".run.old-7", "run",
    ]  # fmt: skip


def test_temporary_files_never_take_a_users_name(tmp_path):
    target = tmp_path / "m.csv"
    with replacing(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".m.csv.")
        assert tmp.name.endswith(".actrec-tmp") and tmp.is_file()
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and sorted(tmp_path.iterdir()) == [target]


def test_a_recorded_file_stops_being_actrecs_once_changed(tmp_path):
    path = tmp_path / "x.timeline.csv"
    with replacing(path, TIMELINE) as tmp:
        tmp.write_text("time,a\n")
    assert owns_file(path, TIMELINE) and not owns_file(path, "manifest")
    check_file(path, TIMELINE)  # may be replaced
    path.write_text("time,a\n0.0,1.0\n")  # the user's now
    assert not owns_file(path, TIMELINE)
    with pytest.raises(Exception, match="not a timeline file actrec wrote"):
        check_file(path, TIMELINE)
    record(path, TIMELINE)
    assert owns_file(path, TIMELINE)


def test_manifest_never_writes_over_an_official_list_or_its_own_inputs(tmp_path):
    root = make_ucf(tmp_path)
    lists = tmp_path / "ucfTrainTestlist"
    before = tree(tmp_path)
    for out in (lists / "trainlist01.txt", next(root.rglob("*.avi"))):
        assert "Error: " in one_line(cli("manifest", "ucf101", root, "-o", out))
    line = one_line(cli("manifest", "ucf101", root, "-o", tmp_path / "m.csv", "--missing",
                        tmp_path / "m.csv"))  # fmt: skip
    assert "are one place" in line
    (tmp_path / "mine.csv").write_text("path,label\n")
    assert "not a manifest file actrec wrote" in one_line(
        cli("manifest", "ucf101", root, "-o", tmp_path / "mine.csv")
    )
    assert tree(tmp_path) == before | {"mine.csv": tree(tmp_path)["mine.csv"]}
    # its own manifest, a rerun: replaced
    assert cli("manifest", "ucf101", root, "-o", tmp_path / "m.csv").exit_code == 0
    assert cli("manifest", "ucf101", root, "-o", tmp_path / "m.csv").exit_code == 0


def test_report_never_writes_into_a_study_and_tune_never_into_a_run(made, tmp_path):
    tuned = tmp_path / "tuned"
    r = cli("tune", made["cache"], "-o", tuned, "--trials", "1", "--heads", "mean", "--set",
            "steps=2", "--folds", "0", "--quiet", "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    before = tree(tuned)
    line = one_line(cli("report", made["run"], made["run2"], "-o", tuned))
    assert line == (
        f"Error: {tuned} is a study folder of `actrec tune`: leaderboard.md does not belong "
        "there; choose another -o"
    )
    # the default place, the runs' common parent, is the study here: refused as well
    (tuned / "other").mkdir()
    r = cli("train", made["cache"], "-o", tuned / "other" / "r", *FAST)
    assert r.exit_code == 0, r.output
    assert "is a study folder" in one_line(cli("report", tuned / "best", tuned / "other" / "r"))
    assert {k: v for k, v in tree(tuned).items() if not k.startswith("other")} == before
    # tune -o a run folder: refused, the run as it was
    run_before = tree(made["run"])
    line = one_line(cli("tune", made["cache"], "-o", made["run"], "--trials", "1"))
    assert line == (
        f"Error: {made['run']} is a run folder of `actrec train`, not a study folder of "
        "`actrec tune`: choose another -o"
    )
    assert tree(made["run"]) == run_before


def test_evaluate_writes_only_its_own_files(made, tmp_path):
    ev = tmp_path / "ev"
    assert cli("evaluate", made["run"], "-o", ev).exit_code == 0
    assert folder_kind(ev) == "evaluation"
    assert cli("evaluate", made["run"], "-o", ev).exit_code == 0  # a rerun replaces its own
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("my numbers")
    line = one_line(cli("evaluate", made["run"], "-o", mine))
    assert "not a evaluation file actrec wrote" in line or "not an evaluation" in line
    assert (mine / "metrics.json").read_text() == "my numbers"
    assert "lies inside the input folder" in one_line(
        cli("evaluate", made["run"], "-o", made["run"] / "sub")
    )


# -- outputs unique by construction ---------------------------------------------------------------


def test_timeline_names_are_unique_after_they_are_made_safe():
    stems = timeline_stems([Path("my clip.mp4"), Path("my_clip.mp4"), Path("000_my_clip.mp4"),
                            Path("a/X.mp4"), Path("b/x.mp4"), Path("c/ok.mp4")])  # fmt: skip
    assert stems == {
        "my clip.mp4": "000-1_my_clip.mp4", "my_clip.mp4": "001_my_clip.mp4",
        "000_my_clip.mp4": "000_my_clip.mp4", "a/X.mp4": "003_X.mp4", "b/x.mp4": "004_x.mp4",
        "c/ok.mp4": "ok.mp4",
    }  # fmt: skip


def band_file(path: Path) -> Path:
    with warnings.catch_warnings():  # TorchScript is deprecated, and still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Bands()), path)
    return path


def band_args(band: Path) -> list:
    return ["--backbone", band, "--input-size", "32", "--mean", "0", "0", "0", "--std", "1",
            "1", "1", "--dtype", "float32", "--quiet", "--workers", "0"]  # fmt: skip


def test_extract_leaves_a_users_files_named_like_its_own(tmp_path):
    band = band_file(tmp_path / "bands.pt")
    for i in range(2):
        make_video(tmp_path / "src" / "a" / f"{i}.mp4", 4)
    (tmp_path / "c.h5.tmp-notes").write_text("mine")
    (tmp_path / "c.h5.tmp123").write_text("mine too")
    (tmp_path / "c.h5.partial").mkdir()
    (tmp_path / "c.h5.partial" / "thesis.tex").write_text("...")
    line = one_line(cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", *band_args(band)))
    assert line == (
        f"Error: {tmp_path / 'c.h5.partial'} is in the way (not an unfinished extraction): "
        "move it, or choose another -o"
    )
    (tmp_path / "c.h5.partial").rename(tmp_path / "kept")
    r = cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", *band_args(band))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.h5.tmp-notes").read_text() == "mine"
    assert (tmp_path / "c.h5.tmp123").read_text() == "mine too"  # not HDF5: not a temporary
    assert (tmp_path / "kept" / "thesis.tex").read_text() == "..."
    # outputs inside the source folder would be read back as inputs: refused
    assert "lies inside the input folder" in one_line(
        cli("extract", tmp_path / "src", "-o", tmp_path / "src" / "c.h5", *band_args(band))
    )


def test_predict_two_names_that_become_one(tmp_path):
    band = band_file(tmp_path / "bands.pt")
    for label in ("a", "b"):
        for i in range(3):
            make_video(tmp_path / "videos" / label / f"{i}.mp4", 6 + i)
    r = cli("extract", tmp_path / "videos", "-o", tmp_path / "v.h5", *band_args(band))
    assert r.exit_code == 0, r.output
    r = cli("train", tmp_path / "v.h5", "-o", tmp_path / "run", *FAST, "--clip-len", "2")
    assert r.exit_code == 0, r.output
    spaced, underscored = tmp_path / "my clip.mp4", tmp_path / "my_clip.mp4"
    make_video(spaced, 5)
    make_video(underscored, 9)
    out = tmp_path / "pred"
    r = cli("predict", spaced, underscored, "--run", tmp_path / "run", "--backbone", band, "-o",
            out, "--device", "cpu", "--window", "2")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = {p.name: len(p.read_text().splitlines()) - 1 for p in out.glob("*.csv")}
    # one timeline each, a window per frame but the last: 5 frames -> 4 rows, 9 -> 8
    assert rows == {"000_my_clip.mp4.timeline.csv": 4, "001_my_clip.mp4.timeline.csv": 8}
    # one video under two names is one input, named twice: refused
    (tmp_path / "link.mp4").symlink_to(spaced)
    line = one_line(cli("predict", spaced, tmp_path / "link.mp4", "--run", tmp_path / "run",
                        "--backbone", band, "-o", out))  # fmt: skip
    assert line == f"Error: VIDEOS: {spaced} and {tmp_path / 'link.mp4'}, one file; name each once"


def test_merge_and_import_refuse_one_input_named_twice(made, tmp_path):
    c = made["cache"]
    other = c.parent / "runs" / ".." / c.name
    assert "one file" in one_line(cli("merge", c, other, "-o", tmp_path / "m.h5"))
    npy = made["root"] / "npy"
    assert "twice" in one_line(cli("import", npy, f"{npy}/", "-o", tmp_path / "i.h5"))
    (tmp_path / "mine.h5").write_bytes(b"not a cache")
    line = one_line(cli("merge", c, "-o", tmp_path / "mine.h5", "--force"))
    assert "is not an actrec cache" in line
    assert (tmp_path / "mine.h5").read_bytes() == b"not a cache"


def test_discovery_never_takes_actrecs_own_folders(tmp_path):
    from actrec.extract.sources import find_items

    make_video(tmp_path / "src" / "a" / "0.mp4", 4)
    frames = tmp_path / "src" / "a" / "1"  # a frame folder: an item
    frames.mkdir()
    mark_folder(tmp_path / "src" / "a" / "preds", "predictions")  # actrec's: not an item
    mark_folder(tmp_path / "src" / "runs", None)
    (tmp_path / "src" / "b.h5.partial").mkdir()
    (tmp_path / "src" / "b.h5.partial" / "meta.json").write_text("{}")
    assert [it.id for it in find_items(tmp_path / "src")] == ["a/0.mp4", "a/1"]


# -- whole or not at all --------------------------------------------------------------------------


def test_a_report_cut_short_leaves_the_old_page(made, tmp_path):
    """`ulimit -f` stops the write of report.html midway: the old page stays, whole, and no
    temporary file is left; one line, exit 2."""
    run = tmp_path / "run"
    r = cli("train", made["cache"], "-o", run, *FAST)
    assert r.exit_code == 0, r.output
    old = (run / "report.html").read_bytes()
    md_old = (run / "report.md").read_bytes()
    (run / "report.html").write_bytes(old.replace(b"<h1>", b"<h1>old "))
    old = (run / "report.html").read_bytes()
    assert len(old) > 40 * 512 > len(md_old)  # the limit cuts the page, not report.md
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["sh", "-c", f"ulimit -f 40; '{BIN / 'actrec'}' report '{run}'"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith(f"Error: {run / 'report.html'}: File too large;")
    assert len(out.stderr.strip().splitlines()) == 1
    assert (run / "report.html").read_bytes() == old
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".actrec-tmp")) == []


def test_a_writer_that_fails_midway_leaves_the_old_file(made, tmp_path, monkeypatch):
    from actrec.temporal import report

    run = tmp_path / "run"
    assert cli("train", made["cache"], "-o", run, *FAST).exit_code == 0
    old = (run / "report.html").read_bytes()
    real = Path.write_text

    def half(self, text, *args, **kwargs):
        if self.name.startswith(".report.html."):
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(5, "Input/output error")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(OSError):
        report.write_report(run)
    assert (run / "report.html").read_bytes() == old
    assert not [p for p in run.iterdir() if p.name.endswith(".actrec-tmp")]


# -- Markdown ---------------------------------------------------------------------------------------


def test_markdown_escapes_names_as_the_pages_do(tmp_path):
    assert md_escape("a|b") == "a\\|b" and md_escape("x\ny") == "x y"
    assert md_escape("<script>`x`") == "\\<script\\>\\`x\\`"
    names = ["pipe|class", "tick`class", "<i>bold", "[link](x)"]
    cache = tmp_path / "c.h5"
    assert cli("import", npy_set(tmp_path / "npy", names), "-o", cache).exit_code == 0
    run = tmp_path / "run"
    assert cli("train", cache, "-o", run, *FAST, "--val-fraction", "0.25",
               "--test-fraction", "0.25").exit_code == 0  # fmt: skip
    md = (run / "report.md").read_text()
    per_class = md.split("## Per class")[1].split("##")[0].strip().splitlines()
    for line in per_class:  # one cell per column: no name ended a cell or a row
        assert len(line.replace("\\|", "").split("|")) == 5 + 2, line
    assert "\\<i\\>bold" in md and "<i>" not in md and "pipe\\|class" in md
    html = (run / "report.html").read_text()
    assert "&lt;i&gt;bold" in html and "<i>bold" not in html
