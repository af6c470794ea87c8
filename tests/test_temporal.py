"""Stage two end to end on small synthetic caches: training, metrics, checkpoints, reports, errors."""

import csv
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn import metrics as skm

from actrec.cli import main
from actrec.common.cache import Video, open_cache, write_cache
from actrec.common.errors import ActrecError
from actrec.temporal import (
    TrainConfig,
    compute_metrics,
    evaluate_run,
    leaderboard,
    leaderboard_text,
    load_run,
    predict_proba,
    predict_timeline,
    train,
    write_leaderboard,
)
from actrec.temporal.metrics import METRIC_KEYS

DIM = 16
FAST = dict(epochs=12, hidden=32, clip_len=16, batch_size=32, progress=False)


def order_videos(n: int = 200, dim: int = DIM, seed: int = 0, label: bool = True) -> list[Video]:
    """Sequences that only order separates: one walk along a fixed direction, forward or reversed.

    Both classes hold the same kind of frames (each sequence's mean is its random base point), so
    mean pooling cannot tell them apart; the direction of travel can.
    """
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim)
    videos = []
    for i in range(n):
        t = int(rng.integers(20, 31))
        frames = (
            rng.standard_normal(dim) * 0.5
            + np.linspace(-1, 1, t)[:, None] * direction
            + 0.3 * rng.standard_normal((t, dim))
        )  # (T, D)
        name = "forward" if i % 2 == 0 else "backward"
        if name == "backward":
            frames = frames[::-1]
        videos.append(
            Video(
                id=f"v{i:04d}",
                features=np.ascontiguousarray(frames, dtype=np.float32),
                timestamps=np.arange(t) / 10.0,
                label=name if label else "",
                fps=10.0,
            )  # fmt: skip
        )
    return videos


def make_cache(path, videos, dim=DIM):
    return write_cache(path, videos, {"backbone": "synthetic"}, dim=dim, dtype="float32")


@pytest.fixture(scope="module")
def order_cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "order.h5", order_videos())


