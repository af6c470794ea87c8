"""Typed settings for both stages: dataclasses that refuse keys they do not know."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from actrec.common.errors import ActrecError

T = TypeVar("T")


class StrictConfig:
    """Mixin for a settings dataclass: :meth:`from_dict` refuses unknown keys, naming them."""

    KIND = "settings"  # how error messages name them, e.g. "extract settings"

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ActrecError(
                f"unknown {cls.KIND}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)
