"""Every number a command takes, parsed to its type and range in one place.

The click types below parse a command-line option, a value from the environment (torchrun's
``RANK``, Slurm's ``SLURM_PROCID``) and a ``tune --set KEY=VALUE`` the same way: a whole number
is written as one (``2.5``, ``true``, ``1e3`` are not counts), a real number is finite (``nan``,
``inf`` are refused everywhere), and both lie in a range that makes sense for what they count
(a seed fits numpy's 32 bits, a batch fits in memory). A wrong value is click's usage error,
which the ``actrec`` group prints as one line with exit code 2, before any work.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

from actrec.common.errors import ActrecError

_WHOLE = re.compile(r"[+-]?\d+")


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Int(click.ParamType):
    """A whole number in ``low..high`` (both included; None: unbounded on that side)."""

    name = "integer"

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high

    def range_text(self) -> str:
        if self.high is None:
            return f"at least {self.low}"
        if self.low is None:
            return f"at most {self.high}"
        return f"{self.low}..{self.high}"

    def to_info_dict(self) -> dict[str, Any]:
        return {**super().to_info_dict(), "low": self.low, "high": self.high}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number = parse_int(value)
        if number is None:
            self.fail(f"{_shown(value)} is not a whole number ({self.range_text()})", param, ctx)
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            self.fail(f"{_shown(value)} is not in {self.range_text()}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"Int({self.low}, {self.high})"


class Float(click.ParamType):
    """A finite real number in a range; ``low_open``/``high_open`` exclude the bound itself."""

    name = "number"

    def __init__(
        self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
        high_open: bool = False,
    ) -> None:  # fmt: skip
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def range_text(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {self.low:g}"
        if self.high is not None:
            return f"{'below' if self.high_open else 'at most'} {self.high:g}"
        return "finite"

    def to_info_dict(self) -> dict[str, Any]:
        return {**super().to_info_dict(), "low": self.low, "high": self.high}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number = parse_float(value)
        if number is None:
            self.fail(f"{_shown(value)} is not a finite number ({self.range_text()})", param, ctx)
        low, high = self.low, self.high
        below = low is not None and (number < low or (self.low_open and number == low))
        above = high is not None and (number > high or (self.high_open and number == high))
        if below or above:
            self.fail(f"{_shown(value)} is not {self.range_text()}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"Float({self.low}, {self.high})"


def parse_int(value: Any) -> int | None:
    """A whole number from text, an int or an integral float; None for anything else (booleans,
    ``2.5``, ``"1e3"``, ``"nan"``, lists)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()) and len(value.strip()) < 40:
        return int(value.strip())
    return None


def parse_float(value: Any) -> float | None:
    """A finite real number from text, an int or a float; None otherwise (``nan``, ``inf``,
    ``1e400``, booleans, ``"abc"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond a double
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


# -- the ranges, named once for every command that takes them ------------------------------------

SEED = Int(0, 2**32 - 1)  # numpy's seeds are 32-bit; torch's would wrap silently above 2**64
FRACTION = Float(0, 1, high_open=True)  # a share held out: 0 allowed, not all
OPEN_FRACTION = Float(0, 1, low_open=True, high_open=True)
PROBABILITY = Float(0, 1, high_open=True)  # dropout, label smoothing, warm-up
STEPS = Int(1, 10**9)  # optimizer steps, validation intervals
EPOCHS = Int(1, 10**6)
BATCH = Int(1, 2**16)
WIDTH = Int(1, 8192)  # a head's hidden width
LAYERS = Int(1, 64)  # each head narrows it further (TrainConfig.check)
FRAMES = Int(0, 10**7)  # a length in frames where 0 means "off" (clip_len, max_len)
WINDOWS = Int(0, 10**4)
PATIENCE = Int(0, 10**6)
WORKERS = Int(0, 256)
LR = Float(0, 10, low_open=True)
DECAY = Float(0, 100)
RATE = Float(0, 10_000, low_open=True)  # frames or steps per second
EVERY = Int(1, 10**6)
MAX_FRAMES = Int(1, 10**7)
PIXEL_MEAN = Float(-100, 100)  # on the 0-1 scale; ExtractConfig checks the rest
PIXEL_STD = Float(0, 100, low_open=True)
TRIALS = Int(1, 10**6)
MINUTES = Float(0, 10**6, low_open=True)  # a time budget: up to about two years
FOLDS = Int(0, 1000)  # the data narrows it further (tune's fold choice)
SEEDS = Int(1, 1000)
TOP_K = Int(1, 10**6)
WINDOW = Int(1, 10**7)
CLIPS = Int(4, 10_000)
CLIP_FRAMES = Int(4, 10_000)
SIDE = Int(8, 8192)  # an input side in pixels


class InputSize(click.ParamType):
    """``N`` or ``HxW``, each side a whole number of pixels in SIDE's range."""

    name = "N|HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if value is None or isinstance(value, tuple):
            return value
        parts = str(value).lower().split("x")
        sides = [parse_int(p) for p in parts]
        if len(parts) not in (1, 2) or any(s is None for s in sides):
            self.fail(f"{_shown(value)}: give N or HxW, e.g. 224 or 256x320", param, ctx)
        for s in sides:
            if not SIDE.low <= s <= SIDE.high:
                self.fail(f"{_shown(value)}: each side must be in {SIDE.range_text()} pixels",
                          param, ctx)  # fmt: skip
        return (sides[0], sides[-1])


