"""Backbones: a torchvision classification model by name, a timm model (``timm:NAME``, in
timm_backbones.py), or a frozen extractor saved as a file, turned into a module that maps
normalised images (N, 3, H, W) to embeddings (N, D), together with the preprocessing its weights
expect.

The embedding is the input of the model's last ``nn.Linear`` (its classifier), found generically,
so any torchvision classifier serves without knowing its attribute names. Preprocessing (resize,
crop, mean, std, interpolation) comes from the weights' own ``transforms()``; with ``--weights
none`` or a file, from the model's DEFAULT weights, whose metadata needs no download.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from actrec.common.errors import ActrecError
from actrec.extract.build import NONE_SEED, Built, sha256
from actrec.extract.decode import Resize
from actrec.extract.loaderrors import load_reason, model_file_reason
from actrec.extract.timm_backbones import (
    describe_timm,
    is_timm_name,
    matches,
    timm_backbone,
    timm_dim,
)

FILE_SUFFIXES = (".pt2", ".pt", ".pth", ".ts")


@dataclass
class Backbone:
    """A frozen embedding model and the preprocessing its weights expect."""

    module: nn.Module  # (N, 3, H, W) normalised float -> (N, D)
    dim: int
    resize: Resize
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    attrs: dict[str, Any] = field(default_factory=dict)  # backbone, weights, and their files

    @property
    def input_size(self) -> tuple[int, int]:
        return self.resize.height, self.resize.width


def list_backbones() -> list[str]:
    """The torchvision classification models, by name."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_backbones(pattern: str | None = None) -> list[tuple[str, tuple[int, int]]]:
    """(name, default input size (H, W)) of what ``--backbone`` takes by name: torchvision's
    classification models, then ``timm:`` models with pretrained weights where timm is
    installed. ``pattern`` is a substring, or a shell wildcard (``timm:*dinov2*``)."""
    out = []
    for name in list_backbones():
        if pattern is None or matches(name, pattern):
            crop = torchvision.models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
            out.append((name, (crop, crop)))
    with contextlib.suppress(ActrecError):  # timm is optional
        out += describe_timm(pattern)
    return out


def embedding_dim(name: str) -> int:
    """The embedding size of a backbone name, from the model built on the meta device (no
    memory, no weights, no download): a second or so for the largest models."""
    if is_timm_name(name):
        return timm_dim(name)
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].in_features)


def is_file_backbone(name: str) -> bool:
    return not is_timm_name(name) and (name.endswith(FILE_SUFFIXES) or Path(name).is_file())


def load_backbone(
    name: str,
    weights: str = "DEFAULT",
    *,
    input_size: tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    resize: Resize | None = None,
    device: torch.device | str = "cpu",
) -> Backbone:
    """Build a frozen backbone in eval mode on ``device``, channels_last.

    ``name`` is a torchvision model name, ``timm:NAME`` or a ``.pt2`` (torch.export) / ``.pt``
    (TorchScript) file; ``weights`` is ``DEFAULT``, a weights name such as
    ``ResNet18_Weights.IMAGENET1K_V1``, ``none`` or a state-dict file (not for model files). ``input_size`` (H, W), ``mean`` and
    ``std`` override the weights' preprocessing (a file backbone needs all three); ``resize``
    overrides the resize entirely (to rebuild a cache's preprocessing exactly).
    """
    device = torch.device(device)
    if is_timm_name(name):
        built = timm_backbone(name, weights, input_size, mean, std, resize)
    elif is_file_backbone(name):
        built = _file_backbone(name, weights, input_size, mean, std, resize)
    else:
        built = _torchvision_backbone(name, weights, input_size, mean, std, resize)
    module = _freeze(built.module, device)
    dim = _probe_dim(module, built.resize, device, name)
    mean, std = _triple(built.mean, "mean"), _triple(built.std, "std")
    return Backbone(module, dim, built.resize, mean, std, built.attrs)


# -- torchvision models ---------------------------------------------------------------------------


def _torchvision_backbone(name, weights, input_size, mean, std, resize) -> Built:
    models = torchvision.models
    if name not in list_backbones():
        raise ActrecError(
            f"unknown backbone {name!r}: use a torchvision classification model "
            "(resnet18, resnet50, efficientnet_b0, convnext_tiny, vit_b_16, ...), timm:NAME, "
            "or a .pt2/.pt feature-extractor file (`actrec backbones` lists the names)"
        )
    default = models.get_model_weights(name).DEFAULT
    attrs: dict[str, Any] = {"backbone": name, "weights_path": ""}
    if weights.lower() == "none" or Path(weights).is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NONE_SEED)
            model = models.get_model(name, weights=None)
        preset = default
        if weights.lower() == "none":
            _drop_classifier(model)
            attrs["weights"] = "none"
        else:
            path = Path(weights).resolve()
            _load_state_dict(model, path)
            attrs.update(weights=f"sha256:{sha256(path)}", weights_path=str(path))
    else:
        preset = _named_weights(name, weights)
        model = _download(name, preset)
        _drop_classifier(model)
        attrs["weights"] = str(preset)
    transforms = preset.transforms()
    crop = transforms.crop_size[0]
    size = (crop, crop) if input_size is None else input_size
    if resize is None:
        shorter = round(transforms.resize_size[0] * min(size) / crop)
        resize = Resize(shorter, size[0], size[1], transforms.interpolation.value)
    return Built(
        model,
        attrs,
        resize,
        tuple(mean) if mean else tuple(transforms.mean),
        tuple(std) if std else tuple(transforms.std),
    )


