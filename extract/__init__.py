"""Stage one: find videos, decode, sample frames, run a frozen backbone, write the cache."""
