"""Every output option of every command, pointed at everything it must not destroy (issue 18).

The matrix is made from the commands themselves (click's parameters): each output option is
pointed at each input of its command, at the command's other outputs, at a user's file, a
user's folder, a Hugging Face model folder, and at the outputs of the other commands (a run, a
study, predictions, an evaluation, a leaderboard, a demo, a cache, a manifest). Each case must
end in exit 0 with its output written, or exit 2 with one `Error:` line (always, for another
command's output), and every byte that was there before must be there after. A new command or a new path option fails
`test_every_path_option_is_classified` until it is listed here, and is then in the matrix.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from videos import Bands, make_video

from actrec.cli import COMMANDS, main
from actrec.common.ownership import DEMO, MARKER, mark_folder

IN, OUT, SKIP = "input", "output", "not tested here"
# every option that names a file or folder, by command: read, written, or tested elsewhere
PATHS = {
    ("manifest", "root"): IN, ("manifest", "annotations"): IN,
    ("manifest", "output"): OUT, ("manifest", "missing_path"): OUT,
    ("extract", "source"): IN, ("extract", "backbone"): IN, ("extract", "weights"): IN,
    ("extract", "output"): OUT,
    ("import", "sources"): IN, ("import", "output"): OUT,
    ("inspect", "cache"): IN,
    ("merge", "shards"): IN, ("merge", "output"): OUT,
    ("train", "cache"): IN, ("train", "output"): OUT,
    ("evaluate", "run"): IN, ("evaluate", "cache"): IN, ("evaluate", "output"): OUT,
    ("report", "runs"): IN, ("report", "output"): OUT,
    ("tune", "cache"): IN, ("tune", "output"): OUT,
    ("tune", "storage"): SKIP,  # a database URL: tests/test_tune.py
    ("predict", "videos"): IN, ("predict", "run_dir"): IN, ("predict", "cache"): IN,
    ("predict", "weights"): IN, ("predict", "backbone"): IN, ("predict", "output"): OUT,
    ("demo", "output"): OUT,
}  # fmt: skip
# text options that name no file
NOT_PATHS = {
    ("manifest", "group_regex"), ("extract", "device"), ("backbones", "pattern"),
    ("train", "device"), ("evaluate", "device"), ("tune", "heads"), ("tune", "fixed"),
    ("tune", "device"), ("predict", "device"), ("demo", "device"),
}  # fmt: skip
# the kind of output each command writes: pointing it at its own kind is a rerun, not a case
OWN = {
    "manifest": {"manifest", "missing"}, "extract": {"cache"}, "import": {"cache"},
    "merge": {"cache"}, "train": {"run"}, "evaluate": {"evaluation"}, "report": {"leaderboard"},
    "tune": {"tune"}, "predict": {"predictions"}, "demo": {"demo"},
}  # fmt: skip
# how many inputs of each command the world below names (each is a target of every output)
N_INPUTS = {"manifest": 1, "extract": 2, "import": 2, "merge": 1, "train": 1, "evaluate": 2,
            "report": 2, "tune": 1, "predict": 3, "demo": 0}  # fmt: skip


def commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(main)
    return [(name, main.get_command(ctx, name)) for name in COMMANDS]


def test_every_path_option_is_classified():
    """A command or option added later is in the matrix, or this fails: every click.Path and
    every text option must be listed as a path (read or written) or as no path."""
    for name, command in commands():
        for p in command.params:
            texty = isinstance(p.type, (click.Path, click.types.StringParamType))
            if texty and p.name != "help":
                key = (name, p.name)
                assert key in PATHS or key in NOT_PATHS, (
                    f"actrec {name} {p.opts}: classify it in PATHS (read or written) or NOT_PATHS"
                )
    assert {c for c, _ in PATHS} | {c for c, _ in NOT_PATHS} >= set(COMMANDS) - {"backbones"}


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@dataclass
class World:
    root: Path
    argv: dict[str, list] = field(default_factory=dict)  # command -> argv, Slot for outputs
    inputs: dict[str, list[Path]] = field(default_factory=dict)
    others: dict[str, Path] = field(default_factory=dict)  # kind -> an output of that kind
    users: dict[str, Path] = field(default_factory=dict)  # the user's own files and folders


@dataclass(frozen=True)
class Slot:
    """Where an output option goes in a command line."""

    name: str


def _ok(r, *what) -> None:
    assert r.exit_code == 0, (what, r.output)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    w = World(root)
    # inputs: .npy sequences, videos, a backbone in a file
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(10):
            (root / "npy" / label).mkdir(parents=True, exist_ok=True)
            x = rng.standard_normal((8, 4)).astype(np.float32) + (label == "b")
            np.save(root / "npy" / label / f"{i}.npy", x)
    for label, n in (("a", 4), ("b", 4)):
        for i in range(n):
            make_video(root / "videos" / label / f"{i}.mp4", 4 + i)
    band = root / "bands.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated, and still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Bands()), band)
    bb = ["--backbone", band, "--input-size", "32", "--mean", "0", "0", "0", "--std", "1", "1",
          "1", "--dtype", "float32", "--quiet", "--workers", "0"]  # fmt: skip
    fast = ["--head", "mean", "--steps", "2", "--quiet"]
    # the other commands' outputs, each of its kind
    cache, vcache = root / "out" / "cache.h5", root / "out" / "vcache.h5"
    _ok(cli("import", root / "npy", "-o", cache), "import")
    _ok(cli("extract", root / "videos", "-o", vcache, *bb), "extract")
    run, run2, vrun = root / "out" / "run", root / "out" / "run2", root / "out" / "vrun"
    _ok(cli("train", cache, "-o", run, *fast), "train")
    _ok(cli("train", cache, "-o", run2, *fast, "--seed", "1"), "train 2")
    _ok(cli("train", vcache, "-o", vrun, *fast), "train on videos")
    manifest, missing = root / "out" / "m.csv", root / "out" / "missing.txt"
    _ok(
        cli("manifest", "folders", root / "videos", "-o", manifest, "--missing", missing),
        "manifest",
    )
    _ok(cli("evaluate", run, "-o", root / "out" / "evaluation"), "evaluate")
    _ok(cli("report", run, run2, "-o", root / "out" / "leaderboard"), "report")
    clip = root / "videos" / "a" / "0.mp4"
    _ok(cli("predict", clip, "--run", vrun, "--backbone", band, "-o", root / "out" / "predictions",
            "--device", "cpu"), "predict")  # fmt: skip
    tuned = root / "out" / "tuned"
    _ok(cli("tune", cache, "-o", tuned, "--trials", "1", "--heads", "mean", "--set", "steps=2",
            "--folds", "0", "--quiet", "--device", "cpu"), "tune")  # fmt: skip
    demo = root / "out" / "demo"  # a demo's marker and files, without the minute it takes
    mark_folder(demo, DEMO)
    (demo / "runs").mkdir()
    w.others = {
        "cache": cache, "run": run, "manifest": manifest, "missing": missing,
        "evaluation": root / "out" / "evaluation", "leaderboard": root / "out" / "leaderboard",
        "predictions": root / "out" / "predictions", "tune": tuned, "demo": demo,
    }  # fmt: skip
    # the user's own: a file, a folder of files, a Hugging Face model folder
    (root / "user").mkdir()
    (root / "user" / "notes.txt").write_text("my notes\n")
    (root / "user" / "data.csv").write_text("path,label\nx.mp4,a\n")
    hf = root / "user" / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text('{"architectures": ["BertModel"], "hidden_size": 8}')
    (hf / "pytorch_model.bin").write_bytes(b"\x80\x02weights")
    (hf / "tokenizer.json").write_text("{}")
    w.users = {"file": root / "user" / "notes.txt", "folder": root / "user", "hf": hf}

    w.argv = {
        "manifest": ["manifest", "folders", root / "videos", "-o", Slot("output"),
                     "--missing", Slot("missing_path")],
        "extract": ["extract", root / "videos", "-o", Slot("output"), *bb],
        "import": ["import", root / "npy", "-o", Slot("output")],
        "merge": ["merge", cache, "-o", Slot("output")],
        "train": ["train", cache, "-o", Slot("output"), *fast],
        "evaluate": ["evaluate", run, "-o", Slot("output")],
        "report": ["report", run, run2, "-o", Slot("output")],
        "tune": ["tune", cache, "-o", Slot("output"), "--trials", "1", "--heads", "mean",
                 "--set", "steps=2", "--folds", "0", "--quiet", "--device", "cpu"],
        "predict": ["predict", clip, "--run", vrun, "--backbone", band, "-o", Slot("output"),
                    "--device", "cpu"],
        "demo": ["demo", "-o", Slot("output"), "--clips-per-class", "4", "--frames", "4",
                 "--epochs", "1", "--device", "cpu"],
    }  # fmt: skip
    w.inputs = {
        "manifest": [root / "videos"], "extract": [root / "videos", band],
        "import": [root / "npy", root / "npy" / "a" / "0.npy"], "merge": [cache],
        "train": [cache], "evaluate": [run, cache], "report": [run, run2], "tune": [cache],
        "predict": [clip, vrun, band], "demo": [],
    }  # fmt: skip
    assert {k: len(v) for k, v in w.inputs.items()} == N_INPUTS
    return w


def output_options(name: str) -> list[str]:
    command = dict(commands())[name]
    return [p.name for p in command.params if PATHS.get((name, p.name)) == OUT]


def cases() -> list[tuple[str, str, str, bool]]:
    """(command, output option, target, --force) for every output option of every command."""
    out = []
    for name, command in commands():
        has_force = any(p.name == "force" for p in command.params)
        for option in output_options(name):
            targets = [f"input:{i}" for i in range(N_INPUTS[name])]
            targets += ["user:file", "user:folder", "user:hf"]
            targets += [f"other:{k}" for k in sorted(set().union(*OWN.values()) - OWN[name])]
            targets += [f"same:{o}" for o in output_options(name) if o != option]
            for target in targets:
                for force in (False, True) if has_force else (False,):
                    out.append((name, option, target, force))
    return out


def _snapshot(root: Path) -> dict[Path, str]:
    """Every file's hash; markers aside (actrec's own, updated as it writes)."""
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != MARKER
    }


def _restore(root: Path, saved: dict[Path, bytes]) -> None:
    """Put the world back as it was before a case, whatever the case did, so that no case
    depends on another: new files and folders go, changed or removed files come back."""
    for p in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
        if p in saved or not (p.exists() or p.is_symlink()):
            continue
        if p.is_dir() and not p.is_symlink():
            if not any(q.is_relative_to(p) for q in saved):
                shutil.rmtree(p)
        else:
            p.unlink()
    for p, body in saved.items():
        if not p.is_file() or p.read_bytes() != body:
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_dir():
                shutil.rmtree(p)
            p.write_bytes(body)


MATRIX = cases()


@pytest.mark.parametrize(("name", "option", "target", "force"), MATRIX,
                         ids=[f"{n}-{o}-{t}{'-force' if f else ''}" for n, o, t, f in MATRIX])  # fmt: skip
def test_an_output_never_destroys_what_it_did_not_write(world, name, option, target, force):
    kind, _, which = target.partition(":")
    if kind == "input":
        aim = world.inputs[name][int(which)]
    elif kind == "user":
        aim = world.users[which]
    elif kind == "other":
        aim = world.others[which]
    fresh = world.root / "fresh" / f"{name}-{option}"
    slots = {o: fresh / o for o in output_options(name)}
    if kind == "same":
        slots[which] = slots[option] = fresh / "one"
    else:
        slots[option] = aim
    argv = [slots[a.name] if isinstance(a, Slot) else a for a in world.argv[name]]
    if force:
        argv.append("--force")
    before = _snapshot(world.root)
    saved = {p: p.read_bytes() for p in world.root.rglob("*") if p.is_file()}
    r = cli(*argv)
    try:
        assert (
            "Traceback" not in r.output
            and r.exception is None
            or isinstance(r.exception, SystemExit)
        ), r.output
        assert r.exit_code in (0, 2), r.output
        # another command's output is no place for this one's: a study, a run, predictions...
        assert kind != "other" or r.exit_code == 2, r.output
        if r.exit_code == 2:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
        else:  # what the command writes is there
            written = {"report": "leaderboard.md", "predict": "0.mp4.timeline.csv",
                       "evaluate": "metrics.json"}.get(name, "")  # fmt: skip
            assert (slots[option] / written if written else slots[option]).exists(), r.output
        after = _snapshot(world.root)
        changed = sorted(str(p) for p, h in before.items() if after.get(p) != h)
        assert changed == [], f"changed or removed: {changed}\n{r.output}"
    finally:
        _restore(world.root, saved)


def test_the_matrix_covers_every_output_option():
    outputs = {(n, o) for n, o, _, _ in MATRIX}
    assert outputs == {k for k, v in PATHS.items() if v == OUT}
    print(f"{len(MATRIX)} cases", file=sys.stderr)
