"""Temporal heads: a registry of small models that turn a sequence of embeddings into class scores.

As in timm, a decorator registers a constructor under a name, :func:`create_head` is the one front
door, and :func:`list_heads` feeds help texts and click choices. Every head has the same surface:

- ``forward_features(x, mask) -> (B, num_features)``: the sequence pooled into one vector;
- ``forward_head(feats) -> (B, C)``: dropout then the linear classifier;
- ``num_features``: the size of that vector; ``reset_classifier(n)``: a new classifier for n classes.

``x`` is (B, T, D) float, ``mask`` is (B, T) bool, True on real frames; every row has at least one.
Every constructor takes the same arguments (``in_dim, num_classes, hidden, layers, dropout,
bidirectional, max_len``) and ignores those that do not apply, so that the command line can pass
all of them to any head.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from actrec.common.errors import ActrecError

_HEADS: dict[str, Callable[..., Head]] = {}


def register_head(fn: Callable[..., Head]) -> Callable[..., Head]:
    """Register a head constructor under its function name; a name already taken is refused,
    so that a script's head cannot silently replace a built-in one (or another script's)."""
    name = fn.__name__
    if name in _HEADS:
        taken = _HEADS[name]
        raise ActrecError(
            f"a head named {name!r} is already registered (by {taken.__module__}."
            f"{taken.__qualname__}); give {fn.__module__}.{fn.__qualname__} another name"
        )
    _HEADS[name] = fn
    return fn


def list_heads() -> list[str]:
    """The registered head names, sorted."""
    return sorted(_HEADS)


def create_head(name: str, **kwargs) -> Head:
    """Build the head registered as ``name`` (``in_dim`` and ``num_classes`` are required)."""
    if name not in _HEADS:
        raise ActrecError(f"unknown head {name!r}: choose one of {', '.join(list_heads())}")
    fn = _HEADS[name]
    if "max_len" in kwargs and "max_len" not in inspect.signature(fn).parameters:
        kwargs.pop("max_len")  # a head registered without it leaves the averaging to the model
    return fn(**kwargs)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real frames only: (B, T, F), (B, T) -> (B, F)."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, F)


def pool_time(
    x: torch.Tensor, mask: torch.Tensor, max_len: int, dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences longer than ``max_len`` averaged over ``max_len`` equal segments of their own
    length; shorter ones unchanged. Time is ``dim``: 1 for (B, T, F), 2 for (B, F, T); the mask
    goes from (B, T) to (B, T') with T' <= max_len.

    The whole sequence stays in view at a bounded cost (TSN's segments, averaged rather than
    sampled, so that training and evaluation see the same input). ``max_len`` 0 = never.
    """
    t = x.shape[dim]
    if max_len <= 0 or t <= max_len:
        return x, mask
    lengths = mask.sum(1)  # (B,)
    out_len = lengths.clamp(max=max_len)  # (B,)
    steps = torch.arange(t, device=x.device)  # (T,)
    segment = steps.unsqueeze(0) * out_len.unsqueeze(1) // lengths.clamp_min(1).unsqueeze(1)
    segment = torch.where(mask, segment, max_len)  # (B, T); padding into a spare slot
    other = 3 - dim  # the feature axis
    shape = list(x.shape)
    shape[dim] = max_len + 1
    sums = x.new_zeros(shape).scatter_add_(dim, segment.unsqueeze(other).expand_as(x), x)
    counts = x.new_zeros(len(x), max_len + 1).scatter_add_(1, segment, mask.to(x.dtype))
    pooled = sums.narrow(dim, 0, max_len) / counts[:, :max_len].clamp_min(1).unsqueeze(other)
    return pooled, torch.arange(max_len, device=x.device).unsqueeze(0) < out_len.unsqueeze(1)


class Head(nn.Module):
    """The common surface; subclasses set ``num_features`` and implement ``forward_features``."""

    num_features: int
    # True where the head averages long sequences down itself, after looking at every frame;
    # TemporalModel then hands it the whole sequence
    pools_time: bool = False
    # raised when what a head computes changes but its weights keep their names and shapes: a
    # run saved under another revision would load without complaint and predict something else
    revision: int = 1

    def __init__(self, num_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.num_features = num_features
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(feats))  # (B, C)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 3 and mask.shape == x.shape[:2], (
            f"expected x (B, T, D) and mask (B, T), got {tuple(x.shape)} and {tuple(mask.shape)}"
        )
        return self.forward_head(self.forward_features(x, mask))


