"""Attention at the level of the equations and of the memory hierarchy.

Self-attention, multi-head attention with the causal mask, grouped- and
multi-query attention, the post-LayerNorm transformer block and SwiGLU, each
written as the lecture's equation (rows of ``X`` are positions); then tiled
attention with the online softmax (FlashAttention's forward pass and its
backward pass by recomputation), instrumented to count the elements each
algorithm reads from and writes to "HBM", with the closed-form counts.
Derived in the chapter "Attention on the hardware, and mixture of experts"
(dls-attention, cme295-flash-attention). The single-head algebra
(``W_QK``, ``W_OV``) lives in :mod:`llmbook.topics.circuits`.
"""

from __future__ import annotations

import math

import torch

from llmbook.core.validate import positive_int

# ---------------------------------------------------------------------------
# The lecture's equations
# ---------------------------------------------------------------------------


def _tensor(name: str, value, min_dim: int = 2) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value)}")
    if value.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions, "
            f"got shape {tuple(value.shape)}"
        )
    return value


def causal_mask(n_queries: int, n_keys: int | None = None) -> torch.Tensor:
    """The lecture's mask ``M``: ``+inf`` where key ``j`` comes after query
    ``i`` (``j > i``), else 0; it is *subtracted* from the scores.

    Args:
        n_queries: rows (query positions).
        n_keys: columns (key positions); defaults to ``n_queries``.

    Returns a float tensor of shape (n_queries, n_keys). Section
    "dls-attention".
    """
    n_queries = positive_int("n_queries", n_queries)
    n_keys = n_queries if n_keys is None else positive_int("n_keys", n_keys)
    i = torch.arange(n_queries)[:, None]
    j = torch.arange(n_keys)[None, :]
    zeros = torch.zeros(n_queries, n_keys)
    return zeros.masked_fill(j > i, math.inf)


def self_attention(Q, K, V, causal: bool = False) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d) - M) V``, the lecture's (masked)
    self-attention.

    Args:
        Q: queries, shape (..., T_q, d).
        K: keys, shape (..., T_k, d).
        V: values, shape (..., T_k, d_v).
        causal: subtract the causal mask ``M`` (key after query -> weight 0).

    Returns shape (..., T_q, d_v). Section "dls-attention".
    """
    Q, K, V = (_tensor(n, t) for n, t in (("Q", Q), ("K", K), ("V", V)))
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(
            f"Q and K must share the last dimension d, got "
            f"{Q.shape[-1]} and {K.shape[-1]}"
        )
    if K.shape[-2] != V.shape[-2]:
        raise ValueError("K and V must have the same number of rows")
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if causal:
        M = causal_mask(Q.shape[-2], K.shape[-2]).to(scores)
        scores = scores - M
    return torch.softmax(scores, dim=-1) @ V


def split_heads(X, n_heads: int) -> torch.Tensor:
    """(..., T, H*d_head) -> (..., H, T, d_head): the reshape that gives each
    head its own ``Q``, ``K``, ``V``."""
    X = _tensor("X", X)
    n_heads = positive_int("n_heads", n_heads)
    if X.shape[-1] % n_heads:
        raise ValueError(
            f"n_heads={n_heads} must divide the width {X.shape[-1]}"
        )
    *lead, T, width = X.shape
    X = X.reshape(*lead, T, n_heads, width // n_heads)
    return X.transpose(-3, -2)


def merge_heads(X) -> torch.Tensor:
    """(..., H, T, d_head) -> (..., T, H*d_head): concatenate the heads'
    outputs."""
    X = _tensor("X", X, 3)
    *lead, H, T, d = X.shape
    return X.transpose(-3, -2).reshape(*lead, T, H * d)


def repeat_kv(X, n_rep: int) -> torch.Tensor:
    """Repeat each key/value head ``n_rep`` times along the head axis:
    (..., H_kv, T, d) -> (..., H_kv*n_rep, T, d), so that query head ``h``
    uses key/value head ``h // n_rep`` (grouped-query attention)."""
    X = _tensor("X", X, 3)
    n_rep = positive_int("n_rep", n_rep)
    return X.repeat_interleave(n_rep, dim=-3)


