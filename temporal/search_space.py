"""What `actrec tune` searches, per head: plain data, so that `--help` and docs/commands.md show it.

Each setting is a `TrainConfig` field. A range is searched on a log scale where its ends are
a factor of 10 or more apart (learning rate, weight decay), and on a linear scale otherwise.
A choice is a list. The first trial of each head is `train`'s defaults, so the search is never
worse on validation than `actrec train` with no options.
"""

from __future__ import annotations

from dataclasses import dataclass

from actrec.common.errors import ActrecError


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False

    def text(self) -> str:
        return f"{self.low:g} to {self.high:g}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class Choice:
    values: tuple

    def text(self) -> str:
        return " | ".join(_word(v) for v in self.values)


def _word(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# what every head searches
COMMON = {
    "lr": Range(3e-4, 1e-2, log=True),  # peak learning rate
    "weight_decay": Range(1e-4, 0.3, log=True),
    "dropout": Range(0.0, 0.5),
    "norm": Choice(("dataset", "sequence", "both")),
    "delta": Choice((False, True)),
    "max_len": Choice((32, 64, 128, 256)),  # longer sequences are averaged down to this many steps
}
HIDDEN = Choice((32, 64, 128, 256))
# what each head adds: its shape (mean has none: it ignores hidden and layers)
PER_HEAD = {
    "mean": {},
    "gru": {"hidden": HIDDEN, "layers": Choice((1, 2)), "bidirectional": Choice((False, True))},
    "lstm": {"hidden": HIDDEN, "layers": Choice((1, 2)), "bidirectional": Choice((False, True))},
    "tcn": {"hidden": HIDDEN, "layers": Choice((2, 3, 4, 5))},  # blocks: 19, 43, 91, 187 steps seen
    "transformer": {"hidden": HIDDEN, "layers": Choice((1, 2, 3))},
}
# `train`'s own value where a head's default is not TrainConfig's (layers=None: the head's own)
HEAD_LAYERS = {"gru": 1, "lstm": 1, "tcn": 4, "transformer": 2}


def space(head: str, longest: int) -> dict[str, Range | Choice]:
    """The settings searched for ``head``: the common ones and its own.

    ``max_len`` choices at or above the longest sequence all mean "never averaged": only the
    smallest of them is kept (a choice of one is a constant, not searched).
    """
    if head not in PER_HEAD:
        raise ActrecError(f"tune has no search space for head {head!r}: choose from "
                          f"{', '.join(PER_HEAD)}")  # fmt: skip
    out = {**COMMON, **PER_HEAD[head]}
    out["max_len"] = Choice(_max_lens(longest))
    return out


def _max_lens(longest: int) -> tuple[int, ...]:
    values = COMMON["max_len"].values
    return tuple([v for v in values if v < longest] + [v for v in values if v >= longest][:1])


def defaults(head: str, longest: int, train_defaults: dict) -> dict:
    """`train`'s defaults for ``head``, as values of its search space (for its first trial)."""
    out = {k: train_defaults[k] for k in COMMON}
    if head in HEAD_LAYERS:
        out.update(hidden=train_defaults["hidden"], layers=HEAD_LAYERS[head])
    if "bidirectional" in PER_HEAD[head]:
        out["bidirectional"] = train_defaults["bidirectional"]
    if out["max_len"] >= longest:  # the same model as the one choice kept at or above it
        out["max_len"] = _max_lens(longest)[-1]
    return out


def describe() -> list[tuple[str, str]]:
    """(setting, values) rows: what `--help` and docs/commands.md print."""
    rows = [(name, dist.text()) for name, dist in COMMON.items()]
    for head, extra in PER_HEAD.items():
        if extra:
            rows.append(
                (f"{head}: " + ", ".join(extra), "; ".join(d.text() for d in extra.values()))
            )
    return rows
