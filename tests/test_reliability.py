"""Stage one, the cache and merge as a hostile user meets them (issue 11): a full disk, caches
edited by other tools, incomplete sets of shards, a changed manifest, files replaced in place,
rotated and truncated videos, non-finite features, bad weights files, over-long names, Ctrl-C.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from videos import Bands, bands, make_video, truncate

from actrec.cli import main
from actrec.common.cache import Video, open_cache, write_cache
from actrec.common.errors import CacheError
from actrec.extract import Item, Reader, Resize, Sampling, features_for_videos
from actrec.extract.decode import orientation

BIN = Path(sys.executable).parent
ATTRS = {"backbone": "resnet18", "weights": "none", "sampling": "all", "precision": "float32"}


def scripted(path: Path, scale: float = 255.0) -> Path:
    with warnings.catch_warnings():  # TorchScript is deprecated, and still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Bands(scale)), path)
    return path


@pytest.fixture(scope="module")
def band(tmp_path_factory) -> Path:
    return scripted(tmp_path_factory.mktemp("bb") / "bands.pt")


def band_args(model: Path, dtype: str = "float32") -> list[str]:
    return [
        "--backbone", str(model), "--input-size", "48", "--mean", "0", "0", "0",
        "--std", "1", "1", "1", "--dtype", dtype, "--quiet", "--workers", "0",
    ]  # fmt: skip


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def indices(features: np.ndarray) -> list[int]:
    return [bands(t, b) for t, b in features]


def video(vid: str, t: int, seed: int = 0, label: str = "a") -> Video:
    rng = np.random.default_rng(seed)
    return Video(vid, rng.standard_normal((t, 8)).astype(np.float32), np.arange(t) / 25.0, label)


# -- a full disk ----------------------------------------------------------------------------------


def _private_tmpfs_works(where: Path) -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"],
        capture_output=True,
    )
    return probe.returncode == 0


RESNET = ["--backbone", "resnet18", "--weights", "none", "--input-size", "64", "--dtype",
          "float32", "--max-frames", "8", "--quiet", "--workers", "0", "--batch-size", "8"]  # fmt: skip


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_no_half_file(tmp_path):
    """extract, import and merge on small private tmpfs: exit 2, one line naming the file,
    nothing half-written under any name; extract keeps its finished videos and, given space,
    the same command finishes the cache, equal to an uninterrupted run."""
    full, tiny = tmp_path / "full", tmp_path / "tiny"
    full.mkdir()
    tiny.mkdir()
    if not _private_tmpfs_works(full):
        pytest.skip("no private mount namespace (unshare -m) on this machine")
    src = tmp_path / "src"
    for i in range(6):
        make_video(src / ("a" if i % 2 else "b") / f"{i}.mp4", 10 + i)
    (tmp_path / "npy" / "a").mkdir(parents=True)
    for i in range(3):
        np.save(tmp_path / "npy" / "a" / f"{i}.npy", np.ones((3000, 64), np.float32))
    shards = []
    for k in range(2):
        r = cli("extract", src, "-o", tmp_path / "s.h5", "--shard", f"{k}/2", *RESNET)
        assert r.exit_code == 0, r.output
        shards.append(tmp_path / f"s.shard{k}of2.h5")
    reference = tmp_path / "ref.h5"
    assert cli("extract", src, "-o", reference, *RESNET).exit_code == 0
    # 1200k: the segments (six videos, about 40 KiB each) fit, the cache (one HDF5 chunk of
    # 1 MiB, and what is reserved beyond it) does not; 200k: not even the first segment
    extract = [BIN / "actrec", "extract", src, "-o", full / "c.h5", *RESNET]
    steps = [
        extract,
        "ls -a $F/c.h5.partial",
        [BIN / "actrec", "import", tmp_path / "npy", "-o", full / "i.h5"],
        [BIN / "actrec", "merge", *shards, "-o", full / "m.h5"],
        "ls -a $F",
        [BIN / "actrec", "extract", src, "-o", tiny / "c.h5", *RESNET],
        "ls -a $T",
        "mount -o remount,size=16m $F",
        extract,
        f"ls -a $F && cp $F/c.h5 {tmp_path / 'after.h5'}",
    ]
    script = ["set +e", f"F={full}", f"T={tiny}", "mount -t tmpfs -o size=1200k tmpfs $F",
              "mount -t tmpfs -o size=200k tmpfs $T"]  # fmt: skip
    for step in steps:
        line = step if isinstance(step, str) else " ".join(f"'{a}'" for a in step)
        script += ["echo '--'", f"{line}", "echo rc=$?"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", "\n".join(script)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    printed = out.stdout
    parts = [p.strip().splitlines() for p in printed.split("--\n")[1:]]
    assert "Traceback" not in printed and "Segmentation" not in printed, printed

    def full_disk(path: Path) -> list[str]:
        return [
            f"Error: {path}: no space left on device; nothing was written there; free some "
            "space (or write elsewhere) and run the command again",
            "rc=2",
        ]

    assert parts[0] == full_disk(full / "c.h5"), printed  # the cache, from finished segments
    # the writer coalesces finished videos into a few segments (the first at once, then at most
    # one every 2 s): numbered from 0 without gaps, all six videos in them (the rerun below)
    kept = parts[1][4:-1]
    assert parts[1][:4] == [".", "..", "lock", "meta.json"] and parts[1][-1] == "rc=0", printed
    assert kept and kept == [f"segment-{i:06d}.h5" for i in range(len(kept))], printed
    assert parts[2] == full_disk(full / "i.h5")
    assert parts[3] == full_disk(full / "m.h5")
    assert parts[4] == [".", "..", "c.h5.partial", "rc=0"]
    # where not one video could be kept, nothing is left at all
    assert parts[5] == full_disk(tiny / "c.h5.partial" / "segment-000000.h5")
    assert parts[6] == [".", "..", "rc=0"]
    # with space again, the same command finishes from the kept segments
    assert parts[8][-1] == "rc=0" and "(0 extracted now, 6 already there;" in parts[8][0]
    assert parts[9] == [".", "..", "c.h5", "rc=0"]
    with open_cache(reference) as a, open_cache(tmp_path / "after.h5") as b:
        assert a.index.ids == b.index.ids and b.verify() == []
        np.testing.assert_allclose(a.all_features(), b.all_features(), rtol=1e-5, atol=1e-5)


# -- caches edited by other tools -----------------------------------------------------------------


def test_index_checks_name_the_problem(tmp_path):
    def broken(name: str, edit) -> Path:
        path = tmp_path / f"{name}.h5"
        write_cache(path, [video("a", 3), video("b", 4, label="b")], ATTRS, dim=8)
        with h5py.File(path, "a") as f:
            edit(f)
        return path

    def shorten(f):
        data = f["features"][:5]
        del f["features"]
        f["features"] = data

    def set_value(name, i, value):
        def edit(f):
            f[name][i] = value

        return edit

    cases = {
        "noclasses": (lambda f: f.__delitem__("classes"), "no /classes"),
        "short": (shorten, "b: rows 3..6 are past the end of /features (5 rows)"),
        "label": (set_value("videos/label", 1, 7), "b: label 7 is outside /classes (2 classes)"),
        "negative": (set_value("videos/start", 1, -2), "b: negative start"),
    }
    for name, (edit, problem) in cases.items():
        path = broken(name, edit)
        with open_cache(path) as c:
            assert problem in c.check_index(), (name, c.check_index())
            with pytest.raises(CacheError) as e:
                c.ensure_index()
            assert str(e.value).startswith(f"{path}: {problem}") and "\n" not in str(e.value)
        r = cli("inspect", path)
        assert r.exit_code == 1 and f"problem    {problem}" in r.stderr, (name, r.output)
    # an HDF5 file with /features but no /videos, or an index without starts
    with h5py.File(tmp_path / "novideos.h5", "w") as f:
        f["features"] = np.zeros((3, 2))
        f.attrs["format_version"] = 1
    r = cli("inspect", tmp_path / "novideos.h5")
    assert r.exit_code == 2 and one_line(r) == (
        f"Error: {tmp_path / 'novideos.h5'}: an HDF5 file but not an actrec cache (no /videos)"
    )
    path = broken("nostart", lambda f: f.__delitem__("videos/start"))
    r = cli("inspect", path)
    assert r.exit_code == 2 and one_line(r) == (
        f"Error: {path}: no /videos/start: the index of /features is missing"
    )
    with open_cache(broken("fine", lambda f: None)) as c:
        assert c.check_index() == [] and c.verify() == []


# -- shards ---------------------------------------------------------------------------------------


def test_merge_needs_a_whole_set_of_shards(tmp_path):
    def shard(name: str, spec: str, videos: list[Video]) -> Path:
        attrs = {**ATTRS, "shard": spec, "source": "/data/videos"}
        return write_cache(tmp_path / name, videos, attrs, dim=8)

    s0 = shard("f.shard0of2.h5", "0/2", [video("a", 3, 1), video("c", 2, 3)])
    s1 = shard("f.shard1of2.h5", "1/2", [video("b", 4, 2)])
    t0 = shard("f.shard0of3.h5", "0/3", [video("a", 3, 1)])
    out = tmp_path / "m.h5"
    r = cli("merge", s0, "-o", out)
    assert r.exit_code == 2 and one_line(r) == (
        "Error: incomplete set of shards: 1 of 2 given, missing f.shard1of2.h5; or pass "
        "--partial to merge these shards alone"
    )
    r = cli("merge", s0, t0, "-o", out)
    assert r.exit_code == 2 and one_line(r) == (
        "Error: shards of different splits (f.shard0of2.h5 is 0/2, f.shard0of3.h5 is 0/3): "
        "merge the shards of one run; or pass --partial to merge these shards alone"
    )
    assert not out.exists()
    r = cli("merge", s0, "-o", out, "--partial")
    assert r.exit_code == 0 and "holds shards 0/2 only (--partial)" in r.stderr
    with open_cache(out) as c:
        assert c.index.ids == ["a", "c"] and c.attrs["shard"] == "0/2"
    # the partial merge and the missing shard make the whole set: no shard attribute left
    r = cli("merge", out, s1, "-o", tmp_path / "whole.h5")
    assert r.exit_code == 0, r.output
    with open_cache(tmp_path / "whole.h5") as c:
        assert c.index.ids == ["a", "b", "c"] and "shard" not in c.attrs
        expected = video("b", 4, 2).features.astype(np.float16)  # stored as float16
        np.testing.assert_array_equal(c.features(1), expected)
    # one id with two different sets of features: refused, naming both files
    other = write_cache(tmp_path / "other.h5", [video("a", 3, seed=9)], ATTRS, dim=8)
    plain = write_cache(tmp_path / "plain.h5", [video("a", 3, 1)], ATTRS, dim=8)
    r = cli("merge", plain, other, "-o", tmp_path / "x.h5")
    assert r.exit_code == 2 and one_line(r) == (
        f"Error: a is in {plain} and in {other} with different features: shards of one "
        "extraction never overlap; merge only one of them"
    )
    same = write_cache(tmp_path / "same.h5", [video("a", 3, 1)], ATTRS, dim=8)
    assert cli("merge", plain, same, "-o", tmp_path / "new" / "y.h5").exit_code == 0
    r = cli("merge", plain, "-o", plain / "z.h5")  # a file where the folder should be
    assert (
        r.exit_code == 2
        and one_line(r) == f"Error: {plain / 'z.h5'}: cannot write it ({plain} is a file)"
    )


# -- the source changes between runs --------------------------------------------------------------


def test_rerun_refreshes_labels_and_extracts_changed_files_again(tmp_path, band):
    root = tmp_path / "data"
    make_video(root / "v1.mp4", 6)
    make_video(root / "v2.mp4", 7)
    manifest = root / "list.csv"
    manifest.write_text("path,label,split\nv1.mp4,walk,train\nv2.mp4,run,test\n")
    out = tmp_path / "c.h5"
    assert cli("extract", manifest, "-o", out, *band_args(band)).exit_code == 0
    r = cli("extract", manifest, "-o", out, *band_args(band))
    assert r.output == f"{out} already holds all 2 videos; nothing to do\n"

    manifest.write_text("path,label,split\nv1.mp4,jog,val\nv2.mp4,run,test\n")
    r = cli("extract", manifest, "-o", out, *band_args(band))
    assert r.exit_code == 0 and "1 videos got their label, split or group from the source" in (
        r.output
    )
    with open_cache(out) as c:
        assert c.index.classes == ["jog", "run"]  # "walk" is no one's label any more
        assert [c.index.label_name(i) for i in range(2)] == ["jog", "run"]
        assert c.index.split == ["val", "test"] and c.verify() == []

    stat = (root / "v2.mp4").stat()
    make_video(root / "v2.mp4", 11)  # replaced in place, under the same name
    os.utime(root / "v2.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    r = cli("extract", manifest, "-o", out, *band_args(band))
    assert r.exit_code == 0 and "1 videos changed on disk since, and were extracted again" in (
        r.output
    )
    with open_cache(out) as c:
        assert indices(c.features(1)) == list(range(11)) and c.verify() == []
        assert int(c.index.source_size[1]) == (root / "v2.mp4").stat().st_size

    # replaced by a broken file: its old features go, the failure is recorded
    (root / "v2.mp4").write_bytes(b"no longer a video")
    r = cli("extract", manifest, "-o", out, *band_args(band))
    assert r.exit_code == 1 and "  v2.mp4: not a readable video" in r.stderr
    with open_cache(out) as c:
        assert c.index.ids == ["v1.mp4"] and list(c.index.failed) == ["v2.mp4"]

    # a video the source no longer lists is kept, and said so
    manifest.write_text("path,label,split\nv2.mp4,run,test\n")
    r = cli("extract", manifest, "-o", out, *band_args(band))
    assert r.exit_code == 1 and (
        f"1 videos in {out} are no longer in the source: kept, with their old labels (extract "
        "into a new -o to leave them out)" in r.stderr
    )


# -- what a video holds ---------------------------------------------------------------------------


def _marked_video(path: Path, degrees: int, hflip: bool) -> np.ndarray:
    """One frame whose top-left quadrant is white, with a display matrix; returns the frame."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:24, :32] = 255
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        stream.options = {"crf": "0"}
        stream.set_display_rotation(degrees, hflip=hflip)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return image