def _named_weights(name: str, weights: str) -> Any:
    models = torchvision.models
    enum = models.get_model_weights(name)
    try:
        if weights.upper() == "DEFAULT":
            return enum.DEFAULT
        if "." not in weights:  # IMAGENET1K_V1 alone
            return enum[weights]
        chosen = models.get_weight(weights)
    except (KeyError, ValueError, AttributeError):
        hint = ", ".join(str(w) for w in enum)
        raise ActrecError(
            f"--weights {weights}: not a weights name, file or 'none' (for {name}: DEFAULT, {hint})"
        ) from None
    if type(chosen) is not enum:
        raise ActrecError(
            f"--weights {weights}: weights of another model; {name} takes {enum.__name__}"
        )
    return chosen


def cached_weights_file(weights: Any) -> Path:
    """Where torchvision's download cache (TORCH_HOME) keeps a weights enum member's file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _download(name: str, weights: Any) -> nn.Module:
    """The model with named weights, from torchvision's cache (TORCH_HOME) or the internet."""
    try:
        return torchvision.models.get_model(name, weights=weights)
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, timeouts, a corrupt download
        cached = cached_weights_file(weights)
        reason = getattr(e, "reason", None) or e
        raise ActrecError(
            f"--weights {weights}: not in torchvision's cache ({cached}) and cannot be downloaded "
            f"({reason}); without internet, fetch {weights.url} elsewhere and pass the file: "
            "--weights FILE"
        ) from None


