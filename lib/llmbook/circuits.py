"""Transformer circuits by hand: one attention head, the multi-head views, and the
hand-built induction (copy) head of the coding lab. Derived in the chapter "Transformer
circuits and induction heads" (hw11-q2, hw11-q3).

Convention of the coding lab (hw11-q3): rows of ``X`` are positions, shape
(seq_len, d_model). The written proofs use the homework's columns-are-tokens convention;
the two differ by a transpose.
"""

from __future__ import annotations

import numpy as np

VOCAB = "abcd"
MAX_LEN = 5


def _matrix(name: str, value, ndim: int = 2) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def stable_softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax that subtracts the row maximum first, so large scores cannot overflow.

    Entries equal to ``-inf`` (masked) get weight exactly 0.
    """
    s = np.asarray(scores, dtype=float)
    shifted = s - np.max(s, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def attention_pattern(X, W_QK) -> np.ndarray:
    """Causal attention pattern A (seq_len x seq_len): A_ij = softmax_j(x_i^T W_QK x_j), j <= i."""
    X, W_QK = _matrix("X", X), _matrix("W_QK", W_QK)
    d = X.shape[1]
    if W_QK.shape != (d, d):
        raise ValueError(f"W_QK must have shape ({d}, {d}) to match X's d_model, got {W_QK.shape}")
    scores = X @ W_QK @ X.T                              # (seq, seq): scores[i, j] = x_i^T W_QK x_j
    future = np.triu(np.ones_like(scores, dtype=bool), k=1)
    return stable_softmax(np.where(future, -np.inf, scores))


def single_attention_head(X, W_QK, W_OV) -> np.ndarray:
    """Output of one causal attention head, shape (seq_len, d_model).

    Row i is sum_j A_ij W_OV x_j with A from :func:`attention_pattern`. ``X`` has one row per
    position; lists are accepted. Raises ``ValueError`` on mismatched shapes.
    """
    X, W_OV = _matrix("X", X), _matrix("W_OV", W_OV)
    d = X.shape[1]
    if W_OV.shape != (d, d):
        raise ValueError(f"W_OV must have shape ({d}, {d}) to match X's d_model, got {W_OV.shape}")
    A = attention_pattern(X, W_QK)
    return A @ X @ W_OV.T                                # row i: sum_j A_ij (W_OV x_j)


def concat_output_matrix(per_head_W_O: list) -> np.ndarray:
    """W_O^H = [W_O^1 | W_O^2 | ... | W_O^H]: the per-head output matrices side by side (hw11-q2b-i)."""
    mats = [_matrix(f"per_head_W_O[{h}]", W) for h, W in enumerate(per_head_W_O)]
    if not mats or len({m.shape for m in mats}) != 1:
        raise ValueError("per_head_W_O must be a non-empty list of equally shaped matrices")
    return np.concatenate(mats, axis=1)


# ---- The coding lab: an induction head from two hand-set heads (hw11-q3) ----
# Residual stream layout: [token one-hot (4) | position one-hot (5) | previous token (4)].
TOK, POS, PREV = slice(0, 4), slice(4, 9), slice(9, 13)
D_MODEL = 13


def embed(sequence: str) -> np.ndarray:
    """Residual stream after embedding: one-hot token and one-hot position; the last 4 dims are free."""
    if not isinstance(sequence, str) or not 1 <= len(sequence) <= MAX_LEN or set(sequence) - set(VOCAB):
        raise ValueError(f"sequence must be 1 to {MAX_LEN} letters from {VOCAB!r}, got {sequence!r}")
    X = np.zeros((len(sequence), D_MODEL))
    for i, ch in enumerate(sequence):
        X[i, VOCAB.index(ch)] = 1.0
        X[i, POS.start + i] = 1.0
    return X


def previous_token_head(attention_strength: float) -> tuple[np.ndarray, np.ndarray]:
    """(W_QK, W_OV) of a head at position i attending to position i-1 and copying its token
    into the free "previous token" subspace."""
    s = float(attention_strength)
    W_QK = np.zeros((D_MODEL, D_MODEL))
    for i in range(1, MAX_LEN):
        W_QK[POS.start + i, POS.start + i - 1] = s       # query at position i, key at position i-1
    W_OV = np.zeros((D_MODEL, D_MODEL))
    W_OV[PREV, TOK] = np.eye(4)                          # read the token, write it as "previous token"
    return W_QK, W_OV


def copying_head(attention_strength: float) -> tuple[np.ndarray, np.ndarray]:
    """(W_QK, W_OV) of a head whose query (current token) matches each key's previous token,
    and which copies the attended position's token into the token subspace.

    Position 0 has no previous token (the previous-token head can only attend to itself there),
    so every query position also scores key position 0 down by ``attention_strength``.
    """
    s = float(attention_strength)
    W_QK = np.zeros((D_MODEL, D_MODEL))
    W_QK[TOK, PREV] = s * np.eye(4)
    W_QK[POS, POS.start] = -s
    W_OV = np.zeros((D_MODEL, D_MODEL))
    W_OV[TOK, TOK] = np.eye(4)
    return W_QK, W_OV


def induction_output(sequence: str, attention_strength: float) -> np.ndarray:
    """The copy head's output at the last position over the 4 token dimensions (a, b, c, d).

    The previous-token head writes into the residual stream; the copying head reads the sum.
    With a large ``attention_strength`` the output approaches the one-hot token that followed
    the last earlier occurrence of the final token.
    """
    s = float(attention_strength)
    if not np.isfinite(s) or s < 0:
        raise ValueError(f"attention_strength must be finite and >= 0, got {attention_strength!r}")
    X = embed(sequence)
    X = X + single_attention_head(X, *previous_token_head(s))
    return single_attention_head(X, *copying_head(s))[-1, TOK]


# ---- The zero-layer model: logits = W_U W_E T, a learned bigram table (hw11-q2a) ----

def markov_chain(n_vocab: int, concentration: float = 0.5, seed: int = 0) -> np.ndarray:
    """A random transition matrix P (rows sum to 1): P[i, j] = P(next = j | current = i)."""
    if int(n_vocab) < 2 or not concentration > 0:
        raise ValueError("n_vocab must be >= 2 and concentration > 0")
    return np.random.default_rng(seed).dirichlet(np.full(int(n_vocab), float(concentration)), size=int(n_vocab))


def sample_markov(P: np.ndarray, length: int, seed: int = 0) -> np.ndarray:
    """One token sequence of ``length`` drawn from the chain ``P`` (uniform start)."""
    P = _matrix("P", P)
    if P.shape[0] != P.shape[1] or not np.allclose(P.sum(1), 1):
        raise ValueError("P must be a square matrix whose rows sum to 1")
    rng = np.random.default_rng(seed)
    cum = np.cumsum(P, axis=1)
    seq = np.empty(int(length), dtype=int)
    seq[0] = rng.integers(P.shape[0])
    u = rng.random(int(length))
    for t in range(1, int(length)):
        seq[t] = min(int(np.searchsorted(cum[seq[t - 1]], u[t])), P.shape[0] - 1)
    return seq


def train_zero_layer(sequence: np.ndarray, n_vocab: int, d_model: int, steps: int = 300, lr: float = 0.05,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit W_E (d_model x n_vocab) and W_U (n_vocab x d_model) by next-token cross-entropy, full batch, Adam.

    Only bigram counts matter to a zero-layer model, so training runs on the count table.
    """
    import torch

    seq = np.asarray(sequence, dtype=int)
    counts = np.zeros((n_vocab, n_vocab))
    np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
    C = torch.tensor(counts, dtype=torch.float32)
    g = torch.Generator().manual_seed(int(seed))
    W_E = (torch.randn(d_model, n_vocab, generator=g) / np.sqrt(d_model)).requires_grad_()
    W_U = (torch.randn(n_vocab, d_model, generator=g) / np.sqrt(d_model)).requires_grad_()
    opt = torch.optim.Adam([W_E, W_U], lr=lr)
    for _ in range(int(steps)):
        logits = (W_U @ W_E).T                              # row i: logits after current token i
        loss = -(C * torch.log_softmax(logits, dim=1)).sum() / C.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W_E.detach().numpy(), W_U.detach().numpy()
