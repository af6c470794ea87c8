"""docs/design.md is true: a cache and a run folder read with h5py, json and csv alone, as the
page describes them, hold every dataset, attribute, file, key and column it lists, with values
that agree (the index tiles /features, labels index /classes, metrics add up)."""

import csv
import hashlib
import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from videos import make_video

from actrec.cli import main

CLASSES = ("left", "right")
D = 4
FPS = 10.0
# item -> (class, split, group, length); two groups per class in train so that nothing is carved
ITEMS = {
    f"{c}/{i:02d}.npy": (c, split, f"{c}_g{i // 2}", 5 + i)
    for c in CLASSES
    for i, split in enumerate(["train"] * 4 + ["val", "test"])
}
FINGERPRINT_KEYS = ("backbone", "weights", "input_size", "mean", "std", "resize", "sampling",
                    "dtype", "precision")  # fmt: skip
CONFIG_OPTIONS = (
    "cache", "out", "head", "steps", "epochs", "batch_size", "lr", "weight_decay", "warmup",
    "label_smoothing", "grad_clip", "patience", "select", "eval_every", "hidden", "layers",
    "bidirectional", "dropout", "norm", "delta", "clip_len", "max_len", "eval_windows",
    "val_fraction", "test_fraction", "split_seed", "seed", "device", "lazy", "workers", "force",
    "progress",
)  # fmt: skip
CONFIG_FOUND = (
    "cache_fingerprint", "cache_backbone", "cache_attrs", "dim", "classes", "head_kwargs",
    "parameters", "device_used", "lazy_used", "split_sizes", "versions", "steps_planned",
    "steps_per_epoch", "eval_every_used", "max_len_used", "best_step", "best_epoch",
    "best_val_step", "steps_run", "epochs_run", "interrupted",
)  # fmt: skip
HISTORY = ("step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
           "seconds", "train_seconds", "data_seconds")  # fmt: skip
METRICS = ("accuracy", "balanced_accuracy", "top5_accuracy", "precision_macro", "recall_macro",
           "f1_macro", "per_class", "confusion_matrix", "classes", "n_samples", "split")  # fmt: skip
STEPS = 4