def _drop_classifier(model: nn.Module) -> str:
    """Replace the last nn.Linear (the classifier) by Identity; returns its name."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ActrecError(
            f"{type(model).__name__} has no linear classifier to take the embedding before; "
            "save a feature extractor with torch.export and pass it as --backbone FILE.pt2"
        )
    last = linears[-1]
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return last


def _load_state_dict(model: nn.Module, path: Path) -> None:
    """A state dict (or a checkpoint holding one) into the model; the classifier may differ."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle errors, zip errors, a non-torch file
        raise ActrecError(f"--weights {path}: {load_reason(path, e)}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ActrecError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    classifier = _drop_classifier(model)
    # the classifier is dropped anyway, so fine-tuned checkpoints with other classes load too
    state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise ActrecError(
            f"--weights {path}: does not fit {type(model).__name__} ({first})"
        ) from None
    if missing or unexpected:
        detail = f"missing {len(missing)} keys (e.g. {missing[:2]})" if missing else ""
        if unexpected:
            detail += (
                f"{'; ' if detail else ''}unexpected {len(unexpected)} (e.g. {unexpected[:2]})"
            )
        raise ActrecError(f"--weights {path}: does not fit {type(model).__name__}: {detail}")


# -- frozen extractor files -----------------------------------------------------------------------


def _file_backbone(name, weights, input_size, mean, std, resize) -> Built:
    path = Path(name)
    if not path.is_file():
        raise ActrecError(f"--backbone {name}: no such file")
    if (resize is None and input_size is None) or mean is None or std is None:
        raise ActrecError(
            f"--backbone {path.name}: a model file needs --input-size, --mean and --std "
            "(e.g. --input-size 224 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225)"
        )
    if weights.lower() not in ("none", "default"):
        raise ActrecError("--weights applies to torchvision models; a model file holds its own")
    kind = "torch.export (.pt2)" if path.suffix == ".pt2" else "TorchScript (.pt)"
    if not zipfile.is_zipfile(path):  # both are zip archives; torch.export logs a traceback
        reason = model_file_reason(path, None)
        raise ActrecError(f"--backbone {path}: not a readable {kind} model ({reason})")
    try:
        if path.suffix == ".pt2":
            data = path.read_bytes()  # checked and loaded from memory: no swap in between
            check_no_code(path, data)
            module = torch.export.load(io.BytesIO(data)).module()
        else:
            # TorchScript's own unpickler builds TorchScript types only: a pickle naming a
            # Python function (os.system) is an unknown type to it, and no Python code runs
            with warnings.catch_warnings():  # docs/design.md supports TorchScript on purpose
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
    except ActrecError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the loaders raise for a bad file
        reason = model_file_reason(path, e)
        raise ActrecError(f"--backbone {path}: not a readable {kind} model ({reason})") from None
    if resize is None:
        h, w = input_size
        resize = Resize(min(h, w), h, w, "bilinear")
    digest = sha256(path)
    attrs = {
        "backbone": f"{path.name} sha256:{digest}",
        "backbone_path": str(path.resolve()),
        "weights": "in the model file",
        "weights_path": "",
    }
    return Built(module, attrs, resize, mean, std)


# what torch.export.load unpickles besides tensors' raw bytes: files saved with torch.save
# (sample inputs, legacy weights and constants), and script or opaque objects among constants
_PICKLED_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle")
_OBJECT_PREFIXES = ("custom_obj", "opaque_obj")


def check_no_code(path: Path, data: bytes) -> None:
    """Refuse a torch.export archive whose loading would run code of the file's.

    torch.export.load unpickles some members with ``weights_only=False`` (sample inputs,
    payloads marked ``use_pickle``, script and opaque objects), and a pickle can call any
    function. Each such member must load under ``weights_only=True`` (tensors and containers
    only); objects are refused outright. A plain exported module holds none but its sample
    inputs, which pass.
    """
    import json

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        pickled = {n for n in names if n.lower().endswith(_PICKLED_SUFFIXES)}
        for name in names:
            parts = name.split("/")
            if "constants" in parts and parts[-1].startswith(_OBJECT_PREFIXES):
                raise ActrecError(
                    f"--backbone {path}: holds a pickled object ({name}), which loading would "
                    "run as code; actrec loads only tensors from a model file: export the "
                    "model without script objects"
                )
            if name.endswith(".json") and "/data/" in name:  # payload configs
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    config = json.loads(archive.read(name)).get("config", {})
                    folder = name.rsplit("/", 1)[0]
                    pickled |= {f"{folder}/{meta.get('path_name')}" for meta in config.values()
                                if isinstance(meta, dict) and meta.get("use_pickle")}  # fmt: skip
        for name in sorted(pickled & set(names)):
            try:
                torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - the safe unpickler refused: code, or garbage
                first = " ".join(str(e).split())
                found = re.search(r"(?:unsupported|Unsupported global:) (GLOBAL [\w.]+)", first)
                what = found.group(1) if found else "not tensors"
                raise ActrecError(
                    f"--backbone {path}: member {name} is a pickle that loads more than tensors "
                    f"({what}); loading it would run the file's code, so actrec refuses it: "
                    "re-export the model from code you trust"
                ) from None
    except (zipfile.BadZipFile, OSError, RuntimeError) as e:
        raise ActrecError(f"--backbone {path}: not a readable torch.export archive ({e})") from None


# -- common ---------------------------------------------------------------------------------------


def _freeze(module: nn.Module, device: torch.device) -> nn.Module:
    # exported programs are already in inference form and refuse .eval()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    module = _fold_batchnorm(module)
    module = module.to(device)
    with contextlib.suppress(TypeError, RuntimeError):  # TorchScript keeps its own layout
        module = module.to(memory_format=torch.channels_last)
    return module


def _fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold each frozen BatchNorm into the convolution before it (about 12% faster on a CPU).

    Only for plain modules that torch.fx can trace and that have a BatchNorm to fold; anything
    else (files, models with data-dependent control flow) is returned as it is.
    """
    if isinstance(module, torch.jit.ScriptModule) or not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()
    ):
        return module
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module)
    except Exception:  # noqa: BLE001 - not traceable: run it unfused, as before
        return module


def _probe_dim(module: nn.Module, resize: Resize, device: torch.device, name: str) -> int:
    """The embedding size, from a forward pass of two blank images (a batch dimension check)."""
    x = torch.zeros(2, 3, resize.height, resize.width, device=device)
    try:
        with torch.inference_mode():
            out = module(x.contiguous(memory_format=torch.channels_last))
    except Exception as e:  # noqa: BLE001 - a model that rejects the input size or batch
        raise ActrecError(
            f"--backbone {name}: a forward pass on a (2, 3, {resize.height}, {resize.width}) "
            f"batch failed ({str(e).splitlines()[0][:200]}); check --input-size, and export "
            "files with a dynamic batch dimension"
        ) from None
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim != 2 or out.shape[0] != 2:
        raise ActrecError(
            f"--backbone {name}: returns shape {tuple(out.shape)} for a batch of 2; it must "
            "return (N, D) embeddings"
        )
    return int(out.shape[1])


def _triple(values: tuple[float, ...], what: str) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ActrecError(f"--{what} takes 3 numbers (R G B), got {len(values)}")
    return float(values[0]), float(values[1]), float(values[2])
