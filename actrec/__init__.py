"""actrec: extract per-frame CNN features once, then train temporal heads on them in seconds."""

__version__ = "0.6.0"
