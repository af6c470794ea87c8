"""What `actrec tune` finds in a fixed time against `actrec train`'s defaults, on real sets.

For each set: `tune` with ``--time-budget`` (all heads, its own defaults otherwise: 5 folds of
train+val on small sets without a val split, the validation split where the cache gives one),
then the test accuracy of the best trial's settings and of `train`'s defaults (head tcn), each
retrained with ``--seeds`` seeds (seed 0 of the best is tune's own ``best/``). The test split is
touched only by those retrainings. Prints a table, writes ``bench/results/tune_SETS.json``; the
searches stay in ``bench/results/tune/SET/`` (trials.csv, leaderboard.html, best/).

Sets: a UCR/UEA set of ``../shared/testdata/sequences`` (imported as bench_accuracy.py does) and
``footage``, the real-footage order task of bench_accuracy.py (its cache is built there).

Example: .venv/bin/python bench/bench_tune.py --minutes 10 --sets ArrowHead,footage
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from actrec.temporal import TrainConfig, train
from actrec.temporal.tune import TuneConfig, best_config, train_command, tune

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_accuracy import RESULTS, footage_cache, ucr_cache  # noqa: E402


def test_accuracies(config: TrainConfig, seeds: range, keep_first: Path | None) -> list[float]:
    """Test accuracy of ``config`` with each seed (seed 0 read from ``keep_first`` if given)."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            if seed == 0 and keep_first is not None:
                run = keep_first
            else:
                cfg = TrainConfig.from_dict({**asdict(config), "seed": seed, "force": False,
                                             "out": f"{tmp}/s{seed}", "progress": False})  # fmt: skip
                run = train(cfg, log=lambda _: None)
            out.append(json.loads((run / "metrics.json").read_text())["accuracy"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="tune's --time-budget per set")
    ap.add_argument("--sets", default="ArrowHead,footage")
    ap.add_argument("--seeds", type=int, default=3, help="retrainings of each configuration")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    caches = RESULTS / "accuracy_caches"
    caches.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.sets.split(","):
        cache = footage_cache(caches) if name == "footage" else ucr_cache(name, caches)
        out = RESULTS / "tune" / name
        shutil.rmtree(out, ignore_errors=True)
        print(f"== {name}: tune for {args.minutes:g} minutes", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        cfg = TuneConfig(cache=str(cache), out=str(out), time_budget=args.minutes, progress=False)
        result = tune(cfg)
        tune_minutes = (time.perf_counter() - t0) / 60
        with open(out / "trials.csv") as fh:
            states = [line.split(",")[1] for line in fh.readlines()[1:]]
        best = best_config(cfg, result.best["settings"], out / "best")
        defaults = TrainConfig(cache=str(cache), out=str(out / "defaults"))
        tuned = test_accuracies(best, range(args.seeds), keep_first=result.best_run)
        plain = test_accuracies(defaults, range(args.seeds), keep_first=None)
        default_trial = next(
            (r for r in _rows(out) if r["train_defaults"] == "true" and r["head"] == defaults.head),
            None,
        )
        results.append({
            "set": name, "minutes": round(tune_minutes, 2), "trials": len(states),
            "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "best_trial": result.best["trial"],
            "best_val": result.best["score"], "best_val_std": result.best["score_std"],
            "defaults_val": float(default_trial["score"]) if default_trial and default_trial["score"] else None,
            "best_settings": result.best["settings"], "best_command": train_command(best),
            "tuned_test": tuned, "defaults_test": plain,
        })  # fmt: skip
    print("| set | trials (pruned) | minutes | train's defaults (tcn): val, test | tune's best: "
          "val, test | best settings |")  # fmt: skip
    print("|---|---:|---:|---|---|---|")
    for r in results:
        settings = " ".join(f"{k}={_short(v)}" for k, v in r["best_settings"].items())
        dval = f"{r['defaults_val']:.3f}" if r["defaults_val"] is not None else "–"
        print(f"| {r['set']} | {r['trials']} ({r['pruned']}) | {r['minutes']:.1f} | {dval}, "
              f"{_ms(r['defaults_test'])} | {r['best_val']:.3f} ± {r['best_val_std']:.3f}, "
              f"{_ms(r['tuned_test'])} | {settings} |")  # fmt: skip
    (RESULTS / f"tune_{args.sets.replace(',', '_')}.json").write_text(
        json.dumps(results, indent=1) + "\n"
    )


def _rows(out: Path) -> list[dict]:
    import csv

    with open(out / "trials.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _ms(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{spread}"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


if __name__ == "__main__":
    main()
