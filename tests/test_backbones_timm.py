"""timm backbones (`--backbone timm:NAME`): values against forward passes written out by hand,
preprocessing from the model's pretrained config, weights files, rebuilding from a cache, the
error lines, and `actrec backbones`.

All with timm's tiny test models (test_vit: 64-D, test_convnext: 64-D) in random init or in
weights files the tests save themselves: no network, no downloads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from videos import make_video

from actrec.cli import main
from actrec.common.cache import open_cache
from actrec.extract import Item, Reader, Resize, Sampling, features_for_videos, load_backbone
from actrec.extract.timm_backbones import pretrained_cfg, timm_resize

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

ARGS = ["--dtype", "float32", "--quiet", "--workers", "1"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "cat" / "a.mp4", 7)
    make_video(root / "dog" / "b.mkv", 5, width=80, height=48)
    return root


def extract(args: list) -> object:
    return CliRunner().invoke(main, ["extract", *map(str, args)])


def read(path: Path) -> tuple[dict, dict]:
    with open_cache(path) as c:
        assert c.verify() == []
        return {v.id: v.features for v in c.videos()}, dict(c.attrs)


def frames_as_input(path: Path, net) -> torch.Tensor:
    """The frames of a video, decoded and resized as the cache's, normalised by hand."""
    reader = Reader(Item("x", path, "video"), Sampling(), net.resize)
    frames = np.stack([f for f, _ in reader.frames()])  # (T, H, W, 3) uint8
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(net.mean).view(1, 3, 1, 1), torch.tensor(net.std).view(1, 3, 1, 1)
    return (x - mean) / std  # (T, 3, H, W)