@pytest.fixture(scope="module")
def gru_run(order_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gru"
    return train(TrainConfig(cache=str(order_cache), out=str(out), head="gru", **FAST))


@pytest.fixture(scope="module")
def mean_runs(order_cache, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return [
        train(
            TrainConfig(
                cache=str(order_cache), out=str(base / f"mean_s{s}"), head="mean", seed=s, **FAST
            )
        )
        for s in (0, 1)
    ]


def read_metrics(run):
    return json.loads((run / "metrics.json").read_text())


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(3)
    classes = [f"c{i}" for i in range(7)]
    y = rng.integers(0, 7, 60)
    probs = rng.dirichlet(np.ones(7), 60)  # (N, C)
    probs[np.arange(30), y[:30]] += 1.0  # half of them right
    pred = probs.argmax(1)
    m = compute_metrics(y, probs, classes, "test")
    assert tuple(m) == METRIC_KEYS
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["top5_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, probs, k=5, labels=range(7))
    )
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(7)).tolist()
    f1 = skm.f1_score(y, pred, average=None, labels=range(7), zero_division=0)
    assert [m["per_class"][c]["f1"] for c in classes] == pytest.approx(f1.tolist())
    assert [m["per_class"][c]["support"] for c in classes] == np.bincount(y, minlength=7).tolist()
    assert m["n_samples"] == 60 and m["split"] == "test" and m["classes"] == classes


def test_metrics_on_a_hand_made_case():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = compute_metrics(np.array([0, 1, 1, 1]), probs, ["a", "b"], "val")
    assert m["accuracy"] == 0.75 and m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert m["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["per_class"]["a"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
    }


# -- training -----------------------------------------------------------------------------------


def test_gru_learns_order_where_mean_stays_at_chance(gru_run, mean_runs):
    assert read_metrics(gru_run)["accuracy"] >= 0.9
    for run in mean_runs:
        assert read_metrics(run)["accuracy"] <= 0.7


def test_run_folder_holds_every_file(gru_run, order_cache):
    for name in ("config.json", "model.pt", "history.csv", "metrics.json", "predictions.csv",
                 "confusion.csv", "report.md", "report.html"):  # fmt: skip
        assert (gru_run / name).is_file(), name
    config = json.loads((gru_run / "config.json").read_text())
    with open_cache(order_cache) as c:
        assert config["cache_fingerprint"] == c.fingerprint
    assert config["seed"] == 0 and config["head"] == "gru" and "torch" in config["versions"]
    assert set(TrainConfig.__dataclass_fields__) <= set(config)
    with open(gru_run / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == config["epochs_run"] and {
        "train_loss",
        "val_accuracy",
        "lr",
        "seconds",
    } <= set(rows[0])
    m = read_metrics(gru_run)
    with open(gru_run / "predictions.csv") as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == m["n_samples"] == config["split_sizes"]["test"]
    right = sum(p["true"] == p["predicted"] for p in preds)
    assert right / len(preds) == pytest.approx(m["accuracy"])
    with open(gru_run / "confusion.csv") as fh:
        table = list(csv.reader(fh))
    assert [[int(v) for v in r[1:]] for r in table[1:]] == m["confusion_matrix"]


def test_same_seed_same_metrics(order_cache, tmp_path, mean_runs):
    cfg = dict(cache=str(order_cache), head="gru", seed=5, **{**FAST, "epochs": 3})
    a = train(TrainConfig(out=str(tmp_path / "a"), **cfg))
    b = train(TrainConfig(out=str(tmp_path / "b"), **cfg))
    assert read_metrics(a) == read_metrics(b)
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()
    # and another seed is another run
    assert (mean_runs[0] / "history.csv").read_text() != (mean_runs[1] / "history.csv").read_text()


def test_ctrl_c_keeps_the_best_checkpoint_and_reports_it(order_cache, tmp_path):
    said = []

    def log(message: str) -> None:  # Ctrl-C as the third validation pass (epoch 3) ends
        said.append(message)
        if message.startswith("step ") and sum(m.startswith("step ") for m in said) == 3:
            raise KeyboardInterrupt

    cfg = TrainConfig(cache=str(order_cache), out=str(tmp_path / "run"), head="mean",
                      **{**FAST, "epochs": 10, "patience": 0})  # fmt: skip
    run = train(cfg, log=log)
    assert "interrupted after step 15: evaluating the best checkpoint so far" in said
    config = json.loads((run / "config.json").read_text())
    assert config["interrupted"] is True and config["epochs_run"] == 3
    assert config["steps_run"] == 15 and config["steps_per_epoch"] == 5
    assert config["best_epoch"] in (1, 2, 3)
    with open(run / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]
    for name in ("metrics.json", "predictions.csv", "report.html"):
        assert (run / name).is_file(), name


def test_ctrl_c_before_any_checkpoint_is_passed_on(order_cache, tmp_path, monkeypatch):
    import importlib

    training = importlib.import_module("actrec.temporal.train")  # the module, not train()

    def stop(*args, **kwargs):  # Ctrl-C during the first validation: nothing to keep yet
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "predict_positions", stop)
    cfg = TrainConfig(cache=str(order_cache), out=str(tmp_path / "run"), head="mean", **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=lambda _: None)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_reloaded_checkpoint_gives_the_same_predictions(gru_run, order_cache):
    with open(gru_run / "predictions.csv") as fh:
        saved = {r["id"]: r for r in csv.DictReader(fh)}
    run = load_run(gru_run)
    assert not run.model.training and run.classes == ["backward", "forward"]
    with open_cache(order_cache) as c:
        for vid, row in list(saved.items())[:10]:
            p = predict_proba(run, c.features(c.position(vid)))  # (C,)
            expected = [float(row[f"p_{name}"]) for name in run.classes]
            np.testing.assert_allclose(p, expected, atol=2e-6)
    assert evaluate_run(gru_run) == read_metrics(gru_run)


def test_a_run_whose_head_changed_since_is_one_line(gru_run, tmp_path):
    old = tmp_path / "old_run"
    shutil.copytree(gru_run, old)
    ckpt = torch.load(old / "model.pt", weights_only=True)
    ckpt.pop("actrec_version")
    ckpt["state_dict"] = {k.replace("head.proj.proj.", "head.proj."): v
                          for k, v in ckpt["state_dict"].items()}  # fmt: skip
    torch.save(ckpt, old / "model.pt")
    with pytest.raises(
        ActrecError, match="do not fit this version's 'gru' head.*before 0.2.*retrain"
    ):
        load_run(old)


@pytest.mark.parametrize("revision", [None, 1, 3])
def test_a_run_whose_head_computes_otherwise_with_the_same_weights_is_refused(
    gru_run, tmp_path, revision
):
    # 0.5's gru had these very weights without the residual recurrence: loading them into 0.6's
    # would predict something else without a word
    old = tmp_path / "old_run"
    shutil.copytree(gru_run, old)
    ckpt = torch.load(old / "model.pt", weights_only=True)
    assert ckpt["head_revision"] == 2
    ckpt["actrec_version"] = "0.5.0"
    if revision is None:  # saved before revisions were recorded
        del ckpt["head_revision"]
    else:
        ckpt["head_revision"] = revision
    torch.save(ckpt, old / "model.pt")
    with pytest.raises(ActrecError, match="do not fit this version's 'gru' head.*0.5.0.*retrain"):
        load_run(old)


def test_predict_timeline_places_windows_at_their_centres(gru_run):
    run = load_run(gru_run)
    video = order_videos(n=1, seed=9)[0]  # 20..30 frames, forward
    times, probs = predict_timeline(run, video.features, video.timestamps, window=8, stride=4)
    t = len(video.features)
    starts = list(range(0, t - 8 + 1, 4))
    if starts[-1] != t - 8:
        starts.append(t - 8)
    assert probs.shape == (len(starts), 2) and np.allclose(probs.sum(1), 1)
    np.testing.assert_allclose(
        times, [(video.timestamps[s] + video.timestamps[s + 7]) / 2 for s in starts]
    )
    whole = predict_proba(run, video.features[starts[1] : starts[1] + 8])
    np.testing.assert_allclose(probs[1], whole, atol=1e-6)


def test_delta_and_window_averaging_run_end_to_end(order_cache, tmp_path):
    cfg = TrainConfig(cache=str(order_cache), out=str(tmp_path / "lstm"), head="lstm", delta=True,
                      eval_windows=3, bidirectional=True, **{**FAST, "epochs": 2})  # fmt: skip
    run = train(cfg)
    loaded = load_run(run)
    # the mean and the maximum of both directions' outputs
    assert loaded.model.delta and loaded.model.head.num_features == 2 * 2 * 32
    # both normalisations (2 views), each with its differences (x 2)
    assert loaded.model.norm == "both"
    assert json.loads((run / "config.json").read_text())["head_kwargs"]["in_dim"] == 4 * DIM
    assert evaluate_run(run) == read_metrics(run)


# -- reports ------------------------------------------------------------------------------------


def test_report_holds_the_numbers_of_metrics_json(gru_run):
    m = read_metrics(gru_run)
    md = (gru_run / "report.md").read_text()
    page = (gru_run / "report.html").read_text()
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro"):
        assert f"{m[key]:.4f}" in md and f"{m[key]:.4f}" in page
    for name, v in m["per_class"].items():
        assert (
            f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
            in md
        )
    assert page.count("data:image/png;base64,") == 2  # confusion heat map and learning curves
    assert "http://" not in page and "https://" not in page  # self-contained
    assert '"clip_len"' not in md and "| clip_len | 16 |" in md  # the configuration
    # how the features were made, from the cache's attributes, one row each
    assert "| backbone | synthetic |" in md and "<td>synthetic</td>" in page
    assert "<code>gru</code>" in page and "`gru`" not in page


def test_leaderboard_means_over_seeds(mean_runs, gru_run, tmp_path):
    rows = leaderboard([*mean_runs, gru_run])
    assert [r["head"] for r in rows] == ["gru", "mean"]
    accs = [read_metrics(r)["accuracy"] for r in mean_runs]
    assert rows[1]["accuracy"] == pytest.approx(np.mean(accs))
    assert rows[1]["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    text = leaderboard_text([*mean_runs, gru_run])
    assert f"{np.mean(accs):.4f} ± {np.std(accs, ddof=1):.4f}" in text
    md, page = write_leaderboard([*mean_runs, gru_run], tmp_path / "board")
    assert text in md.read_text() and "±" in page.read_text()
    r = CliRunner().invoke(
        main, ["report", *map(str, mean_runs), str(gru_run), "-o", str(tmp_path / "b2")]
    )
    assert r.exit_code == 0, r.output
    assert text in r.output and (tmp_path / "b2" / "leaderboard.html").is_file()


def test_leaderboard_names_the_settings_that_differ_and_warns(mean_runs, gru_run, tmp_path):
    rows = leaderboard([*mean_runs, gru_run])
    # gru_run and mean_runs differ in their head and in what FAST sets apart from the defaults
    assert {"hidden", "clip_len"} & set(rows[0]["settings"]) == set()  # the same in both
    header = leaderboard_text([*mean_runs, gru_run]).splitlines()[0]
    assert "| rank | head |" in header
    # the same run twice is one run, not two seeds
    assert leaderboard([gru_run, gru_run])[0]["runs"] == [str(gru_run)]
    other = make_cache(tmp_path / "small.h5", order_videos(n=60, dim=8), dim=8)
    elsewhere = train(TrainConfig(cache=str(other), out=str(tmp_path / "o"), head="mean",
                                  **{**FAST, "epochs": 1, "lr": 0.01}))  # fmt: skip
    rows = leaderboard([gru_run, elsewhere])
    assert all(r["settings"]["lr"] in (0.001, 0.01) for r in rows)
    assert "| lr |" in leaderboard_text([gru_run, elsewhere])
    r = CliRunner().invoke(main, ["report", str(gru_run), str(elsewhere), str(gru_run),
                                  "-o", str(tmp_path / "b")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "1 run folder(s) named twice, counted once" in r.output
    assert "trained on 2 different caches" in r.output
    assert "not comparable" in (tmp_path / "b" / "leaderboard.md").read_text()


# -- bad input: one clear line, exit code 2, nothing overwritten ---------------------------------


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def last_line(result):
    return result.output.strip().splitlines()[-1]


def test_cache_without_labels(tmp_path):
    cache = make_cache(tmp_path / "nolabels.h5", order_videos(n=10, label=False))
    r = run_cli("train", cache, "-o", tmp_path / "run", "--quiet")
    assert r.exit_code == 2
    assert last_line(r) == (
        f"Error: {cache}: no labelled videos; training needs labels (class folders, or a "
        "manifest with a label column)"
    )
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_is_refused_unless_force(gru_run, order_cache):
    before = {p.name: p.read_bytes() for p in gru_run.iterdir()}
    r = run_cli("train", order_cache, "-o", gru_run, "--head", "mean", "--quiet")
    assert r.exit_code == 2
    assert (
        last_line(r)
        == f"Error: {gru_run} exists: pass --force to overwrite it, or choose another -o"
    )
    assert {p.name: p.read_bytes() for p in gru_run.iterdir()} == before


def test_force_replaces_a_run_whole_and_only_a_run(order_cache, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # a run of an earlier version, without a marker: known by train's keys in its config.json
    (out / "config.json").write_text(
        '{"head": "mean", "cache": "c.h5", "out": "run", "clip_len": 0}'
    )
    (out / "metrics.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    # a bad option is refused before anything is touched
    r = run_cli("train", order_cache, "-o", out, "--force", "--label-smoothing", "2", "--quiet")
    assert r.exit_code == 2 and "'--label-smoothing': '2' is not in [0, 1)" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "notes.txt"]
    r = run_cli(
        "train", order_cache, "-o", out, "--head", "mean", "--epochs", "1", "--quiet", "--force"
    )
    assert r.exit_code == 0, r.output
    assert read_metrics(out)["n_samples"] > 0 and "report:" in r.output
    assert not (out / "notes.txt").exists()  # replaced as a whole, not file by file
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]  # nothing left over
    # --force replaces a run folder, never a folder of other files
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("...")
    r = run_cli("train", order_cache, "-o", other, "--epochs", "1", "--quiet", "--force")
    assert r.exit_code == 2 and "holds files but no run" in last_line(r)
    assert (other / "thesis.tex").read_text() == "..."


def test_one_writer_per_run_folder(order_cache, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    # another process writing the run (a record lock is per process: it must be another one)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; "
        "from actrec.temporal.runfolder import RunFolder\n"
        f"with RunFolder(Path({str(out)!r}), force=False):\n"
        "    print('held', flush=True); time.sleep(60)"
    )], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        r = run_cli("train", order_cache, "-o", out, "--epochs", "1", "--quiet")
        assert r.exit_code == 2
        assert last_line(r) == (
            f"Error: {out}: another `actrec train` is writing this run folder; wait for it or "
            "choose another -o"
        )
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    r = run_cli("train", order_cache, "-o", out, "--head", "mean", "--epochs", "1", "--quiet")
    assert r.exit_code == 0, r.output  # the kernel dropped the dead writer's lock
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]  # and its debris


def test_unknown_head(order_cache, tmp_path):
    r = run_cli("train", order_cache, "-o", tmp_path / "run", "--head", "resnet")
    assert r.exit_code == 2 and "Invalid value for '--head': 'resnet' is not one of" in r.output
    with pytest.raises(
        Exception, match=r"unknown head 'resnet': choose one of gru, lstm, mean, tcn, transformer"
    ):
        train(TrainConfig(cache=str(order_cache), out=str(tmp_path / "run"), head="resnet"))
    assert not (tmp_path / "run").exists()


def test_max_len_is_the_heads_own_unless_given(gru_run):
    assert TrainConfig(head="tcn").max_len_used() == 256
    assert TrainConfig(head="gru").max_len_used() == 128
    assert TrainConfig(head="tcn", max_len=0).max_len_used() == 0  # 0 = never averaged
    assert json.loads((gru_run / "config.json").read_text())["max_len_used"] == 128
    assert load_run(gru_run).model.max_len == 128
    with pytest.raises(ActrecError, match="max_len"):
        TrainConfig(cache="c.h5", out="r", max_len=-1).check()


def test_a_given_max_len_equal_to_the_heads_own_is_the_same_setting(gru_run, order_cache, tmp_path):
    cfg = TrainConfig(cache=str(order_cache), out=str(tmp_path / "g"), head="gru", max_len=128,
                      seed=1, **FAST)  # fmt: skip
    rows = leaderboard([gru_run, train(cfg)])
    assert len(rows) == 1 and len(rows[0]["runs"]) == 2  # one experiment over two seeds


def test_unknown_config_key():
    with pytest.raises(Exception, match="unknown training options: hiden; known: "):
        TrainConfig.from_dict({"hiden": 3})


def test_evaluate_on_a_cache_of_another_dimension(gru_run, tmp_path):
    other = make_cache(tmp_path / "other.h5", order_videos(n=10, dim=8), dim=8)
    r = run_cli("evaluate", gru_run, "--cache", other)
    assert r.exit_code == 2
    assert last_line(r) == (
        f"Error: {other}: features are 8-D but run {gru_run} was trained on {DIM}-D; evaluate it "
        "on a cache made with the same backbone"
    )


def test_empty_split(tmp_path):
    videos = order_videos(n=12)
    for v in videos:
        v.split = "test"
    cache = make_cache(tmp_path / "alltest.h5", videos)
    r = run_cli("train", cache, "-o", tmp_path / "run", "--quiet")
    assert r.exit_code == 2
    assert last_line(r) == (
        f"Error: {cache}: the train split is empty; label more videos or fix the split column"
    )
    assert not (tmp_path / "run").exists()


def test_evaluate_cli_on_a_split(gru_run, tmp_path):
    r = run_cli("evaluate", gru_run, "--split", "all", "-o", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    m = read_metrics(tmp_path / "ev")
    assert m["split"] == "all" and m["n_samples"] == 200
    assert f"accuracy           {m['accuracy']:.4f}" in r.output


def test_evaluate_refuses_another_runs_folder_and_other_features(gru_run, tmp_path):
    other_run = tmp_path / "B"
    other_run.mkdir()
    (other_run / "config.json").write_text('{"head": "mean"}')
    (other_run / "metrics.json").write_text("B's own")
    r = run_cli("evaluate", gru_run, "--split", "all", "-o", other_run)
    assert r.exit_code == 2 and "is a run folder: its results would be replaced" in last_line(r)
    assert (other_run / "metrics.json").read_text() == "B's own"
    # the same shapes made another way (another backbone): a different fingerprint
    moved = write_cache(
        tmp_path / "other.h5", order_videos(), {"backbone": "resnet50"}, dim=DIM, dtype="float32"
    )
    r = run_cli("evaluate", gru_run, "--cache", moved)
    assert r.exit_code == 2 and "its features were made another way" in last_line(r)


def test_a_broken_index_is_one_line_naming_the_problem(tmp_path):
    import h5py

    cache = make_cache(tmp_path / "c.h5", order_videos(n=20))
    with h5py.File(cache, "r+") as f:
        f["videos/label"][3] = 7  # outside /classes
    r = run_cli("train", cache, "-o", tmp_path / "run", "--quiet")
    assert r.exit_code == 2
    assert last_line(r).startswith(f"Error: {cache}: v0003: label 7 is outside /classes")
    assert not (tmp_path / "run").exists()


def test_non_finite_features_stop_training_with_one_line(tmp_path):
    videos = order_videos(n=40)
    cache = make_cache(tmp_path / "nan.h5", videos)  # NaN cannot enter through write_cache ...
    with h5py.File(cache, "r+") as f:  # ... so another tool puts one there
        row = int(f["videos/start"][5]) + 2
        f["features"][row, 3] = np.nan
    r = run_cli("train", cache, "-o", tmp_path / "run", "--steps", "5", "--quiet")
    assert r.exit_code == 2
    line = last_line(r)
    assert str(cache) in line and f"non-finite value nan at step {row}, dimension 3" in line, line
    assert len(r.output.strip().splitlines()) <= 3 and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()  # no half run left behind


def test_a_run_folder_name_too_long_is_one_line(order_cache, tmp_path):
    out = tmp_path / ("r" * 248)
    r = run_cli("train", order_cache, "-o", out, "--head", "mean", "--steps", "2", "--quiet")
    assert r.exit_code == 0, r.output  # 248 bytes fit, and so do the hidden names beside it
    r = run_cli("train", order_cache, "-o", tmp_path / ("r" * 300), "--steps", "2", "--quiet")
    assert r.exit_code == 2 and "the file system takes at most 255" in last_line(r)