@pytest.mark.parametrize("degrees", [0, 90, 180, -90])
@pytest.mark.parametrize("hflip", [False, True])
def test_frames_are_shown_upright_as_their_display_matrix_says(tmp_path, degrees, hflip):
    image = _marked_video(tmp_path / "r.mp4", degrees, hflip)
    expected = np.rot90(image, degrees // 90)  # counter-clockwise, then mirrored
    expected = expected[:, ::-1] if hflip else expected
    reader = Reader(Item("r", tmp_path / "r.mp4", "video"), Sampling(), Resize(32, 32, 32))
    (frames, _), *_ = list(reader.chunks(4))
    got = frames[0].mean(axis=2)  # (32, 32)
    # which quadrant is white, after the square centre crop
    quadrants = [got[:8, :8], got[:8, -8:], got[-8:, :8], got[-8:, -8:]]
    want = expected.mean(axis=2)
    want_q = [want[:8, :8], want[:8, -8:], want[-8:, :8], want[-8:, -8:]]
    assert int(np.argmax([q.mean() for q in quadrants])) == int(
        np.argmax([q.mean() for q in want_q])
    )
    assert max(q.mean() for q in quadrants) > 200


def test_orientation_reads_ffmpeg_display_matrices():
    one = 1 << 16
    assert orientation((one, 0, 0, 0, one, 0, 0, 0, 1 << 30)) == (0, False)
    assert orientation((0, -one, 0, one, 0, 0, 0, 0, 1 << 30)) == (1, False)
    assert orientation((-one, 0, 0, 0, one, 0, 0, 0, 1 << 30)) == (0, True)
    assert orientation((0, one, 0, one, 0, 0, 0, 0, 1 << 30)) == (3, True)


def test_a_truncated_video_fails_the_item(tmp_path, band):
    """Decided: an item that ends before the frames (or the seconds) its container declares
    fails (recorded under /failed, exit 1), rather than being stored as a short video under
    its label."""
    x = tmp_path / "src" / "x"
    make_video(x / "whole.avi", 60, codec="mpeg4")
    truncate(x / "whole.avi", x / "cut.avi", keep=0.8)
    make_video(x / "whole.mkv", 40)
    truncate(x / "whole.mkv", x / "cut.mkv", keep=0.5)
    r = cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", *band_args(band))
    assert r.exit_code == 1
    # how much of a cut file is left depends on the encoder's output: the pattern only
    lines = r.stderr.splitlines()
    assert len(lines) == 3 and lines[0] == "2 failed:"
    assert re.fullmatch(
        r"  x/cut\.avi: the file ends early: \d\d of the 60 frames its header declares "
        r"\(truncated or damaged\)",
        lines[1],
    )
    assert re.fullmatch(
        r"  x/cut\.mkv: the file ends early: 0\.\d\d s of the 1\.60 s its header declares "
        r"\(truncated or damaged\)",
        lines[2],
    )
    with open_cache(tmp_path / "c.h5") as c:
        assert c.index.ids == ["x/whole.avi", "x/whole.mkv"]
        assert indices(c.features(0)) == list(range(60))
        assert indices(c.features(1)) == list(range(40))


# -- non-finite features --------------------------------------------------------------------------


def test_non_finite_features_are_refused(tmp_path, band):
    make_video(tmp_path / "src" / "x" / "v.mp4", 8)
    out = tmp_path / "c.h5"
    usage = {
        ("--std", "0", "0", "0"): "Error: Invalid value for '--std': '0' is not in (0, 100] "
        "(`actrec extract -h` for help)",
        ("--mean", "nan", "0", "0"): "Error: Invalid value for '--mean': 'nan' is not a finite "
        "number (in [-100, 100]) (`actrec extract -h` for help)",
        ("--fps", "inf"): "Error: Invalid value for '--fps': 'inf' is not a finite number "
        "(in (0, 10000]) (`actrec extract -h` for help)",
        ("--batch-size", str(10**12)): "Error: Invalid value for '--batch-size': "
        "'1000000000000' is not in 1..65536 (`actrec extract -h` for help)",
    }
    for option, line in usage.items():
        args = ["extract", tmp_path / "src", "-o", out, "--backbone", "resnet18",
                "--weights", "none", "--input-size", "64", "--quiet", *option]  # fmt: skip
        r = cli(*args)
        assert r.exit_code == 2 and one_line(r) == line, r.output
    assert not out.exists()
    # a backbone whose values pass float16's range: the item fails, with the fix
    big = scripted(tmp_path / "big.pt", scale=255.0 * 1000)
    r = cli("extract", tmp_path / "src", "-o", out, *band_args(big, dtype="float16"))
    assert r.exit_code == 1 and (
        "  x/v.mp4: non-finite features in 4 of 8 frames: the backbone returned NaN or inf (or "
        "beyond float16's range: try --dtype float32)" in r.stderr
    )
    with open_cache(out) as c:
        assert len(c) == 0 and c.verify() == []
    r = cli("extract", tmp_path / "src", "-o", tmp_path / "f32.h5", *band_args(big))
    assert r.exit_code == 0


# -- bad options ----------------------------------------------------------------------------------


def test_a_weights_file_that_is_not_a_state_dict_is_one_line(tmp_path):
    make_video(tmp_path / "src" / "x" / "v.mp4", 4)
    (tmp_path / "notes.txt").write_text("These are my notes.\nLine two.\n")
    torch.save({"fc": np.zeros(3)}, tmp_path / "numpy.pth")
    expected = {
        "notes.txt": "not a readable state dict (not a PyTorch file: save one with "
        "torch.save(model.state_dict(), PATH), or pass a .safetensors file for timm)",
        "numpy.pth": "holds more than tensors (Unsupported global: GLOBAL ",
    }
    for name, reason in expected.items():
        r = cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", "--weights",
                tmp_path / name, "--input-size", "64", "--quiet")  # fmt: skip
        line = one_line(r)
        assert r.exit_code == 2 and line.startswith(f"Error: --weights {tmp_path / name}: {reason}")
        assert "weights_only" not in r.output
    # the same files as --backbone: one line each, and no logged traceback
    (tmp_path / "notes.pt2").write_text("These are my notes.\n")
    expected = {
        "notes.pt2": "not a readable torch.export (.pt2) model (not a zip archive, which "
        "torch.export.save and torch.jit.save write)",
        "numpy.pth": "not a readable TorchScript (.pt) model (PytorchStreamReader failed locating "
        "file constants.pkl: file not found; a state dict? pass it as --weights FILE with "
        "--backbone NAME)",
    }
    for name, reason in expected.items():
        r = cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", "--backbone",
                tmp_path / name, "--input-size", "64", "--mean", "0", "0", "0", "--std", "1",
                "1", "1", "--quiet")  # fmt: skip
        assert r.exit_code == 2 and one_line(r) == f"Error: --backbone {tmp_path / name}: {reason}"


