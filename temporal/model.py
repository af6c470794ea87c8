"""A head with its input normalisation, its checkpoint, and predictions on new sequences.

:class:`TemporalModel` takes raw cached features: the training-set mean and std (and the
neighbouring-frame differences of ``--delta``) travel inside it, so a reloaded run needs nothing
else to predict. ``model.pt`` holds the weights, the head's own arguments, the statistics, the
classes and the whole training config: a run rebuilds itself from its folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from actrec import __version__
from actrec.common.device import resolve_device
from actrec.common.errors import ActrecError
from actrec.common.validate import CONFIG_KEYS, check_features, read_checkpoint, read_json
from actrec.temporal.heads import Head, create_head, pool_time

NORMS = ("dataset", "sequence", "both")


def input_dim(dim: int, norm: str, delta: bool) -> int:
    """The head's input width for ``dim``-D features under ``norm`` and ``delta``."""
    views = 2 if norm == "both" else 1
    return dim * views * (2 if delta else 1)


class TemporalModel(nn.Module):
    """The input stage, then the head: (B, T, D), (B, T) -> (B, C).

    Features are normalised with the training set's statistics (``norm="dataset"``), by each
    sequence's own (``"sequence"``), or both side by side (``"both"``); long sequences are
    averaged down to ``max_len`` steps (for series, by the head after its first filters);
    ``delta`` adds the differences between neighbouring steps of each view.
    """

    def __init__(
        self, head: Head, mean: torch.Tensor, std: torch.Tensor, delta: bool, max_len: int = 0,
        norm: str = "dataset",
    ) -> None:  # fmt: skip
        super().__init__()
        assert norm in NORMS, f"norm must be one of {NORMS}, got {norm!r}"
        self.head = head
        self.delta = delta
        self.max_len = max_len
        self.norm = norm
        self.register_buffer("mean", mean.float().clone())  # (D,)
        self.register_buffer("std", std.float().clone())  # (D,)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()  # (B, T, 1)
        x = (x.float() - self.mean) / self.std * m  # (B, T, D) float32 whatever the cache's dtype
        # a head that filters series at full length averages them itself, after its filters
        if not getattr(self.head, "pools_time", False):
            x, mask = pool_time(x, mask, self.max_len)
        views = []
        if self.norm in ("dataset", "both"):
            views.append(x)
        if self.norm in ("sequence", "both"):
            views.append(standardise_sequences(x, mask))
        if self.delta:
            views += [differences(v, mask) for v in views]
        return self.head(torch.cat(views, -1) if len(views) > 1 else views[0], mask)  # (B, C)


