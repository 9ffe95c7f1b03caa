"""GCMF against a direct transcription of the reference forward pass
(PixelFace+/code/pixel_models/GateCrossModelFusion.py:472-547), padding, chunking, dropout and the gate."""
import math

import pytest
import torch

from pixelface.networks.gcmf import GCMF
from pixelface.networks.layers import distinct_rows, gather_rows

torch.set_num_threads(1)


def reference_gcmf(m, queries, words, padding=None):
    """GateCrossModelFusion.forward step by step (eval mode): project, q·kᵀ/√d, softmax, probs·v, c_mlp,
    ctrl + ffn."""
    q, k, v = m.to_queries(queries), m.to_keys(words), m.to_values(words)
    scores = q @ k.transpose(1, 2) / math.sqrt(m.dim)
    if padding is not None:
        scores = scores.masked_fill(padding[:, None, :], float("-inf"))
    ctrl = m.c_mlp(torch.softmax(scores, -1) @ v)
    return ctrl + m.ffn(ctrl)


def make(gate=False, chunk=16384, dropout=0.06, seed=0):
    torch.manual_seed(seed)
    m = GCMF(6, 10, dim=8, gate=gate, dropout=dropout, chunk=chunk).double()
    with torch.no_grad():  # non-zero biases so every re-association is exercised
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    return m


def inputs(b=2, f=12, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, f, 6, generator=g, dtype=torch.float64),
            torch.randn(b, t, 10, generator=g, dtype=torch.float64))


def test_matches_direct_transcription_of_the_reference():
    m = make().eval()
    queries, words = inputs()
    torch.testing.assert_close(m(queries, words), reference_gcmf(m, queries, words))
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    torch.testing.assert_close(m(queries, words, padding), reference_gcmf(m, queries, words, padding))


def test_output_has_no_residual_from_queries():
    """No query residual (GateCrossModelFusion.py:534): with one word, attention is all-ones, so the
    queries cannot matter."""
    m = make().eval()
    queries, words = inputs(t=1)
    out = m(queries, words)
    torch.testing.assert_close(out, out[:, :1].expand_as(out))


def test_padded_words_do_not_change_outputs():
    m = make().eval()
    queries, words = inputs(t=4)
    garbage = torch.randn(2, 3, 10, dtype=torch.float64) * 100
    padded = torch.cat([words, garbage], 1)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[:, 4:] = True
    out, attention = m(queries, padded, padding, return_attention=True)
    torch.testing.assert_close(out, m(queries, words))
    assert attention.shape == (2, 12, 7)
    assert torch.all(attention[:, :, 4:] == 0)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 12, dtype=torch.float64))


@pytest.mark.parametrize("train", [False, True])
def test_chunking_does_not_change_results(train):
    queries, words = inputs(b=3, f=50)
    outs = []
    for chunk in (7, 64, 10_000):
        m = make(chunk=chunk).train(train)
        torch.manual_seed(5)
        outs.append(m(queries, words))
    torch.testing.assert_close(outs[0], outs[2])
    torch.testing.assert_close(outs[1], outs[2])


def test_dropout_drops_elements_and_whole_words_in_training_only():
    m = make(dropout=0.5)
    torch.manual_seed(0)
    keep = m._dropout_keep(4, 2000, 6, torch.device("cpu"))
    dropped = ~keep
    # per element and per word: kept share (1-p)² = 0.25
    assert abs(dropped.float().mean().item() - 0.75) < 0.03
    whole_words = dropped.all(dim=1)                                  # (B,T) columns dropped for all
    assert 0.2 < whole_words.float().mean().item() < 0.8
    m.eval()
    assert m._dropout_keep(4, 2000, 6, torch.device("cpu")) is None
    queries, words = inputs(t=1)
    m.train()
    torch.manual_seed(1)
    out = m(queries, words)
    torch.manual_seed(1)
    keep = m._dropout_keep(2, 12, 1, queries.device)
    # one word: eval attention is all ones, so training sees 4 (kept, rescaled) or 0 (dropped)
    m.eval()
    with torch.no_grad():
        values = m.to_values(words)
        expected_ctrl = torch.where(keep, 4.0, 0.0) * values        # (B,F,dim) by broadcasting
        ctrl = m.c_mlp(expected_ctrl)
    torch.testing.assert_close(out, ctrl + m.ffn(ctrl))


def test_gate_changes_attention_and_all_its_parameters_get_gradients():
    m = make(gate=True).train()
    queries, words = inputs()
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out, attention = m(queries, words, padding, return_attention=True)
    assert torch.isfinite(out).all() and torch.all(attention[1, :, 3:] == 0)
    assert not torch.allclose(attention.sum(-1), torch.ones(2, 12, dtype=torch.float64))
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_every_parameter_gets_gradient_without_gate():
    m = make().train()
    queries, words = inputs()
    m(queries, words).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_count_matches_reference_used_parameters():
    assert sum(p.numel() for p in GCMF(128, 512).parameters()) == 246_912


def test_bad_inputs_raise_clear_errors():
    m = make()
    queries, words = inputs()
    with pytest.raises(ValueError, match="batch mismatch"):
        m(queries, words[:1])
    with pytest.raises(ValueError, match="word_padding"):
        m(queries, words, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout"):
        GCMF(6, 10, dropout=1.0)


def test_repeated_query_rows_are_attended_once_with_the_same_outputs():
    """Sampling (eval, no gradient to the queries): rows repeated over a region's interior are computed once
    per distinct row, and outputs and attention equal the per-row computation exactly."""
    m = make(gate=True).eval()
    queries, words = inputs(b=2, f=40)
    queries = queries[:, torch.arange(40) % 3]            # three distinct rows per sample, repeated
    with torch.no_grad():
        out, attention = m(queries, words, return_attention=True)
        expected = [m(q[None], w[None], return_attention=True) for q, w in zip(queries.unbind(), words.unbind())]
    torch.testing.assert_close(out, torch.cat([e[0] for e in expected]), rtol=0, atol=1e-12)
    torch.testing.assert_close(attention, torch.cat([e[1] for e in expected]), rtol=0, atol=1e-12)
    ungated = make(gate=False).eval()
    torch.testing.assert_close(ungated(queries, words), reference_gcmf(ungated, queries, words))


def test_distinct_rows_groups_exactly_and_declines_when_rows_hardly_repeat():
    x = torch.randn(2, 5, 4)[:, [0, 1, 0, 0, 2, 1, 0, 2]]
    x[1, 3] = x[1, 0]
    unique, index = distinct_rows(x)
    assert unique.shape == (2, 3, 4)
    assert torch.equal(gather_rows(unique, index), x)
    assert distinct_rows(torch.randn(2, 8, 4)) is None         # every row distinct: nothing to save
    with pytest.raises(ValueError, match="no gradient"):
        distinct_rows(x.requires_grad_())
