"""The values issue 18 found accepted, or ending in a traceback, each as a test: arrays out of
range or of the wrong kind, an index that contradicts itself, damaged run-folder files, options
that parse to the wrong type, text HDF5 cannot hold, and tune's folds and folder.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from videos import Bands, make_video

from actrec.cli import main
from actrec.common.cache import Video, write_cache
from actrec.common.errors import ActrecError
from actrec.common.shards import from_environment

ATTRS = {"backbone": "import", "weights": "none", "sampling": "as given"}


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result) -> str:
    """The one `Error:` line of a refusal with exit code 2 (click's "Aborted!" is exit 1)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def npy_folder(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    for name, array in arrays.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array, allow_pickle=array.dtype == object)
    return root / "src"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A cache of 3 classes of 3 sequences each: the set tune's defaults failed on."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(1)
    arrays = {f"{c}/{i}.npy": (rng.standard_normal((8, 3)) + 3 * k).astype(np.float32)
              for k, c in enumerate("abc") for i in range(3)}  # fmt: skip
    assert cli("import", npy_folder(root, arrays), "-o", root / "c.h5").exit_code == 0
    return root / "c.h5"


@pytest.fixture(scope="module")
def run(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    assert (
        cli("train", small, "-o", out, "--head", "mean", "--steps", "3", "--quiet").exit_code == 0
    )
    return out


# -- arrays entering a cache ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "array,message",
    [
        (np.full((3, 2), 1e300), "a value of 1e+300 is beyond float32's range"),
        (np.ones((3, 2), np.complex64), "dtype complex64 is not real numbers"),
        (np.float32(3.0), "shape [T, D] with T >= 1 and D >= 1, got []"),
        (np.zeros((4, 0), np.float32), "got [4, 0]"),
        (np.zeros((0, 4), np.float32), "got [0, 4]"),
        (np.array([[1, "a"]], dtype=object), "not a readable .npy array"),
        (np.ones((3, 2), bool), "dtype bool is not real numbers"),
    ],
    ids=["1e300", "complex", "0-D", "T-by-0", "0-by-D", "objects", "booleans"],
)
def test_import_refuses_arrays_a_cache_cannot_hold(tmp_path, array, message):
    src = npy_folder(tmp_path, {"a/0.npy": np.ones((3, 2)), "a/1.npy": array})
    line = one_line(cli("import", src, "-o", tmp_path / "c.h5"))
    assert "1.npy" in line and message in line, line
    assert not (tmp_path / "c.h5").exists()


def test_float16_range_is_checked_where_it_is_stored(tmp_path):
    src = npy_folder(tmp_path, {"a/0.npy": np.full((3, 2), 1e5, np.float32)})
    line = one_line(cli("import", src, "-o", tmp_path / "c.h5", "--dtype", "float16"))
    assert "beyond float16's range (65504) and would be stored as inf" in line
    assert "--dtype float32" in line
    assert cli("import", src, "-o", tmp_path / "c.h5", "--dtype", "float32").exit_code == 0


def test_an_empty_npy_is_one_line_not_aborted(tmp_path):
    src = npy_folder(tmp_path, {"a/0.npy": np.ones((3, 2))})
    (src / "a" / "1.npy").write_bytes(b"")
    r = cli("import", src, "-o", tmp_path / "c.h5")
    assert "Aborted" not in r.output
    assert "1.npy: not a readable .npy array (empty, or cut short)" in one_line(r)


def test_write_cache_refuses_what_it_would_store_wrongly(tmp_path):
    ok = Video("a", np.ones((2, 3), np.float32), np.arange(2.0), "x")
    big = Video("b", np.full((2, 3), 1e39), np.arange(2.0), "x")
    with pytest.raises(ActrecError, match="beyond float32's range"):
        write_cache(tmp_path / "c.h5", [ok, big], ATTRS, dim=3, dtype="float32")
    named = Video("c", np.ones((2, 3), np.float32), np.arange(2.0), "x\0y")
    with pytest.raises(ActrecError, match="holds a NUL character"):
        write_cache(tmp_path / "c.h5", [ok, named], ATTRS, dim=3, dtype="float32")
    assert not (tmp_path / "c.h5").exists()


# -- the index ----------------------------------------------------------------------------------


def _cache(path: Path, labels=("x", "y")) -> Path:
    videos = [Video(f"v{i}", np.full((2, 3), i, np.float32), np.arange(2.0), label)
              for i, label in enumerate(labels)]  # fmt: skip
    return write_cache(path, videos, ATTRS, dim=3, dtype="float32")


@pytest.mark.parametrize(
    "edit,problem",
    [
        ("classes", "class 'x' appears twice in /classes"),
        ("complex", "/features holds complex64, not real floating-point numbers"),
        ("nul", "/classes: 'x\\x00z' holds a NUL character"),
    ],
)
def test_inspect_verify_finds_an_index_no_actrec_cache_holds(tmp_path, edit, problem):
    path = _cache(tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        if edit == "classes":
            del f["classes"]
            f["classes"] = np.array([b"x", b"x"])
        elif edit == "complex":
            values = f["features"][...]
            del f["features"]
            f["features"] = values.astype(np.complex64)
        else:
            del f["classes"]
            f["classes"] = np.array([b"x\0z", b"y"])  # fixed-length: HDF5 VLEN refuses NUL
    r = cli("inspect", path, "--verify")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert f"problem    {problem}" in r.stderr, r.stderr


def test_labels_stored_as_text_are_refused_as_the_index_is_read(tmp_path):
    path = _cache(tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        del f["videos/label"]
        f["videos/label"] = np.array([b"0", b"1"])
    line = one_line(cli("inspect", path, "--verify"))
    assert "/videos/label holds |S1, not integers" in line


def test_merge_refuses_one_video_with_two_labels(tmp_path):
    a = _cache(tmp_path / "a.h5", labels=("x", "y"))
    b = _cache(tmp_path / "b.h5", labels=("x", "z"))
    line = one_line(cli("merge", a, b, "-o", tmp_path / "m.h5"))
    assert "v1 has the label 'y' in" in line and "'z' in" in line
    assert not (tmp_path / "m.h5").exists()


# -- the files of a run folder ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,content,why",
    [
        ("model.pt", b"", "model.pt: damaged (empty)"),
        ("model.pt", b"{}", "model.pt: damaged (not a PyTorch file, or cut short)"),
        ("model.pt", "truncated", "model.pt: damaged (not a PyTorch file, or cut short)"),
        ("config.json", b"{}", "config.json: damaged (no head, cache, batch_size, clip_len ...)"),
        ("config.json", b"not json", "config.json: damaged (not JSON"),
        ("config.json", b"[1, 2]", "config.json: damaged (a JSON list, not an object)"),
    ],
    ids=[
        "model-empty",
        "model-braces",
        "model-truncated",
        "config-braces",
        "config-text",
        "config-list",
    ],  # fmt: skip
)
def test_a_damaged_run_file_is_one_line_for_evaluate(run, tmp_path, name, content, why):
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    if content == "truncated":
        content = (run / name).read_bytes()[:2000]
    (copy / name).write_bytes(content)
    r = cli("evaluate", copy)
    assert "Aborted" not in r.output
    line = one_line(r)
    assert why in line and "retrain the run" in line, line


@pytest.mark.parametrize(
    "name,content,why",
    [
        ("metrics.json", b"", "metrics.json: damaged (empty)"),
        ("config.json", b"{}", "config.json: damaged (no head"),
        ("history.csv", b"step,val_loss\n1,abc\n", "history.csv: damaged (line 2 holds a cell"),
        ("history.csv", b"step,val_loss\n1,0.5,7\n", "history.csv: damaged (line 2 does not fit"),
    ],
    ids=["metrics-empty", "config-braces", "history-text", "history-ragged"],
)
def test_a_damaged_run_file_is_one_line_for_report(run, tmp_path, name, content, why):
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    (copy / name).write_bytes(content)
    assert why in one_line(cli("report", copy))


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting,why",
    [
        ("epochs=true", "--set epochs=true: 'true' is not a whole number"),
        ("steps=2.5", "--set steps=2.5: '2.5' is not a whole number"),
        ("hidden=abc", "--set hidden=abc: 'abc' is not a whole number"),
        ("max_len=[1,2]", "--set max_len=[1,2]: '[1,2]' is not a whole number"),
        ("lr=nan", "--set lr=nan: 'nan' is not a finite number"),
        ("delta=maybe", "--set delta=maybe: 'maybe' is not a valid boolean"),
        ("steps=3=4", "--set steps=3=4: '3=4' is not a whole number"),
    ],
)
def test_tune_set_parses_as_train_parses(small, tmp_path, setting, why):
    line = one_line(cli("tune", small, "-o", tmp_path / "t", "--set", setting))
    assert why in line
    assert not (tmp_path / "t").exists()


def test_tune_set_values_take_train_types(small, tmp_path, monkeypatch):
    import actrec.temporal.tune as tune_module

    seen = []
    monkeypatch.setattr(tune_module, "tune", lambda c: seen.append(c) or tune_module.TuneResult(
        Path(c.out), None, None, 0, False))  # fmt: skip
    r = cli("tune", small, "-o", tmp_path / "t", "--set", "epochs=3", "--set", "delta=true",
            "--set", "lr=0.002", "--set", "max_len=none", "--set", "norm=sequence")  # fmt: skip
    assert r.exit_code == 0, r.output
    fixed = seen[0].fixed
    assert fixed == {"epochs": 3, "delta": True, "lr": 0.002, "max_len": None, "norm": "sequence"}
    assert type(fixed["epochs"]) is int and type(fixed["lr"]) is float


@pytest.mark.parametrize(
    "args,why",
    [
        (["--head", "tcn", "--layers", "70"], "'70' is not in 1..64"),
        (["--head", "tcn", "--layers", "17"], "layers 17: tcn takes 1..16"),
        (["--seed", str(10**30)], f"'{10**30}' is not in 0..4294967295"),
        (["--eval-windows", "5"], "eval_windows 5 needs clip_len > 0"),
        (["--lr", "inf"], "'inf' is not a finite number"),
        (["--val-fraction", "0.5", "--test-fraction", "0.45"], "leave at least a tenth"),
    ],
)
def test_train_options_out_of_range_are_one_line(small, tmp_path, args, why):
    assert why in one_line(cli("train", small, "-o", tmp_path / "r", *args))
    assert not (tmp_path / "r").exists()


def test_a_library_config_is_checked_by_the_same_types():
    from actrec.temporal.train import TrainConfig

    with pytest.raises(ActrecError, match="epochs: True is not a whole number"):
        TrainConfig(cache="c.h5", out="r", epochs=True).check()
    with pytest.raises(ActrecError, match="seed: -1 is not in 0..4294967295"):
        TrainConfig(cache="c.h5", out="r", seed=-1).check()
    config = TrainConfig(cache="c.h5", out="r", steps=4.0)
    config.check()
    assert config.steps == 4 and type(config.steps) is int


def test_manifest_leaves_something_to_train_on(tmp_path):
    for c in "ab":
        for i in range(3):
            (tmp_path / "v" / c).mkdir(parents=True, exist_ok=True)
            (tmp_path / "v" / c / f"{i}.mp4").write_bytes(b"x")
    r = cli("manifest", "folders", tmp_path / "v", "-o", tmp_path / "m.csv", "--val", "0.5",
            "--test", "0.49")  # fmt: skip
    assert "--val 0.5 --test 0.49: each in [0, 1), together under 0.9" in one_line(r)
    assert not (tmp_path / "m.csv").exists()


def test_environment_ranks_are_parsed_like_options():
    assert from_environment({"WORLD_SIZE": "4", "RANK": "2"}) == (2, 4)
    assert from_environment({"SLURM_NTASKS": "3", "SLURM_PROCID": "1"}) == (1, 3)
    assert from_environment({"WORLD_SIZE": "1", "RANK": "0"}) == (0, 1)
    assert from_environment({}) == (0, 1)
    with pytest.raises(ActrecError, match=r"RANK='4' in the environment \(WORLD_SIZE=4\)"):
        from_environment({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(ActrecError, match="WORLD_SIZE='2.0' in the environment"):
        from_environment({"WORLD_SIZE": "2.0"})


# -- text HDF5 cannot hold, found before any work ---------------------------------------------------


@pytest.fixture(scope="module")
def bands(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bb") / "bands.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Bands()), path)
    return path


def _extract(source: Path, out: Path, backbone: Path) -> object:
    return cli("extract", source, "-o", out, "--backbone", backbone, "--input-size", "16",
               "--mean", "0", "0", "0", "--std", "1", "1", "1", "--workers", "0", "--quiet")  # fmt: skip


@pytest.mark.parametrize("case", ["nul-label", "cp1252", "file-name"])
def test_names_hdf5_cannot_hold_are_refused_before_extraction(tmp_path, bands, case):
    make_video(tmp_path / "v" / "a" / "x.mp4", 3, width=32, height=32)
    if case == "nul-label":
        source = tmp_path / "m.csv"
        source.write_bytes(b"path,label\nv/a/x.mp4,b\0ad\n")
        why = "m.csv: item 'v/a/x.mp4', its label: 'b\\x00ad' holds a NUL character"
    elif case == "cp1252":
        source = tmp_path / "m.csv"
        source.write_bytes("path,label\nv/a/x.mp4,caf\u00e9\n".encode("cp1252"))
        why = "m.csv: not UTF-8 text (byte 0xe9 at offset 24)"
    else:
        source = tmp_path / "v"
        bad = Path(
            bytes(tmp_path / "v" / "a").decode()
            + "/y"
            + b"\xff".decode(errors="surrogateescape")
            + ".mp4"
        )
        (tmp_path / "v" / "a" / "x.mp4").rename(bad)
        why = "an item's name: 'a/y\\udcff.mp4' is not valid UTF-8"
    out = tmp_path / "o.h5"
    line = one_line(_extract(source, out, bands))
    assert why in line, line
    assert not out.exists() and not (tmp_path / "o.h5.partial").exists()


# -- tune: folds the data can give, one search per folder -------------------------------------------


def test_tune_with_default_folds_on_three_per_class_runs_exactly_the_trials_asked(small, tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "t"
    r = cli("tune", small, "-o", out, "--heads", "mean", "--trials", "3", "--set", "steps=2",
            "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    # 9 sequences: test 3, train+val 6, 2 of each class: 2 folds, not the default 5
    assert "tune: 2 folds of train+val (6 sequences" in r.stderr
    with open(out / "trials.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert all(len(row["scores"].split(";")) == 2 for row in rows)
    assert json.loads((out / "best" / "metrics.json").read_text())["n_samples"] == 3


def test_tune_folds_beyond_the_data_is_one_line(small, tmp_path):
    pytest.importorskip("optuna")
    line = one_line(cli("tune", small, "-o", tmp_path / "t", "--folds", "1000"))
    assert "--folds 1000: the smallest class has 2 sequences (or groups) in train+val, so at " \
           "most 2 folds" in line  # fmt: skip
    assert not (tmp_path / "t").exists()


def test_a_second_tune_into_one_folder_is_refused(small, tmp_path):
    pytest.importorskip("optuna")
    import subprocess
    import sys

    out = tmp_path / "t"
    # the first tune, in flight: another process holds the folder's lock (a POSIX lock is the
    # process's own, so it must be another one)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from actrec.temporal.runfolder import FolderLock\nwith FolderLock(Path(sys.argv[1]), 'busy'):\n"
         "    print('locked', flush=True)\n    time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_line(cli("tune", small, "-o", out, "--trials", "1", "--heads", "mean"))
    finally:
        holder.kill()
        holder.wait()
    assert "another `actrec tune` (or `train`) is writing this folder" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "storage,why",
    [
        ("sqlite:///{tmp}/missing/study.db", "no folder"),
        ("foo://host/db", "unknown database 'foo'"),
        ("not a url", "not a database URL"),
        ("sqlite:///{cache}", "is the cache itself"),
        ("sqlite:///{tmp}/notes.txt", "is not an SQLite database"),
        ("sqlite://", "an in-memory database keeps no study"),
    ],
)
def test_tune_storage_that_cannot_hold_a_study_is_one_line(small, tmp_path, storage, why):
    pytest.importorskip("optuna")
    (tmp_path / "notes.txt").write_text("mine")
    url = storage.format(tmp=tmp_path, cache=small)
    assert why in one_line(cli("tune", small, "-o", tmp_path / "t", "--storage", url))
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "t").exists()


def test_tune_storage_without_its_driver_is_one_line(small, tmp_path):
    pytest.importorskip("optuna")
    try:
        import psycopg  # noqa: F401

        pytest.skip("psycopg is installed here")
    except ImportError:
        pass
    line = one_line(cli("tune", small, "-o", tmp_path / "t", "--storage", "postgresql://u@h/db"))
    assert "its Python driver is not installed (psycopg)" in line


def test_options_that_do_nothing_together_are_named(small, tmp_path):
    from actrec.temporal.cli import unused_options
    from actrec.temporal.train import TrainConfig

    r = cli("train", small, "-o", tmp_path / "r", "--head", "mean", "--layers", "2",
            "--steps", "2", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "note: --layers does nothing for --head mean (it has no layers)" in r.stderr
    config = TrainConfig(head="tcn", bidirectional=True, lazy=False, workers=4)
    assert unused_options(config) == [
        "--bidirectional does nothing for --head tcn (gru, lstm only)",
        "--workers does nothing with --in-memory (workers read from disk)",
    ]
    assert unused_options(TrainConfig(head="gru", bidirectional=True)) == []
