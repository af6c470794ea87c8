"""The command line as a whole: every command has help with an example and is in the README."""

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from actrec import __version__
from actrec.cli import COMMANDS, main

README = Path(__file__).parents[1] / "README.md"


def test_group_help_lists_every_command():
    result = CliRunner().invoke(main, ["-h"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", result.output, re.M), name


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_an_example(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`actrec {name} --help` gives no example"
    assert f"actrec {name}" in README.read_text(), f"README does not document `actrec {name}`"


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["extrct"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_shared_options_mean_one_thing_everywhere():
    from actrec.common import options as O  # noqa: N812

    seen = {"device": 0, "seed": 0, "quiet": 0}
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        for param in command.params:
            if param.name == "device":
                assert param.type is O.DEVICE and param.default == "auto", name
            elif param.name == "seed":
                assert param.type is O.SEED, name
            elif param.name == "quiet":
                assert param.is_flag and param.help == "No progress bars.", name
            else:
                continue
            seen[param.name] += 1
    assert seen["device"] >= 5 and seen["seed"] >= 4 and seen["quiet"] >= 3, seen
