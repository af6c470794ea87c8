"""timm models as backbones: ``--backbone timm:NAME`` (DINOv2, CLIP, SigLIP, EVA, ConvNeXt, ...).

The embedding is timm's own pooled pre-logits feature (the model built with ``num_classes=0``:
class token, average or attention pooling, whichever that model uses, recorded as `pooling`).
Preprocessing comes from the model's pretrained config (input size, interpolation, crop
fraction, crop mode, mean, std), turned into the decoding workers' :class:`Resize` with timm's
own rules, so that frames reach the model as timm's eval transforms would give them.

timm is an optional dependency (``pip install 'actrec[timm]'``): it is imported only here, and
only when a ``timm:`` name is used.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from actrec.common.errors import ActrecError
from actrec.extract.build import NONE_SEED, Built, sha256
from actrec.extract.decode import Resize
from actrec.extract.loaderrors import load_reason

PREFIX = "timm:"
INSTALL = "pip install 'actrec[timm]' (or pip install timm)"
DEFAULT_CROP_PCT = 0.875  # what timm assumes where a config gives no crop fraction


def is_timm_name(name: str) -> bool:
    return str(name).startswith(PREFIX)


def import_timm(context: str = "timm:NAME backbones") -> Any:
    """The timm module, or one line that says what to install."""
    try:
        import timm
    except ImportError:
        raise ActrecError(f"{context}: timm is not installed: {INSTALL}") from None
    return timm


def timm_backbone(
    name: str,
    weights: str,
    input_size: tuple[int, int] | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    resize: Resize | None,
) -> Built:
    """The model, its attributes and its preprocessing for ``timm:NAME``, as ``load_backbone``
    needs them.

    ``weights``: ``DEFAULT`` (timm's pretrained weights, through the Hugging Face cache), the
    source a cache recorded for them (``hf-hub:...``), ``none``, or a ``.safetensors``/``.pth``
    state-dict file. ``input_size`` or ``resize`` (a cache's own) may change the input size:
    ViTs are then built for that size, their position embeddings resized by timm.
    """
    timm = import_timm(f"--backbone {name}")
    cfg = pretrained_cfg(name)
    canonical = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    default_size = (int(cfg.input_size[1]), int(cfg.input_size[2]))
    if resize is not None:
        size = (resize.height, resize.width)
    else:
        size = tuple(input_size) if input_size else default_size
    kwargs: dict[str, Any] = {"num_classes": 0}  # no classifier: the pooled pre-logits
    if size != default_size and cfg.fixed_input_size:
        kwargs["img_size"] = size  # position embeddings are made (or resampled) for this size

    attrs: dict[str, Any] = {"backbone": PREFIX + canonical, "weights_path": ""}
    source = weights_source(cfg)
    if weights.lower() == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NONE_SEED)
            model = _create(timm, name, canonical, pretrained=False, **kwargs)
        attrs["weights"] = "none"
    elif Path(weights).is_file():
        path = Path(weights).resolve()
        if path.suffix not in (".safetensors", ".pth", ".pt", ".bin"):
            raise ActrecError(f"--weights {path}: give a .safetensors or .pth state-dict file")
        try:
            # timm's own loader: reads both formats, unwraps checkpoints, drops a classifier
            # and resamples ViT position embeddings to the size asked for
            with _load_report() as report:
                model = _create(
                    timm, name, canonical, pretrained=True,
                    pretrained_cfg_overlay={"file": str(path)}, **kwargs,
                )  # fmt: skip
        except ActrecError:
            raise
        except Exception as e:  # noqa: BLE001 - safetensors, pickle and size-mismatch errors
            raise ActrecError(
                f"--weights {path}: does not fit timm:{canonical} ("
                f"{_first_line(e) if path.suffix == '.safetensors' else load_reason(path, e)})"
            ) from None
        if report:  # timm loads non-strictly once it drops a classifier: keys must still match
            raise ActrecError(f"--weights {path}: does not fit timm:{canonical}: {report[0]}")
        attrs.update(weights=f"sha256:{sha256(path)}", weights_path=str(path))
    elif weights.upper() == "DEFAULT" or weights == source:
        if not source:
            raise ActrecError(
                f"timm:{canonical} has no pretrained weights in timm: pass --weights none or a "
                "state-dict file (--weights FILE)"
            )
        model = _pretrained(timm, name, canonical, cfg, kwargs)
        attrs["weights"] = source
    else:
        raise ActrecError(
            f"--weights {weights}: for timm models give DEFAULT (timm's pretrained weights), "
            "none, or a .safetensors/.pth state-dict file"
        )

    if resize is None:
        resize = timm_resize(cfg, size)
    attrs.update(
        pooling=pooling(model),
        crop_pct=float(cfg.crop_pct or DEFAULT_CROP_PCT),
        crop_mode=str(cfg.crop_mode or "center"),
        timm_version=str(timm.__version__),
    )
    return Built(
        model,
        attrs,
        resize,
        tuple(mean) if mean else tuple(cfg.mean),
        tuple(std) if std else tuple(cfg.std),
    )


def pretrained_cfg(name: str) -> Any:
    """timm's PretrainedCfg for ``timm:ARCH[.TAG]`` (the default tag where none is given);
    unknown names and tags give one line with the nearest names."""
    timm = import_timm(f"--backbone {name}")
    from timm.models import get_pretrained_cfg, split_model_name_tag

    model_name = name.removeprefix(PREFIX)
    arch, tag = split_model_name_tag(model_name)
    if not timm.is_model(arch):
        near = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.8)
        hint = f"did you mean {', '.join(PREFIX + n for n in near)}? " if near else ""
        raise ActrecError(
            f"--backbone {name}: timm has no model {arch!r}; {hint}"
            "`actrec backbones PATTERN` lists the names"
        )
    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError:
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        raise ActrecError(
            f"--backbone {name}: {arch} has no pretrained tag {tag!r} (it has: "
            f"{', '.join(tags) or 'none'})"
        ) from None
    if cfg is None:  # an architecture without registered weights: its default config
        with torch.device("meta"):
            cfg = timm.models.PretrainedCfg(**timm.create_model(arch).pretrained_cfg)
    return cfg


def weights_source(cfg: Any) -> str:
    """Where timm takes the pretrained weights from, as the cache records them."""
    if cfg.hf_hub_id:
        return f"hf-hub:{cfg.hf_hub_id}"
    return f"url:{cfg.url}" if cfg.url else ""


def timm_resize(cfg: Any, size: tuple[int, int]) -> Resize:
    """timm's eval preprocessing for an input of ``size`` (H, W): scale to size / crop_pct
    (shorter side, or both sides in `squash` mode), then a centre crop."""
    crop_pct = cfg.crop_pct or DEFAULT_CROP_PCT
    h, w = size
    scaled = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    interpolation = cfg.interpolation or "bicubic"
    if interpolation not in ("bilinear", "bicubic", "nearest", "lanczos"):
        interpolation = "bicubic"  # e.g. `random`, which only training transforms use
    mode = cfg.crop_mode or "center"
    if mode == "squash":
        return Resize(min(scaled), h, w, interpolation, squash=scaled)
    if mode != "center":
        raise ActrecError(
            f"timm:{cfg.architecture}: crop mode {mode!r} is not supported by the decoders; "
            "save the model as a feature extractor and pass --backbone FILE.pt2"
        )
    # a non-square input keeps the aspect ratio: the shorter side to the smaller scaled size
    return Resize(min(scaled), h, w, interpolation)


def pooling(model: nn.Module) -> str:
    """How the model pools its features into the embedding (`token`, `avg`, `map`, ...)."""
    pool = getattr(model, "global_pool", None)
    if pool is None:
        pool = getattr(getattr(model, "head", None), "global_pool", None)
    if isinstance(pool, str):
        return pool
    return str(getattr(pool, "pool_type", "") or "")


def describe_timm(pattern: str | None = None) -> list[tuple[str, tuple[int, int]]]:
    """(``timm:NAME``, input size) for every timm model with pretrained weights."""
    timm = import_timm()
    from timm.models import get_pretrained_cfg

    out = []
    for n in timm.list_pretrained():
        if pattern is None or matches(PREFIX + n, pattern):
            size = get_pretrained_cfg(n).input_size
            out.append((PREFIX + n, (int(size[1]), int(size[2]))))
    return out


def timm_dim(name: str) -> int:
    """The embedding size of ``timm:NAME``, from the model built on the meta device (no memory,
    no weights)."""
    timm = import_timm()
    with torch.device("meta"):
        model = timm.create_model(name.removeprefix(PREFIX), pretrained=False, num_classes=0)
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def matches(name: str, pattern: str) -> bool:
    """A case-insensitive substring, or a shell wildcard where the pattern has one."""
    from fnmatch import fnmatch

    pattern, name = pattern.lower(), name.lower()
    if not any(c in pattern for c in "*?["):
        return pattern in name
    return fnmatch(name, pattern) or fnmatch(name.removeprefix(PREFIX), pattern)


def _create(timm: Any, name: str, canonical: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(canonical, **kwargs)
    except TypeError as e:
        if "img_size" in kwargs and "img_size" in str(e):
            raise ActrecError(
                f"--backbone {name}: this model is built for one input size only; leave out "
                "--input-size"
            ) from None
        raise


def _pretrained(timm: Any, name: str, canonical: str, cfg: Any, kwargs: dict) -> nn.Module:
    """The model with timm's pretrained weights, from the Hugging Face cache or the network."""
    try:
        return timm.create_model(canonical, pretrained=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - hub, network and cache errors of several libraries
        if not _is_fetch_error(e):
            raise ActrecError(f"--backbone {name}: cannot be built ({_first_line(e)})") from None
        raise ActrecError(
            f"--weights DEFAULT: timm:{canonical}'s weights are not in the Hugging Face cache "
            f"({_hub_cache()}) and cannot be downloaded ({type(e).__name__}); without internet, "
            f"fetch {_weights_url(cfg)} elsewhere and pass the file: --weights FILE "
            "(HF_HUB_OFFLINE=1 skips the network retries)"
        ) from None


@contextlib.contextmanager
def _load_report() -> Iterator[list[str]]:
    """Collects what timm's loader says about missing and unexpected keys (it only logs them),
    and keeps its log lines off the console."""
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kind, _, keys = record.getMessage().partition(" keys (")
            if kind in ("Missing", "Unexpected"):
                names = keys.split(")")[0].split(", ")
                found.append(f"{kind.lower()} {len(names)} keys (e.g. {', '.join(names[:2])})")

    logger = logging.getLogger("timm.models._builder")
    handler, level, propagate = Collect(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _is_fetch_error(e: BaseException) -> bool:
    """Missing-file and network errors (huggingface_hub, httpx, requests, urllib, sockets)."""
    module = type(e).__module__.split(".")[0]
    return isinstance(e, (OSError, ConnectionError, TimeoutError)) or module in (
        "huggingface_hub",
        "httpx",
        "httpx2",
        "httpcore",
        "requests",
        "urllib3",
    )


def _weights_url(cfg: Any) -> str:
    if cfg.hf_hub_id:
        filename = cfg.hf_hub_filename or "model.safetensors"
        return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filename}"
    return str(cfg.url)


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "huggingface_hub is not installed"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
