"""`actrec tune` on tiny generated caches: what it picks, resuming, best/, folds, the leaderboard."""

import csv
import json
import os
import shlex
import signal

import numpy as np
import pytest
from click.testing import CliRunner
from test_temporal import make_cache, order_videos

from actrec.cli import main
from actrec.temporal import evaluate_run, load_run, predict_proba
from actrec.temporal.data import load_sequences
from actrec.temporal.splits import fold_splits
from actrec.temporal.tune import TuneConfig, default_folds, tune
from actrec.temporal.tune_report import leaderboard_table, varying

pytest.importorskip("optuna")

# small and quick: the search space is searched, the budget is not
QUICK = {"epochs": 6, "hidden": 32, "delta": False}
QUICK_ARGS = [a for k, v in QUICK.items() for a in ("--set", f"{k}={json.dumps(v)}")]


@pytest.fixture(scope="module")
def order_cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "order.h5", order_videos(n=120))


@pytest.fixture(scope="module")
def tuned(order_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "search"
    r = CliRunner().invoke(main, ["tune", str(order_cache), "-o", str(out), "--heads", "gru,mean",
                                  "--trials", "3", "--folds", "0", *QUICK_ARGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    return out, r.output


def read_trials(out):
    with open(out / "trials.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_tune_picks_an_order_aware_head_over_mean(tuned):
    out, output = tuned
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    # the first trial of each head is train's defaults (here with the fixed options)
    assert [(r["head"], r["train_defaults"]) for r in rows[:2]] == [
        ("gru", "true"),
        ("mean", "true"),
    ]
    assert rows[0]["lr"] == "0.001" and rows[1]["dropout"] == "0.1"
    scores = {r["trial"]: float(r["score"]) for r in rows}
    best = max(rows, key=lambda r: float(r["score"]))
    assert best["head"] == "gru" and float(best["score"]) >= 0.9
    assert float(rows[1]["score"]) <= 0.75  # mean pooling cannot see the order
    assert all(r["hidden"] in ("", "32") and r["delta"] == "false" for r in rows)  # fixed
    assert "mean" not in {r["head"] for r in rows if float(r["score"]) == max(scores.values())}
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["accuracy"] >= 0.9
    assert f"test accuracy {metrics['accuracy']:.4f}" in output
    assert "\r" not in output  # stderr is no terminal here: lines, not a redrawn bar
    assert sum(line.startswith("trial ") for line in output.splitlines()) == 3
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["head"] == "gru" and config["seed"] == 0 and config["epochs"] == 6


def test_best_run_reloads_and_predicts(tuned, tmp_path):
    out, _ = tuned
    run = load_run(out / "best")
    assert run.classes == ["backward", "forward"]
    for video in order_videos(n=126)[120:]:  # six new sequences of the same task
        p = predict_proba(run, video.features)  # (C,)
        assert run.classes[int(p.argmax())] == video.label
    assert evaluate_run(out / "best") == json.loads((out / "best" / "metrics.json").read_text())
    r = CliRunner().invoke(main, ["report", str(out / "best")])
    assert r.exit_code == 0, r.output
    # the `actrec train` line the leaderboard prints makes the same run: the same test metrics
    md = (out / "leaderboard.md").read_text()
    line = md.split("The same run by hand: `")[1].split("`")[0]
    args = shlex.split(line)
    assert args[:2] == ["actrec", "train"] and args[-2:] == ["-o", str(out / "best")]
    again = tmp_path / "again"
    r = CliRunner().invoke(main, [*args[1:-1], str(again), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((again / "metrics.json").read_text()) == json.loads(
        (out / "best" / "metrics.json").read_text()
    )


def test_leaderboard_names_the_settings_that_differ(tuned):
    out, _ = tuned
    md = (out / "leaderboard.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| rank |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    # one column per setting with more than one value among the trials that have it
    rows = read_trials(out)
    settings = ["head", "lr", "weight_decay", "dropout", "norm", "delta", "max_len", "hidden",
                "layers", "bidirectional", "epochs"]  # fmt: skip
    differ = [k for k in settings if len({r[k] for r in rows if r[k]}) > 1]
    assert columns[2 : 2 + len(differ)] == differ and columns[2] == "head"
    assert {"lr", "weight_decay", "dropout"} <= set(differ)  # drawn from ranges
    assert not {"hidden", "delta", "epochs", "max_len"} & set(columns)  # fixed, or one choice
    best = max(rows, key=lambda r: (float(r["score"]), -float(r["val_loss"])))
    assert f"| 1 | {best['trial']}" in md and "train's defaults" in md
    assert "actrec train " in md and "--head gru" in md  # the best run, by hand
    page = (out / "leaderboard.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "https://" not in page
    # a setting that only one head has shows as "–" for the others
    trials = [
        {"trial": 1, "state": "COMPLETE", "head": "gru", "score": 0.9, "score_std": 0.0,
         "scores": [0.9], "val_loss": 0.3, "seconds": 1.0, "train_defaults": False,
         "settings": {"head": "gru", "lr": 0.001, "layers": 2, "bidirectional": True}},
        {"trial": 2, "state": "COMPLETE", "head": "gru", "score": 0.8, "score_std": 0.0,
         "scores": [0.8], "val_loss": 0.3, "seconds": 1.0, "train_defaults": False,
         "settings": {"head": "gru", "lr": 0.001, "layers": 1, "bidirectional": True}},
        {"trial": 3, "state": "COMPLETE", "head": "mean", "score": 0.5, "score_std": 0.02**0.5,
         "scores": [0.4, 0.6], "val_loss": 0.7, "seconds": 1.0, "train_defaults": False,
         "settings": {"head": "mean", "lr": 0.001}},
        {"trial": 4, "state": "PRUNED", "head": "mean", "score": 0.2, "score_std": 0.0,
         "scores": [], "val_loss": None, "seconds": 1.0, "train_defaults": False,
         "settings": {"head": "mean", "lr": 0.01}},
    ]  # fmt: skip
    # lr: the same in every completed trial; bidirectional: in every trial that has it
    assert varying(trials) == ["head", "layers"]
    header, body = leaderboard_table(trials)
    assert header[:4] == ["rank", "trial", "head", "layers"] and len(body) == 3
    assert body[0][:4] == [1, "1", "gru", "2"] and body[2][:4] == [3, "3", "mean", "–"]
    assert body[2][4] == "0.5000 ± 0.1414"


def test_resume_after_ctrl_c_does_not_repeat_finished_trials(order_cache, tmp_path):
    out = tmp_path / "search"
    said = []

    def log(message: str) -> None:  # Ctrl-C as trial 2 ends: the search stops there
        said.append(message)
        if message.startswith("trial 2/"):
            os.kill(os.getpid(), signal.SIGINT)

    cfg = TuneConfig(cache=str(order_cache), out=str(out), heads=("mean",), trials=4, folds=2,
                     fixed={**QUICK, "epochs": 2}, progress=False)  # fmt: skip
    first = tune(cfg, log=log)
    assert first.interrupted and first.trials_run == 2
    assert any(m.startswith("Ctrl-C: stopping after the trial in flight") for m in said)
    assert [r["state"] for r in read_trials(out)] == ["COMPLETE", "COMPLETE"]
    assert (out / "best" / "metrics.json").is_file() and (out / "leaderboard.html").is_file()
    said.clear()
    second = tune(cfg, log=said.append)
    assert not second.interrupted and second.trials_run == 2
    assert [m.split()[1] for m in said if m.startswith("trial ")] == ["3/4", "4/4"]
    rows = read_trials(out)
    assert [r["trial"] for r in rows] == ["1", "2", "3", "4"]
    assert len({r["lr"] for r in rows}) == 4  # no trial drawn again
    assert all(len(r["scores"].split(";")) == 2 for r in rows)  # two folds each
    # all done: a third call runs nothing and keeps best/ if its settings are still the best
    said.clear()
    third = tune(cfg, log=said.append)
    assert third.trials_run == 0 and any("already holds" in m for m in said)
    # another search in the same folder is refused, naming what differs
    r = CliRunner().invoke(main, ["tune", str(order_cache), "-o", str(out), "--heads", "mean",
                                  "--trials", "4", "--folds", "3", "--set", "epochs=2", "--set",
                                  "hidden=32", "--set", "delta=false"])  # fmt: skip
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        f"Error: {out} holds a study made with other settings (folds differ): run with the "
        "same options to resume it, or choose another -o"
    )


def test_time_budget_starts_no_trial_after_it(order_cache, tmp_path):
    cfg = TuneConfig(cache=str(order_cache), out=str(tmp_path / "t"), heads=("mean", "gru"),
                     time_budget=1e-4, folds=0, fixed={**QUICK, "epochs": 1}, progress=False)  # fmt: skip
    assert cfg.max_trials() is None  # a time budget alone: no limit on the number
    result = tune(cfg, log=lambda _: None)
    assert result.trials_run == 1 and len(read_trials(tmp_path / "t")) == 1
    assert result.best["head"] == "mean" and (tmp_path / "t" / "best" / "model.pt").is_file()


def test_a_pruned_trial_stops_early_and_is_recorded(order_cache, tmp_path, monkeypatch):
    import optuna

    # a pruner that prunes at the second validation pass, standing in for the median rule
    monkeypatch.setattr(optuna.pruners, "MedianPruner",
                        lambda **_: optuna.pruners.ThresholdPruner(lower=2.0, n_warmup_steps=2))  # fmt: skip
    said = []
    cfg = TuneConfig(cache=str(order_cache), out=str(tmp_path / "t"), heads=("mean",), trials=1,
                     folds=0, fixed={**QUICK, "epochs": 4}, progress=False)  # fmt: skip
    result = tune(cfg, log=said.append)
    assert result.best is None and result.best_run is None
    (row,) = read_trials(tmp_path / "t")
    assert row["state"] == "PRUNED" and row["pruned_after_pass"] == "2" and row["scores"] == ""
    assert any(m.startswith("trial 1/1  mean") and "pruned (val " in m for m in said)
    assert "0 trials completed, 1 pruned" in (tmp_path / "t" / "leaderboard.md").read_text()
    assert not (tmp_path / "t" / "best").exists()


def test_folds_keep_groups_on_one_side(tmp_path):
    videos = order_videos(n=90)
    for i, v in enumerate(videos):
        v.group = f"g{i // 3}"  # three clips of one source each
    seqs = load_sequences(make_cache(tmp_path / "groups.h5", videos))
    positions = np.arange(80)  # the last ten stand for a test split
    parts = fold_splits(seqs, positions, 4, seed=0)
    assert len(parts) == 4
    seen = np.concatenate([val for _, val in parts])
    assert sorted(seen.tolist()) == positions.tolist()  # each in exactly one val part
    for train_pos, val_pos in parts:
        assert set(train_pos.tolist()) | set(val_pos.tolist()) == set(positions.tolist())
        groups_train = {seqs.group[i] for i in train_pos}
        assert groups_train.isdisjoint({seqs.group[i] for i in val_pos})
        assert set(seqs.label[val_pos].tolist()) == {0, 1}  # stratified: both classes
    # the default: folds for small sets without a val split of their own
    assert default_folds(999, val_given=False) == 5
    assert default_folds(1000, val_given=False) == 0 and default_folds(50, val_given=True) == 0


def test_without_optuna_one_line(order_cache, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    r = CliRunner().invoke(main, ["tune", str(order_cache), "-o", str(tmp_path / "t")])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        "Error: actrec tune needs Optuna: pip install 'actrec[tune]' (make install does)"
    )
    assert not (tmp_path / "t").exists()


def test_bad_options_are_refused_before_any_work(order_cache, tmp_path):
    r = CliRunner().invoke(main, ["tune", str(order_cache), "-o", str(tmp_path / "t"),
                                  "--set", "seed=3"])  # fmt: skip
    assert r.exit_code == 2 and "seed cannot be fixed: tune sets them itself" in r.output
    r = CliRunner().invoke(main, ["tune", str(order_cache), "-o", str(tmp_path / "t"),
                                  "--heads", "gru,resnet"])  # fmt: skip
    assert r.exit_code == 2 and "unknown head(s) resnet" in r.output
    r = CliRunner().invoke(main, ["tune", str(order_cache), "-o", str(tmp_path / "t"),
                                  "--set", "hiden=3"])  # fmt: skip
    assert r.exit_code == 2 and "unknown training options: hiden" in r.output
    assert not (tmp_path / "t").exists()
    (tmp_path / "t" / "best").mkdir(parents=True)
    (tmp_path / "t" / "best" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["tune", str(order_cache), "-o", str(tmp_path / "t")])
    # a folder of other files (here a best/ that is no run) is no study: refused whole
    assert r.exit_code == 2 and "holds files but is not a study folder" in r.output
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["best"]  # no study begun
