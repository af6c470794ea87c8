"""`actrec manifest`: tiny trees in each dataset's own naming and annotation formats; the right
split and group for every file, folds, missing and extra files, and one-line errors."""

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from videos import make_video

from actrec.cli import main
from actrec.common.cache import open_cache
from actrec.extract.datasets.hmdb51 import film
from actrec.temporal.data import load_sequences
from actrec.temporal.splits import resolve_splits

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
UCF_GROUPS, UCF_CLIPS = 6, 2  # fold N tests groups 2N-1 and 2N, as the real folds test 7 each


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def rows(path: Path) -> dict[str, tuple[str, str, str]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["path", "label", "split", "group"]
        return {r[0]: (r[1], r[2], r[3]) for r in reader}


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the recipes match names; they never decode
    return path


def write_crlf(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{line}\r\n" for line in lines).encode())


# -- UCF101 -------------------------------------------------------------------------------------


def ucf_clip(cls: str, g: int, c: int) -> str:
    # the real quirk: the HandstandPushups folder holds v_HandStandPushups_* clips
    name = "HandStandPushups" if cls == "HandstandPushups" else cls
    return f"{cls}/v_{name}_g{g:02d}_c{c:02d}.avi"


def make_ucf(base: Path, touch_file=touch) -> Path:
    """``base/UCF-101/<Class>/v_*.avi`` and ``base/ucfTrainTestlist/`` in the official format."""
    clips = [
        (cls, g, c)
        for cls in UCF_CLASSES
        for g in range(1, UCF_GROUPS + 1)
        for c in range(1, UCF_CLIPS + 1)
    ]
    for cls, g, c in clips:
        touch_file(base / "UCF-101" / ucf_clip(cls, g, c))
    lists = base / "ucfTrainTestlist"
    write_crlf(lists / "classInd.txt", [f"{i} {c}" for i, c in enumerate(UCF_CLASSES, 1)])
    for fold in (1, 2, 3):
        test = [k for k in clips if k[1] in (2 * fold - 1, 2 * fold)]
        train = [k for k in clips if k not in test]
        index = {c: i for i, c in enumerate(UCF_CLASSES, 1)}
        write_crlf(
            lists / f"trainlist0{fold}.txt", [f"{ucf_clip(*k)} {index[k[0]]}" for k in train]
        )
        write_crlf(lists / f"testlist0{fold}.txt", [ucf_clip(*k) for k in test])
    return base / "UCF-101"


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_ucf101_every_clip_gets_its_fold_split_and_source_group(tmp_path, fold):
    root = make_ucf(tmp_path)
    r = run("manifest", "ucf101", root, "-o", tmp_path / "m.csv", *(["--fold", fold] * (fold > 1)))
    assert r.exit_code == 0, r.output
    expected = {
        f"UCF-101/{ucf_clip(cls, g, c)}": (
            cls,
            "test" if g in (2 * fold - 1, 2 * fold) else "train",
            f"{cls}_g{g:02d}",
        )
        for cls in UCF_CLASSES
        for g in range(1, UCF_GROUPS + 1)
        for c in range(1, UCF_CLIPS + 1)
    }
    assert rows(tmp_path / "m.csv") == expected
    assert r.output.splitlines()[:6] == [
        "split      videos  classes   groups",
        "train          24        3       12",
        "test           12        3        6",
        "all            36        3       18",
        "missing (named in the annotations, not on disk): 0",
        "extra (on disk, in no annotation): 0",
    ]


def test_missing_and_extra_files_are_counted_and_listed(tmp_path):
    root = make_ucf(tmp_path)
    (root / ucf_clip("YoYo", 3, 1)).unlink()
    touch(root / "YoYo" / "v_YoYo_g26_c01.avi")  # in no list
    touch(root / "YoYo" / "notes.txt")  # not a video: ignored
    out = tmp_path / "out"
    r = run("manifest", "ucf101", root, "-o", out / "m.csv", "--missing", out / "missing.txt")
    assert r.exit_code == 0, r.output
    assert "missing (named in the annotations, not on disk): 1" in r.output
    assert "extra (on disk, in no annotation): 1" in r.output
    assert (out / "missing.txt").read_text().splitlines() == [
        f"missing\t{ucf_clip('YoYo', 3, 1)}",
        f"extra\t{root / 'YoYo' / 'v_YoYo_g26_c01.avi'}",
    ]
    got = rows(out / "m.csv")
    assert len(got) == 35 and f"../UCF-101/{ucf_clip('YoYo', 3, 2)}" in got  # relative to the CSV
    # without --missing, the names go to stderr
    r = run("manifest", "ucf101", root, "-o", out / "m.csv")
    assert f"missing: {ucf_clip('YoYo', 3, 1)}" in r.stderr


# -- HMDB51 -------------------------------------------------------------------------------------

HMDB = {  # class -> (clip, flag in split 1, flag in split 2)
    "brush_hair": [
        ("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "1", "2"),
        ("April_09_brush_hair_u_nm_np1_ba_goo_1.avi", "1", "2"),
        ("Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", "2", "1"),
        ("Aussie_Brushing_Hair!_brush_hair_u_cm_np2_fr_med_3.avi", "0", "1"),
    ],
    "fall_floor": [
        ("Glory_(1989)_fall_floor_f_cm_np1_ri_bad_12.avi", "1", "0"),
        ("Return_of_the_King_fall_floor_l_nm_np3_fr_goo_2.avi", "2", "1"),
    ],
}


def make_hmdb(base: Path) -> Path:
    splits = base / "testTrainMulti_7030_splits"
    for cls, clips in HMDB.items():
        for clip, *_ in clips:
            touch(base / "hmdb51_org" / cls / clip)
        for fold in (1, 2):
            # the real files end each line with a space
            write_crlf(
                splits / f"{cls}_test_split{fold}.txt", [f"{c} {f[fold - 1]} " for c, *f in clips]
            )
    return base / "hmdb51_org"


@pytest.mark.parametrize("fold", [1, 2])
def test_hmdb51_one_is_train_two_is_test_zero_is_left_out(tmp_path, fold):
    root = make_hmdb(tmp_path)
    r = run("manifest", "hmdb51", root, "-o", root / "m.csv", "--fold", fold)
    assert r.exit_code == 0, r.output
    names = {"1": "train", "2": "test"}
    expected = {
        f"{cls}/{clip}": (cls, names[flags[fold - 1]], f"{cls}/{film(clip, cls)}")
        for cls, clips in HMDB.items()
        for clip, *flags in clips
        if flags[fold - 1] != "0"
    }
    assert rows(root / "m.csv") == expected
    assert f"left out, marked 0 (not in split {fold}): 1" in r.output
    assert "extra (on disk, in no annotation): 0" in r.output  # the 0 clips are not extra


def test_hmdb51_groups_are_the_source_films():
    assert film("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "brush_hair") == "April_09"
    assert film("Glory_(1989)_fall_floor_f_cm_np1_ri_bad_12.avi", "fall_floor") == "Glory_(1989)"
    # the action in the name is not the folder's: still the film
    assert film("Some_Film_kick_ball_f_cm_np1_ri_bad_1.avi", "kick") == "Some_Film"
    assert film("oddly_named.avi", "kick") == "oddly_named"  # no metadata: its own group


# -- Kinetics -----------------------------------------------------------------------------------

KINETICS = [  # label, youtube_id, start, end, split; ids start with '-' and hold '_'
    ("abseiling", "--07WQ2iBlw", 1, 11, "train"),
    ("abseiling", "-_0ZFbUvTQE", 14, 24, "train"),
    ("air drumming", "a_b-cdEFg12", 0, 10, "train"),
    ("air drumming", "a_b-cdEFg12", 30, 40, "train"),  # two clips of one YouTube video
    ("massaging person's head", "zZ9-8yXw7vU", 125, 135, "val"),
    ("abseiling", "gone0000000", 3, 13, "val"),  # deleted from YouTube: not downloaded
]


def make_kinetics(base: Path, flat: bool = False) -> Path:
    root = base / "kinetics400"
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    for name, split in (("train.csv", "train"), ("validate.csv", "val")):
        lines = [f'"{lab}",{y},{s},{e},{sp},0\n' for lab, y, s, e, sp in KINETICS if sp == split]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / name).write_text(header + "".join(lines))
    # a test CSV without labels, as some releases have
    (root / "annotations" / "test.csv").write_text(
        "youtube_id,time_start,time_end,split\nT0000000001,5.0,15.0,test\n"
    )
    for _, y, s, e, split in KINETICS:
        if y != "gone0000000":
            touch(root / ("videos" if flat else split) / f"{y}_{s:06d}_{e:06d}.mp4")
    touch(root / ("videos" if flat else "test") / "T0000000001_000005_000015.mp4")
    return root


@pytest.mark.parametrize("flat", [False, True])
def test_kinetics_time_range_names_are_matched(tmp_path, flat):
    root = make_kinetics(tmp_path, flat)
    r = run("manifest", "kinetics", root, "-o", root / "m.csv", "--missing", root / "miss.txt")
    assert r.exit_code == 0, r.output
    assert rows(root / "m.csv") == {
        f"{'videos' if flat else sp}/{y}_{s:06d}_{e:06d}.mp4": (lab, sp, y)
        for lab, y, s, e, sp in KINETICS
        if y != "gone0000000"
    }
    assert "missing (named in the annotations, not on disk): 1" in r.output
    assert "left out, no label (test): 1" in r.output
    assert (root / "miss.txt").read_text() == "missing\tgone0000000_000003_000013\n"


# -- Something-Something v2 ---------------------------------------------------------------------

SSV2_CLASSES = [
    "Holding something next to something",
    "Pushing something from left to right",
    "Tipping something with something in it over, so something in it falls out",
]
SSV2 = [  # id, template, split
    ("78687", "Holding [something] next to [something]", "train"),
    ("42326", "Pushing [something] from left to right", "train"),
    ("3", "Tipping [something with something in it] over, so [something in it] falls out", "train"),
    ("74225", "Pushing [something] from left to right", "val"),
]


def make_ssv2(base: Path) -> Path:
    labels = base / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.json").write_text(json.dumps({c: str(i) for i, c in enumerate(SSV2_CLASSES)}))
    for name, split in (("train.json", "train"), ("validation.json", "val")):
        items = [
            {"id": i, "label": "a filled-in template", "template": t, "placeholders": ["x"]}
            for i, t, sp in SSV2
            if sp == split
        ]
        (labels / name).write_text(json.dumps(items))
    (labels / "test.json").write_text(json.dumps([{"id": "1420"}]))
    root = base / "20bn-something-something-v2"
    for i, *_ in SSV2:
        touch(root / f"{i}.webm")
    touch(root / "1420.webm")
    return root


def test_ssv2_templates_become_labels(tmp_path):
    root = make_ssv2(tmp_path)
    r = run("manifest", "ssv2", root, "-o", tmp_path / "m.csv")
    assert r.exit_code == 0, r.output
    expected_labels = [SSV2_CLASSES[0], SSV2_CLASSES[1], SSV2_CLASSES[2], SSV2_CLASSES[1]]
    assert rows(tmp_path / "m.csv") == {
        f"20bn-something-something-v2/{i}.webm": (label, sp, i)
        for (i, _, sp), label in zip(SSV2, expected_labels, strict=True)
    }
    assert "left out, test (labels not public): 1" in r.output
    assert "extra (on disk, in no annotation): 0" in r.output


# -- folders ------------------------------------------------------------------------------------


def test_folders_split_is_seeded_stratified_and_keeps_groups_together(tmp_path):
    for cls in ("run", "walk"):
        for g in range(10):
            for c in range(3):
                touch(tmp_path / "v" / cls / f"{cls}_g{g:02d}_c{c}.mp4")
    args = ["manifest", "folders", tmp_path / "v", "--val", "0.2", "--test", "0.2"]
    r = run(*args, "--group-regex", r"_(g\d+)_", "-o", tmp_path / "a.csv")
    assert r.exit_code == 0, r.output
    got = rows(tmp_path / "a.csv")
    assert len(got) == 60
    for path, (label, _split, group) in got.items():
        assert label == path.split("/")[1] and group == path.split("_")[1]
    sides: dict[tuple[str, str], set[str]] = {}
    for label, split, group in got.values():
        sides.setdefault((label, group), set()).add(split)
    assert all(len(s) == 1 for s in sides.values())  # no group on two sides
    for cls in ("run", "walk"):  # 2 of 10 groups, of 3 clips each, per class and held-out split
        for split, n in (("train", 18), ("val", 6), ("test", 6)):
            assert sum(v[:2] == (cls, split) for v in got.values()) == n
    again = run(*args, "--group-regex", r"_(g\d+)_", "-o", tmp_path / "b.csv")
    assert again.exit_code == 0 and rows(tmp_path / "b.csv") == got  # seeded
    other = run(*args, "--group-regex", r"_(g\d+)_", "--seed", "1", "-o", tmp_path / "c.csv")
    touch(tmp_path / "v" / "run" / "odd.mp4")
    r = run(*args, "--group-regex", r"_(g\d+)_", "-o", tmp_path / "d.csv")
    assert "note: --group-regex matched no group in 1 paths: each is its own" in r.output
    assert other.exit_code == 0 and rows(tmp_path / "c.csv") != got


# -- errors -------------------------------------------------------------------------------------


def test_wrong_annotation_files_are_one_line_errors(tmp_path):
    ucf = make_ucf(tmp_path / "u")
    lists = tmp_path / "u" / "ucfTrainTestlist"
    hmdb = make_hmdb(tmp_path / "h")
    kin = make_kinetics(tmp_path / "k")
    ssv2 = make_ssv2(tmp_path / "s")
    # mixed-up files: a test list where the train list belongs, and so on
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "classInd.txt").write_bytes((lists / "classInd.txt").read_bytes())
    (swapped / "trainlist01.txt").write_bytes((lists / "testlist01.txt").read_bytes())
    (swapped / "testlist01.txt").write_bytes((lists / "trainlist01.txt").read_bytes())
    # a train list from another class numbering, and a clip in both lists
    other = tmp_path / "other"
    other.mkdir()
    for name in ("classInd.txt", "testlist01.txt"):
        (other / name).write_bytes((lists / name).read_bytes())
    train = (lists / "trainlist01.txt").read_text().splitlines()
    (other / "trainlist01.txt").write_text(train[0].replace(" 1", " 3") + "\n")
    both = tmp_path / "both"
    both.mkdir()
    for name in ("classInd.txt", "trainlist01.txt"):
        (both / name).write_bytes((lists / name).read_bytes())
    (both / "testlist01.txt").write_text(train[0].split()[0] + "\n")
    bad_hmdb = tmp_path / "bad_hmdb"
    bad_hmdb.mkdir()
    (bad_hmdb / "kick_test_split1.txt").write_text("a_kick_f_cm_np1_ri_bad_1.avi 3\n")
    labels_list = tmp_path / "labels_list"
    labels_list.mkdir()
    (labels_list / "labels.json").write_text("[]")
    cases = [
        (["ucf101", ucf, "--annotations", swapped],
         f"Error: {swapped / 'trainlist01.txt'}:1: expected '<Class>/<clip>.avi <index>' as in "
         f"UCF101's trainlistNN.txt, got '{ucf_clip('ApplyEyeMakeup', 1, 1)}'"),
        (["ucf101", ucf, "--annotations", tmp_path / "h" / "testTrainMulti_7030_splits"],
         f"Error: {tmp_path / 'h' / 'testTrainMulti_7030_splits' / 'classInd.txt'}: not found; "
         "--annotations must be UCF101's ucfTrainTestlist folder (classInd.txt, trainlist01.txt, "
         "testlist01.txt)"),
        (["ucf101", ucf, "--annotations", other],
         f"Error: {other / 'trainlist01.txt'}:1: index 3 is 'YoYo' in classInd.txt, not "
         "'ApplyEyeMakeup'"),
        (["ucf101", ucf, "--annotations", both],
         f"Error: {both / 'testlist01.txt'}: {ucf_clip('ApplyEyeMakeup', 3, 1)} is also in the "
         "train list; trainlist01.txt and testlist01.txt must not share clips"),
        (["hmdb51", hmdb, "--annotations", bad_hmdb],
         f"Error: {bad_hmdb / 'kick_test_split1.txt'}:1: expected '<clip>.avi 0|1|2' as in "
         "HMDB51's split files, got 'a_kick_f_cm_np1_ri_bad_1.avi 3'"),
        (["hmdb51", hmdb, "--annotations", lists],
         f"Error: {lists}: no <class>_test_split1.txt files; --annotations must be HMDB51's "
         "testTrainMulti_7030_splits folder"),
        (["kinetics", kin, "--annotations", lists / "classInd.txt"],
         f"Error: {lists / 'classInd.txt'}: not a Kinetics annotation CSV: the header is "
         "'1 ApplyEyeMakeup', expected label,youtube_id,time_start,time_end,split"),
        (["ssv2", ssv2, "--annotations", labels_list],
         f"Error: {labels_list / 'labels.json'}: expected a JSON dict like "
         '{"Approaching something with your camera": "0"}'),
        (["ucf101", tmp_path / "k", "-o", tmp_path / "m.csv"],
         "Error: UCF101's ucfTrainTestlist/ not found (looked for "
         f"{tmp_path / 'k' / 'ucfTrainTestlist'}, {tmp_path / 'ucfTrainTestlist'}); "
         "pass --annotations PATH"),
        (["kinetics", kin, "--fold", "2"], "Error: kinetics does not take --fold"),
        (["kinetics", ssv2, "--annotations", kin / "annotations"],
         f"Error: {ssv2}: none of the 6 clips the annotations name is on disk (the first: "
         "--07WQ2iBlw_000001_000011); pass the folder that holds the videos"),
        (["folders", ucf, "--annotations", lists],
         "Error: folders: the class folders are the annotations; drop --annotations"),
    ]  # fmt: skip
    for args, message in cases:
        if "-o" not in args:
            args = [*args, "-o", tmp_path / "m.csv"]
        r = run("manifest", *args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.strip() == message
        assert "Traceback" not in r.output


# -- the whole path keeps the official split ----------------------------------------------------


def test_manifest_extract_train_report_keep_the_official_split(tmp_path):
    """manifest -> extract -> train -> report on a UCF101 tree of real (tiny) videos: the
    cache holds each clip's split and group, the test set is testlist01 exactly, and
    validation is carved out of trainlist01 by whole source videos."""
    make_ucf(tmp_path, touch_file=lambda p: make_video(p, 4, width=32, height=24))
    manifest, cache, run_dir = tmp_path / "ucf101.csv", tmp_path / "ucf101.h5", tmp_path / "run"
    assert run("manifest", "ucf101", tmp_path / "UCF-101", "-o", manifest).exit_code == 0
    r = run("extract", manifest, "-o", cache, "--weights", "none", "--input-size", "32",
            "--workers", "0", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run("train", cache, "--head", "mean", "-o", run_dir, "--epochs", "2", "--clip-len", "0",
            "--hidden", "8", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "LEAKAGE" not in r.output
    assert run("report", run_dir).exit_code == 0

    lists = tmp_path / "ucfTrainTestlist"
    official = {
        "train": {line.split()[0] for line in (lists / "trainlist01.txt").read_text().splitlines()},
        "test": set((lists / "testlist01.txt").read_text().split()),
    }
    with open_cache(cache) as c:
        ix = c.index
        in_cache = {vid: (s, g) for vid, s, g in zip(ix.ids, ix.split, ix.group, strict=True)}
    expected = {vid: (s, g) for vid, (_, s, g) in rows(manifest).items()}
    assert in_cache == expected
    assert {v.removeprefix("UCF-101/") for v, (s, _) in in_cache.items() if s == "test"} == (
        official["test"]
    )
    with open(run_dir / "predictions.csv", newline="") as fh:
        predicted = {row["id"].removeprefix("UCF-101/") for row in csv.DictReader(fh)}
    assert predicted == official["test"]
    assert json.loads((run_dir / "metrics.json").read_text())["split"] == "test"

    seqs = load_sequences(cache, lazy=False, log=lambda m: None)
    splits = resolve_splits(seqs, log=lambda m: None)
    name = {k: {seqs.ids[i].removeprefix("UCF-101/") for i in v} for k, v in splits.items()}
    assert name["test"] == official["test"]
    assert name["train"] | name["val"] == official["train"] and name["val"]
    groups = {k: {seqs.group[i] for i in v} for k, v in splits.items()}
    assert not groups["train"] & groups["val"]  # whole source videos on each side