def test_an_output_name_of_248_characters(tmp_path, band):
    make_video(tmp_path / "src" / "x" / "v.mp4", 4)
    long = tmp_path / ("n" * 245 + ".h5")
    r = cli("extract", tmp_path / "src", "-o", long, *band_args(band))
    assert r.exit_code == 2 and one_line(r) == (
        f"Error: -o {long}: a name of 248 bytes; the file system allows 255, and the run needs "
        "8 more for nnnnnnnnnnnn....partial: choose a name of at most 247 bytes"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]
    # merge and import write such a name: their temporary file has a shorter one
    assert (
        cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", *band_args(band)).exit_code == 0
    )
    r = cli("merge", tmp_path / "c.h5", "-o", long)
    assert r.exit_code == 0, r.output
    with open_cache(long) as c:
        assert c.index.ids == ["x/v.mp4"]


# -- exit codes -----------------------------------------------------------------------------------


def test_ctrl_c_in_import_is_one_line_and_exit_130(tmp_path, monkeypatch):
    from actrec.temporal import importer

    for i in range(3):
        (tmp_path / "src" / "a").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "src" / "a" / f"{i}.npy", np.ones((4, 3), np.float32))
    real, calls = importer._load, []

    def interrupted(item, *args):
        calls.append(item)
        if len(calls) == 3:  # the second item, while the cache is being written
            raise KeyboardInterrupt
        return real(item, *args)

    monkeypatch.setattr(importer, "_load", interrupted)
    r = cli("import", tmp_path / "src", "-o", tmp_path / "c.h5")
    assert r.exit_code == 130
    assert r.stderr.strip() == "Interrupted: actrec import stopped before it finished."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no cache, no temporary file


