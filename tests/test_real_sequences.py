"""`actrec train` with no options on real labelled sequences must beat the 1-NN floor.

The two smallest UCR/UEA files of ``../shared/testdata/sequences`` (official train/test split;
UnitTest and PickupGestureWiimoteZ, the second of variable length): a regression test of the
defaults, beside the synthetic ones. Skips where ``../shared`` is
absent (a user's clone has no such folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actrec.common.cache import open_cache
from actrec.temporal import TrainConfig, train
from actrec.temporal.importer import import_sequences

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "sequences"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SHARED.is_dir(), reason="needs ../shared/testdata (not in a user's clone)"
    ),
]


def one_nn_euclidean(cache: Path) -> float:
    """1-NN with Euclidean distance on z-normalised series: the archive's classic floor."""
    with open_cache(cache) as c:
        series = [c.features(i)[:, 0].astype(np.float64) for i in range(len(c.index.ids))]
        y, split = np.asarray(c.index.label), np.asarray(c.index.split)
    t = max(
        len(s) for s in series
    )  # variable lengths resampled to the longest, as the archive does
    x = np.stack([np.interp(np.linspace(0, len(s) - 1, t), np.arange(len(s)), s) for s in series])
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    train_x, test_x = x[split == "train"], x[split == "test"]
    d = ((test_x[:, None] - train_x[None]) ** 2).sum(-1)  # (test, train)
    return float((y[split == "train"][d.argmin(1)] == y[split == "test"]).mean())


@pytest.mark.parametrize(("name", "floor"), [("UnitTest", 0.864), ("PickupGestureWiimoteZ", 0.64)])
def test_defaults_beat_one_nearest_neighbour(name, floor, tmp_path):
    cache = import_sequences(
        [SHARED / f"{name}_TRAIN.ts", SHARED / f"{name}_TEST.ts"], tmp_path / f"{name}.h5"
    )
    assert one_nn_euclidean(cache) == pytest.approx(floor, abs=1e-3)  # the floor, computed here
    run = train(TrainConfig(cache=str(cache), out=str(tmp_path / "run"), progress=False),
                log=lambda _: None)  # fmt: skip
    accuracy = json.loads((run / "metrics.json").read_text())["accuracy"]
    assert accuracy >= floor, f"{name}: defaults {accuracy:.3f} < 1-NN {floor:.3f}"
