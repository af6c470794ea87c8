"""`actrec import` of UCR/UEA .ts files, and the checks every imported item passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from actrec.cli import main
from actrec.common.cache import open_cache
from actrec.common.errors import ActrecError
from actrec.temporal.importer import import_sequences
from actrec.temporal.ts_format import read_ts, split_of

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "sequences"

HEADER = """# a comment
% an ARFF-style comment
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run
@data
"""


def write_ts(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def test_multichannel_variable_length_round_trip(tmp_path):
    train = write_ts(tmp_path / "Tiny_TRAIN.ts", ["1,2,3:4,5,6:walk", "0.5,-1e-3:7,8:run"])
    test = write_ts(tmp_path / "Tiny_TEST.ts", ["9,8,7,6,:1,2,3,4,:walk"])  # trailing commas
    r = CliRunner().invoke(main, ["import", str(train), str(test), "-o", str(tmp_path / "c.h5")])
    assert r.exit_code == 0, r.output
    with open_cache(tmp_path / "c.h5") as c:
        assert c.index.ids == ["Tiny_TEST/000001", "Tiny_TRAIN/000001", "Tiny_TRAIN/000002"]
        assert c.index.split == ["test", "train", "train"] and c.index.classes == ["run", "walk"]
        assert c.index.length.tolist() == [4, 3, 2] and c.dim == 2 and c.dtype == np.float32
        assert [c.index.label_name(i) for i in range(3)] == ["walk", "walk", "run"]
        np.testing.assert_array_equal(c.features(1), [[1, 4], [2, 5], [3, 6]])
        np.testing.assert_array_equal(c.features(2), np.float32([[0.5, 7], [-1e-3, 8]]))
        np.testing.assert_array_equal(c.features(0)[:, 0], [9, 8, 7, 6])
        assert c.verify() == []


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,?,3:4,5,6:walk", "line 11 (series 1): missing value in channel 1"),
        ("1,2,3:4,NaN,6:walk", "line 11 (series 1): NaN or infinite value in channel 2"),
        ("1,2,3:4,5:walk", "line 11 (series 1): channels of different lengths [2, 3]"),
        ("1,x,3:4,5,6:walk", "line 11 (series 1): 'x' in channel 1 is not a number"),
        ("1,2,3", "line 11 (series 1): expected values then ':' then the class label"),
    ],
)
def test_bad_series_are_refused_naming_file_and_line(tmp_path, row, message):
    path = write_ts(tmp_path / "Bad_TRAIN.ts", [row])
    r = CliRunner().invoke(main, ["import", str(path), "-o", str(tmp_path / "c.h5")])
    assert r.exit_code == 2
    assert r.output.startswith(f"Error: {path}, {message}"), r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "c.h5").exists()


def test_headers_the_format_cannot_hold_here(tmp_path):
    stamped = tmp_path / "S_TRAIN.ts"
    stamped.write_text("@timeStamps true\n@classLabel true a\n@data\n(0,1),(1,2):a\n")
    with pytest.raises(ActrecError, match="time-stamped series"):
        list(read_ts(stamped))
    regression = tmp_path / "R_TRAIN.ts"
    regression.write_text("@targetlabel true\n@classLabel false\n@data\n1,2:0.5\n")
    with pytest.raises(ActrecError, match="a regression target"):
        list(read_ts(regression))
    text = tmp_path / "notes_TRAIN.ts"
    text.write_text("hello\n")
    with pytest.raises(ActrecError, match="line 1: expected a @header line"):
        list(read_ts(text))
    assert [split_of(Path(p)) for p in ("A_TRAIN.ts", "A_TEST.ts", "a_valid.ts", "A.ts")] == [
        "train", "test", "val", "",
    ]  # fmt: skip


def test_ts_and_npy_sources_do_not_mix(tmp_path):
    ts = write_ts(tmp_path / "Tiny_TRAIN.ts", ["1,2:3,4:walk"])
    (tmp_path / "src" / "a").mkdir(parents=True)
    with pytest.raises(ActrecError, match="either .ts files, or one folder"):
        import_sequences([ts, tmp_path / "src"], tmp_path / "c.h5")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0.0, np.nan]]), "non-finite value nan at step 0, dimension 1"),
        (np.array([[1.0], [np.inf]]), "non-finite value inf at step 1, dimension 0"),
        (np.array([[1 + 2j]]), "dtype complex128 is not real numbers"),
    ],
)
def test_npy_items_must_be_finite_real_numbers(tmp_path, array, message):
    (tmp_path / "src" / "a").mkdir(parents=True)
    np.save(tmp_path / "src" / "a" / "0.npy", np.zeros((2, array.shape[1])))
    np.save(tmp_path / "src" / "a" / "1.npy", array)
    with pytest.raises(ActrecError, match=message):
        import_sequences(tmp_path / "src", tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists()


def test_float16_overflow_npz_and_own_input_are_refused(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    np.save(tmp_path / "src" / "a" / "0.npy", np.full((2, 2), 1e6))
    with pytest.raises(ActrecError, match="beyond float16's range"):
        import_sequences(tmp_path / "src", tmp_path / "c.h5", dtype="float16")
    import_sequences(tmp_path / "src", tmp_path / "c.h5")  # float32 by default: kept exactly
    with open_cache(tmp_path / "c.h5") as c:
        assert float(c.features(0)[0, 0]) == 1e6
    np.savez(tmp_path / "src" / "a" / "1.npy", x=np.zeros((2, 2)))
    (tmp_path / "src" / "a" / "1.npy.npz").rename(tmp_path / "src" / "a" / "1.npy")
    with pytest.raises(ActrecError, match="an .npz archive, not one .npy array"):
        import_sequences(tmp_path / "src", tmp_path / "d.h5")
    (tmp_path / "src" / "a" / "1.npy").unlink()
    with pytest.raises(ActrecError, match="lies inside the input folder"):
        import_sequences(tmp_path / "src", tmp_path / "src" / "a" / "0.npy", force=True)
    assert np.load(tmp_path / "src" / "a" / "0.npy").shape == (2, 2)


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/testdata (not in a user's clone)")
def test_real_archive_files(tmp_path):
    src = SHARED / "PickupGestureWiimoteZ"
    out = import_sequences([f"{src}_TRAIN.ts", f"{src}_TEST.ts"], tmp_path / "p.h5")
    with open_cache(out) as c:
        assert len(c.index.ids) == 100 and c.dim == 1 and len(c.index.classes) == 10
        assert c.index.split.count("train") == 50 and c.index.split.count("test") == 50
        assert c.index.length.min() == 29 and c.index.length.max() == 361
