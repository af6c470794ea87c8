"""The `actrec` command: a click group whose commands are imported only when they run.

Each stage keeps its own commands; this group only names them, so `actrec --help` stays fast and
stage two never imports stage one.
"""

from __future__ import annotations

import importlib

import click

from actrec import __version__
from actrec.common.diskspace import FULL
from actrec.common.errors import ActrecError

# name -> "module:attribute" of a click command, in the order `--help` lists them
COMMANDS = {
    "manifest": "actrec.extract.datasets.cli:manifest",
    "extract": "actrec.extract.cli:extract",
    "backbones": "actrec.extract.cli:backbones",
    "import": "actrec.temporal.cli:import_",
    "inspect": "actrec.common.cache_cli:inspect",
    "merge": "actrec.common.cache_cli:merge",
    "train": "actrec.temporal.cli:train",
    "evaluate": "actrec.temporal.cli:evaluate",
    "report": "actrec.temporal.cli:report",
    "tune": "actrec.temporal.cli:tune",
    "predict": "actrec.predict:predict",
    "demo": "actrec.demo:demo",
}

SHORT_HELP = {
    "manifest": "A path,label,split,group manifest of UCF101, HMDB51, Kinetics, SSv2 or folders.",
    "extract": "Run a frozen CNN over every frame of every video into an HDF5 cache.",
    "backbones": "List the backbone names that extract --backbone takes.",
    "import": "Turn .npy sequences made elsewhere into a cache.",
    "inspect": "Summarise a cache; --verify checks its integrity.",
    "merge": "Join the shards of a distributed extraction into one cache.",
    "train": "Train a temporal head on a cache into a run folder.",
    "evaluate": "Metrics of a trained run on a split of a cache.",
    "report": "The report of one run, or a leaderboard of several.",
    "tune": "Search heads and settings on a cache loaded once (Optuna).",
    "predict": "Top-k labels and a timeline for new videos with a trained run.",
    "demo": "The built-in example end to end: generate, extract, train, report.",
}


class LazyGroup(click.Group):
    """Imports a command's module on first use; turns library errors into exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        command = getattr(importlib.import_module(module), attr)
        if name in SHORT_HELP:
            command.short_help = SHORT_HELP[name]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # list the commands without importing them (torch takes seconds to import)
        with formatter.section("Commands"):
            formatter.write_dl([(name, SHORT_HELP[name]) for name in COMMANDS])

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's own signature
        try:
            return super().invoke(ctx)
        except ActrecError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(2)
        except click.UsageError as e:
            # a wrong option is one line like every other refusal, not click's usage block
            sub = e.ctx is not None and e.ctx.parent is not None
            where = f"actrec {e.ctx.info_name}" if sub else "actrec"
            click.echo(f"Error: {e.format_message()} (`{where} -h` for help)", err=True)
            ctx.exit(2)
        except EOFError as e:
            # a reader that met an empty or cut-short file: click would print "Aborted!" and 1,
            # its answer to a closed terminal; the readers name their file, this is the last word
            detail = f" ({e})" if str(e) else ""
            click.echo(f"Error: a file ended early: empty or cut short{detail}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            # one rule for every command (extract says more itself): a line, and the shell's
            # code for a run stopped by Ctrl-C, not click's "Aborted!" and 1
            name = ctx.invoked_subcommand or "the command"
            click.echo(f"\nInterrupted: actrec {name} stopped before it finished.", err=True)
            ctx.exit(130)
        except OSError as e:
            # a full disk in code that writes a plain file (a CSV, a plot): the cache writer
            # reports its own; this is the last word, so that none ends in a traceback
            if e.errno not in FULL:
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"Error: {where}{e.strerror}; free some space and run it again", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="actrec")
def main() -> None:
    """Video activity recognition in two stages.

    Stage one (`extract`) runs a frozen pretrained CNN over every frame of every video once and
    caches the embeddings in HDF5. Stage two (`train`, `evaluate`, `report`, `predict`) trains
    temporal heads on the cached sequences in seconds.

    Example: actrec extract videos/ -o feats.h5 && actrec train feats.h5 --head gru -o runs/gru
    """
