"""GCMF, "Gate Cross-Modal Fusion" (PixelFace+/code/pixel_models/GateCrossModelFusion.py): mask-feature
queries attend over word features.

Faithful to the published code by default: one head, scores q·kᵀ/√dim, softmax over the words,
training-mode dropout applied per element and per word column, ctrl = probs @ v, then
ctrl = c_mlp(ctrl) and out = ctrl + ffn(ctrl). There is no residual from the queries: the mask
features reach the output only through the attention weights (GateCrossModelFusion.py:472-547; the
output is control + ffn(control) at line 534).

`gate=True` adds the paper figure's "Correlation Gate Matrix", which the published code does not
implement (GateCrossModelFusion.py:366,413-414,517-518 leave both gates off). Its form is OUR GUESS:
a small per-(query, word) MLP reads the correlation score and its softmax share and emits a sigmoid
gate that multiplies the attention probabilities.

Two exact re-associations keep the 256² stage (65,536 queries per image) cheap:
* the query projection is folded into the keys, scores = X·(k·W_q)ᵀ + k·b_q, so the queries are
  never projected (T ≤ 30 keys instead of F queries);
* the first c_mlp layer is folded into the values, l0(probs·v) = probs·(v·W_0ᵀ) + b_0.
On CPU, queries are processed in chunks that stay in cache; on a GPU one pass over all of them is
fastest (a batch of 32 at 256² makes 128 chunks of small launches: G forward+backward took 2.9x as long
on an H200). The dropout masks are drawn for
all queries up front, so the chunk size never changes the result. Without dropout (eval) and without
gradients to the queries (sampling), CPU runs attend once per distinct query row: a mask's features
repeat one row over each region's interior.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pixelface.networks.layers import ACT_GAIN, EqualLinear, distinct_rows, fresh_leaky_relu_, gather_rows

GATE_HIDDEN = 16
GATE_BIAS_INIT = 2.0  # σ(2) ≈ 0.88: the gate starts mostly open, close to the ungated reference
CPU_CHUNK = 16384     # query rows per chunk on CPU when chunk=0 (auto)


class FeedForward(nn.Module):
    """Three equalised FC + leaky ReLU·√2 layers (GANformer's c_mlp / ffn)."""

    def __init__(self, dim: int):
        super().__init__()
        self.l0 = EqualLinear(dim, dim, activation=True)
        self.l1 = EqualLinear(dim, dim, activation=True)
        self.out_layer = EqualLinear(dim, dim, activation=True)

    def forward(self, x):
        return self.out_layer(self.l1(self.l0(x)))


class CorrelationGate(nn.Module):
    """Our reading of the paper's correlation gate: g = σ(MLP(score, prob)) per (query, word)."""

    def __init__(self, hidden: int = GATE_HIDDEN):
        super().__init__()
        self.l0 = EqualLinear(2, hidden, activation=True)
        self.out_layer = EqualLinear(hidden, 1, bias_init=GATE_BIAS_INIT)

    def forward(self, scores: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        features = torch.stack((scores, probs), dim=-1)           # (B,F,T,2)
        return torch.sigmoid(self.out_layer(self.l0(features))).squeeze(-1)


class GCMF(nn.Module):
    """Cross-attention from F mask queries to T words, followed by c_mlp and a residual FFN.

    Args:
        query_dim: width of the mask-feature queries.
        text_dim: width of the word features.
        dim: attention / output width.
        gate: add the correlation gate (our guess at the paper's figure; the code has none).
        dropout: attention dropout rate, applied per element and again per word (reference 0.06).
        chunk: at most this many query rows (summed over the batch) are processed at once; 0 (auto):
            CPU_CHUNK on CPU, all at once elsewhere.
    """

    def __init__(self, query_dim: int, text_dim: int, dim: int = 128, gate: bool = False,
                 dropout: float = 0.06, chunk: int = 0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GCMF dropout must lie in [0, 1), got {dropout}")
        if chunk < 0:
            raise ValueError(f"GCMF chunk must be a number of queries (0 = auto), got {chunk}")
        self.to_queries = EqualLinear(query_dim, dim)
        self.to_keys = EqualLinear(text_dim, dim)
        self.to_values = EqualLinear(text_dim, dim)
        self.c_mlp = FeedForward(dim)
        self.ffn = FeedForward(dim)
        self.gate = CorrelationGate() if gate else None
        self.dim = dim
        self.dropout = dropout
        self.chunk = chunk

    def forward(self, queries: torch.Tensor, words: torch.Tensor,
                word_padding: torch.Tensor | None = None, return_attention: bool = False):
        """queries (B,F,query_dim), words (B,T,text_dim), word_padding (B,T) bool (True = ignore).

        Returns (B,F,dim), and with `return_attention` also the (B,F,T) attention probabilities
        (after the gate when gated, before dropout).
        """
        self._check_inputs(queries, words, word_padding)
        b, n_queries, _ = queries.shape
        keys = self.to_keys(words)
        values = self.to_values(words)
        # scores = (X·W_qᵀ + b_q)·kᵀ/√d = X·(k·W_q/√d)ᵀ + k·b_q/√d
        w_q, b_q = self.to_queries.effective(1.0 / math.sqrt(self.dim))
        keys_in_query_space = torch.matmul(keys, w_q).transpose(1, 2)        # (B,query_dim,T)
        score_bias = torch.matmul(keys, b_q)                                  # (B,T)
        if word_padding is not None:
            score_bias = score_bias.masked_fill(word_padding, float("-inf"))
        # c_mlp.l0(probs·v) = leaky(probs·(v·W_0ᵀ·√2) + b_0·√2)
        w_0, b_0 = self.c_mlp.l0.effective(ACT_GAIN)
        values_l0 = torch.matmul(values, w_0.t())                             # (B,T,dim)
        keep = self._dropout_keep(b, n_queries, words.shape[1], queries.device)
        # Without dropout and gradients to the queries each output row depends on its query row alone: on CPU,
        # compute it once per distinct row (mask features repeat one row over a region's interior).
        repeated = distinct_rows(queries) if (keep is None and queries.device.type == "cpu" and not (
            queries.requires_grad and torch.is_grad_enabled())) else None
        if repeated is not None:
            queries, index = repeated
            n_queries = queries.shape[1]
        rows_at_once = self.chunk or (CPU_CHUNK if queries.device.type == "cpu" else b * n_queries)
        step = max(1, rows_at_once // b)
        outputs, attention = [], []
        # split (not per-chunk slicing): its backward is one concatenation, where slicing would
        # build a zero-filled full-size gradient per chunk
        for start, chunk in zip(range(0, n_queries, step), queries.split(step, dim=1)):
            rows = slice(start, start + chunk.shape[1])
            scores = torch.baddbmm(score_bias.unsqueeze(1), chunk, keys_in_query_space)
            probs = torch.softmax(scores, dim=-1)
            if self.gate is not None:
                finite = scores if word_padding is None else scores.masked_fill(
                    word_padding.unsqueeze(1), 0.0)
                probs = probs * self.gate(finite, probs)
            if return_attention:
                attention.append(probs)
            if keep is not None:
                probs = probs.masked_fill(~keep[:, rows], 0.0) * (1.0 / (1.0 - self.dropout) ** 2)
            ctrl = fresh_leaky_relu_(torch.baddbmm(b_0, probs, values_l0))
            ctrl = self.c_mlp.out_layer(self.c_mlp.l1(ctrl))
            outputs.append(ctrl + self.ffn(ctrl))
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        attention = (attention[0] if len(attention) == 1 else torch.cat(attention, dim=1)) if return_attention else None
        if repeated is not None:
            out = gather_rows(out, index)
            attention = None if attention is None else gather_rows(attention, index)
        return (out, attention) if return_attention else out

    def _dropout_keep(self, b: int, n_queries: int, n_words: int, device: torch.device):
        """Bool keep mask (B,F,T) for all queries, per element AND per word column, or None.

        Kept weights are rescaled by 1/(1-p) per dropout, i.e. 1/(1-p)² in all.
        """
        if not self.training or self.dropout == 0.0:
            return None
        keep_prob = 1.0 - self.dropout
        elements = torch.empty(b, n_queries, n_words, device=device, dtype=torch.bool)
        columns = torch.empty(b, 1, n_words, device=device, dtype=torch.bool)
        return elements.bernoulli_(keep_prob) & columns.bernoulli_(keep_prob)

    def _check_inputs(self, queries, words, word_padding):
        if queries.dim() != 3 or words.dim() != 3:
            raise ValueError(f"GCMF expects queries (B,F,C) and words (B,T,C), got "
                             f"{tuple(queries.shape)} and {tuple(words.shape)}")
        if queries.shape[0] != words.shape[0]:
            raise ValueError(f"GCMF batch mismatch: {queries.shape[0]} query sets, "
                             f"{words.shape[0]} word sets")
        if words.shape[1] == 0:
            raise ValueError("GCMF needs at least one word position (T = 0)")
        if word_padding is None:
            return
        if word_padding.shape != words.shape[:2] or word_padding.dtype != torch.bool:
            raise ValueError(f"word_padding must be a bool tensor of shape {tuple(words.shape[:2])}, "
                             f"got {word_padding.dtype} {tuple(word_padding.shape)}")
        # A sample whose words are all padding has nothing to attend to (its softmax is NaN). The
        # generator rejects it once per forward; checking here would stall the GPU at every stage.

    def extra_repr(self):
        return f"dim={self.dim}, gate={self.gate is not None}, dropout={self.dropout}, chunk={self.chunk}"
