"""The recurrent heads pool the outputs of every real step: values, padding, packing."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from actrec.temporal.heads import POOLS, RecurrentHead, create_head


def _batch(in_dim: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    x = torch.randn(len(lengths), t, in_dim, generator=g)  # (B, T, D)
    mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    return x, mask


@pytest.mark.parametrize("cell", [torch.nn.GRU, torch.nn.LSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_pooled_features_are_the_mean_and_max_of_each_sequence_alone(
    cell, bidirectional, norm, residual
):
    torch.manual_seed(0)
    head = RecurrentHead(cell, 40, 3, hidden=8, layers=2, dropout=0.0, bidirectional=bidirectional,
                         pool=POOLS, norm=norm, residual=residual).eval()  # fmt: skip
    if norm:  # a norm that is not the identity at initialisation, so that its use is seen
        torch.nn.init.normal_(head.out_norm.weight)
        torch.nn.init.normal_(head.out_norm.bias)
    x, mask = _batch(40, [9, 3, 6])
    x[~mask] = 1e3  # loud padding: it must reach nothing
    with torch.no_grad():
        feats = head.forward_features(x, mask)  # (B, 4 * dirs * H)
        for i, n in enumerate(mask.sum(1).tolist()):
            h, _ = head.steps(x[i : i + 1, :n], mask[i : i + 1, :n])
            out = head.rnn(h)[0][0]  # (n, dirs * H): the sequence alone, no padding anywhere
            if residual:  # each direction's output plus the block output it read
                out = out + torch.cat([h[0]] * (2 if bidirectional else 1), -1)
            out = torch.nn.functional.layer_norm(
                out, out.shape[-1:], head.out_norm.weight, head.out_norm.bias
            ) if norm else out  # fmt: skip
            w = torch.softmax(head.score(out), 0)  # (n, 1)
            last = out[-1, :8] if not bidirectional else torch.cat([out[-1, :8], out[0, 8:]])
            expected = torch.cat([out.mean(0), out.amax(0), last, (w * out).sum(0)])
            torch.testing.assert_close(feats[i], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", [torch.nn.GRU, torch.nn.LSTM])
def test_bidirectional_outputs_over_uneven_lengths_equal_packing(cell):
    torch.manual_seed(0)
    head = RecurrentHead(cell, 5, 3, hidden=8, layers=2, dropout=0.0, bidirectional=True).eval()
    x, mask = _batch(5, [6, 2, 4])
    with torch.no_grad():
        h, _ = head.steps(x, mask)
        ours = head.outputs(h, mask)  # (B, T, 2H)
        packed = pack_padded_sequence(h, mask.sum(1), batch_first=True, enforce_sorted=False)
        reference, _ = pad_packed_sequence(head.rnn(packed)[0], batch_first=True)
        # the backward direction starts at each sequence's own last step, not at the batch's
        unpacked = head.rnn(h)[0]
    torch.testing.assert_close(ours[mask], reference[mask], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(unpacked[1, :2], reference[1, :2], atol=1e-3)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_max_ignores_padding_when_every_real_output_is_negative(bidirectional):
    head = RecurrentHead(torch.nn.GRU, 3, 2, hidden=2, layers=1, dropout=0.0,
                         bidirectional=bidirectional, pool=("mean", "max"), norm=False,
                         residual=False)  # fmt: skip
    width = 2 * (2 if bidirectional else 1)
    real = -torch.arange(1.0, 7.0).reshape(3, 2).repeat(1, width // 2)  # (3, width), all < 0
    out = torch.zeros(2, 5, width)  # padding outputs are 0: above every real one
    out[0, :3] = real
    out[1, :1] = real[2]
    head.outputs = lambda h, mask: out  # the pooling alone, on outputs chosen here
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    feats = head.forward_features(torch.randn(2, 5, 3), mask)
    torch.testing.assert_close(feats[0], torch.cat([real.mean(0), real.amax(0)]))
    torch.testing.assert_close(feats[1], torch.cat([real[2], real[2]]))
    assert float(feats.max()) < 0


@pytest.mark.parametrize("name", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_series_padded_in_a_batch_equal_each_alone(name, bidirectional):
    # series are filtered at full length and averaged by the head: padding must reach neither
    torch.manual_seed(0)
    head = create_head(name, in_dim=2, num_classes=3, hidden=8, dropout=0.0,
                       bidirectional=bidirectional, max_len=4).eval()  # fmt: skip
    x, mask = _batch(2, [9, 3, 6], seed=1)
    x[~mask] = -50.0
    with torch.no_grad():
        batch = head(x, mask)  # (B, C)
        for i, n in enumerate(mask.sum(1).tolist()):
            alone = head(x[i : i + 1, :n], mask[i : i + 1, :n])
            torch.testing.assert_close(alone[0], batch[i], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_padding_changes_nothing_while_training(name):
    # in training the blocks' batch norm uses the batch's statistics: over real frames only
    torch.manual_seed(0)
    head = create_head(name, in_dim=40, num_classes=3, hidden=8, dropout=0.0).train()
    x, mask = _batch(40, [7, 3, 5], seed=2)
    longer = torch.cat([x, 100 * torch.randn(3, 4, 40)], 1)  # more, loud padding
    longer_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    with torch.no_grad():
        a = head.forward_features(x, mask)
        b = head.forward_features(longer, longer_mask)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