class Shard(click.ParamType):
    """``K/N``: items K, K+N, ... of N processes (0 <= K < N)."""

    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if value is None or isinstance(value, tuple):
            return value
        from actrec.common.shards import parse_shard

        return parse_shard(str(value))  # its ActrecError names --shard itself: one line, exit 2


def check(param_type: click.ParamType, value: Any, name: str) -> Any:
    """``value`` parsed by ``param_type`` as the command line would parse it, for values that
    come from elsewhere (the environment, ``--set``, a config file): one ActrecError line."""
    try:
        return param_type.convert(value, None, None)
    except click.BadParameter as e:
        raise ActrecError(f"{name}: {e.message}") from None


_NONE = {"none", "null"}


def parse_settings(
    command: click.Command, pairs: tuple[str, ...] | list[str], flag: str = "--set",
    extra: dict[str, click.ParamType] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``KEY=VALUE`` pairs parsed by the types of ``command``'s own options (``tune --set`` takes
    `train`'s): ``epochs=true``, ``steps=2.5``, ``hidden=abc`` are refused as `train --epochs
    true` would be. ``none`` sets an option whose default is None back to it; a flag takes
    true/false; a key ``command`` does not know is passed through as text for the caller to
    name. ``extra`` types settings that have no option of their own."""
    options = {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name = key.strip().replace("-", "_")
        if not sep or not name:
            raise ActrecError(f"{flag} {pair}: write KEY=VALUE, e.g. {flag} epochs=20")
        if name in out:
            raise ActrecError(f"{flag} {name} is given twice")
        value = value.strip()
        param = options.get(name)
        param_type = param.type if param is not None else (extra or {}).get(name)
        if param_type is None:
            out[name] = value  # unknown: the config that receives it names it
        elif value.lower() in _NONE and param is not None and param.default is None:
            out[name] = None
        elif param is not None and param.is_flag:
            out[name] = check(click.BOOL, value, f"{flag} {pair}")
        else:
            out[name] = check(param_type, value, f"{flag} {pair}")
    return out


class Device(click.ParamType):
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or any device torch knows), checked against this
    machine as the option is parsed: ``cuda:abc``, ``cuda:-1``, a GPU that is not there."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        from actrec.common.device import resolve_device

        try:
            resolve_device(str(value))
        except ActrecError as e:
            self.fail(str(e), param, ctx)
        return str(value)


DEVICE = Device()


# -- options that several commands share, declared once with one default ---------------------------

DEVICE_OPTION = click.option(
    "--device", type=DEVICE, default="auto", show_default=True,
    help="auto (a GPU where there is one, else the CPU), cpu, cuda, cuda:N or mps.",
)  # fmt: skip
QUIET_OPTION = click.option("--quiet", is_flag=True, help="No progress bars.")


def seed_option(help: str, default: int | None = 0) -> Any:
    """``--seed``: one type and range everywhere; what it seeds differs, so each says so."""
    return click.option(
        "--seed", type=SEED, default=default, show_default=default is not None, help=help
    )