def run_cli(*args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal((t, D)).astype(np.float32) for k, (_, _, _, t) in ITEMS.items()}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A cache made by `actrec import` of .npy arrays listed in a manifest."""
    root = tmp_path_factory.mktemp("design")
    data = arrays()
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "group"])
        for key, (label, split, group, _) in ITEMS.items():
            (root / key).parent.mkdir(exist_ok=True)
            np.save(root / key, data[key])
            w.writerow([key, label, split, group])
    run_cli("import", root / "manifest.csv", "-o", root / "feats.h5", "--fps", FPS,
            "--dtype", "float32")  # fmt: skip
    return root / "feats.h5", data


@pytest.fixture(scope="module")
def run_folder(imported, tmp_path_factory):
    cache, _ = imported
    out = tmp_path_factory.mktemp("runs") / "run"
    run_cli("train", cache, "-o", out, "--head", "mean", "--steps", STEPS, "--hidden", 8,
            "--device", "cpu", "--quiet")  # fmt: skip
    return out


def strings(dataset) -> list[str]:
    return list(dataset.asstr()[...])


def fingerprint(attrs) -> str:
    """As the page says: sha256 of the sorted, compact JSON of the fingerprint keys present,
    arrays as lists and whole floats as integers; the first 16 hex digits."""

    def plain(v):
        if isinstance(v, np.ndarray):
            return [plain(x) for x in v.tolist()]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    relevant = {k: plain(attrs[k]) for k in FINGERPRINT_KEYS if k in attrs}
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_layout(f: h5py.File) -> None:
    """What every cache holds, whoever wrote it."""
    features, ts = f["features"], f["timestamps"]
    assert features.ndim == 2 and features.chunks is not None
    assert str(features.dtype) == f.attrs["dtype"] and ts.dtype == np.float64
    assert ts.shape == (features.shape[0],)
    ids = strings(f["videos/id"])
    start, length = f["videos/start"][...], f["videos/length"][...]
    assert start.dtype == length.dtype == f["videos/label"].dtype == np.int64
    assert ids == sorted(set(ids))
    # the videos tile /features in order
    assert start[0] == 0 and np.array_equal(start[1:], (start + length)[:-1])
    assert (length >= 1).all() and length.sum() == features.shape[0]
    classes = strings(f["classes"])
    assert classes == sorted(classes)
    label = f["videos/label"][...]
    assert ((label >= -1) & (label < len(classes))).all()
    for name in ("split", "group"):
        assert len(strings(f[f"videos/{name}"])) == len(ids)
    assert f["videos/fps"].dtype == np.float64
    for name in ("source_size", "source_mtime_ns"):
        assert f[f"videos/{name}"].dtype == np.int64 and f[f"videos/{name}"].shape == (len(ids),)
    failed = strings(f["failed/id"])
    assert failed == sorted(failed) and len(strings(f["failed/error"])) == len(failed)
    assert not set(failed) & set(ids)
    assert f.attrs["format_version"] == 1
    time.strptime(f.attrs["created"], "%Y-%m-%dT%H:%M:%S%z")
    assert f.attrs["fingerprint"] == fingerprint(f.attrs)


def test_an_imported_cache_is_as_the_page_says(imported):
    cache, data = imported
    with h5py.File(cache, "r") as f:
        check_layout(f)
        ids, classes = strings(f["videos/id"]), strings(f["classes"])
        assert ids == sorted(ITEMS) and classes == list(CLASSES)
        start, length = f["videos/start"][...], f["videos/length"][...]
        label, fps = f["videos/label"][...], f["videos/fps"][...]
        split, group = strings(f["videos/split"]), strings(f["videos/group"])
        for i, vid in enumerate(ids):
            want_label, want_split, want_group, t = ITEMS[vid]
            rows = f["features"][start[i] : start[i] + length[i]]
            assert length[i] == t and np.array_equal(rows, data[vid])
            assert classes[label[i]] == want_label
            assert (split[i], group[i]) == (want_split, want_group)
            assert fps[i] == FPS
            assert np.allclose(f["timestamps"][start[i] : start[i] + length[i]], np.arange(t) / FPS)
        assert (f["videos/source_size"][...] == -1).all()
        assert f["failed/id"].shape == (0,)
        a = f.attrs
        assert (a["backbone"], a["weights"], a["sampling"], a["fps"]) == ("import", "none",
                                                                          "as given", FPS)  # fmt: skip
        assert Path(a["source"]).is_absolute() and a["dtype"] == "float32"


def test_an_extracted_cache_records_how_it_was_made(tmp_path):
    source = tmp_path / "videos"
    make_video(source / "a" / "one.mp4", 6, fps=25)
    make_video(source / "b" / "two.mp4", 9, fps=25)
    (source / "b" / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "feats.h5"
    result = CliRunner().invoke(main, ["extract", str(source), "-o", str(out), "--weights", "none",
                                       "--input-size", "64", "--device", "cpu", "--workers", "0",
                                       "--quiet"])  # fmt: skip
    assert result.exit_code == 1, result.output  # done, with a failed item
    assert not (tmp_path / "feats.h5.partial").exists()
    with h5py.File(out, "r") as f:
        check_layout(f)
        assert strings(f["videos/id"]) == ["a/one.mp4", "b/two.mp4"]
        assert strings(f["classes"]) == ["a", "b"]
        assert list(f["videos/length"][...]) == [6, 9]
        assert strings(f["failed/id"]) == ["b/broken.mp4"] and strings(f["failed/error"])[0]
        assert np.allclose(f["videos/fps"][...], 25.0)
        ts, start = f["timestamps"][...], f["videos/start"][...]
        assert np.allclose(ts[start[1] : start[1] + 9], np.arange(9) / 25.0)
        stat = (source / "b" / "two.mp4").stat()
        assert f["videos/source_size"][1] == stat.st_size
        assert f["videos/source_mtime_ns"][1] == stat.st_mtime_ns
        a = f.attrs
        assert (a["backbone"], a["weights"], a["sampling"]) == ("resnet18", "none", "all")
        assert list(a["input_size"]) == [64, 64] and len(a["mean"]) == len(a["std"]) == 3
        assert a["resize"].startswith("shorter=") and ",crop=64x64," in a["resize"]
        assert a["precision"] == "float32" and a["dtype"] == "float16"
        assert a["weights_path"] == "" and a["backbone_path"] == ""
        for key in ("actrec_version", "torch_version", "torchvision_version", "av_version"):
            assert a[key]
        assert a["source"] == str(source.resolve()) and "shard" not in a
        assert f["features"].shape[1] == 512  # resnet18's pooled features


def test_the_run_folder_is_as_the_page_says(imported, run_folder):
    cache, _ = imported
    out = run_folder
    files = {p.name for p in out.iterdir()}
    assert files >= {"config.json", "model.pt", "history.csv", "metrics.json", "predictions.csv",
                     "confusion.csv", "report.md", "report.html"}  # fmt: skip
    assert (out.parent / ".run.lock").exists()
    marker = json.loads((out / ".actrec.json").read_text())
    assert (marker["actrec"], marker["kind"]) == (1, "run") and marker["version"]
    assert not list(out.parent.glob(".run.building-*"))
    with h5py.File(cache, "r") as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        classes = strings(f["classes"])
        dim = f["features"].shape[1]
        ids, split = strings(f["videos/id"]), strings(f["videos/split"])

    config = json.loads((out / "config.json").read_text())
    assert set(CONFIG_OPTIONS) | set(CONFIG_FOUND) <= set(config)
    assert config["cache"] == str(cache.resolve()) and config["head"] == "mean"
    assert config["cache_fingerprint"] == attrs["fingerprint"]
    assert config["cache_backbone"] == "import"
    assert set(config["cache_attrs"]) == set(attrs)
    assert config["cache_attrs"]["fingerprint"] == attrs["fingerprint"]
    assert config["classes"] == classes and config["dim"] == dim
    sizes = {s: split.count(s) for s in ("train", "val", "test")}
    assert config["split_sizes"] == sizes
    assert set(config["versions"]) == {"actrec", "torch", "numpy", "scikit-learn", "h5py", "python"}
    assert config["steps_planned"] == config["steps_run"] == STEPS
    assert config["interrupted"] is False

    with open(out / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    assert tuple(history[0]) == HISTORY
    steps = [int(r["step"]) for r in history]
    assert steps[-1] == config["steps_run"] and config["best_step"] in steps
    assert config["best_val_step"] in steps
    for r in history:
        assert float(r["epoch"]) == pytest.approx(int(r["step"]) / config["steps_per_epoch"], 1e-3)
        assert 0 <= float(r["val_accuracy"]) <= 1

    metrics = json.loads((out / "metrics.json").read_text())
    assert tuple(metrics) == METRICS
    n = metrics["n_samples"]
    assert metrics["split"] == "test" and n == sizes["test"] and metrics["classes"] == classes
    assert set(metrics["per_class"]) == set(classes)
    assert sum(c["support"] for c in metrics["per_class"].values()) == n
    for c in metrics["per_class"].values():
        assert set(c) == {"precision", "recall", "f1", "support"}
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (len(classes), len(classes)) and matrix.sum() == n
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / n)
    assert [c["support"] for c in metrics["per_class"].values()] == list(matrix.sum(1))

    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "true", "predicted", *[f"p_{c}" for c in classes]]
    test_ids = {vid for vid, s in zip(ids, split, strict=True) if s == "test"}
    assert {r[0] for r in rows[1:]} == test_ids
    right = 0
    for vid, true, predicted, *probs in rows[1:]:
        p = np.array(probs, dtype=float)
        assert true == ITEMS[vid][0] and p.sum() == pytest.approx(1, abs=1e-4)
        assert predicted == classes[int(p.argmax())]
        right += true == predicted
    assert right / n == pytest.approx(metrics["accuracy"])

    with open(out / "confusion.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["true \\ predicted", *classes]
    assert [[int(x) for x in r[1:]] for r in rows[1:]] == metrics["confusion_matrix"]
    assert [r[0] for r in rows[1:]] == classes

    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "src='http" not in html and 'src="http' not in html
    assert "Metrics" in (out / "report.md").read_text()
