"""One extraction end to end: items, shard, backbone, resume, stream, store; and the same
features for new videos from a cache's own settings (for `actrec predict`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import torch
import torchvision

from actrec import __version__
from actrec.common.cache import Stored, Video, open_cache, partial_dir
from actrec.common.device import resolve_device, resolve_precision
from actrec.common.errors import ActrecError
from actrec.common.ownership import is_actrec_output, is_cache_file
from actrec.common.partial import PartialCache, stored_records
from actrec.common.paths import check_outputs
from actrec.common.shards import local_rank
from actrec.common.validate import check_names
from actrec.extract.backbones import Backbone, is_file_backbone, load_backbone, sha256
from actrec.extract.config import ExtractConfig, shard_output
from actrec.extract.decode import Resize, Sampling
from actrec.extract.pipeline import stream_features
from actrec.extract.sources import Item, find_items, shard, source_stat
from actrec.extract.writer import SegmentWriter


@dataclass
class ExtractResult:
    """What a run did. ``failed`` lists the items the finished cache records as failed."""

    output: Path
    videos: int  # videos in the finished cache
    frames: int  # frames in the finished cache
    dim: int
    extracted: int  # videos extracted by this run
    extracted_frames: int
    already: int  # videos that were already in the cache or its unfinished part
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    nothing_to_do: bool = False
    changed: int = 0  # videos extracted again because their file changed since
    relabelled: int = 0  # videos whose label, split or group the source changed
    gone: int = 0  # videos the cache holds that the source no longer lists (kept)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def cache_attrs(backbone: Backbone, sampling: Sampling, dtype: str, precision: str) -> dict:
    """The root attributes of a cache made with these settings (fingerprint keys included)."""
    return {
        "backbone_path": "",
        **backbone.attrs,
        "input_size": list(backbone.input_size),
        "mean": list(backbone.mean),
        "std": list(backbone.std),
        "resize": backbone.resize.describe(),
        "sampling": sampling.describe(),
        "dtype": dtype,
        "precision": precision,
        "actrec_version": __version__,
        "torch_version": str(torch.__version__),
        "torchvision_version": str(torchvision.__version__),
        "av_version": str(av.__version__),
    }


def run_extraction(config: ExtractConfig) -> ExtractResult:
    """Extract ``config.source`` into ``config.output``, resuming whatever is already done.

    Bad input items are recorded as failed and the run goes on; bad usage raises
    :class:`ActrecError`. A shard (``config.shard``, or RANK/WORLD_SIZE under torchrun) writes
    ``NAME.shardKofN.h5`` next to the output.
    """
    started = time.perf_counter()
    config.validate()
    all_items = find_items(config.source)
    check_names(all_items, str(config.source))  # what HDF5 cannot hold, before any work
    k, n = config.resolved_shard()
    items = shard(all_items, k, n)
    output = shard_output(config.output, k, n)
    _check_name(output)
    files = [(f"--{o}", v) for o, v in (("weights", config.weights), ("backbone", config.backbone))
             if Path(str(v)).is_file()]  # fmt: skip
    listed = [] if config.source.is_dir() else [(it.id, it.path) for it in all_items]
    check_outputs([("SOURCE", config.source), *listed, *files], [("-o", output)],
                  whole=[("-o", partial_dir(output))])  # fmt: skip
    if output.exists() and not output.is_dir() and not is_cache_file(output):
        raise ActrecError(f"-o {output}: exists and is not an actrec cache: choose another -o")
    part = partial_dir(output)  # removed once the cache is made: it must be ours to remove
    if (
        (part.exists() or part.is_symlink())
        and not is_actrec_output(part)
        and (not part.is_dir() or part.is_symlink() or any(part.iterdir()))
    ):
        raise ActrecError(f"{part} is in the way (not an unfinished extraction): move it, or "
                          "choose another -o")  # fmt: skip
    _check_writable(output)
    device = _device(config.device)
    precision = resolve_precision(config.precision, device)
    sampling = Sampling(config.fps, config.every, config.max_frames, config.frame_rate)
    backbone = load_backbone(
        config.backbone,
        config.weights,
        input_size=config.input_size,
        mean=config.mean,
        std=config.std,
        device=device,
    )
    attrs = {**cache_attrs(backbone, sampling, config.dtype, precision)}
    attrs["source"] = str(config.source.resolve())
    if n > 1:
        attrs["shard"] = f"{k}/{n}"  # so that `actrec merge` knows a whole set of shards
    classes = sorted({it.label for it in all_items if it.label})
    partial = PartialCache(output, attrs, backbone.dim, config.dtype)
    # labels, splits and groups are the source's to say, on every run (the manifest may have
    # changed); a file's size and modification time say whether it must be extracted again
    metadata = {it.id: (it.label, it.split, it.group) for it in all_items}
    stats = {it.id: source_stat(it) for it in items}

    stored = stored_records(output, partial.fingerprint) if output.exists() else {}
    plan = _Plan(items, stored, stats, metadata)
    if stored and not plan.todo and not plan.relabelled and not partial.dir.exists():
        return _summary(
            output, started, extracted=0, frames=0, already=len(items), nothing=True,
            gone=len(plan.gone),
        )  # fmt: skip
    partial.start()  # refuses other settings, and a second run into the same output
    try:
        plan = _Plan(items, {**stored, **partial.records()}, stats, metadata)
        todo = plan.todo

        extracted = frames = 0
        # longest first (a file's size stands for its length), so that no worker is left with a
        # long video when the others are done; the cache is sorted by id whatever the order
        ordered = sorted(todo, key=lambda it: -stats[it.id][0])
        with SegmentWriter(partial) as writer:
            for batch in stream_features(
                ordered,
                backbone,
                sampling,
                device=device,
                precision=precision,
                batch_size=config.batch_size,
                workers=min(config.resolved_workers(), len(todo)),
                dtype=config.dtype,
                progress=config.progress,
            ):
                for v in batch.videos:
                    v.source_size, v.source_mtime_ns = stats[v.id]
                writer.add(batch.videos, batch.failed)
                extracted += len(batch.videos)
                frames += sum(len(v.features) for v in batch.videos)
        partial.finish(
            classes=classes,
            extra_inputs=[output] if output.exists() else [],
            progress=config.progress,
            metadata=metadata,
        )
    except BaseException:
        partial.discard_if_empty()
        raise
    finally:
        partial.release()
    return _summary(
        output, started, extracted, frames, already=len(items) - len(todo),
        changed=len(plan.changed), relabelled=len(plan.relabelled), gone=len(plan.gone),
    )  # fmt: skip


class _Plan:
    """What a run has to do, given what the cache and its unfinished part already record."""

    def __init__(
        self,
        items: list[Item],
        stored: dict[str, Stored],
        stats: dict[str, tuple[int, int]],
        metadata: dict[str, tuple[str, str, str]],
    ) -> None:
        self.changed = [
            it.id
            for it in items
            if it.id in stored
            and stored[it.id].source_size >= 0  # recorded (older caches did not)
            and stats[it.id][0] >= 0  # and still there to compare
            and (stored[it.id].source_size, stored[it.id].source_mtime_ns) != stats[it.id]
        ]
        changed = set(self.changed)
        self.todo = [it for it in items if it.id not in stored or it.id in changed]
        self.relabelled = [
            vid
            for vid, old in stored.items()
            if vid in metadata and (old.label, old.split, old.group) != metadata[vid]
        ]
        self.gone = [vid for vid in stored if vid not in metadata]


def _summary(
    output: Path, started: float, extracted: int, frames: int, already: int, nothing: bool = False,
    changed: int = 0, relabelled: int = 0, gone: int = 0,
) -> ExtractResult:  # fmt: skip
    with open_cache(output) as c:
        return ExtractResult(
            output=output,
            videos=len(c),
            frames=c.total_frames,
            dim=c.dim,
            extracted=extracted,
            extracted_frames=frames,
            already=already,
            failed=dict(c.index.failed),
            seconds=time.perf_counter() - started,
            nothing_to_do=nothing,
            changed=changed,
            relabelled=relabelled,
            gone=gone,
        )


def _device(name: str) -> torch.device:
    """`auto` under torchrun or srun takes this process's own GPU (LOCAL_RANK, SLURM_LOCALID)."""
    device = resolve_device(name)
    local = local_rank()  # a value that is not a GPU number is one line, on any machine
    if name == "auto" and device.type == "cuda" and local is not None:
        device = resolve_device(f"cuda:{local}")
    return device


