"""Every registered head has the same surface, the same shapes, and ignores padding."""

import pytest
import torch

from actrec.common.errors import ActrecError
from actrec.temporal import create_head, list_heads, register_head
from actrec.temporal.heads import Head, MeanHead


def test_registry_lists_the_five_heads():
    assert list_heads() == ["gru", "lstm", "mean", "tcn", "transformer"]


def test_unknown_head_is_a_clear_error():
    with pytest.raises(
        ActrecError, match="unknown head 'lstn': choose one of gru, lstm, mean, tcn, transformer"
    ):
        create_head("lstn", in_dim=4, num_classes=2)


def test_register_head_adds_a_name():
    @register_head
    def tiny_mean(in_dim, num_classes, **_):
        return MeanHead(in_dim, num_classes, dropout=0.0)

    try:
        assert "tiny_mean" in list_heads()
        assert isinstance(create_head("tiny_mean", in_dim=3, num_classes=2), Head)
    finally:
        from actrec.temporal import heads

        heads._HEADS.pop("tiny_mean")


def test_register_head_refuses_a_name_already_taken():
    def gru(in_dim, num_classes, **_):
        return MeanHead(in_dim, num_classes, dropout=0.0)

    before = create_head("gru", in_dim=3, num_classes=2)
    with pytest.raises(ActrecError, match="a head named 'gru' is already registered"):
        register_head(gru)
    # the built-in one is still the one created
    assert type(create_head("gru", in_dim=3, num_classes=2)) is type(before) is not MeanHead


@pytest.mark.parametrize("name", list_heads())
@pytest.mark.parametrize("bidirectional", [False, True])
def test_common_surface_and_masking(name, bidirectional):
    torch.manual_seed(0)
    head = create_head(name, in_dim=12, num_classes=5, hidden=16, layers=2, dropout=0.1,
                       bidirectional=bidirectional).eval()  # fmt: skip
    assert isinstance(head, Head) and head.num_features > 0
    x = torch.randn(3, 7, 12)  # (B, T, D)
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(7)[None] < lengths[:, None]  # (B, T)
    with torch.no_grad():
        feats = head.forward_features(x, mask)  # (B, F)
        assert feats.shape == (3, head.num_features)
        logits = head.forward_head(feats)
        assert logits.shape == (3, 5) and torch.isfinite(logits).all()
        assert torch.equal(head(x, mask), logits)
        # padding must change nothing: each row alone, cut to its length, gives the same output
        for i, t in enumerate(lengths.tolist()):
            alone = head(x[i : i + 1, :t], torch.ones(1, t, dtype=torch.bool))  # (1, C)
            torch.testing.assert_close(alone[0], logits[i], atol=1e-5, rtol=1e-4)
        # and garbage in the padding changes nothing either
        noisy = x.clone()
        noisy[~mask] = 1e3
        torch.testing.assert_close(head(noisy, mask), logits, atol=1e-5, rtol=1e-4)
    head.reset_classifier(2)
    assert head(x, mask).shape == (3, 2)
    # and it trains: gradients reach the first layer
    head.train()
    head(x, mask).sum().backward()
    first = next(p for p in head.parameters() if p.requires_grad)
    assert first.grad is not None


def test_order_matters_to_recurrent_heads_but_not_to_mean():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.bool)
    flipped = x.flip(1)
    for name, order_blind in (
        ("mean", True),
        ("gru", False),
        ("tcn", False),
        ("transformer", False),
    ):
        head = create_head(name, in_dim=8, num_classes=3, hidden=16).eval()
        with torch.no_grad():
            same = torch.allclose(head(x, mask), head(flipped, mask), atol=1e-6)
        assert same == order_blind, name


def test_model_normalises_and_adds_frame_differences():
    from actrec.temporal.model import build_model

    mean, std = torch.full((4,), 2.0), torch.full((4,), 0.5)
    kwargs = dict(in_dim=8, num_classes=3, hidden=8, dropout=0.0)
    model = build_model("mean", kwargs, mean, std, delta=True).eval()
    seen = []
    model.head.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.tensor([[[2.0] * 4, [3.0] * 4, [5.0] * 4]], dtype=torch.float16)  # (1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    model(x, mask)
    # normalised (x - 2) / 0.5, padding zeroed; differences 0 at the first frame and at padding
    expected = torch.tensor([[[0.0] * 4 + [0.0] * 4, [2.0] * 4 + [2.0] * 4, [0.0] * 8]])
    torch.testing.assert_close(seen[0], expected)


def test_a_custom_head_trains_reloads_and_predicts_through_the_public_api(tmp_path):
    # what docs/extending.md shows: a new head in a script, trained like the built-in ones
    import json

    import numpy as np

    from actrec.common.cache import Video, write_cache
    from actrec.temporal import TrainConfig, load_run, predict_proba, train
    from actrec.temporal.heads import masked_mean

    class MaxMeanHead(Head):
        """Mean and max over time, side by side."""

        def __init__(self, in_dim: int, num_classes: int, dropout: float) -> None:
            super().__init__(2 * in_dim, num_classes, dropout)

        def forward_features(self, x, mask):  # (B, T, D), (B, T) -> (B, 2D)
            peak = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
            return torch.cat([masked_mean(x, mask), peak], dim=-1)

    @register_head
    def max_mean(in_dim, num_classes, dropout=0.3, **_):
        return MaxMeanHead(in_dim, num_classes, dropout)

    rng = np.random.default_rng(0)
    videos = []
    for i in range(60):  # class b has one bright frame: max pooling sees it, the mean barely
        x = rng.standard_normal((10, 4)).astype(np.float32)
        if i % 2:
            x[rng.integers(10)] += 6.0
        videos.append(Video(id=f"v{i:02d}", features=x, timestamps=np.arange(10.0),
                            label="ab"[i % 2]))  # fmt: skip
    cache = write_cache(
        tmp_path / "c.h5", videos, {"backbone": "synthetic"}, dim=4, dtype="float32"
    )
    try:
        run = train(TrainConfig(cache=str(cache), out=str(tmp_path / "run"), head="max_mean",
                                epochs=20, batch_size=8, lr=1e-2, clip_len=0, progress=False,
                                device="cpu"),
                    log=lambda _: None)  # fmt: skip
        assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0.85
        loaded = load_run(run)
        assert isinstance(loaded.model.head, MaxMeanHead)
        probs = predict_proba(loaded, videos[1].features)
        assert probs.shape == (2,) and probs.argmax() == 1
    finally:
        from actrec.temporal import heads

        heads._HEADS.pop("max_mean")