_EMBEDDING_MIN_DIM = 32  # inputs this wide are embeddings: LayerNorm, similarity channels
SERIES_KERNEL = 7  # the full-resolution convolution that narrower inputs (series) start with
LAGS = (1, 2, 4)  # the similarity channels: each frame against the frame 1, 2 and 4 steps before


class InputProjection(nn.Module):
    """Per frame, a learned projection to ``hidden`` channels; sequences longer than ``max_len``
    averaged down to that many steps: (B, T, in_dim), (B, T) -> (B, T', hidden), (B, T').

    Embeddings (``in_dim`` >= 32) arrive averaged (TemporalModel averages them before it takes
    differences, so that ``--delta`` compares segments) and are projected: a linear layer, a
    LayerNorm, and, as the last ``len(LAGS)`` channels, the cosine similarities of each frame
    with earlier ones. Embeddings are 512- to 2048-D and sets are small: projecting down first
    keeps the recurrent/convolutional part small, which is what lets these heads generalise.

    The similarity channels say how fast the sequence changes whatever it shows (the temporal
    self-similarity RepNet counts repetitions with). A learned projection fitted on a few scenes
    follows the directions those scenes change in, and misses change in any other direction on
    new footage; on the real-footage order task they raised the default head from 0.65 to 0.99
    (docs/defaults.md). A 1-D series has no direction to be invariant to: none there.

    Series (a few channels) go the other way round: a convolution of kernel 7 and a ReLU at full
    resolution, then the average over each segment. The average of a raw series keeps only its
    level in each segment; the average of rectified filters keeps how much of each local shape
    (a spike, a slope) the segment holds: on the real sets whose series are averaged from 427
    to 1,460 steps down to 256, 4.7 points more on average (docs/defaults.md). Neither a LayerNorm, which would scale
    every frame's projection to the same size and throw the signal's magnitude away, nor
    similarity channels there.
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float, max_len: int = 0) -> None:
        super().__init__()
        self.max_len = max_len  # series only
        self.series = in_dim < _EMBEDDING_MIN_DIM
        self.lags = LAGS if not self.series and hidden >= 4 * len(LAGS) else ()
        self.drop = nn.Dropout(dropout)
        if self.series:
            self.conv = nn.Conv1d(in_dim, hidden, SERIES_KERNEL, padding=SERIES_KERNEL // 2)
            return
        learned = hidden - len(self.lags)
        self.proj = nn.Sequential(nn.Linear(in_dim, learned), nn.LayerNorm(learned), nn.GELU())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.series:
            m = mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
            # padding stays zero, so that a sequence's features do not depend on its batch
            h = torch.relu(self.conv(x.transpose(1, 2) * m)) * m  # (B, H, T)
            h, mask = pool_time(h, mask, self.max_len, dim=2)  # (B, H, T')
            return self.drop(h.transpose(1, 2)), mask  # (B, T', H)
        h = self.drop(self.proj(x))  # (B, T', hidden - lags)
        if self.lags:
            h = torch.cat([h, frame_similarity(x, mask, self.lags)], -1)  # (B, T', hidden)
        return h, mask


def frame_similarity(x: torch.Tensor, mask: torch.Tensor, lags: tuple[int, ...]) -> torch.Tensor:
    """Cosine similarity of each frame with the frame ``lag`` steps before, for each lag, once the
    sequence's mean frame is taken away; 0 where either frame is padding or before the start:
    (B, T, D), (B, T) -> (B, T, len(lags)).

    The mean frame is what every frame of a clip shares (its scene); without it, any two frames
    of one clip look alike and the channels say little. Centred, they measure how much of what
    changes persists from one step to the next.
    """
    m = mask.to(x.dtype)  # (B, T)
    centred = (x - masked_mean(x, mask).unsqueeze(1)) * m.unsqueeze(-1)  # (B, T, D)
    unit = nn.functional.normalize(centred, dim=-1)  # (B, T, D)
    out = []
    for lag in lags:
        if lag >= x.shape[1]:
            out.append(m.new_zeros(m.shape))
            continue
        sim = (unit[:, lag:] * unit[:, :-lag]).sum(-1) * m[:, lag:] * m[:, :-lag]  # (B, T - lag)
        out.append(torch.cat([sim.new_zeros(len(x), lag), sim], 1))  # (B, T)
    return torch.stack(out, -1)


POOLS = ("mean", "max", "last", "attn")  # what RecurrentHead can pool, side by side


class MeanHead(Head):
    """Average pooling over time then a linear layer: the order-blind baseline."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__(in_dim, num_classes, dropout)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(x, mask)  # (B, D)


