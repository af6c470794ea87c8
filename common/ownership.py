"""What actrec wrote, so that it replaces only that: markers of kind on folders and files.

Every folder actrec creates holds a marker, ``.actrec.json``: its kind (a run, a tune study,
predictions, an evaluation, a leaderboard, a demo) and the files written there, each with its
kind and a SHA-256 of its bytes. A plain file actrec writes into a folder it does not own (a
manifest into the user's folder) is recorded in that folder's marker, which then has no kind of
its own. A cache needs no marker: its HDF5 root attributes (``format_version``,
``fingerprint``) say what it is.

The rule for every command: an existing file is replaced only when actrec can prove it wrote
it, and wrote it as the same kind: its folder's marker lists it with a hash that matches its
bytes now (so a file the user edited since is theirs again), or it is one of the fixed names
of a folder of that kind (a run's ``report.html``). A folder is replaced only when its marker,
or for folders made before markers existed, its files, say it is of the kind being written.
Anything else is refused with one line, before any work. A header line inside a manifest would
not do: other programs read manifests, and a comment row would be a row to them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from actrec.common.errors import ActrecError

MARKER = ".actrec.json"
MARKER_FORMAT = 1

# folder kinds, and the names that a folder of that kind holds as its own (its fixed files)
RUN, TUNE, PREDICTIONS, EVALUATION, LEADERBOARD, DEMO = (
    "run", "tune", "predictions", "evaluation", "leaderboard", "demo",
)  # fmt: skip
# file kinds for plain files written outside a folder of actrec's kind
MANIFEST, MISSING, TIMELINE = "manifest", "missing-list", "timeline"

DESCRIBE = {
    RUN: "a run folder of `actrec train`",
    TUNE: "a study folder of `actrec tune`",
    PREDICTIONS: "a predictions folder of `actrec predict`",
    EVALUATION: "an evaluation folder of `actrec evaluate`",
    LEADERBOARD: "a leaderboard folder of `actrec report`",
    DEMO: "a folder of `actrec demo`",
}
RUN_FILES = {"config.json", "model.pt", "history.csv", "metrics.json", "predictions.csv",
             "confusion.csv", "report.md", "report.html"}  # fmt: skip
FIXED_FILES = {
    RUN: RUN_FILES,
    TUNE: {"study.db", "trials.csv", "leaderboard.md", "leaderboard.html"},
    EVALUATION: {"metrics.json", "predictions.csv", "confusion.csv"},
    LEADERBOARD: {"leaderboard.md", "leaderboard.html"},
    PREDICTIONS: set(),
    DEMO: set(),
}
# the kinds of file a folder of each kind takes; a folder of no kind (the user's) takes any
TAKES = {
    RUN: {RUN},
    TUNE: {TUNE},
    EVALUATION: {EVALUATION},
    LEADERBOARD: {LEADERBOARD},
    PREDICTIONS: {TIMELINE},
    DEMO: set(),
}


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker, or None where it has none (or one that is not actrec's)."""
    try:
        body = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("actrec") != MARKER_FORMAT:
        return None
    if not isinstance(body.get("files"), dict):
        body["files"] = {}
    return body


def _legacy_run(folder: Path) -> bool:
    """A run folder written before markers: config.json of train's own keys, and its weights or
    metrics. A Hugging Face model folder has a config.json too, without these keys."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(config, dict)
        and {"head", "cache", "out"} <= config.keys()
        and ((folder / "model.pt").is_file() or (folder / "metrics.json").is_file())
    )


def _legacy_tune(folder: Path) -> bool:
    """A study folder written before markers: its sqlite study beside trials.csv."""
    return (folder / "study.db").is_file() and (folder / "trials.csv").is_file()


def _legacy_demo(folder: Path) -> bool:
    """A demo folder written before markers: its clips, its cache and its runs."""
    return (
        (folder / "videos").is_dir()
        and (folder / "runs").is_dir()
        and any(is_cache_file(p) for p in folder.glob("features_*.h5"))
    )


def folder_kind(folder: str | os.PathLike) -> str | None:
    """The kind of an actrec folder (its marker, or the files of one made before markers), or
    None for any other folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    marker = read_marker(folder)
    if marker is not None and marker.get("kind") in DESCRIBE:
        return marker["kind"]
    if marker is None or not marker.get("kind"):
        if _legacy_run(folder):
            return RUN
        if _legacy_tune(folder):
            return TUNE
        if _legacy_demo(folder):
            return DEMO
    return None


def describe(folder: Path) -> str:
    kind = folder_kind(folder)
    return DESCRIBE[kind] if kind else "a folder actrec did not make"