def _check_name(output: Path) -> None:
    """The longest name made from the output's (its folder of finished videos) must be legal:
    else the run would fail only when it first writes, in the middle of the work."""
    try:
        limit = os.pathconf(output.parent if output.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    longest = f"{output.name}.partial"
    if len(longest.encode()) > limit:
        raise ActrecError(
            f"-o {output}: a name of {len(output.name.encode())} bytes; the file system allows "
            f"{limit}, and the run needs {len('.partial')} more for {output.name[:12]}....partial: "
            f"choose a name of at most {limit - len('.partial')} bytes"
        )


def _check_writable(output: Path) -> None:
    if output.is_dir():
        raise ActrecError(f"-o {output}: a folder; give the cache file to write, e.g. feats.h5")
    probe = output.with_name(f".actrec-probe{os.getpid()}")  # short: any legal -o fits
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ActrecError(f"-o {output}: cannot write there ({e.strerror or e})") from None


# -- new videos with a cache's settings -----------------------------------------------------------


def features_for_videos(
    paths: Sequence[str | os.PathLike],
    cache_attrs: dict[str, Any],
    *,
    device: str = "auto",
    weights: str | os.PathLike | None = None,
    backbone: str | os.PathLike | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    failures: dict[str, str] | None = None,
) -> list[Video]:
    """Features of new videos (or frame folders) exactly as the cache with these root
    attributes was made: same backbone, weights, preprocessing, sampling, precision and dtype.

    Where the cache's weights (or backbone) came from a file, that file is ``weights``
    (``backbone``) or, by default, the path the cache recorded; its sha256 must match. Returns
    one :class:`Video` per path, in order, with ``id`` the path as given; raises
    :class:`ActrecError` naming any video that cannot be read, unless ``failures`` is a dict:
    then each such video is left out of the result and recorded there (path -> why).
    """
    a = cache_attrs
    for key in ("backbone", "weights", "resize", "mean", "std", "sampling", "precision"):
        if key not in a:
            raise ActrecError(f"the cache has no {key!r} attribute: not made by actrec extract")
    name = str(a["backbone"])
    if " sha256:" in name:  # a model file
        name = _recorded_file(backbone, a.get("backbone_path"), name.rsplit(":", 1)[1], "backbone")
    chosen = str(a["weights"])
    if chosen.startswith("sha256:"):
        chosen = _recorded_file(weights, a.get("weights_path"), chosen[7:], "weights")
    elif is_file_backbone(name):
        chosen = "none"
    dev = _device(device)
    net = load_backbone(
        name,
        chosen,
        mean=tuple(a["mean"]),
        std=tuple(a["std"]),
        resize=Resize.parse(str(a["resize"])),
        device=dev,
    )
    if net.attrs["weights"] != a["weights"] and not is_file_backbone(name):
        raise ActrecError(f"weights {net.attrs['weights']} differ from the cache's {a['weights']}")
    items = [Item(str(p), Path(p), "frames" if Path(p).is_dir() else "video") for p in paths]
    n_workers = min(len(items), workers if workers is not None else 2)
    found: dict[str, Video] = {}
    failed: dict[str, str] = {}
    for batch in stream_features(
        items,
        net,
        Sampling.parse(str(a["sampling"])),
        device=dev,
        precision=str(a["precision"]),
        batch_size=batch_size,
        workers=n_workers,
        dtype=str(a.get("dtype", "float16")),
    ):
        found.update((v.id, v) for v in batch.videos)
        failed.update(batch.failed)
    if failures is not None:
        failures.update((it.id, failed[it.id]) for it in items if it.id in failed)
    elif failed:
        vid, why = next(iter(failed.items()))
        raise ActrecError(f"{vid}: {why}")
    return [found[it.id] for it in items if it.id in found]


def _recorded_file(given, recorded, digest: str, what: str) -> str:
    path = Path(given or recorded or "")
    if not str(path) or not path.is_file():
        raise ActrecError(
            f"the cache's {what} came from a file ({recorded or 'path not recorded'}) that is "
            f"not there: pass it as {what}=FILE"
        )
    if sha256(path) != digest:
        raise ActrecError(f"{path}: not the {what} file the cache was made with (sha256 differs)")
    return str(path)