def multi_head_attention(
    X,
    W_Q,
    W_K,
    W_V,
    W_O,
    n_heads: int,
    n_kv_heads: int | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Multi-head attention of the rows of ``X``; with fewer key/value heads
    it is grouped-query (``n_kv_heads`` groups) or multi-query
    (``n_kv_heads = 1``) attention.

    Args:
        X: inputs, shape (..., T, d_model).
        W_Q: (d_model, H*d_head); ``Q = X W_Q`` split into ``H`` heads.
        W_K, W_V: (d_model, H_kv*d_head), one shared head per group.
        W_O: (H*d_head, d_model), applied to the concatenated heads.
        n_heads: ``H``, query heads.
        n_kv_heads: ``H_kv`` (default ``H``: plain multi-head); must divide
            ``H``; query head ``h`` reads key/value head ``h // (H/H_kv)``.
        causal: apply the causal mask in every head.

    Returns shape (..., T, d_model). Section "dls-attention".
    """
    X = _tensor("X", X)
    n_heads = positive_int("n_heads", n_heads)
    n_kv = n_heads if n_kv_heads is None else n_kv_heads
    n_kv = positive_int("n_kv_heads", n_kv)
    if n_heads % n_kv:
        raise ValueError(f"n_kv_heads={n_kv} must divide n_heads={n_heads}")
    if W_K.shape[-1] * n_heads != W_Q.shape[-1] * n_kv:
        raise ValueError(
            "W_K must have n_kv_heads*d_head columns, where "
            "d_head = W_Q columns / n_heads"
        )
    Q = split_heads(X @ W_Q, n_heads)
    K = repeat_kv(split_heads(X @ W_K, n_kv), n_heads // n_kv)
    V = repeat_kv(split_heads(X @ W_V, n_kv), n_heads // n_kv)
    return merge_heads(self_attention(Q, K, V, causal)) @ W_O


def layer_norm(X, gamma, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last axis with gain ``gamma`` (no bias):
    ``(x - mean) / sqrt(var + eps) * gamma``, variance without Bessel's
    correction."""
    X = _tensor("X", X, 1)
    mean = X.mean(-1, keepdim=True)
    var = ((X - mean) ** 2).mean(-1, keepdim=True)
    return (X - mean) / torch.sqrt(var + eps) * gamma


def transformer_block(
    X, params: dict, n_heads: int, causal: bool = False, eps: float = 1e-5
) -> torch.Tensor:
    """The lecture's (post-LayerNorm) block:
    ``Z = LN(X + MHA(X))``, ``H = LN(ReLU(Z W_1) W_2 + Z)``.

    Args:
        X: (..., T, d_model).
        params: ``W_Q``, ``W_K``, ``W_V``, ``W_O`` as in
            :func:`multi_head_attention`; ``W_1`` (d_model, d_ff),
            ``W_2`` (d_ff, d_model); LayerNorm gains ``ln1``, ``ln2``
            (d_model,).
        n_heads: attention heads.
        causal: mask future positions.
        eps: LayerNorm's epsilon.

    Returns (..., T, d_model). Section "dls-attention".
    """
    p = params
    A = multi_head_attention(
        X, p["W_Q"], p["W_K"], p["W_V"], p["W_O"], n_heads, causal=causal
    )
    Z = layer_norm(X + A, p["ln1"], eps)
    return layer_norm(torch.relu(Z @ p["W_1"]) @ p["W_2"] + Z, p["ln2"], eps)


def swish(z) -> torch.Tensor:
    """``Swish(z) = z * sigmoid(z)`` (PyTorch's ``silu``)."""
    return z * torch.sigmoid(z)


def swiglu(x, W_1, b_1, W_2, b_2) -> torch.Tensor:
    """The lecture's ``SwiGLU(x) = Swish(x W_1 + b_1) * (x W_2 + b_2)``
    (elementwise product).

    Args:
        x: (..., d_model); W_1, W_2: (d_model, d_ff); b_1, b_2: (d_ff,).

    Returns (..., d_ff): the gated hidden layer. A feed-forward layer maps it
    back with a third matrix, see :func:`swiglu_ffn`. Section
    "dls-attention".
    """
    return swish(x @ W_1 + b_1) * (x @ W_2 + b_2)


def swiglu_ffn(x, W_gate, W_up, W_down) -> torch.Tensor:
    """The SwiGLU feed-forward layer of Llama-style models (no biases):
    ``(Swish(x W_gate) * (x W_up)) W_down``.

    Args:
        x: (..., d_model); W_gate, W_up: (d_model, d_ff);
        W_down: (d_ff, d_model).
    """
    zero = torch.zeros(W_gate.shape[-1], dtype=x.dtype)
    return swiglu(x, W_gate, zero, W_up, zero) @ W_down


# ---------------------------------------------------------------------------
# The memory hierarchy: standard attention and FlashAttention, counted
# ---------------------------------------------------------------------------


class HBMCounter:
    """Counts the elements an algorithm reads from and writes to "HBM" (the
    arrays outside its on-chip tiles). ``read`` and ``write`` return their
    argument, so they wrap each transfer in place."""

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0

    def read(self, t: torch.Tensor) -> torch.Tensor:
        self.reads += t.numel()
        return t

    def write(self, t: torch.Tensor) -> torch.Tensor:
        self.writes += t.numel()
        return t

    @property
    def total(self) -> int:
        """Elements moved in either direction."""
        return self.reads + self.writes


def _qkv(Q, K, V):
    for name, t in (("Q", Q), ("K", K), ("V", V)):
        _tensor(name, t)
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-dimensional (one head)")
    if Q.shape[1] != K.shape[1] or K.shape != V.shape:
        raise ValueError("Q, K, V must be (N_q, d), (N_k, d), (N_k, d)")


def _scores(Qi, Kj, i0: int, j0: int, causal: bool) -> torch.Tensor:
    S = Qi @ Kj.T / math.sqrt(Qi.shape[1])
    if causal:
        rows = torch.arange(i0, i0 + Qi.shape[0])[:, None]
        cols = torch.arange(j0, j0 + Kj.shape[0])[None, :]
        S = S.masked_fill(cols > rows, -math.inf)
    return S


def standard_attention(Q, K, V, causal=False, counter=None):
    """Standard attention as the lecture draws it (FlashAttention paper,
    Algorithm 0): read ``Q, K``, write ``S``; read ``S``, write
    ``P = softmax(S)``; read ``P, V``, write ``O = P V``.

    Args:
        Q: (N_q, d); K, V: (N_k, d), one head.
        causal: mask keys after the query.
        counter: an :class:`HBMCounter`, or ``None``.

    Returns ``(O, P)``; ``P`` is kept for the backward pass.
    ``standard_hbm_elements`` gives the count in closed form. Section
    "cme295-flash-attention".
    """
    _qkv(Q, K, V)
    c = counter or HBMCounter()
    S = c.write(_scores(c.read(Q), c.read(K), 0, 0, causal))
    P = c.write(torch.softmax(c.read(S), dim=-1))
    O = c.write(c.read(P) @ c.read(V))
    return O, P


def standard_attention_backward(Q, K, V, P, dO, counter=None):
    """Backward pass of standard attention from the stored ``P``
    (FlashAttention paper, Algorithm 3), one transfer per matrix product.

    Returns ``(dQ, dK, dV)``. Section "cme295-flash-attention".
    """
    _qkv(Q, K, V)
    c = counter or HBMCounter()
    scale = 1 / math.sqrt(Q.shape[1])
    dV = c.write(c.read(P).T @ c.read(dO))
    dP = c.write(c.read(dO) @ c.read(V).T)
    Pr, dPr = c.read(P), c.read(dP)
    dS = c.write(Pr * (dPr - (Pr * dPr).sum(-1, keepdim=True)))
    dQ = c.write(scale * c.read(dS) @ c.read(K))
    dK = c.write(scale * c.read(dS).T @ c.read(Q))
    return dQ, dK, dV


def flash_block_sizes(M: int, d: int) -> tuple[int, int]:
    """FlashAttention's tile sizes for an on-chip buffer of ``M`` elements:
    ``B_c = ceil(M / 4d)`` key rows and ``B_r = min(B_c, d)`` query rows,
    so that the tiles of ``Q, K, V, O`` fit in ``M``.

    Returns ``(B_r, B_c)``. Section "cme295-flash-attention".
    """
    M = positive_int("M", M)
    d = positive_int("d", d)
    b_c = math.ceil(M / (4 * d))
    return min(b_c, d), b_c


def _blocks(n: int, size: int):
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def flash_attention_forward(
    Q, K, V, block_q: int, block_k: int, causal=False, counter=None
):
    """FlashAttention's forward pass (paper's Algorithm 1, storing the
    log-sum-exp): key/value tiles in the outer loop, query tiles inside,
    the softmax computed online with a running max ``m`` and running sum
    ``l`` per row, ``O`` rescaled as they change.

    Args:
        Q: (N_q, d); K, V: (N_k, d), one head.
        block_q: ``B_r``, query rows per tile (need not divide N_q).
        block_k: ``B_c``, key rows per tile (need not divide N_k).
        causal: mask keys after the query; fully masked tiles are skipped.
        counter: an :class:`HBMCounter` for ``Q, K, V, O, l, m`` and the
            saved log-sum-exp.

    Returns ``(O, lse)`` with ``lse_i = log sum_j exp(S_ij)``. Section
    "cme295-flash-attention".
    """
    _qkv(Q, K, V)
    block_q = positive_int("block_q", block_q)
    block_k = positive_int("block_k", block_k)
    c = counter or HBMCounter()
    n_q, d = Q.shape
    O = c.write(torch.zeros(n_q, d, dtype=Q.dtype))
    l = c.write(torch.zeros(n_q, dtype=Q.dtype))
    m = c.write(torch.full((n_q,), -math.inf, dtype=Q.dtype))
    for j0, j1 in _blocks(K.shape[0], block_k):
        Kj, Vj = c.read(K[j0:j1]), c.read(V[j0:j1])
        for i0, i1 in _blocks(n_q, block_q):
            if causal and j0 > i1 - 1:
                continue  # every key of this tile is after every query
            Qi, Oi = c.read(Q[i0:i1]), c.read(O[i0:i1])
            li, mi = c.read(l[i0:i1]), c.read(m[i0:i1])
            S = _scores(Qi, Kj, i0, j0, causal)
            m_tile = S.max(-1).values
            m_new = torch.maximum(mi, m_tile)
            safe = torch.where(torch.isinf(m_new), 0.0, m_new)
            P = torch.exp(S - safe[:, None])  # masked entries give 0
            old = torch.exp(mi - safe)  # 0 where mi = -inf
            l_new = old * li + P.sum(-1)
            num = (old * li)[:, None] * Oi + P @ Vj
            O_new = torch.where(
                (l_new > 0)[:, None],
                num / l_new.clamp_min(1e-300)[:, None],
                Oi,
            )
            O[i0:i1] = c.write(O_new)
            l[i0:i1] = c.write(l_new)
            m[i0:i1] = c.write(m_new)
    lse = c.write(c.read(m) + torch.log(c.read(l)))
    return O, lse


def flash_attention_backward(
    Q,
    K,
    V,
    O,
    dO,
    lse,
    block_q: int,
    block_k: int,
    causal=False,
    counter=None,
):
    """FlashAttention's backward pass: ``S`` and ``P = exp(S - lse)`` are
    recomputed tile by tile from ``Q, K`` and the saved log-sum-exp instead
    of being read from memory (paper's Algorithm 4 with the log-sum-exp).

    Args:
        Q, K, V, O: as in :func:`flash_attention_forward`; O its output.
        dO: gradient of the loss with respect to ``O``, (N_q, d).
        lse: the forward pass's log-sum-exp, (N_q,).
        block_q, block_k, causal, counter: as in the forward pass.

    Returns ``(dQ, dK, dV)``. Section "cme295-flash-attention".
    """
    _qkv(Q, K, V)
    block_q = positive_int("block_q", block_q)
    block_k = positive_int("block_k", block_k)
    c = counter or HBMCounter()
    n_q, d = Q.shape
    scale = 1 / math.sqrt(d)
    dQ = c.write(torch.zeros(n_q, d, dtype=Q.dtype))
    D = c.write((c.read(dO) * c.read(O)).sum(-1))  # rowsum(dO * O)
    dK = torch.empty_like(K)
    dV = torch.empty_like(V)
    for j0, j1 in _blocks(K.shape[0], block_k):
        Kj, Vj = c.read(K[j0:j1]), c.read(V[j0:j1])
        dKj = torch.zeros_like(Kj)
        dVj = torch.zeros_like(Vj)
        for i0, i1 in _blocks(n_q, block_q):
            if causal and j0 > i1 - 1:
                continue
            Qi, dOi = c.read(Q[i0:i1]), c.read(dO[i0:i1])
            dQi = c.read(dQ[i0:i1])
            lse_i, D_i = c.read(lse[i0:i1]), c.read(D[i0:i1])
            P = torch.exp(_scores(Qi, Kj, i0, j0, causal) - lse_i[:, None])
            dVj += P.T @ dOi
            dS = P * (dOi @ Vj.T - D_i[:, None])
            dQ[i0:i1] = c.write(dQi + scale * dS @ Kj)
            dKj += scale * dS.T @ Qi
        dK[j0:j1] = c.write(dKj)
        dV[j0:j1] = c.write(dVj)
    return dQ, dK, dV


def standard_hbm_elements(
    n_q: int, n_k: int, d: int, backward: bool = False
) -> int:
    """Closed form of :func:`standard_attention`'s transfers:
    ``2 N_q d + 2 N_k d + 4 N_q N_k`` elements (``Theta(N d + N^2)``); with
    ``backward``, plus :func:`standard_attention_backward`'s
    ``7 N_q N_k + 4 N_q d + 4 N_k d``."""
    n_q, n_k, d = (
        positive_int(k, v) for k, v in (("n_q", n_q), ("n_k", n_k), ("d", d))
    )
    fwd = 2 * n_q * d + 2 * n_k * d + 4 * n_q * n_k
    bwd = 7 * n_q * n_k + 4 * n_q * d + 4 * n_k * d
    return fwd + (bwd if backward else 0)


def flash_hbm_elements(
    n_q: int, n_k: int, d: int, block_k: int, backward: bool = False
) -> int:
    """Closed form of :func:`flash_attention_forward`'s transfers (no mask)
    with ``T_c = ceil(N_k / B_c)`` key tiles:
    ``N_q d + 5 N_q + 2 N_k d + T_c (3 N_q d + 4 N_q)`` elements; with
    ``backward``, plus ``3 N_q d + N_q + 4 N_k d + T_c (4 N_q d + 2 N_q)``.

    With ``B_c`` proportional to ``M / d`` this is ``Theta(N^2 d^2 / M)``.
    The query tile size does not enter: the query tiles of one key tile
    cover every row once.
    """
    n_q, n_k, d, block_k = (
        positive_int(k, v)
        for k, v in (
            ("n_q", n_q),
            ("n_k", n_k),
            ("d", d),
            ("block_k", block_k),
        )
    )
    t_c = math.ceil(n_k / block_k)
    fwd = n_q * d + 5 * n_q + 2 * n_k * d + t_c * (3 * n_q * d + 4 * n_q)
    bwd = 3 * n_q * d + n_q + 4 * n_k * d + t_c * (4 * n_q * d + 2 * n_q)
    return fwd + (bwd if backward else 0)


def attention_flops(
    n: int, d: int, backward: bool = False, recompute: bool = False
) -> int:
    """Matrix-product FLOP of one head's attention (2 per multiply-add):
    forward ``Q K^T`` and ``P V``, ``4 N^2 d``; the backward pass's four
    products add ``8 N^2 d``, and recomputing ``S = Q K^T`` in the backward
    pass (FlashAttention) another ``2 N^2 d``. Elementwise work (softmax,
    mask) is left out."""
    n, d = positive_int("n", n), positive_int("d", d)
    flops = 4 * n * n * d
    if backward:
        flops += 8 * n * n * d + (2 * n * n * d if recompute else 0)
    elif recompute:
        raise ValueError("recompute only applies with backward=True")
    return flops


def naive_attention(Q, K, V) -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` computed the obvious way, with the
    whole (..., N, N) score matrix in memory (for timing against PyTorch's
    fused ``scaled_dot_product_attention``)."""
    S = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    return torch.softmax(S, dim=-1) @ V


# ---------------------------------------------------------------------------
# The notebooks' tables and figures (attention-mha, attention-flash)
# ---------------------------------------------------------------------------


def torch_mha_weights(mha) -> tuple:
    """The weights of a bias-free ``torch.nn.MultiheadAttention`` in the
    lecture's convention (``Q = X W_Q``, output ``concat(heads) W_O``):
    ``(W_Q, W_K, W_V, W_O)``, each (d_model, d_model), detached. PyTorch
    stores them transposed and stacked in ``in_proj_weight``. Used in the
    attention-mha notebook (section "dls-attention")."""
    W = mha.in_proj_weight.detach()
    d = W.shape[1]
    W_O = mha.out_proj.weight.detach().T
    return W[:d].T, W[d : 2 * d].T, W[2 * d :].T, W_O


def encoder_layer_params(layer) -> dict:
    """The ``params`` of :func:`transformer_block` read from a bias-free
    ``torch.nn.TransformerEncoderLayer``: ``W_Q``, ``W_K``, ``W_V``,
    ``W_O`` (d_model, d_model), ``W_1`` (d_model, d_ff), ``W_2``
    (d_ff, d_model), LayerNorm gains ``ln1``, ``ln2`` (d_model,), all
    detached. Used in the attention-mha notebook ("dls-attention")."""
    W_Q, W_K, W_V, W_O = torch_mha_weights(layer.self_attn)
    return {
        "W_Q": W_Q,
        "W_K": W_K,
        "W_V": W_V,
        "W_O": W_O,
        "W_1": layer.linear1.weight.detach().T,
        "W_2": layer.linear2.weight.detach().T,
        "ln1": layer.norm1.weight.detach(),
        "ln2": layer.norm2.weight.detach(),
    }


def kv_cache_table(
    n_layers: int,
    kv_heads: dict,
    d_head: int,
    bytes_per_value: int,
    context: int,
):
    """KV-cache bytes of one sequence for each attention variant.

    Args:
        n_layers: layers of the model.
        kv_heads: ``{variant name: key/value heads}``, e.g. MHA, GQA, MQA.
        d_head: width of one head.
        bytes_per_value: bytes of one cached number (2 for fp16).
        context: tokens held in the cache.

    Returns a DataFrame indexed by ``attention`` (the names) with the
    columns ``K/V heads``, ``bytes per token`` (int, from
    :func:`llmbook.core.accounting.kv_cache_bytes_per_token`), and the
    same as text per token and for ``context`` tokens. Used in the
    attention-mha notebook (section "dls-attention", KV-cache bytes).
    """
    import pandas as pd

    from llmbook.book import fmt
    from llmbook.core import accounting

    rows = []
    for name, n_kv in kv_heads.items():
        b = accounting.kv_cache_bytes_per_token(
            n_layers, n_kv, d_head, bytes_per_value
        )
        rows.append(
            {
                "attention": name,
                "K/V heads": n_kv,
                "bytes per token": int(b),
                "per token": fmt.nbytes(b),
                f"{context} tokens": fmt.nbytes(b * context),
            }
        )
    return pd.DataFrame(rows).set_index("attention")


def softmax_scaling_table(
    dims, n_queries: int, n_keys: int, generator, dtype=torch.float64
):
    """Why divide by sqrt(d): for each head width ``d`` in ``dims``, draw
    ``n_queries`` queries with unit-variance entries in groups of
    ``n_keys`` that share one draw of ``n_keys`` keys (queries then keys,
    from ``generator``), and measure the variance of the raw scores
    ``q.k`` (about ``d``) and of ``q.k/sqrt(d)`` (about 1), and the mean
    largest softmax weight over the keys for both.

    Returns a DataFrame with the columns ``d``, ``Var(q·k)``,
    ``Var(q·k/√d)``, ``mean top weight, raw``, ``mean top weight,
    scaled``, one row per width. Used in the attention-mha notebook
    (section "dls-attention", why divide by sqrt(d)).
    """
    import pandas as pd

    def top(scores):  # mean over queries of the largest softmax weight
        return torch.softmax(scores, -1).max(-1).values.mean().item()

    groups = n_queries // n_keys
    rows = []
    for d in dims:
        q = torch.randn(groups, n_keys, d, generator=generator, dtype=dtype)
        k = torch.randn(groups, n_keys, d, generator=generator, dtype=dtype)
        s = (q @ k.transpose(1, 2)).reshape(-1, n_keys)  # raw scores
        scaled = s / math.sqrt(d)
        rows.append(
            {
                "d": d,
                "Var(q·k)": s.var().item(),
                "Var(q·k/√d)": scaled.var().item(),
                "mean top weight, raw": top(s),
                "mean top weight, scaled": top(scaled),
            }
        )
    return pd.DataFrame(rows)


def counted_hbm_elements(
    n: int, d: int, M: int, generator, dtype=torch.float64
) -> tuple[int, int]:
    """Run standard attention and FlashAttention's forward pass (tiles from
    :func:`flash_block_sizes` for a buffer of ``M`` elements) on random
    ``Q, K, V`` of shape (n, d) drawn from ``generator``, and return the
    elements each moved to or from HBM, ``(standard, flash)``, as counted
    by :class:`HBMCounter`. Used in the attention-flash notebook."""
    Q, K, V = (
        torch.randn(n, d, generator=generator, dtype=dtype) for _ in range(3)
    )
    bq, bk = flash_block_sizes(M, d)
    cs, cf = HBMCounter(), HBMCounter()
    standard_attention(Q, K, V, counter=cs)
    flash_attention_forward(Q, K, V, bq, bk, counter=cf)
    return cs.total, cf.total


def hbm_traffic_by_length(
    ns, d: int, M: int, count_max_n: int, generator, dtype=torch.float64
):
    """Forward-pass HBM elements against sequence length ``N`` (square
    attention, head width ``d``, buffer ``M``): the closed forms
    ``standard`` and ``flash`` for every ``N`` in ``ns``, and the counts
    of the running code (:func:`counted_hbm_elements`) as ``standard
    counted`` and ``flash counted`` for ``N <= count_max_n`` (NaN above).
    Returns a DataFrame indexed by ``N``. Used in the attention-flash
    notebook (section "cme295-flash-attention")."""
    import pandas as pd

    bk = flash_block_sizes(M, d)[1]
    rows = []
    for n in ns:
        row = {
            "N": n,
            "standard": standard_hbm_elements(n, n, d),
            "flash": flash_hbm_elements(n, n, d, bk),
        }
        if n <= count_max_n:
            row["standard counted"], row["flash counted"] = (
                counted_hbm_elements(n, d, M, generator, dtype)
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("N")


def hbm_traffic_by_buffer(
    n: int, d: int, m_values, generator, dtype=torch.float64
):
    """FlashAttention's forward-pass HBM elements against the buffer size
    ``M`` at sequence length ``n`` and head width ``d``: for each ``M`` in
    ``m_values`` the tiles ``B_r``, ``B_c``, the counted (``flash
    counted``) and closed-form (``flash``) elements, and standard
    attention's counted elements (``standard``, independent of ``M``).
    Returns a DataFrame indexed by ``M``. Used in the attention-flash
    notebook (section "cme295-flash-attention")."""
    import pandas as pd

    rows = []
    for M in m_values:
        bq, bk = flash_block_sizes(M, d)
        s, f = counted_hbm_elements(n, d, M, generator, dtype)
        rows.append(
            {
                "M": M,
                "B_r": bq,
                "B_c": bk,
                "flash counted": f,
                "flash": flash_hbm_elements(n, n, d, bk),
                "standard": s,
            }
        )
    return pd.DataFrame(rows).set_index("M")


def plot_hbm_traffic(by_n, by_m, d: int, M: int, n: int):
    """Two log-log panels of HBM traffic: against sequence length
    (``by_n`` from :func:`hbm_traffic_by_length`, buffer ``M``) and
    against the buffer size (``by_m`` from :func:`hbm_traffic_by_buffer`,
    length ``n``), head width ``d``; closed forms as lines, counts as
    markers, the paper's Theta scaled to meet the closed form at one end
    as dotted lines. Returns the figure (attention-flash notebook)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from llmbook.book.plotting import use_style

    use_style()
    # stacked at the book's 6.4 in: readable on a phone (issue 20)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 8.4))
    ns = np.array(by_n.index, dtype=float)
    done = by_n.dropna()
    ax1.plot(ns, by_n["standard"], "-", label="standard, closed form")
    ax1.plot(ns, by_n["flash"], "-", label="FlashAttention, closed form")
    ax1.plot(
        done.index, done["standard counted"], "o", color="C0", label="counted"
    )
    ax1.plot(
        done.index, done["flash counted"], "s", color="C1", label="counted"
    )
    theta_s = ns * d + ns**2
    theta_f = ns**2 * d**2 / M
    ax1.plot(
        ns,
        theta_s * by_n["standard"].iloc[-1] / theta_s[-1],
        ":",
        color="C0",
        label="Θ(Td + T²), scaled",
    )
    ax1.plot(
        ns,
        theta_f * by_n["flash"].iloc[-1] / theta_f[-1],
        ":",
        color="C1",
        label="Θ(T²d²/M), scaled",
    )
    ax1.set_xlabel("sequence length T")
    ax1.set_title(f"Forward pass, d = {d}, M = {M}")
    ax1.legend(fontsize=9)
    ms = np.array(by_m.index, dtype=float)
    ax2.plot(
        ms, by_m["flash"], "-", color="C1", label="FlashAttention, closed form"
    )
    ax2.plot(ms, by_m["flash counted"], "s", color="C1", label="counted")
    ax2.plot(ms, by_m["standard"], "-", color="C0", label="standard")
    theta_m = n**2 * d**2 / ms
    ax2.plot(
        ms,
        theta_m * by_m["flash"].iloc[0] / theta_m[0],
        ":",
        color="C1",
        label="Θ(T²d²/M), scaled",
    )
    ax2.set_xlabel("on-chip buffer M (elements)")
    ax2.set_title(f"Forward pass, T = {n}, d = {d}")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("elements moved to/from HBM")
    ax2.legend(fontsize=9)
    fig.tight_layout()
    return fig


def cpu_attention_table(ns, d: int, repeats: int):
    """Naive attention (:func:`naive_attention`) against PyTorch's fused
    ``scaled_dot_product_attention`` on this CPU: one head, float32, random
    ``q, k, v`` of shape (1, 1, N, d) from torch's global generator, for
    each ``N`` in ``ns``. For each kernel, after one warm-up call, the peak
    resident memory a call adds (``... MB``,
    :func:`llmbook.core.measure.peak_memory_increase`) and the best time
    of ``repeats`` calls (``... ms``); and ``N² float32 MB``, the size of
    one score matrix. Returns a DataFrame indexed by ``N`` (the
    attention-flash notebook, "cme295-flash-attention")."""
    import time

    import pandas as pd
    import torch.nn.functional as F

    from llmbook.core import measure

    rows = []
    for n in ns:
        q, k, v = (torch.randn(1, 1, n, d) for _ in range(3))
        row = {"N": n}
        for name, fn in [
            ("naive", naive_attention),
            ("SDPA", F.scaled_dot_product_attention),
        ]:
            fn(q, k, v)  # warm-up
            row[f"{name} MB"] = measure.peak_memory_increase(fn, q, k, v) / 1e6
            best = math.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(q, k, v)
                best = min(best, time.perf_counter() - t0)
            row[f"{name} ms"] = best * 1e3
        row["N² float32 MB"] = n * n * 4 / 1e6
        rows.append(row)
    return pd.DataFrame(rows).set_index("N")


def plot_cpu_memory(cpu, d: int):
    """Peak memory added by naive attention and by PyTorch's fused kernel
    against sequence length (``cpu`` from :func:`cpu_attention_table`,
    head width ``d``), log-log, values below 0.01 MB drawn at 0.01, with
    two T x T float32 matrices (S and P) for reference. Returns the
    figure (attention-flash notebook)."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "sequence length T",
        "peak memory added (MB)",
        f"One head, d = {d}, float32, this CPU",
        logx=True,
        logy=True,
    )
    ax.plot(
        cpu.index,
        cpu["naive MB"].clip(lower=1e-2),
        "o-",
        label="naive (materialises T × T)",
    )
    ax.plot(
        cpu.index,
        cpu["SDPA MB"].clip(lower=1e-2),
        "s-",
        label="torch SDPA (fused)",
    )
    ax.plot(
        cpu.index,
        2 * cpu["N² float32 MB"],
        ":",
        color="gray",
        label="2 T² float32 (S and P)",
    )
    ax.set_xticks(cpu.index, [f"{n:,}" for n in cpu.index])
    ax.minorticks_off()
    ax.legend()
    return fig