def is_empty_folder(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


def check_folder(folder: str | os.PathLike, kind: str, *, force: bool, what: str = "-o") -> bool:
    """May ``folder`` become (or stay) a folder of ``kind``? True where it exists with that kind
    already; False where it is new or empty; one line where it is a file, another kind's folder,
    a folder of other files, or (``force`` being False) an existing folder of the kind that
    would be replaced."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise ActrecError(f"{folder} is a broken link: choose another {what}")
    if folder.exists() and not folder.is_dir():
        raise ActrecError(f"{folder} exists and is not a folder: choose another {what}")
    if not folder.exists() or is_empty_folder(folder):
        return False
    found = folder_kind(folder)
    if found == kind:
        if not force:
            raise ActrecError(
                f"{folder} exists: pass --force to overwrite it, or choose another {what}"
            )
        return True
    if found is None:
        what_is = "no run" if kind == RUN else f"is not {DESCRIBE[kind]}"
        raise ActrecError(
            f"{folder} holds files but {what_is} (actrec replaces only what it wrote): "
            f"choose another {what}"
        )
    raise ActrecError(f"{folder} is {DESCRIBE[found]}, not {DESCRIBE[kind]}: choose another {what}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def owns_file(path: str | os.PathLike, kind: str) -> bool:
    """Did actrec write ``path`` as a file of ``kind``, and is it still as written?"""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    folder = path.parent
    found = folder_kind(folder)
    if found is not None and kind in TAKES[found] and path.name in FIXED_FILES[found]:
        return True
    marker = read_marker(folder)
    entry = (marker or {}).get("files", {}).get(path.name)
    if not isinstance(entry, dict) or entry.get("kind") != kind:
        return False
    try:
        return entry.get("sha256") == sha256_file(path)
    except OSError:
        return False


def check_file(path: str | os.PathLike, kind: str, what: str = "-o") -> None:
    """Refuse to write ``path`` (a plain file of ``kind``) over anything actrec did not write as
    that kind, or into a folder of another kind."""
    path = Path(path)
    folder = path.parent
    found = folder_kind(folder)
    if found is not None and kind not in TAKES[found]:
        raise ActrecError(
            f"{folder} is {DESCRIBE[found]}: {path.name} does not belong there; choose another {what}"
        )
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise ActrecError(f"{path} is a folder: give a file name with {what}")
    if not owns_file(path, kind):
        raise ActrecError(
            f"{path} exists and is not a {kind} file actrec wrote (or it was changed since): "
            f"actrec replaces only its own files; remove it or choose another {what}"
        )


def mark_folder(folder: str | os.PathLike, kind: str | None) -> None:
    """Write (or keep) ``folder``'s marker with ``kind``, keeping the files it lists."""
    from actrec import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = read_marker(folder) or {"actrec": MARKER_FORMAT, "files": {}}
    if kind is not None:
        body["kind"] = kind
    body["version"] = __version__
    _write_marker(folder, body)


def record(path: str | os.PathLike, kind: str) -> None:
    """Note in the marker of ``path``'s folder that actrec wrote ``path`` as a file of ``kind``."""
    path = Path(path)
    body = read_marker(path.parent) or {"actrec": MARKER_FORMAT, "files": {}}
    from actrec import __version__

    body["version"] = __version__
    body["files"][path.name] = {"kind": kind, "sha256": sha256_file(path)}
    _write_marker(path.parent, body)


def forget(path: str | os.PathLike) -> None:
    """Drop ``path`` from its folder's marker (it was removed)."""
    path = Path(path)
    body = read_marker(path.parent)
    if body is not None and body["files"].pop(path.name, None) is not None:
        _write_marker(path.parent, body)


def _write_marker(folder: Path, body: dict) -> None:
    from actrec.common.atomic import replacing

    with replacing(folder / MARKER) as tmp:
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def is_cache_file(path: str | os.PathLike) -> bool:
    """An HDF5 file whose root attributes say it is an actrec cache (read only)."""
    import h5py

    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return "format_version" in f.attrs and "fingerprint" in f.attrs
    except (OSError, ValueError):
        return False


def check_cache_output(path: str | os.PathLike, force: bool, what: str = "-o") -> None:
    """A cache may be written where nothing is, or (with ``force``) over an actrec cache."""
    path = Path(path)
    if path.is_dir():
        raise ActrecError(f"{path} is a folder: give a file name for the cache with {what}")
    if not path.exists() and not path.is_symlink():
        return
    if not is_cache_file(path):
        raise ActrecError(
            f"{path} exists and is not an actrec cache (actrec replaces only what it wrote): "
            f"choose another {what}"
        )
    if not force:
        raise ActrecError(f"{path} exists: pass --force to overwrite it")


def is_actrec_output(path: str | os.PathLike) -> bool:
    """A folder actrec wrote (a marker, or an extraction's unfinished ``.partial`` part), which
    discovery must never take as an input."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MARKER).is_file() or folder_kind(path) is not None:
        return True
    return path.name.endswith(".partial") and (path / "meta.json").is_file()
