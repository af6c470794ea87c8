"""Every number of every command, tried with what a hostile user types (issue 18).

The matrix is made from the commands themselves (click's parameters): every option whose type
is a number (click's INT/FLOAT, their ranges, actrec's own Int/Float), or text that holds
numbers (``--input-size N|HxW``, ``--shard K/N``, ``--device cuda:N``, ``tune --set KEY=VALUE``
for each of train's numbers), and every number read from the environment (torchrun's and
Slurm's ranks), is given NaN, inf, -1, 0, 10**30 and a word. Each case must end in exit 0 with
the value it was given recorded where the run keeps it, or in exit 2 with one `Error:` line,
no traceback and no output written. A new option of a type this file does not know fails
`test_every_option_is_classified` until it is classified here, and is then in the matrix.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from videos import Bands, make_video

from actrec.cli import COMMANDS, main
from actrec.common import options as O  # noqa: N812 - the types read as O.SEED
from actrec.common.cache import open_cache

VALUES = ("nan", "inf", "-1", "0", str(10**30), "abc")
# text options that hold numbers, each with how a value is written into it
TEXT_NUMBERS = {
    O.InputSize: lambda v: [v, f"{v}x32"],
    O.Shard: lambda v: [f"{v}/2", f"0/{v}"],
}
# text options that hold no number (names, patterns, paths, URLs: tested elsewhere)
NOT_NUMBERS = {
    ("manifest", "group_regex"), ("extract", "backbone"), ("extract", "weights"),
    ("backbones", "pattern"), ("tune", "heads"), ("tune", "storage"),
}  # fmt: skip
SETTINGS = ("tune", "fixed")  # --set KEY=VALUE: each of train's numbers, parsed as train's


def commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(main)
    return [(name, main.get_command(ctx, name)) for name in COMMANDS]


def kind(command: str, p: click.Parameter) -> str | None:
    """How the matrix tries ``p``: "number", "text number", "device", "settings", or None for
    a parameter that holds no number; AssertionError for a type not classified here."""
    t = p.type
    if isinstance(t, (O.Int, O.Float, click.types.IntParamType, click.types.FloatParamType)):
        return "number"  # click's own INT/FLOAT and their ranges are numbers too
    if type(t) in TEXT_NUMBERS:
        return "text number"
    if isinstance(t, O.Device):
        return "device"
    if isinstance(t, (click.Path, click.Choice, click.types.BoolParamType)):
        return None
    if isinstance(t, click.types.StringParamType):
        if (command, p.name) == SETTINGS:
            return "settings"
        if (command, p.name) in NOT_NUMBERS:
            return None
    raise AssertionError(
        f"actrec {command} {'/'.join(p.opts)}: type {t!r} is not classified; add it to "
        "tests/test_matrix_options.py (a number, text that holds numbers, or no number)"
    )


def test_every_option_is_classified():
    seen = [(name, p.name, kind(name, p)) for name, command in commands() for p in command.params]
    numbers = {(c, p) for c, p, k in seen if k}
    assert len(numbers) >= 40  # the matrix below is not empty by accident
    # train's numbers have one type wherever they are parsed: the option, --set, TrainConfig
    from actrec.temporal.train import RANGES

    train = dict(commands())["train"]
    for p in train.params:
        if p.name in RANGES:
            assert p.type is RANGES[p.name], f"train --{p.name}: not the type TrainConfig checks"


# -- the world the commands run in: tiny, made once ---------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("matrix")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("left", "right", "up")):
        for i in range(4):
            path = root / "seqs" / name / f"{i}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, (rng.standard_normal((6, 4)) + 2 * c).astype(np.float32))
    cache = root / "feats.h5"
    assert cli("import", root / "seqs", "-o", cache).exit_code == 0
    for name in ("a", "b"):
        make_video(root / "videos" / name / f"{name}.mp4", 4, width=32, height=32)
    backbone = root / "bands.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated, and still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(Bands()), backbone)
    run = root / "run"
    r = cli("train", cache, "-o", run, "--head", "mean", "--steps", "2", "--quiet")
    assert r.exit_code == 0, r.output
    return {"root": root, "cache": cache, "videos": root / "videos", "backbone": backbone,
            "run": run}  # fmt: skip


def cli(*args, env: dict | None = None) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def base(command: str, w: dict, out: Path) -> tuple[list, dict[str, list]]:
    """(arguments, options) of a cheap valid run of ``command`` writing to ``out``."""
    extract = {"--backbone": [w["backbone"]], "--input-size": ["16"], "--mean": ["0"] * 3,
               "--std": ["1"] * 3, "--workers": ["0"], "--dtype": ["float32"]}  # fmt: skip
    return {
        "manifest": (["folders", w["videos"]], {"-o": [out]}),
        "extract": ([w["videos"]], {"-o": [out], **extract}),
        "import": ([w["root"] / "seqs"], {"-o": [out]}),
        "train": ([w["cache"]], {"-o": [out], "--head": ["mean"], "--steps": ["2"]}),
        "evaluate": ([w["run"]], {"--cache": [w["cache"]], "-o": [out]}),
        "tune": (
            [w["cache"]],
            {
                "-o": [out],
                "--heads": ["mean"],
                "--trials": ["1"],
                "--folds": ["0"],
                "--set": ["steps=2"],
            },
        ),  # fmt: skip
        "predict": ([w["videos"] / "a" / "a.mp4"], {"--run": [w["run"]], "-o": [out]}),
        "demo": ([], {"-o": [out]}),
    }[command]


def argv(command: str, w: dict, out: Path, option: str, values: list[str]) -> list:
    args, opts = base(command, w, out)
    opts = {**opts, option: values}
    if option == "--set":  # the base's own setting stays, unless it is the one tried
        key = values[0].split("=")[0]
        opts["--set"] = [s for s in base(command, w, out)[1].get("--set", [])
                         if not s.startswith(f"{key}=")] + values  # fmt: skip
    flat = [command, *args]
    for name, vals in opts.items():
        if name == "--set":
            for v in vals:
                flat += ["--set", v]
        else:
            flat += [name, *vals]
    return flat


def cases() -> list[tuple[str, str, list[str], str]]:
    """(command, option, its values on the command line, the value tried)."""
    out = []
    from actrec.temporal.train import RANGES

    for name, command in commands():
        for p in command.params:
            how = kind(name, p)
            if how is None:
                continue
            flag = max(p.opts, key=len)
            for v in VALUES:
                if how == "number":
                    out.append((name, flag, [v] * p.nargs, v))
                elif how == "text number":
                    out += [(name, flag, [t], v) for t in TEXT_NUMBERS[type(p.type)](v)]
                elif how == "device":
                    out.append((name, flag, [f"cuda:{v}"], v))
                else:  # each of train's numbers, and the one TrainConfig has without an option
                    out += [(name, flag, [f"{key}={v}"], v) for key in sorted(RANGES)]
    return out


CASES = cases()


def one_error_line(r) -> str:
    assert (
        "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    ), r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


@pytest.fixture
def stub_long_runs(monkeypatch):
    """`tune --set` and `demo` accept a value by parsing and checking it: their runs take a
    minute (the values themselves run for real through `train`, which parses them alike)."""
    import actrec.demo
    import actrec.temporal.tune as tune_module

    calls = []

    def fake_tune(config):
        config.check()
        calls.append(config)
        return tune_module.TuneResult(Path(config.out), None, None, 0, False)

    def fake_demo(**kwargs):
        calls.append(kwargs)

    monkeypatch.setattr(tune_module, "tune", fake_tune)
    monkeypatch.setattr(actrec.demo, "run_demo", lambda *a, **k: fake_demo(**k))
    return calls


@pytest.mark.parametrize(
    "command,option,values,tried", CASES, ids=[f"{c}{o}={' '.join(v)}" for c, o, v, _ in CASES]
)
def test_a_number_is_used_as_given_or_refused_in_one_line(
    world, tmp_path, request, command, option, values, tried
):
    out = tmp_path / ("out.h5" if command == "extract" else "out")
    if command == "tune":
        pytest.importorskip("optuna")
    stubbed = command == "demo" or option == "--set"
    calls = request.getfixturevalue("stub_long_runs") if stubbed else []
    r = cli(*argv(command, world, out, option, values))
    if r.exit_code == 2:
        one_error_line(r)
        assert not out.exists(), f"{option} {values}: refused, but {out} was written"
        return
    assert r.exit_code == 0, (option, values, r.output)
    check_accepted(command, option, values, tried, out, calls)


def check_accepted(command, option, values, tried, out, calls) -> None:
    """The value given is the value used: recorded in the output, or passed on."""
    if option == "--device":  # cuda:0 where there is a GPU: the run's own checks below differ
        assert out.exists() or calls
        return
    number = float(tried)
    if command == "train":
        config = json.loads((out / "config.json").read_text())
        name = option.lstrip("-").replace("-", "_")
        assert config[name] == number, (name, config[name])
        metrics = json.loads((out / "metrics.json").read_text())
        assert 0 <= metrics["accuracy"] <= 1 and metrics["n_samples"] > 0
    elif command == "extract":
        written = out if out.exists() else out.with_name("out.shard0of2.h5")
        with open_cache(written) as c:
            assert len(c) == (1 if written != out else 2) and c.dim == 2
            assert np.isfinite(c.all_features()).all()
    elif command == "manifest":
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert sorted(r["label"] for r in rows) == ["a", "b"]
    elif command == "tune" and option == "--set":
        key = values[0].split("=")[0]
        assert calls and calls[-1].fixed[key] == number
    elif command == "tune":
        assert (out / "trials.csv").is_file() and (out / "best" / "metrics.json").is_file()
    elif command == "evaluate":
        assert json.loads((out / "metrics.json").read_text())["n_samples"] > 0
    elif command == "demo":
        name = option.lstrip("-").replace("-", "_")
        assert calls and calls[-1][name] == number
    else:
        raise AssertionError(f"actrec {command} {option} {values}: accepted, and not checked")


# -- numbers from the environment ----------------------------------------------------------------

ENVIRONMENT = [("WORLD_SIZE", {}), ("RANK", {"WORLD_SIZE": "2"}), ("SLURM_NTASKS", {}),
               ("SLURM_PROCID", {"SLURM_NTASKS": "2"}), ("LOCAL_RANK", {}),
               ("SLURM_LOCALID", {})]  # fmt: skip


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("variable,beside", ENVIRONMENT, ids=[v for v, _ in ENVIRONMENT])
def test_a_number_from_the_environment_is_parsed_like_an_option(
    world, tmp_path, variable, beside, value
):
    out = tmp_path / "out.h5"
    env = {"RANK": None, "WORLD_SIZE": None, "LOCAL_RANK": None, "SLURM_PROCID": None,
           "SLURM_NTASKS": None, "SLURM_LOCALID": None, **beside, variable: value}  # fmt: skip
    r = cli(*argv("extract", world, out, "--workers", ["0"]), env=env)
    if r.exit_code == 2:
        line = one_error_line(r)
        assert variable in line or any(k in line for k in beside), line
        assert not out.exists() and not out.with_name("out.shard0of2.h5").exists()
        return
    assert r.exit_code == 0, r.output
    sharded = beside and value == "0"
    written = out.with_name("out.shard0of2.h5") if sharded else out
    with open_cache(written) as c:
        assert len(c) == (1 if sharded else 2)