def standardise_sequences(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence centred on its own mean frame and scaled by its own spread: (B, T, D).

    The spread is one number per sequence (the root-mean-square distance of its frames from
    their mean), so the relative sizes of the dimensions survive. What is left does not depend
    on a sequence's level or scale: the shape of a signal whatever its amplitude (series in the
    archive's sets are compared z-normalised for this reason), and how a video moves whatever
    its scene. Padding stays 0.
    """
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    n = m.sum(1, keepdim=True).clamp_min(1)  # (B, 1, 1)
    centred = (x - (x * m).sum(1, keepdim=True) / n) * m  # (B, T, D)
    spread = (centred.pow(2).sum((1, 2), keepdim=True) / (n * x.shape[-1])).sqrt()  # (B, 1, 1)
    return centred / spread.clamp_min(1e-6)


def differences(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x[t] - x[t-1] where both frames are real; the first frame and padding get 0: (B, T, D)."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    d = (x[:, 1:] - x[:, :-1]) * m[:, 1:] * m[:, :-1]  # (B, T-1, D)
    return torch.cat([torch.zeros_like(x[:, :1]), d], 1)


def build_model(
    head: str, head_kwargs: dict, mean: torch.Tensor, std: torch.Tensor, delta: bool,
    max_len: int = 0, norm: str = "dataset",
) -> TemporalModel:  # fmt: skip
    # max_len is the model's option, not one of the head's own: a head over series uses it too
    head_module = create_head(head, **head_kwargs, max_len=max_len)
    return TemporalModel(head_module, mean, std, delta, max_len, norm)


def save_checkpoint(path: Path, model: TemporalModel, meta: dict) -> None:
    """``model.pt``: weights plus ``meta`` (head, head_kwargs, classes, delta, config, ...)."""
    body = {
        **meta,
        "state_dict": model.state_dict(),
        "mean": model.mean.clone(),
        "std": model.std.clone(),
        "delta": model.delta,
        "max_len": model.max_len,
        "norm": model.norm,
        "head_revision": getattr(model.head, "revision", 1),
        "actrec_version": __version__,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(body, tmp)
    os.replace(tmp, path)


@dataclass
class Run:
    """A trained run loaded from its folder; ``model`` is in eval mode on ``device``."""

    dir: Path
    model: TemporalModel
    classes: list[str]
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    config: dict
    in_dim: int
    device: torch.device


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Rebuild a run's model from ``model.pt`` (and its config from ``config.json``)."""
    run_dir = Path(run_dir)
    path = run_dir / "model.pt"
    ckpt = read_checkpoint(path)  # any damage is one line; tensors only, no code of the file's
    try:
        model = build_model(
            ckpt["head"], ckpt["head_kwargs"], ckpt["mean"], ckpt["std"], ckpt["delta"],
            # runs from before these options never pooled and normalised by the training set only
            ckpt.get("max_len", 0), ckpt.get("norm", "dataset"),
        )  # fmt: skip
        model.load_state_dict(ckpt["state_dict"])
        saved, revision = ckpt.get("head_revision", 1), getattr(model.head, "revision", 1)
        if saved != revision:  # the same weights, another computation
            raise ValueError(f"head revision {saved}, not {revision}")
    except (RuntimeError, TypeError, KeyError, ValueError) as e:  # the head's layers changed
        raise ActrecError(
            f"{path}: its {ckpt['head']!r} weights do not fit this version's {ckpt['head']!r} head "
            f"(made by actrec {ckpt.get('actrec_version', 'before 0.2')}); retrain it: the run's "
            "config.json holds every option `actrec train` needs"
        ) from e
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model.to(device).eval()
    config_file = run_dir / "config.json"
    config = (
        read_json(config_file, CONFIG_KEYS) if config_file.is_file() else ckpt.get("config", {})
    )
    return Run(
        dir=run_dir, model=model, classes=list(ckpt["classes"]), mean=ckpt["mean"],
        std=ckpt["std"], config=config, in_dim=int(ckpt["mean"].shape[0]), device=device,
    )  # fmt: skip


def _check_features(run: Run, features: np.ndarray) -> None:
    check_features(np.asarray(features), f"features for run {run.dir}", dim=run.in_dim)


@torch.inference_mode()
def predict_proba(run: Run, features: np.ndarray) -> np.ndarray:
    """Class probabilities (C,) for one whole sequence of per-frame features (T, D)."""
    _check_features(run, features)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=run.device)[
        None
    ]  # (1, T, D)
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=run.device)  # (1, T)
    return torch.softmax(run.model(x, mask), -1)[0].cpu().numpy()  # (C,)


@torch.inference_mode()
def predict_timeline(
    run: Run,
    features: np.ndarray,
    timestamps: np.ndarray,
    window: int | None = None,
    stride: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities over sliding windows: times (W,) at each window's centre, probs (W, C).

    ``window`` defaults to the run's ``clip_len`` (32 frames where it trained on whole
    sequences), ``stride`` to a quarter of the window. The last window always ends at the last
    frame; a sequence shorter than the window is one window.
    """
    _check_features(run, features)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    t = len(features)
    assert timestamps.shape == (t,), f"timestamps must be ({t},), got {timestamps.shape}"
    window = int(window or run.config.get("clip_len") or 32)
    window = min(max(window, 1), t)
    stride = max(1, int(stride or window // 4))
    starts = list(range(0, t - window + 1, stride))
    if starts[-1] != t - window:
        starts.append(t - window)
    first = torch.as_tensor(starts)  # (W,)
    rows = first.unsqueeze(1) + torch.arange(window).unsqueeze(0)  # (W, window)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)[rows].to(
        run.device
    )  # (W, window, D)
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=run.device)  # (W, window)
    probs = torch.softmax(run.model(x, mask), -1).cpu().numpy()  # (W, C)
    times = (timestamps[first.numpy()] + timestamps[first.numpy() + window - 1]) / 2  # (W,)
    return times, probs