def test_features_for_videos_can_list_failures_and_go_on(tmp_path, band):
    make_video(tmp_path / "src" / "x" / "v.mp4", 5)
    assert (
        cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", *band_args(band)).exit_code == 0
    )
    with open_cache(tmp_path / "c.h5") as c:
        attrs = c.attrs
    (tmp_path / "notes.txt").write_text("not a video")
    paths = [tmp_path / "notes.txt", tmp_path / "src" / "x" / "v.mp4", tmp_path / "gone.mp4"]
    failures: dict[str, str] = {}
    got = features_for_videos(paths, attrs, device="cpu", workers=0, failures=failures)
    assert [v.id for v in got] == [str(paths[1])] and indices(got[0].features) == list(range(5))
    assert failures == {
        str(paths[0]): "not a readable video (Invalid data found when processing input)",
        str(paths[2]): "no such file",
    }


def test_plain_files_are_replaced_whole_or_not_at_all(tmp_path):
    from actrec.common.atomic import replacing

    target = tmp_path / "manifest.csv"
    target.write_text("old\n")
    with pytest.raises(OSError), replacing(target) as tmp:
        tmp.write_text("half of the new")
        raise OSError(28, "No space left on device")  # as a full disk would, mid-file
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    with replacing(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n" and sorted(tmp_path.iterdir()) == [target]


def test_ctrl_c_before_the_first_video_leaves_nothing(tmp_path, band, monkeypatch):
    from actrec.extract import run

    make_video(tmp_path / "src" / "x" / "v.mp4", 4)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as stream_features is

    monkeypatch.setattr(run, "stream_features", interrupted)
    r = cli("extract", tmp_path / "src", "-o", tmp_path / "c.h5", *band_args(band))
    assert r.exit_code == 130
    assert r.stderr.strip() == (
        "Interrupted: no video was finished yet; rerun the same command to go on."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no .partial folder either
