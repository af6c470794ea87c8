"""Which shards of a distributed extraction a cache holds, and whether a set of them is whole.

`actrec extract --shard K/N` records ``shard = "K/N"`` (and the ``source`` it read) in the
cache's root attributes; a merge of some shards only (``--partial``) records the shards it holds,
``"0,2/4"``. A merge is complete when, for each source, the shards given hold every K of one N
exactly once; the merged cache then records no ``shard`` at all, like a single-process run.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from actrec.common.errors import CacheError

PARTIAL = "partial"  # shards of several N, merged with --partial: which items is not known


def parse(text: str) -> tuple[frozenset[int], int] | None:
    """``"0,2/4"`` -> ({0, 2}, 4); None for ``"partial"`` or an unreadable value."""
    found = re.fullmatch(r"\s*([\d,\s]+)/\s*(\d+)\s*", text or "")
    if not found:
        return None
    ks = frozenset(int(k) for k in found.group(1).split(",") if k.strip())
    n = int(found.group(2))
    return (ks, n) if ks and all(0 <= k < n for k in ks) else None


def describe(ks: frozenset[int] | set[int], n: int) -> str:
    return f"{','.join(str(k) for k in sorted(ks))}/{n}"


def check_set(caches: list[tuple[Path, dict[str, Any]]], partial: bool) -> str | None:
    """The ``shard`` attribute of the merge of these caches (path, root attributes): None when
    every set of shards is whole. An incomplete or mixed set is refused with one line, unless
    ``partial``, when what the merge holds is recorded instead."""
    groups: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for path, attrs in caches:
        if attrs.get("shard"):
            groups[str(attrs.get("source", ""))].append((path, str(attrs["shard"])))
    recorded = []
    for members in groups.values():
        problem, shard = _check_group(members)
        if problem and not partial:
            raise CacheError(f"{problem}; or pass --partial to merge these shards alone")
        if problem:
            recorded.append(shard)
    if not recorded:
        return None
    return recorded[0] if len(recorded) == 1 else PARTIAL


def _check_group(members: list[tuple[Path, str]]) -> tuple[str | None, str]:
    """(why the set is not whole, or None; what the set holds as a ``shard`` value)."""
    parsed = [(path, parse(text)) for path, text in members]
    for (path, text), (_, p) in zip(members, parsed, strict=True):
        if p is None and text == PARTIAL:
            return f"{path} holds a partial merge of shards of several splits", PARTIAL
        if p is None:
            return f"{path}: its shard attribute {text!r} is not K/N", PARTIAL
    ns = sorted({p[1] for _, p in parsed})
    if len(ns) > 1:
        detail = ", ".join(f"{path.name} is {describe(*p)}" for path, p in parsed)
        return f"shards of different splits ({detail}): merge the shards of one run", PARTIAL
    n = ns[0]
    seen: dict[int, Path] = {}
    for path, (ks, _) in parsed:
        for k in sorted(ks):
            if k in seen:
                return f"shard {k}/{n} is given twice ({seen[k]}, {path})", PARTIAL
            seen[k] = path
    missing = sorted(set(range(n)) - set(seen))
    holds = describe(set(seen), n)
    if missing:
        first = members[0][0]
        names = ", ".join(_name_of(first, k, n) for k in missing[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        return (
            f"incomplete set of shards: {len(seen)} of {n} given, missing {names}{more}",
            holds,
        )
    return None, holds


def _name_of(example: Path, k: int, n: int) -> str:
    """The file name shard K of N has beside ``example`` (feats.shard0of4.h5 -> ...shard2of4)."""
    name, count = re.subn(r"\.shard\d+of\d+", f".shard{k}of{n}", example.name)
    return name if count else f"shard {k}/{n}"


# -- which shard this process extracts ------------------------------------------------------------

# (rank, world size) variables: torchrun's, then Slurm's (srun, one task per process)
ENVIRONMENT = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"))


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), with 0 <= K < N and N at most :data:`MAX_SHARDS`."""
    found = re.fullmatch(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*", text or "")
    if not found:
        raise CacheError(f"--shard {text!r}: expected K/N, e.g. 0/4")
    k, n = int(found.group(1)), int(found.group(2))
    if not 0 <= k < n <= MAX_SHARDS:
        raise CacheError(f"--shard {text}: K must be in 0..N-1, N in 1..{MAX_SHARDS}")
    return k, n


MAX_SHARDS = 100_000


def from_environment(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(K, N) from torchrun's RANK/WORLD_SIZE or Slurm's SLURM_PROCID/SLURM_NTASKS, else (0, 1).
    A value that is not a whole number in range is one line naming the variable."""
    import os

    from actrec.common.options import Int, check

    env = os.environ if environ is None else environ
    for rank, world in ENVIRONMENT:
        if not env.get(world, "").strip():
            continue
        n = check(Int(1, MAX_SHARDS), env[world], f"{world}={env[world]!r} in the environment")
        if n == 1:
            continue
        raw = env.get(rank, "").strip() or "0"
        k = check(Int(0, n - 1), raw, f"{rank}={raw!r} in the environment ({world}={n})")
        return k, n
    return 0, 1


def local_rank(environ: dict[str, str] | None = None) -> int | None:
    """This process's GPU under torchrun (LOCAL_RANK) or srun (SLURM_LOCALID); None elsewhere."""
    import os

    from actrec.common.options import Int, check

    env = os.environ if environ is None else environ
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        raw = env.get(name, "").strip()
        if raw:
            return check(Int(0, 4096), raw, f"{name}={raw!r} in the environment")
    return None


def under_torchrun(environ: dict[str, str] | None = None) -> bool:
    """Whether torchrun started this process (it sets TORCHELASTIC_RUN_ID for each it starts):
    torchrun stops the whole group as soon as one process exits non-zero."""
    import os

    env = os.environ if environ is None else environ
    return bool(env.get("TORCHELASTIC_RUN_ID"))