@torch.no_grad()
def vit_by_hand(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ViT's embedding, written out: patches, class token, position embeddings, blocks, the
    final norm, then the class token (test_vit pools by `token`)."""
    tokens = m.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (N, P, D)
    tokens = torch.cat([m.cls_token.expand(len(x), -1, -1), tokens], dim=1) + m.pos_embed
    for block in m.blocks:
        tokens = block(tokens)
    return m.norm(tokens)[:, 0]  # (N, D)


@torch.no_grad()
def convnext_by_hand(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ConvNeXt's embedding: stem and stages, the spatial mean, then the head's LayerNorm."""
    fmap = m.stages(m.stem(x))  # (N, C, h, w)
    pooled = fmap.mean(dim=(2, 3))  # (N, C)
    norm = m.head.norm
    return F.layer_norm(pooled, (pooled.shape[1],), norm.weight, norm.bias, norm.eps)


def seeded(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).eval()


# -- values ------------------------------------------------------------------------------------


def test_vit_features_equal_a_forward_pass_by_hand_at_another_input_size(source, tmp_path):
    out = tmp_path / "vit.h5"
    r = extract([source, "-o", out, "--backbone", "timm:test_vit", "--weights", "none",
                 "--input-size", "64", "--batch-size", "5", *ARGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    feats, attrs = read(out)
    # `--weights none` is timm's init seeded with 0; built for 64x64 (16 patches + class token)
    reference = seeded("test_vit", num_classes=0, img_size=64)
    assert reference.pos_embed.shape == (1, 17, 64)
    net = load_backbone("timm:test_vit", "none", input_size=(64, 64))
    for vid, got in feats.items():
        expected = vit_by_hand(reference, frames_as_input(source / vid, net)).numpy()
        assert got.shape == expected.shape == (len(expected), 64)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # preprocessing from test_vit's pretrained config: bicubic, crop_pct 0.95, mean/std 0.5
    assert attrs["backbone"] == "timm:test_vit.r160_in1k" and attrs["weights"] == "none"
    assert attrs["resize"] == "shorter=67,crop=64x64,bicubic"  # floor(64 / 0.95) = 67
    assert attrs["input_size"] == [64, 64]
    assert attrs["mean"] == [0.5, 0.5, 0.5] and attrs["std"] == [0.5, 0.5, 0.5]
    assert attrs["pooling"] == "token" and attrs["crop_pct"] == 0.95
    assert attrs["timm_version"] == timm.__version__


def test_convnext_features_at_the_configs_own_size(source, tmp_path):
    out = tmp_path / "cnx.h5"
    r = extract([source, "-o", out, "--backbone", "timm:test_convnext", "--weights", "none",
                 "--max-frames", "3", *ARGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    feats, attrs = read(out)
    assert attrs["resize"] == "shorter=168,crop=160x160,bicubic" and attrs["pooling"] == "avg"
    reference = seeded("test_convnext", num_classes=0)
    net = load_backbone("timm:test_convnext", "none")
    x = frames_as_input(source / "cat" / "a.mp4", net)[[0, 3, 6]]  # --max-frames 3 of 7
    np.testing.assert_allclose(
        feats["cat/a.mp4"], convnext_by_hand(reference, x).numpy(), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("mode", ["center", "squash"])
def test_resize_matches_timms_own_eval_transforms(mode):
    """swscale's resize and crop are within a few grey levels of timm's own transforms."""
    from PIL import Image

    cfg = pretrained_cfg("timm:test_vit")
    cfg.crop_mode, cfg.crop_pct = mode, 0.8
    resize = timm_resize(cfg, (64, 64))
    expected = Resize(80, 64, 64, "bicubic", squash=(80, 80) if mode == "squash" else None)
    assert resize == expected and Resize.parse(resize.describe()) == resize
    yy, xx = np.mgrid[0:72, 0:120]  # a non-square frame with smooth detail everywhere
    img = np.stack([xx * 2, yy * 3, (xx + yy) % 256], -1).astype(np.uint8)
    ours = resize(av.VideoFrame.from_ndarray(img, format="rgb24")).astype(np.float32)
    config = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict())
    config.update(input_size=(3, 64, 64), mean=(0, 0, 0), std=(1, 1, 1))
    theirs = timm.data.create_transform(**config)(Image.fromarray(img))  # (3, 64, 64) in 0..1
    theirs = theirs.permute(1, 2, 0).numpy() * 255
    assert np.abs(ours - theirs).mean() < 2.0


# -- weights files and rebuilding from a cache -------------------------------------------------


def test_a_safetensors_file_round_trip_and_predict_rebuilds_it(source, tmp_path):
    trained = seeded("test_vit", seed=5)  # with its 1000-class head: dropped when loaded
    path = tmp_path / "mine.safetensors"
    safetensors_torch.save_file(trained.state_dict(), path)
    out = tmp_path / "f.h5"
    r = extract([source, "-o", out, "--backbone", "timm:test_vit", "--weights", path, *ARGS])
    assert r.exit_code == 0, r.output
    feats, attrs = read(out)
    net = load_backbone("timm:test_vit", str(path))
    assert net.input_size == (160, 160) and net.dim == 64
    expected = vit_by_hand(trained, frames_as_input(source / "dog" / "b.mkv", net)).numpy()
    np.testing.assert_allclose(feats["dog/b.mkv"], expected, rtol=1e-4, atol=1e-5)
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert attrs["weights"] == f"sha256:{digest}" and attrs["weights_path"] == str(path)

    # the same weights as a .pth checkpoint give the same features
    pth = tmp_path / "mine.pth"
    torch.save({"state_dict": trained.state_dict()}, pth)
    again = load_backbone("timm:test_vit", str(pth))
    x = frames_as_input(source / "cat" / "a.mp4", net)
    with torch.inference_mode():
        np.testing.assert_allclose(again.module(x), net.module(x), rtol=1e-5, atol=1e-6)

    # `predict`'s extractor rebuilds backbone, weights and preprocessing from the attributes
    new = features_for_videos([source / "dog" / "b.mkv"], attrs, device="cpu", workers=0)
    np.testing.assert_allclose(new[0].features, feats["dog/b.mkv"], rtol=1e-4, atol=1e-5)
    # ... also at an input size the ViT was not made for (position embeddings resampled)
    small = tmp_path / "s.h5"
    r = extract([source, "-o", small, "--backbone", "timm:test_vit", "--weights", path,
                 "--input-size", "48", *ARGS])  # fmt: skip
    assert r.exit_code == 0, r.output
    small_feats, small_attrs = read(small)
    assert small_attrs["fingerprint"] != attrs["fingerprint"]
    new = features_for_videos([source / "cat" / "a.mp4"], small_attrs, device="cpu", workers=0)
    np.testing.assert_allclose(new[0].features, small_feats["cat/a.mp4"], rtol=1e-4, atol=1e-5)


def test_none_weights_rebuild_from_a_cache(source, tmp_path):
    out = tmp_path / "n.h5"
    args = ["--backbone", "timm:test_convnext", "--weights", "none", "--input-size", "48"]
    assert extract([source, "-o", out, *args, *ARGS]).exit_code == 0
    feats, attrs = read(out)
    new = features_for_videos([source / "cat" / "a.mp4"], attrs, device="cpu", workers=0)
    np.testing.assert_allclose(new[0].features, feats["cat/a.mp4"], rtol=1e-4, atol=1e-5)


def test_default_weights_from_the_hugging_face_cache_offline(source, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # the cache's own layout, as a download leaves it: refs/main names the snapshot
    repo, commit = tmp_path / "hub" / "models--timm--test_vit.r160_in1k", "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    pretrained = seeded("test_vit", seed=7)
    safetensors_torch.save_file(
        pretrained.state_dict(), repo / "snapshots" / commit / "model.safetensors"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "d.h5"
    r = extract([source, "-o", out, "--backbone", "timm:test_vit", "--max-frames", "2", *ARGS])
    assert r.exit_code == 0, r.output
    feats, attrs = read(out)
    assert attrs["weights"] == "hf-hub:timm/test_vit.r160_in1k" and attrs["weights_path"] == ""
    net = load_backbone("timm:test_vit", "none")
    x = frames_as_input(source / "cat" / "a.mp4", net)[[0, 6]]
    np.testing.assert_allclose(feats["cat/a.mp4"], vit_by_hand(pretrained, x), rtol=1e-4, atol=1e-5)
    new = features_for_videos([source / "cat" / "a.mp4"], attrs, device="cpu", workers=0)
    np.testing.assert_allclose(new[0].features, feats["cat/a.mp4"], rtol=1e-4, atol=1e-5)


# -- one line, exit 2 ----------------------------------------------------------------------------


def assert_one_line(r, start: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(start), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_errors_are_one_line_and_exit_2(source, tmp_path, monkeypatch):
    out = tmp_path / "e.h5"
    r = extract([source, "-o", out, "--backbone", "timm:test_vitt", "--weights", "none", *ARGS])
    assert_one_line(r, "Error: --backbone timm:test_vitt: timm has no model 'test_vitt'; did ")
    r = extract([source, "-o", out, "--backbone", "timm:test_vit.bogus", *ARGS])
    assert_one_line(r, "Error: --backbone timm:test_vit.bogus: test_vit has no pretrained tag")
    other = tmp_path / "resnet.safetensors"
    safetensors_torch.save_file(seeded("test_resnet").state_dict(), other)
    r = extract([source, "-o", out, "--backbone", "timm:test_vit", "--weights", other, *ARGS])
    assert_one_line(r, f"Error: --weights {other}: does not fit timm:test_vit.r160_in1k: missing")
    r = extract([source, "-o", out, "--backbone", "timm:test_vit", "--weights", "V2", *ARGS])
    assert_one_line(r, "Error: --weights V2: for timm models give DEFAULT")
    assert not out.exists()

    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    r = extract([source, "-o", out, "--backbone", "timm:test_vit", *ARGS])
    assert_one_line(
        r, "Error: --backbone timm:test_vit: timm is not installed: pip install 'actrec[timm]'"
    )


def test_default_weights_offline_and_not_cached_say_which_file_to_fetch(source, tmp_path, monkeypatch):  # fmt: skip
    from huggingface_hub import constants

    # offline, with an empty cache: whatever this machine has, nothing is fetched
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    r = extract([source, "-o", tmp_path / "d.h5", "--backbone", "timm:test_vit", *ARGS])
    assert_one_line(
        r,
        "Error: --weights DEFAULT: timm:test_vit.r160_in1k's weights are not in the Hugging Face "
        f"cache ({tmp_path / 'hub'}) and cannot be downloaded",
    )
    assert (
        "fetch https://huggingface.co/timm/test_vit.r160_in1k/resolve/main/model.safetensors "
        "elsewhere and pass the file: --weights FILE" in r.stderr
    )


# -- actrec backbones ----------------------------------------------------------------------------


def test_backbones_lists_names_sizes_and_dimensions():
    r = CliRunner().invoke(main, ["backbones", "test_vit"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert ["timm:test_vit.r160_in1k", "160x160", "64-D"] in [line.split() for line in lines]
    assert all(line.startswith("timm:test_vit") for line in lines)
    r = CliRunner().invoke(main, ["backbones", "resnet1?"])
    assert r.exit_code == 0
    assert ["resnet18", "224x224", "512-D"] in [line.split() for line in r.stdout.splitlines()]
    r = CliRunner().invoke(main, ["backbones"])
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert "resnet18" in names and "timm:vit_small_patch14_dinov2.lvd142m" in names
    assert "-D" not in r.stdout and "embedding sizes with --dims" in r.stderr
    r = CliRunner().invoke(main, ["backbones", "nothing-like-this"])
    assert_one_line(r, "Error: no backbone name matches 'nothing-like-this'")