class RecurrentHead(Head):
    """Projection, two residual convolution blocks, then a residual GRU or LSTM over every step;
    the feature is the mean and the maximum of the recurrent outputs (each added to the step it
    read and layer-normalised) over the real steps.

    The recurrent network decides, as in the convolutional-recurrent designs for sensor and
    activity series (DeepConvLSTM, Ordóñez and Roggen 2016): the blocks (tcn's first two:
    kernel 7, dilations 1 and 2, batch norm over real frames) turn each step into a description
    of its neighbourhood, and the recurrence reads those in order. Its outputs at every step are
    pooled, as tcn pools its blocks and ULMFiT its LSTM's states: the last state alone has to
    carry the whole sequence through one vector, and on real sets of a few dozen examples it
    did not (docs/defaults.md). The recurrent outputs are small and unevenly scaled (an LSTM's
    are a gate times a tanh); a LayerNorm over each step's output before pooling (``norm``)
    gave the classifier features on one scale and raised both heads on four of five real sets
    where they were weakest, OSULeaf by 7 to 10 points (docs/defaults.md).

    The recurrence is residual (``residual``, as between the stacked LSTMs of GNMT, Wu et al.
    2016): each step's output is added to the step it read, so the recurrence learns what the
    blocks' local description misses, about the whole sequence so far, and the blocks get their
    gradient straight from the pooling rather than through every step. The blocks alone see 19
    steps; order beyond that is the recurrence's. On ArrowHead, the set where both heads stayed
    below the 1-NN floor, it raised gru from 0.781 to 0.836 and lstm from 0.794 to 0.810
    (docs/defaults.md).

    ``pool`` names what is pooled, side by side: ``mean`` and ``max`` over the last layer's
    outputs at every real step, ``last`` those at each direction's final real step (its final
    state, plus the residual and the norm where they are on), ``attn`` a learned weighting of the
    steps; ``conv_blocks`` 0 feeds the projection to the recurrence directly; ``norm`` False
    pools the raw outputs; ``residual`` False pools the outputs alone (0.5's head). Padding is
    excluded from each: a sequence's feature is the same alone or in a batch.
    """

    revision = 2  # 2: the residual recurrence (0.6); a run saved with another fails to load

    def __init__(
        self,
        cell: type[nn.RNNBase],
        in_dim: int,
        num_classes: int,
        hidden: int,
        layers: int,
        dropout: float,
        bidirectional: bool,
        max_len: int = 0,
        pool: tuple[str, ...] = ("mean", "max"),
        conv_blocks: int = 2,
        norm: bool = True,
        residual: bool = True,
    ) -> None:
        directions = 2 if bidirectional else 1
        assert pool and set(pool) <= set(POOLS), f"pool must be some of {POOLS}, got {pool}"
        super().__init__(len(pool) * hidden * directions, num_classes, dropout)
        self.proj = InputProjection(in_dim, hidden, dropout, max_len)
        self.pools_time = self.proj.series
        self.rnn = cell(
            hidden,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.directions = directions
        self.pool = tuple(pool)
        self.out_norm = nn.LayerNorm(hidden * directions) if norm else nn.Identity()
        self.residual = residual
        self.convs, self.norms = residual_blocks(hidden, conv_blocks)
        self.act = nn.GELU()
        self.block_drop = nn.Dropout(dropout)
        if "attn" in self.pool:
            self.score = nn.Sequential(
                nn.Linear(hidden * directions, hidden), nn.Tanh(), nn.Linear(hidden, 1)
            )

    def outputs(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last layer's output at every step, (B, T, dirs * H); padding steps are garbage."""
        if self.directions == 1 or bool(mask.all()):
            # Forward in time, padding only comes after a sequence's real steps and cannot reach
            # them; packing would cost a third more per step for nothing.
            return self.rnn(h)[0]
        # both ways with uneven lengths: packing starts the backward pass at each sequence's end
        lengths = mask.sum(1).cpu()  # (B,)
        packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=h.shape[1])
        return out

    def steps(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the recurrence reads: the projection, then the blocks, (B, T', H), (B, T')."""
        h, mask = self.proj(x, mask)  # (B, T, H)
        if not len(self.convs):
            return h, mask
        c, _ = run_blocks(self, h, mask)  # (B, H, T)
        return c.transpose(1, 2), mask  # (B, T, H)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, mask = self.steps(x, mask)  # (B, T, H)
        out = self.outputs(h, mask)  # (B, T, dirs * H)
        if self.residual:  # each direction's output plus the step it read (broadcast, no copy)
            b, t, _ = out.shape
            out = (out.reshape(b, t, self.directions, -1) + h.unsqueeze(2)).reshape(b, t, -1)
        out = self.out_norm(out)  # (B, T, dirs * H), each step on its own
        m = mask.unsqueeze(-1)  # (B, T, 1)
        feats = []
        for kind in self.pool:
            if kind == "mean":
                feats.append(masked_mean(out, mask))
            elif kind == "max":
                feats.append(out.masked_fill(~m, float("-inf")).amax(1))
            elif kind == "attn":
                score = self.score(out).masked_fill(~m, float("-inf"))  # (B, T, 1)
                feats.append((torch.softmax(score, 1) * out.masked_fill(~m, 0.0)).sum(1))
            else:  # the final state: forward at the last real step, backward at the first
                n = self.rnn.hidden_size
                last = (mask.sum(1) - 1).clamp_min(0)  # (B,)
                fwd = out[torch.arange(len(out), device=out.device), last, :n]  # (B, H)
                feats += [fwd] if self.directions == 1 else [fwd, out[:, 0, n:]]
        return torch.cat(feats, 1) if len(feats) > 1 else feats[0]  # (B, F)


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the channels of (B, H, T) whose batch statistics count real frames only, so
    that padding changes neither the statistics nor the features of real frames."""

    def forward(self, x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        # x (B, H, T); m (B, 1, T), or None where every frame is real (torch's own batch norm)
        if m is None:
            return super().forward(x)
        if self.training:
            n = m.sum().clamp_min(2)
            mean = (x * m).sum((0, 2)) / n  # (H,)
            var = ((x - mean[:, None]).pow(2) * m).sum((0, 2)) / n  # (H,)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)  # (H,)
        return ((x - mean[:, None]) * scale[:, None] + self.bias[:, None]) * m


def residual_blocks(hidden: int, n: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``n`` residual blocks of kernel 7 and dilations 1, 2, 4, ...: their convolutions and their
    batch norms (as two lists, so that tcn's parameter names stay those of its saved runs)."""
    convs = nn.ModuleList(
        nn.Conv1d(hidden, hidden, kernel_size=7, dilation=2**i, padding=3 * 2**i) for i in range(n)
    )
    return convs, nn.ModuleList(MaskedBatchNorm(hidden) for _ in range(n))


def run_blocks(
    head: nn.Module, h: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``head``'s blocks (``convs``, ``norms``, ``act``, ``block_drop``) over (B, T, H) steps:
    (B, H, T) channels-first, and the mask as (B, 1, T), at least float32 (a sum of a long
    mask is exact there, not in bfloat16)."""
    m = mask.unsqueeze(1).to(torch.promote_types(h.dtype, torch.float32))  # (B, 1, T)
    # sequences of one length, the usual case: torch's own batch norm, no masked statistics
    norm_mask = None if bool(mask.all()) else m
    c = h.transpose(1, 2) * m  # (B, H, T)
    for conv, norm in zip(head.convs, head.norms, strict=True):
        # padding must stay zero, or a short sequence would see its batch's longest length
        c = (c + head.block_drop(head.act(norm(conv(c), norm_mask)))) * m  # (B, H, T)
    return c, m


class TCNHead(Head):
    """Projection, then residual blocks of dilated 1-D convolutions (kernel 7, dilation 1, 2, 4,
    ...) with batch norm; the mean and the maximum over time side by side.

    The design of the fully convolutional baselines of time-series classification (Wang et al.
    2017: wide kernels, batch norm, pooling over all of time), which the measurements on real
    sets bore out: against kernel 3 with a per-frame LayerNorm and mean pooling, ArrowHead rose
    from 0.55 to 0.77 and OSULeaf from 0.65 to 0.78 (docs/defaults.md).
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int, layers: int, dropout: float,
        max_len: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(2 * hidden, num_classes, dropout)
        self.proj = InputProjection(in_dim, hidden, dropout, max_len)
        self.pools_time = self.proj.series
        self.convs, self.norms = residual_blocks(hidden, layers)
        self.act = nn.GELU()
        self.block_drop = nn.Dropout(dropout)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, mask = self.proj(x, mask)  # (B, T, H)
        h, m = run_blocks(self, h, mask)  # (B, H, T), (B, 1, T)
        mean = h.sum(2) / m.sum(2)  # (B, H)
        peak = h.masked_fill(m == 0, float("-inf")).amax(2)  # (B, H)
        return torch.cat([mean, peak], 1)  # (B, 2H)


class TransformerHead(Head):
    """Projection, sinusoidal positions, a class token and a small pre-norm encoder."""

    def __init__(
        self, in_dim: int, num_classes: int, hidden: int, layers: int, dropout: float,
        max_len: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(hidden, num_classes, dropout)
        heads = 4 if hidden % 4 == 0 else 1
        self.proj = InputProjection(in_dim, hidden, dropout, max_len)
        self.pools_time = self.proj.series
        self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True,
            norm_first=True, activation="gelu",
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.hidden = hidden

    def positions(self, t: int, device: torch.device) -> torch.Tensor:
        # sinusoids need no maximum length: evaluation may see longer sequences than training
        pos = torch.arange(t, device=device, dtype=torch.float32).unsqueeze(1)  # (T, 1)
        freq = torch.exp(
            torch.arange(0, self.hidden, 2, device=device) * (-math.log(10000.0) / self.hidden)
        )  # (H/2,)
        pe = torch.zeros(t, self.hidden, device=device)  # (T, H)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: self.hidden // 2])
        return pe

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, mask = self.proj(x, mask)  # (B, T, H)
        b, t, _ = h.shape
        h = h + self.positions(t, x.device)  # (B, T, H)
        h = torch.cat([self.cls.expand(b, -1, -1), h], dim=1)  # (B, 1 + T, H)
        keep = torch.cat([mask.new_ones(b, 1), mask], dim=1)  # (B, 1 + T)
        h = self.encoder(h, src_key_padding_mask=~keep)  # (B, 1 + T, H)
        return self.norm(h[:, 0])  # (B, H)


# -- the registered constructors: one signature for all -----------------------------------------


@register_head
def mean(
    in_dim: int, num_classes: int, hidden: int = 256, layers: int | None = None,
    dropout: float = 0.1, bidirectional: bool = False, max_len: int = 0,
) -> Head:  # fmt: skip
    """Mean pooling then a linear layer (ignores hidden, layers, bidirectional, max_len)."""
    return MeanHead(in_dim, num_classes, dropout)


@register_head
def gru(
    in_dim: int, num_classes: int, hidden: int = 256, layers: int | None = None,
    dropout: float = 0.1, bidirectional: bool = False, max_len: int = 0,
) -> Head:  # fmt: skip
    """Projection, two convolution blocks, then a residual GRU (1 layer by default) whose outputs
    at every step are layer-normalised and pooled (mean and max)."""
    return RecurrentHead(
        nn.GRU, in_dim, num_classes, hidden, layers or 1, dropout, bidirectional, max_len
    )


@register_head
def lstm(
    in_dim: int, num_classes: int, hidden: int = 256, layers: int | None = None,
    dropout: float = 0.1, bidirectional: bool = False, max_len: int = 0,
) -> Head:  # fmt: skip
    """Projection, two convolution blocks, then a residual LSTM (1 layer by default) whose
    outputs at every step are layer-normalised and pooled (mean and max)."""
    return RecurrentHead(
        nn.LSTM, in_dim, num_classes, hidden, layers or 1, dropout, bidirectional, max_len
    )


@register_head
def tcn(
    in_dim: int, num_classes: int, hidden: int = 256, layers: int | None = None,
    dropout: float = 0.1, bidirectional: bool = False, max_len: int = 0,
) -> Head:  # fmt: skip
    """Projection then dilated residual 1-D convolutions (4 blocks by default: 91 frames seen)."""
    return TCNHead(in_dim, num_classes, hidden, layers or 4, dropout, max_len)


@register_head
def transformer(
    in_dim: int, num_classes: int, hidden: int = 256, layers: int | None = None,
    dropout: float = 0.1, bidirectional: bool = False, max_len: int = 0,
) -> Head:  # fmt: skip
    """Projection, positions, a class token and a pre-norm encoder (2 layers by default)."""
    return TransformerHead(in_dim, num_classes, hidden, layers or 2, dropout, max_len)
