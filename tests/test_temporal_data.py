"""Loading, splits, clip sampling, lazy reading and `actrec import`."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from actrec.cli import main
from actrec.common.cache import Video, open_cache, write_cache
from actrec.common.errors import ActrecError
from actrec.temporal import TrainConfig, import_sequences, train
from actrec.temporal.data import (
    ClipSampler,
    batches,
    feature_stats,
    gather,
    load_sequences,
)
from actrec.temporal.splits import resolve_splits

DIM = 6


def videos(n=60, classes=3, groups_per_class=5, split=None, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = i % classes
        t = int(rng.integers(3, 40))
        out.append(Video(
            id=f"c{c}/v{i:03d}", features=rng.standard_normal((t, DIM)).astype(np.float32),
            timestamps=np.arange(t) / 5.0, label=f"c{c}", group=f"g{c}_{(i // classes) % groups_per_class}",
            split=split(i) if split else "", fps=5.0,
        ))  # fmt: skip
    return sorted(out, key=lambda v: v.id)


def cache_of(path, vids):
    # float16 and small chunks, as real caches: windows cross chunk boundaries
    return write_cache(path, vids, {"backbone": "synthetic"}, dim=DIM, dtype="float16")


def test_stratified_group_split_keeps_groups_together(tmp_path):
    seqs = load_sequences(cache_of(tmp_path / "c.h5", videos(90, groups_per_class=10)))
    logged = []
    splits = resolve_splits(seqs, seed=3, log=logged.append)
    together = np.concatenate(list(splits.values()))
    assert sorted(together.tolist()) == list(range(90))  # each video once
    sides = {}
    for name, positions in splits.items():
        assert len(positions) > 0, name
        for i in positions:
            sides.setdefault(seqs.group[i], set()).add(name)
    assert all(len(s) == 1 for s in sides.values())
    for name in ("train", "val", "test"):  # every class on every side
        assert set(seqs.label[splits[name]]) == {0, 1, 2}, name
    assert logged[-1].startswith(f"split: train {len(splits['train'])}, val {len(splits['val'])}")
    assert (
        resolve_splits(seqs, seed=3, log=logged.append)["test"].tolist() == splits["test"].tolist()
    )


def test_a_small_set_splits_with_every_class_on_every_side(tmp_path):
    # five videos a class: fewer than the folds a 15% hold-out asks scikit-learn for
    seqs = load_sequences(cache_of(tmp_path / "c.h5", videos(15, groups_per_class=5)))
    splits = resolve_splits(seqs, log=lambda _: None)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(15))
    for name in ("train", "val", "test"):
        assert set(seqs.label[splits[name]]) == {0, 1, 2}, name


def test_split_column_is_used_and_leakage_is_loud(tmp_path):
    def split(i):
        return "test" if i % 7 == 0 else "train"

    seqs = load_sequences(cache_of(tmp_path / "c.h5", videos(60, split=split)))
    logged = []
    splits = resolve_splits(seqs, log=logged.append)
    assert sorted(splits["test"].tolist()) == [i for i in range(60) if seqs.split[i] == "test"]
    assert len(splits["val"]) > 0 and not set(splits["val"]) & set(splits["test"])
    assert any(line.startswith("WARNING: LEAKAGE: ") for line in logged)
    assert "val carved out of train" in logged[-1]


def test_training_windows_are_random_clips_and_eval_is_whole(tmp_path):
    seqs = load_sequences(cache_of(tmp_path / "c.h5", videos(30)))
    positions = np.arange(30)
    sampler = ClipSampler(seqs, positions, batch_size=8, clip_len=10, train=True)
    plans = sampler.plan(torch.Generator().manual_seed(0))
    seen = torch.cat([p.positions for p in plans])
    assert sorted(seen.tolist()) == list(range(30))
    for plan in plans:
        x, mask = gather(seqs.features, plan)  # (B, T, D), (B, T)
        for j, v in enumerate(plan.positions.tolist()):
            w = int(mask[j].sum())
            assert w == min(10, seqs.length[v])
            offset = int(plan.first[j]) - int(seqs.start[v])
            assert 0 <= offset <= seqs.length[v] - w
            with open_cache(seqs.path) as c:
                np.testing.assert_array_equal(x[j, :w].numpy(), c.features(v, offset, offset + w))
    ev = ClipSampler(seqs, positions, batch_size=8, clip_len=10, train=False).plan()
    assert all(torch.equal(p.width, torch.as_tensor(seqs.length)[p.positions]) for p in ev)
    k3 = ClipSampler(seqs, positions, batch_size=8, clip_len=10, train=False, windows=3).plan()
    assert all(len(p.first) == 3 * len(p.positions) and p.per_item == 3 for p in k3)


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_and_in_memory_give_the_same_batches(tmp_path, workers):
    path = cache_of(tmp_path / "c.h5", videos(50))
    memory, lazy = load_sequences(path, lazy=False), load_sequences(path, lazy=True)
    assert lazy.features is None
    positions = np.arange(50)
    for train_mode, windows in ((True, 0), (False, 0), (False, 3)):
        kwargs = dict(batch_size=7, clip_len=12, train=train_mode, windows=windows)
        plan_a = ClipSampler(memory, positions, **kwargs).plan(torch.Generator().manual_seed(1))
        plan_b = ClipSampler(lazy, positions, **kwargs).plan(torch.Generator().manual_seed(1))
        got_a = list(batches(memory, plan_a))
        got_b = list(batches(lazy, plan_b, workers=workers))
        assert len(got_a) == len(got_b) == len(plan_a)
        for (xa, ma, pa), (xb, mb, pb) in zip(got_a, got_b, strict=True):
            assert torch.equal(pa.positions, pb.positions)
            assert torch.equal(ma, mb) and torch.equal(xa, xb)
    ma, sa = feature_stats(memory, positions[:30])
    mb, sb = feature_stats(lazy, positions[:30])
    assert torch.equal(ma, mb) and torch.equal(sa, sb)
    rows = torch.cat(
        [memory.features[memory.start[i] : memory.start[i] + memory.length[i]] for i in range(30)]
    )
    torch.testing.assert_close(ma, rows.double().mean(0).float())


def test_lazy_training_equals_in_memory_training(tmp_path):
    path = cache_of(tmp_path / "c.h5", videos(60))
    common = dict(cache=str(path), head="gru", epochs=2, hidden=8, clip_len=8, batch_size=16,
                  progress=False, workers=1)  # fmt: skip
    a = train(TrainConfig(out=str(tmp_path / "mem"), lazy=False, **common))
    b = train(TrainConfig(out=str(tmp_path / "lazy"), lazy=True, **common))
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()


# -- import -------------------------------------------------------------------------------------


def test_import_class_folders_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for name in ("walk/a.npy", "walk/sub/b.npy", "run/c.npy"):
        arrays[name] = rng.standard_normal((int(rng.integers(2, 9)), 5)).astype(np.float32)
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "src" / name, arrays[name])
    (tmp_path / "src" / "stray.npy").write_bytes(b"")  # not in a class folder: ignored
    r = CliRunner().invoke(
        main, ["import", str(tmp_path / "src"), "-o", str(tmp_path / "c.h5"), "--fps", "4"]
    )
    assert r.exit_code == 0, r.output
    with open_cache(tmp_path / "c.h5") as c:
        assert c.index.ids == sorted(arrays) and c.index.classes == ["run", "walk"]
        assert c.dtype == np.float32 and c.attrs["backbone"] == "import"
        assert c.attrs["sampling"] == "as given" and c.verify() == []
        for i, vid in enumerate(c.index.ids):
            np.testing.assert_array_equal(c.features(i), arrays[vid])
            np.testing.assert_allclose(c.timestamps(i), np.arange(len(arrays[vid])) / 4)
            assert c.index.label_name(i) == vid.split("/")[0]
    r = CliRunner().invoke(main, ["import", str(tmp_path / "src"), "-o", str(tmp_path / "c.h5")])
    assert (
        r.exit_code == 2
        and r.output.strip() == f"Error: {tmp_path / 'c.h5'} exists: pass --force to overwrite it"
    )


def test_import_manifest_with_split_and_group(tmp_path):
    for i in range(4):
        np.save(tmp_path / f"x{i}.npy", np.full((3, 2), i, dtype=np.float16))
    (tmp_path / "m.csv").write_text(
        "path,label,split,group\nx0.npy,a,train,g0\nx1.npy,b,train,g1\nx2.npy,a,test,g2\nx3.npy,,test,g3\n"
    )
    import_sequences(tmp_path / "m.csv", tmp_path / "c.h5")
    with open_cache(tmp_path / "c.h5") as c:
        assert c.index.split == ["train", "train", "test", "test"] and c.index.group == [
            "g0",
            "g1",
            "g2",
            "g3",
        ]
        assert c.index.label.tolist() == [0, 1, 0, -1] and c.dtype == np.float16
        assert float(c.features(3)[0, 0]) == 3.0


def test_import_refuses_mixed_dimensions(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    np.save(tmp_path / "src" / "a" / "1.npy", np.zeros((3, 4)))
    np.save(tmp_path / "src" / "a" / "2.npy", np.zeros((3, 5)))
    with pytest.raises(ActrecError, match="2.npy: dimension 5, but the first item has 4"):
        import_sequences(tmp_path / "src", tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists()


def test_statistics_blocks_fall_on_chunk_boundaries(monkeypatch):
    from actrec.temporal import data

    monkeypatch.setattr(data, "_STATS_BLOCK", 150)
    assert list(data._blocks(5, 300, 64)) == [(5, 128), (128, 256), (256, 300)]
    assert list(data._blocks(0, 10, 64)) == [(0, 10)]


def test_splits_refuse_one_class_and_warn_of_what_is_left_out(tmp_path):
    from actrec.common.cache import Video, write_cache
    from actrec.temporal.data import load_sequences
    from actrec.temporal.splits import resolve_splits

    def cache(labels, splits):
        videos = [
            Video(id=f"v{i:02d}", features=np.zeros((3, 2), np.float32), timestamps=np.arange(3.0),
                  label=lab, split=sp)
            for i, (lab, sp) in enumerate(zip(labels, splits, strict=True))
        ]  # fmt: skip
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.h5"
        return load_sequences(write_cache(path, videos, {"backbone": "t"}, dim=2, dtype="float32"))

    with pytest.raises(ActrecError, match="every labelled video is of one class \\('a'\\)"):
        resolve_splits(cache(["a"] * 6, [""] * 6), log=lambda _: None)
    said = []
    seqs = cache(["a", "a", "b", "b", "c", "a"], ["train", "train", "train", "val", "test", ""])
    out = resolve_splits(seqs, log=said.append)
    assert out["train"].tolist() == [0, 1, 2] and out["test"].tolist() == [4]
    assert any("1 labelled videos have no split value" in m for m in said)
    assert any("1 class(es) have no training videos and can never be predicted: c" in m
               for m in said)  # fmt: skip
