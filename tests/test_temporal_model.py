"""The input stage of TemporalModel (pooling, per-sequence normalisation, differences), the
recurrent heads' unpacked path, and which checkpoint a run keeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from actrec.temporal.heads import pool_time
from actrec.temporal.model import differences, standardise_sequences
from actrec.temporal.train import choose_checkpoint


def test_pool_time_averages_equal_segments_and_ignores_padding():
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)  # (B, T, D)
    mask = torch.arange(10)[None] < torch.tensor([10, 3])[:, None]  # lengths 10 and 3
    x[1, 3:] = 1e6  # padding
    pooled, pmask = pool_time(x, mask, 4)
    # 10 frames into 4 segments: t * 4 // 10 = 0,0,0,1,1,2,2,2,3,3
    expected = np.stack([x[0, a:b].mean(0).numpy() for a, b in ((0, 3), (3, 5), (5, 8), (8, 10))])
    np.testing.assert_allclose(pooled[0].numpy(), expected, rtol=1e-6)
    # a sequence shorter than max_len is unchanged
    np.testing.assert_array_equal(pooled[1, :3].numpy(), x[1, :3].numpy())
    assert pmask.tolist() == [[True] * 4, [True, True, True, False]]
    same, same_mask = pool_time(x, mask, 10)  # nothing to pool
    assert same is x and same_mask is mask


def test_standardised_sequences_ignore_level_scale_and_padding():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 4)
    mask = torch.tensor([[True] * 5 + [False]])
    a = standardise_sequences(x, mask)
    b = standardise_sequences(3.0 * x + torch.tensor([1.0, -2.0, 5.0, 0.5]), mask)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    real = a[0, :5]
    torch.testing.assert_close(real.mean(0), torch.zeros(4), atol=1e-6, rtol=0)
    assert float(real.pow(2).mean()) == pytest.approx(1.0, rel=1e-5)  # one spread for all dims
    assert float(a[0, 5].abs().max()) == 0.0


def test_differences_are_zero_at_the_first_frame_and_padding():
    x = torch.tensor([[[1.0], [4.0], [9.0], [7.0]]])
    mask = torch.tensor([[True, True, True, False]])
    assert differences(x, mask)[0, :, 0].tolist() == [0.0, 3.0, 5.0, 0.0]


@pytest.mark.parametrize("cell", [torch.nn.GRU, torch.nn.LSTM])
def test_unpacked_final_state_equals_packed(cell):
    from actrec.temporal.heads import RecurrentHead

    torch.manual_seed(0)
    # the raw final state, as the packed recurrence returns it: no norm, no residual
    head = RecurrentHead(cell, 5, 3, hidden=8, layers=2, dropout=0.0, bidirectional=False,
                         pool=("last",), norm=False, residual=False).eval()  # fmt: skip
    x = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None] < lengths[:, None]
    with torch.no_grad():
        ours = head.forward_features(x, mask)  # (B, H)
        packed = pack_padded_sequence(
            head.steps(x, mask)[0], lengths, batch_first=True, enforce_sorted=False
        )
        _, state = head.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state
    torch.testing.assert_close(ours, h_n[-1], atol=1e-6, rtol=1e-5)


def _history(val: list[float]) -> list[dict]:
    return [{"step": 10 * (i + 1), "val_accuracy": v} for i, v in enumerate(val)]


def test_the_last_weights_are_kept_unless_the_best_is_clearly_better():
    # 7 validation items: 1.0 against 0.857 is one item, within the noise: keep the last
    assert choose_checkpoint("auto", _history([0.5, 1.0, 0.857]), 20, 7, False) == 30
    # 1,000 items: 0.90 against 0.80 is far beyond it: keep the best
    assert choose_checkpoint("auto", _history([0.5, 0.9, 0.8]), 20, 1000, False) == 20
    assert choose_checkpoint("best", _history([0.5, 1.0, 0.857]), 20, 7, False) == 20
    assert choose_checkpoint("last", _history([0.5, 0.9, 0.8]), 20, 1000, False) == 30
    # 10 items, the best of 40 passes: 1.0 against 0.8 is within what picking a maximum adds
    assert choose_checkpoint("auto", _history([1.0] + [0.8] * 39), 10, 10, False) == 400
    # ... while over 3 passes it is not
    assert choose_checkpoint("auto", _history([0.5, 1.0, 0.7]), 20, 10, False) == 20
    # an interrupted run has no evaluated last weights: the best
    assert choose_checkpoint("auto", _history([0.5, 0.9, 0.8]), 20, 7, True) == 20


def test_frame_similarity_is_the_cosine_of_centred_frames():
    from actrec.temporal.heads import frame_similarity

    torch.manual_seed(0)
    x = torch.randn(2, 6, 5)
    mask = torch.arange(6)[None] < torch.tensor([6, 4])[:, None]
    x[1, 4:] = 1e3  # loud padding
    sim = frame_similarity(x, mask, (1, 2, 9))  # a lag past the end gives zeros
    assert sim.shape == (2, 6, 3)
    for b, n in ((0, 6), (1, 4)):
        c = x[b, :n] - x[b, :n].mean(0)  # the real frames, centred
        for j, lag in enumerate((1, 2)):
            expected = torch.zeros(6)
            expected[lag:n] = torch.nn.functional.cosine_similarity(c[lag:], c[:-lag], dim=-1)
            torch.testing.assert_close(sim[b, :, j], expected)
    assert float(sim[..., 2].abs().max()) == 0.0
    # what a scene adds to every frame, and the directions its frames change in, do not enter
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    moved = x @ q + 3 * torch.randn(2, 1, 5)
    torch.testing.assert_close(frame_similarity(moved, mask, (1, 2)), sim[..., :2])


def test_similarity_channels_only_for_embeddings():
    from actrec.temporal.heads import LAGS, InputProjection

    wide, narrow = InputProjection(64, 32, 0.0), InputProjection(2, 32, 0.0)
    assert wide.lags == LAGS and narrow.lags == ()
    x, mask = torch.randn(2, 7, 64), torch.ones(2, 7, dtype=torch.bool)
    assert wide(x, mask)[0].shape == (2, 7, 32) == narrow(x[..., :2], mask)[0].shape


def test_pool_time_over_either_axis():
    torch.manual_seed(0)
    x = torch.randn(3, 11, 4)  # (B, T, F)
    mask = torch.arange(11)[None] < torch.tensor([11, 7, 3])[:, None]
    a, mask_a = pool_time(x, mask, 5)
    b, mask_b = pool_time(x.transpose(1, 2), mask, 5, dim=2)  # (B, F, T)
    torch.testing.assert_close(a, b.transpose(1, 2))
    assert torch.equal(mask_a, mask_b)


def test_series_are_filtered_at_full_resolution_before_averaging():
    """Two series with the same mean over every segment: averaging first cannot tell them
    apart; the series stem (a convolution and a ReLU at full length, then the average) can."""
    from actrec.temporal.heads import create_head
    from actrec.temporal.model import build_model

    flat = torch.zeros(1, 40, 1)
    zigzag = torch.tensor([1.0, -1.0] * 20).reshape(1, 40, 1)  # mean 0 over each pair of steps
    mask = torch.ones(1, 40, dtype=torch.bool)
    assert torch.equal(pool_time(flat, mask, 20)[0], pool_time(zigzag, mask, 20)[0])
    torch.manual_seed(0)
    model = build_model(
        "tcn", dict(in_dim=1, num_classes=2, hidden=16, dropout=0.0), torch.zeros(1),
        torch.ones(1), delta=False, max_len=20, norm="dataset",
    ).eval()  # fmt: skip
    assert model.head.pools_time
    with torch.no_grad():
        seen = [model.head.proj(x, mask) for x in (flat, zigzag)]
        assert seen[0][0].shape == (1, 20, 16) and seen[0][1].all()  # averaged down to 20
        assert not torch.allclose(seen[0][0], seen[1][0])
        assert not torch.allclose(model(flat, mask), model(zigzag, mask))
    # embeddings are averaged before the head, as before: the head has nothing to pool
    assert not create_head("tcn", in_dim=64, num_classes=2, max_len=20).pools_time


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "in_dim, max_len", [(40, 0), (2, 4)], ids=["embeddings", "series averaged by the head"]
)
def test_tcn_features_do_not_depend_on_padding(training, in_dim, max_len):
    from actrec.temporal.heads import create_head

    torch.manual_seed(0)
    head = create_head("tcn", in_dim=in_dim, num_classes=3, hidden=16, dropout=0.0, max_len=max_len)
    x = torch.randn(3, 9, in_dim)
    mask = torch.arange(9)[None] < torch.tensor([9, 4, 6])[:, None]
    with torch.no_grad():
        head.train()
        for _ in range(3):  # move the running statistics away from their start
            head(x, mask)
        head.train(training)  # training: the batch's statistics; eval: the running ones
        a = head.forward_features(x, mask)
        x_padded = torch.cat([x, torch.randn(3, 5, in_dim) * 100], 1)  # longer, loud padding
        mask_padded = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)
        b = head.forward_features(x_padded, mask_padded)
        # sequences of one length take a path without masks: it must agree with the masked one
        full = head.forward_features(x, torch.ones(3, 9, dtype=torch.bool))
        full_padded = head.forward_features(x_padded, mask_padded | (torch.arange(14) < 9))
        alone = head.forward_features(x[1:2, :4], mask[1:2, :4])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full, full_padded, atol=1e-5, rtol=1e-5)
    if not training:  # with the running statistics, a sequence alone gives its batch's features
        torch.testing.assert_close(alone, a[1:2], atol=1e-5, rtol=1e-5)
