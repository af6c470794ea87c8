"""Stage one: values, sampling, sources, failures, exit codes, backbones, resume and shards.

Most tests extract with a "band" backbone saved as a file: it returns the mean of each frame's
top and bottom bands (0-255), so the index each generated frame carries is read back from the
cache itself. Value tests use resnet18 at 64x64 against a direct forward pass.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from torch import nn
from videos import (
    Bands,
    bands,
    decode_all,
    drop_first_packets,
    index_of,
    make_frame_folder,
    make_video,
    truncate,
)

from actrec.cli import main
from actrec.common.cache import open_cache
from actrec.common.errors import ActrecError
from actrec.extract import (
    ExtractConfig,
    Item,
    Reader,
    Resize,
    Sampling,
    features_for_videos,
    find_items,
    load_backbone,
    run_extraction,
)

REAL = Path(__file__).parents[2] / "shared" / "testdata" / "videos"
VFR_TIMES = [0, 0.04, 0.1, 0.3, 0.31, 0.5, 0.9, 1.0, 1.05, 1.2]
SMALL = ["--weights", "none", "--input-size", "64", "--quiet"]


@pytest.fixture(scope="session")
def band_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("backbones")
    script = folder / "bands.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated, and still supported here
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Bands()), script)
    exported = torch.export.export(
        Bands(),
        (torch.zeros(2, 3, 48, 48),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
    )
    pt2 = folder / "bands.pt2"
    torch.export.save(exported, pt2)
    return {"pt": script, "pt2": pt2}


def band_args(band_files, kind: str = "pt") -> list[str]:
    return [
        "--backbone", str(band_files[kind]), "--input-size", "48",
        "--mean", "0", "0", "0", "--std", "1", "1", "1", "--dtype", "float32", "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def source(tmp_path_factory) -> Path:
    """Two classes of small videos of several kinds."""
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "cat" / "a.mp4", 30)  # H.264 with B-frames
    make_video(root / "cat" / "b.mkv", 10, times=VFR_TIMES)  # variable frame rate
    make_video(root / "dog" / "c.mp4", 9, width=63, height=47)  # odd size
    make_video(root / "dog" / "d.avi", 14, codec="mpeg4")
    return root


def extract(args: list[str]):
    return CliRunner().invoke(main, ["extract", *map(str, args)])


def indices(features: np.ndarray) -> list[int]:
    return [bands(t, b) for t, b in features]


def read(path: Path) -> dict:
    with open_cache(path) as c:
        return {
            "ids": c.index.ids,
            "videos": {v.id: v for v in c.videos()},
            "failed": c.index.failed,
            "classes": c.index.classes,
            "attrs": c.attrs,
            "verify": c.verify(),
        }


# -- decoding and sampling --------------------------------------------------------------------


def test_sampling_picks_frames_by_time():
    t25 = np.arange(30) / 25
    assert Sampling().select(t25).tolist() == list(range(30))
    assert Sampling(every=4).select(t25).tolist() == [0, 4, 8, 12, 16, 20, 24, 28]
    assert Sampling(fps=5).select(t25).tolist() == [0, 5, 10, 15, 20, 25]
    assert Sampling(max_frames=4).select(t25).tolist() == [0, 10, 19, 29]
    assert Sampling(fps=5, max_frames=3).select(t25).tolist() == [0, 10, 25]
    assert Sampling(fps=100).select(t25).tolist() == list(range(30))  # never repeats a frame
    vfr = np.array(VFR_TIMES)
    ticks = np.arange(0, 1.2 + 1e-9, 0.25)  # 0, .25, .5, .75, 1.0
    nearest = sorted({int(np.argmin(np.abs(vfr - t) + 1e-12 * np.arange(10))) for t in ticks})
    assert Sampling(fps=4).select(vfr).tolist() == nearest == [0, 3, 5, 6, 7]
    for s in (Sampling(), Sampling(fps=2.5, max_frames=8, frame_rate=30), Sampling(every=3)):
        assert Sampling.parse(s.describe()) == s


@pytest.mark.parametrize("name", ["cat/a.mp4", "cat/b.mkv", "dog/c.mp4", "dog/d.avi"])
def test_every_frame_the_container_holds_with_its_time(source, name):
    frames, times = decode_all(source / name)
    reader = Reader(Item(name, source / name, "video"), Sampling(), Resize(48, 48, 48))
    got = list(reader.frames())
    assert (
        [index_of(f) for f, _ in got] == [index_of(f) for f in frames] == list(range(len(frames)))
    )
    np.testing.assert_allclose([t for _, t in got], times, atol=1e-9)
    assert all(f.shape == (48, 48, 3) and f.dtype == np.uint8 for f, _ in got)


def test_resize_matches_the_weights_transforms(source):
    """swscale's resize + crop is within a few grey levels of torchvision's own transforms."""
    from PIL import Image

    frames, _ = decode_all(source / "dog" / "c.mp4")
    preset = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    net = load_backbone("resnet18", "none")  # the DEFAULT weights' preprocessing, no download
    assert net.resize == Resize(256, 224, 224, "bilinear") and net.mean == tuple(preset.mean)
    ours = net.resize(__import__("av").VideoFrame.from_ndarray(frames[3], format="rgb24"))
    theirs = preset(Image.fromarray(frames[3]))  # (3, 224, 224) normalised
    theirs = (
        theirs * torch.tensor(preset.std)[:, None, None] + torch.tensor(preset.mean)[:, None, None]
    )
    theirs = (theirs.permute(1, 2, 0) * 255).numpy()
    assert np.abs(ours.astype(np.float32) - theirs).mean() < 2.0


def test_missing_first_key_frame_keeps_what_decodes(source, tmp_path):
    broken = drop_first_packets(source / "cat" / "a.mp4", tmp_path / "v" / "x" / "cut.mp4", n=2)
    frames, times = decode_all(broken)
    assert 0 < len(frames) < 30
    item = Item("x/cut.mp4", broken, "video")
    got = list(Reader(item, Sampling(), Resize(48, 48, 48)).frames())
    assert [index_of(f) for f, _ in got] == [index_of(f) for f in frames]
    np.testing.assert_allclose([t for _, t in got], times)
    four = list(Reader(item, Sampling(max_frames=4), Resize(48, 48, 48)).frames())
    assert len(four) == 4 and index_of(four[-1][0]) == 29


# -- the command, with a backbone that reads the frame index back ----------------------------


@pytest.mark.parametrize(
    "options, expected",
    [
        ([], {"cat/a.mp4": list(range(30)), "cat/b.mkv": list(range(10)),
              "dog/c.mp4": list(range(9)), "dog/d.avi": list(range(14))}),
        (["--every", "4"], {"cat/a.mp4": [0, 4, 8, 12, 16, 20, 24, 28], "cat/b.mkv": [0, 4, 8],
                            "dog/c.mp4": [0, 4, 8], "dog/d.avi": [0, 4, 8, 12]}),
        (["--fps", "5"], {"cat/a.mp4": [0, 5, 10, 15, 20, 25], "cat/b.mkv": [0, 2, 4, 5, 6, 7, 9],
                          "dog/c.mp4": [0, 5], "dog/d.avi": [0, 5, 10]}),
        (["--max-frames", "3"], {"cat/a.mp4": [0, 14, 29], "cat/b.mkv": [0, 4, 9],
                                 "dog/c.mp4": [0, 4, 8], "dog/d.avi": [0, 6, 13]}),
    ],
)  # fmt: skip
def test_sampling_options_store_the_right_frames(source, band_files, tmp_path, options, expected):
    r = extract([source, "-o", tmp_path / "c.h5", *band_args(band_files), *options])
    assert r.exit_code == 0, r.output
    cache = read(tmp_path / "c.h5")
    assert cache["verify"] == []
    got = {vid: indices(v.features) for vid, v in cache["videos"].items()}
    assert got == expected
    b = cache["videos"]["cat/b.mkv"]
    np.testing.assert_allclose(b.timestamps, [VFR_TIMES[i] for i in expected["cat/b.mkv"]])
    a = cache["videos"]["cat/a.mp4"]
    np.testing.assert_allclose(a.timestamps, np.array(expected["cat/a.mp4"]) / 25)
    assert a.fps == 25 and a.label == "cat" and cache["classes"] == ["cat", "dog"]


def test_torchscript_and_export_backbones_agree(source, band_files, tmp_path):
    for kind in ("pt", "pt2"):
        r = extract([source, "-o", tmp_path / f"{kind}.h5", *band_args(band_files, kind)])
        assert r.exit_code == 0, r.output
    pt, pt2 = read(tmp_path / "pt.h5"), read(tmp_path / "pt2.h5")
    for vid, v in pt["videos"].items():
        np.testing.assert_allclose(v.features, pt2["videos"][vid].features, rtol=1e-5)
    assert pt["attrs"]["backbone"].startswith("bands.pt sha256:")
    assert pt["attrs"]["backbone_path"] == str(band_files["pt"].resolve())


def test_frame_folders_and_a_manifest(tmp_path, band_files):
    root = tmp_path / "data"
    make_frame_folder(root / "run" / "v1", 6, ext="png")
    make_frame_folder(root / "run" / "v2", 4, ext="jpg")
    make_video(root / "clips" / "x.mp4", 5)
    r = extract([root, "-o", tmp_path / "folders.h5", *band_args(band_files), "--frame-rate", "10"])
    assert r.exit_code == 0, r.output
    c = read(tmp_path / "folders.h5")
    assert c["ids"] == ["clips/x.mp4", "run/v1", "run/v2"]
    assert indices(c["videos"]["run/v1"].features) == list(range(6))
    np.testing.assert_allclose(c["videos"]["run/v2"].timestamps, np.arange(4) / 10)
    assert c["attrs"]["sampling"] == "frame_rate=10"

    with open(root / "list.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "group"])
        w.writerow(["run/v1", "walk", "train", "g1"])
        w.writerow(["clips/x.mp4", "jump", "test", "g2"])
    r = extract([root / "list.csv", "-o", tmp_path / "manifest.h5", *band_args(band_files)])
    assert r.exit_code == 0, r.output
    m = read(tmp_path / "manifest.h5")
    assert m["ids"] == ["clips/x.mp4", "run/v1"] and m["classes"] == ["jump", "walk"]
    x, v1 = m["videos"]["clips/x.mp4"], m["videos"]["run/v1"]
    assert (x.label, x.split, x.group) == ("jump", "test", "g2")
    assert (v1.label, v1.split, v1.group) == ("walk", "train", "g1")
    assert indices(v1.features) == list(range(6))


def test_bad_items_are_recorded_and_the_rest_finishes(source, band_files, tmp_path):
    root = tmp_path / "mixed"
    make_video(root / "ok" / "good.mp4", 7)
    (root / "ok" / "text.mp4").write_text("not a video at all")
    (root / "ok" / "empty.avi").write_bytes(b"")
    truncate(source / "cat" / "a.mp4", root / "ok" / "cut.mp4", keep=0.5)
    (root / "ok" / "noframes").mkdir()
    (root / "ok" / "notes.txt").write_text("ignored: not a video extension")
    r = extract([root, "-o", tmp_path / "c.h5", *band_args(band_files)])
    assert r.exit_code == 1, r.output
    assert "4 failed:" in r.stderr
    assert "  ok/empty.avi: empty file" in r.stderr
    assert "  ok/noframes: no frames: the folder holds no .jpg or .png images" in r.stderr
    assert (
        "  ok/text.mp4: not a readable video (Invalid data found when processing input)" in r.stderr
    )
    assert "  ok/cut.mp4: " in r.stderr
    c = read(tmp_path / "c.h5")
    assert c["ids"] == ["ok/good.mp4"] and indices(c["videos"]["ok/good.mp4"].features) == list(
        range(7)
    )
    assert sorted(c["failed"]) == ["ok/cut.mp4", "ok/empty.avi", "ok/noframes", "ok/text.mp4"]
    assert c["verify"] == []
    # a rerun retries the failures only, and still exits 1
    r = extract([root, "-o", tmp_path / "c.h5", *band_args(band_files)])
    assert r.exit_code == 1 and "1 videos, 7 frames" in r.output and "0 extracted now" in r.output


def test_usage_errors_are_one_line_and_exit_2(source, band_files, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        ([tmp_path / "nope", "-o", tmp_path / "c.h5"],
         f"Error: {tmp_path / 'nope'}: no such file or folder; pass a folder of videos or a CSV"),
        ([tmp_path / "empty", "-o", tmp_path / "c.h5"], f"Error: {tmp_path / 'empty'}: no videos or frame folders found"),
        ([source, "-o", tmp_path / "c.h5", "--backbone", "resnet1000", *SMALL],
         "Error: unknown backbone 'resnet1000': use a torchvision classification model"),
        ([source, "-o", tmp_path / "afile" / "c.h5", *SMALL], f"Error: -o {tmp_path / 'afile' / 'c.h5'}: cannot write there"),
        ([source, "-o", tmp_path / "c.h5", "--fps", "5", "--every", "2", *SMALL],
         "Error: --fps and --every exclude each other: choose one"),
        ([source, "-o", tmp_path / "c.h5", "--weights", "ResNet50_Weights.IMAGENET1K_V1", "--quiet"],
         "Error: --weights ResNet50_Weights.IMAGENET1K_V1: weights of another model; resnet18 takes ResNet18_Weights"),
        ([source, "-o", tmp_path / "c.h5", "--backbone", band_files["pt"], "--quiet"],
         "Error: --backbone bands.pt: a model file needs --input-size, --mean and --std"),
        ([source, "-o", tmp_path / "c.h5", "--shard", "2/2", *SMALL], "Error: --shard 2/2: K must be in 0..N-1"),
    ]  # fmt: skip
    for args, line in cases:
        r = extract(args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.startswith(line), (r.stderr, line)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "c.h5").exists()


def test_named_weights_offline_fail_with_a_hint(tmp_path, source, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    # what torchvision calls to fetch weights: never the network, whatever this machine has
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    r = extract([source, "-o", tmp_path / "c.h5", "--weights", "DEFAULT", "--quiet"])
    assert r.exit_code == 2
    assert r.stderr.startswith(
        "Error: --weights ResNet18_Weights.IMAGENET1K_V1: not in torchvision's cache"
    )
    assert "pass the file: --weights FILE" in r.stderr


def test_rerun_with_other_settings_is_refused(source, band_files, tmp_path):
    out = tmp_path / "c.h5"
    assert extract([source, "-o", out, *band_args(band_files)]).exit_code == 0
    r = extract([source, "-o", out, *band_args(band_files), "--every", "2"])
    assert r.exit_code == 2
    assert r.stderr.startswith(f"Error: {out}: this cache was made with other settings")
    r = extract([source, "-o", out, *band_args(band_files)])
    assert r.exit_code == 0 and "already holds all 4 videos; nothing to do" in r.output


def test_new_videos_are_added_to_an_existing_cache(source, band_files, tmp_path):
    root = tmp_path / "grow"
    make_video(root / "a" / "1.mp4", 5)
    out = tmp_path / "c.h5"
    assert extract([root, "-o", out, *band_args(band_files)]).exit_code == 0
    make_video(root / "b" / "2.mp4", 6)
    r = extract([root, "-o", out, *band_args(band_files)])
    assert r.exit_code == 0 and "1 extracted now, 1 already there" in r.output
    c = read(out)
    assert c["ids"] == ["a/1.mp4", "b/2.mp4"] and c["classes"] == ["a", "b"] and c["verify"] == []
    assert indices(c["videos"]["b/2.mp4"].features) == list(range(6))


# -- real backbones: values --------------------------------------------------------------------


def direct_features(model: nn.Module, path: Path, net) -> np.ndarray:
    """The embedding computed by hand from the same decoded, resized frames."""
    frames = np.stack(
        [f for f, _ in Reader(Item("x", path, "video"), Sampling(), net.resize).frames()]
    )
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(net.mean).view(1, 3, 1, 1)) / torch.tensor(net.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()(x).numpy()


def resnet18_without_fc(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    return model


def test_features_equal_a_direct_forward_pass(source, tmp_path):
    out = tmp_path / "r18.h5"
    r = extract([source, "-o", out, *SMALL, "--dtype", "float32", "--batch-size", "7"])
    assert r.exit_code == 0, r.output
    c = read(out)
    net = load_backbone("resnet18", "none", input_size=(64, 64))
    reference = resnet18_without_fc(0)  # `--weights none` is torchvision's init seeded with 0
    for vid, v in c["videos"].items():
        expected = direct_features(reference, source / vid, net)
        assert v.features.shape == (len(expected), 512)
        # float32 on the CPU: batches of other sizes differ by a few ulps, not more
        np.testing.assert_allclose(v.features, expected, rtol=1e-4, atol=1e-5)
    a = c["attrs"]
    assert a["backbone"] == "resnet18" and a["weights"] == "none" and a["input_size"] == [64, 64]
    assert a["resize"] == "shorter=73,crop=64x64,bilinear" and a["precision"] == "float32"
    assert a["mean"] == [0.485, 0.456, 0.406] and a["std"] == [0.229, 0.224, 0.225]
    for key in ("created", "actrec_version", "torch_version", "torchvision_version", "av_version",
                "source", "weights_path", "sampling", "dtype", "fingerprint"):  # fmt: skip
        assert key in a, key


def test_a_weights_file_loads_and_changes_the_features(source, tmp_path):
    torch.manual_seed(1)
    trained = torchvision.models.resnet18(num_classes=7)  # a fine-tuned head: dropped anyway
    for m in trained.modules():  # batch-norm statistics as training leaves them, not 0 and 1
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": trained.state_dict()}, path)
    args = [source, "--input-size", "64", "--dtype", "float32", "--quiet"]
    assert extract([*args, "-o", tmp_path / "f.h5", "--weights", path]).exit_code == 0
    assert extract([*args, "-o", tmp_path / "n.h5", "--weights", "none"]).exit_code == 0
    f, n = read(tmp_path / "f.h5"), read(tmp_path / "n.h5")
    assert not np.allclose(f["videos"]["cat/a.mp4"].features, n["videos"]["cat/a.mp4"].features)
    # the loaded weights (batch norm folded into the convolutions) give the model's own features
    trained.fc = nn.Identity()
    net = load_backbone("resnet18", str(path), input_size=(64, 64))
    expected = direct_features(trained, source / "cat/a.mp4", net)
    np.testing.assert_allclose(f["videos"]["cat/a.mp4"].features, expected, rtol=1e-4, atol=1e-4)
    trained.fc = nn.Identity()
    net = load_backbone("resnet18", str(path), input_size=(64, 64))
    expected = direct_features(trained, source / "cat" / "a.mp4", net)
    np.testing.assert_allclose(f["videos"]["cat/a.mp4"].features, expected, rtol=1e-4, atol=1e-5)
    assert f["attrs"]["weights"].startswith("sha256:") and f["attrs"]["weights_path"] == str(path)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    r = extract([*args, "-o", tmp_path / "j.h5", "--weights", tmp_path / "junk.pth"])
    assert r.exit_code == 2 and r.stderr.startswith(
        f"Error: --weights {tmp_path / 'junk.pth'}: not a readable"
    )

    # features_for_videos rebuilds the same extractor from the cache's attributes
    new = features_for_videos([source / "dog" / "c.mp4"], f["attrs"], device="cpu")
    np.testing.assert_allclose(
        new[0].features, f["videos"]["dog/c.mp4"].features, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(new[0].timestamps, f["videos"]["dog/c.mp4"].timestamps)
    path.write_bytes(b"changed")
    with pytest.raises(ActrecError, match="sha256 differs"):
        features_for_videos([source / "dog" / "c.mp4"], f["attrs"], device="cpu")


# -- the library surface ------------------------------------------------------------------------


def test_config_refuses_unknown_keys_and_conflicts(tmp_path):
    with pytest.raises(ActrecError, match="unknown extract settings: colour"):
        ExtractConfig.from_dict({"source": tmp_path, "output": tmp_path / "c.h5", "colour": 1})
    with pytest.raises(ActrecError, match="--every must be at least 1"):
        ExtractConfig(source=tmp_path, output=tmp_path / "c.h5", every=0)


def test_run_extraction_in_process_and_shards_merge(source, band_files, tmp_path):
    common = dict(
        source=source, backbone=str(band_files["pt"]), input_size=(48, 48), mean=(0, 0, 0),
        std=(1, 1, 1), dtype="float32", progress=False, workers=0,
    )  # fmt: skip
    whole = run_extraction(ExtractConfig(output=tmp_path / "all.h5", **common))
    assert (whole.videos, whole.frames, whole.dim, whole.exit_code) == (4, 63, 2, 0)
    parts = []
    for k in range(2):
        res = run_extraction(ExtractConfig(output=tmp_path / "s.h5", shard=(k, 2), **common))
        parts.append(res.output)
    assert [p.name for p in parts] == ["s.shard0of2.h5", "s.shard1of2.h5"]
    assert read(parts[0])["ids"] == ["cat/a.mp4", "dog/c.mp4"]  # items 0 and 2 of the sorted list
    r = CliRunner().invoke(main, ["merge", *map(str, parts), "-o", str(tmp_path / "m.h5")])
    assert r.exit_code == 0, r.output
    a, m = read(tmp_path / "all.h5"), read(tmp_path / "m.h5")
    assert a["ids"] == m["ids"] and a["classes"] == m["classes"]
    for vid in a["ids"]:
        np.testing.assert_array_equal(a["videos"][vid].features, m["videos"][vid].features)
    assert a["attrs"]["fingerprint"] == m["attrs"]["fingerprint"]


def test_find_items_ids_are_paths_relative_to_the_source(source):
    items = find_items(source)
    assert [it.id for it in items] == ["cat/a.mp4", "cat/b.mkv", "dog/c.mp4", "dog/d.avi"]
    assert {it.label for it in items} == {"cat", "dog"}


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/testdata/videos is not here")
def test_real_clips_extract_every_frame(tmp_path, band_files):
    r = extract([REAL, "-o", tmp_path / "real.h5", *band_args(band_files), "--workers", "2"])
    assert r.exit_code == 0, r.output
    c = read(tmp_path / "real.h5")
    assert c["verify"] == []
    for vid, v in c["videos"].items():
        _, times = decode_all(REAL / vid)
        assert len(v.features) == len(times), vid
        np.testing.assert_allclose(v.timestamps, np.sort(times), atol=1e-6)
    assert len(c["videos"]["demo.mp4"].features) == 280


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (0, 1)),
        ({"RANK": "2", "WORLD_SIZE": "4"}, (2, 4)),  # torchrun
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8"}, (5, 8)),  # srun, one task per process
        ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (1, 2)),
    ],
)
def test_shard_from_the_launcher(env, expected, monkeypatch, tmp_path):
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = ExtractConfig(source=tmp_path, output=tmp_path / "f.h5")
    assert config.resolved_shard() == expected
    assert ExtractConfig(
        source=tmp_path, output=tmp_path / "f.h5", shard="1/3"
    ).resolved_shard() == (1, 3)


@pytest.mark.parametrize(
    "env, shard, code",
    [
        ({}, None, 1),  # no launcher
        ({"RANK": "0", "WORLD_SIZE": "2"}, None, 1),  # the variables alone: not torchrun
        ({"TORCHELASTIC_RUN_ID": "r", "RANK": "0", "WORLD_SIZE": "1"}, None, 1),  # no other shard
        ({"TORCHELASTIC_RUN_ID": "r", "RANK": "0", "WORLD_SIZE": "2"}, None, 0),
        ({"TORCHELASTIC_RUN_ID": "r", "RANK": "1", "WORLD_SIZE": "2"}, None, 0),
        ({"TORCHELASTIC_RUN_ID": "r", "RANK": "0", "WORLD_SIZE": "2"}, "0/1", 1),  # --shard rules
    ],
)
def test_exit_code_of_failed_videos_by_launcher(env, shard, code, band_files, tmp_path):
    """A shard under torchrun with failed videos exits 0, so that torchrun does not stop the other
    shards; everywhere else failed videos give exit code 1."""
    root = tmp_path / "src"
    (root / "x").mkdir(parents=True)
    for name in ("a", "b", "c", "d"):  # every shard of two gets a broken file
        (root / "x" / f"{name}.mp4").write_bytes(b"\x00" * 64)
    clean = {k: None for k in ("TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "SLURM_NTASKS")}
    args = ["extract", str(root), "-o", str(tmp_path / "c.h5"), *band_args(band_files)]
    r = CliRunner().invoke(main, [*args, *(["--shard", shard] if shard else [])], env=clean | env)
    assert r.exit_code == code, r.output
    assert "failed:" in r.stderr
    assert ("exit code 0 under torchrun" in r.stderr) == (code == 0)
