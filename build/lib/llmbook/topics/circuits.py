"""Transformer circuits by hand: one attention head, the multi-head views, and
the hand-built induction (copy) head of the coding lab. Derived in the chapter
"Transformer circuits and induction heads" (hw11-q2, hw11-q3).

Convention of the coding lab (hw11-q3): rows of ``X`` are positions, shape
(seq_len, d_model). The written proofs use the homework's columns-are-tokens
convention; the two differ by a transpose.
"""

from __future__ import annotations

import numpy as np

from llmbook.core.validate import positive_int

ALPHABET = "abcd"
MAX_LEN = 5


def _matrix(name: str, value, ndim: int = 2) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    if arr.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-dimensional, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _square(name: str, value, d: int) -> np.ndarray:
    """``value`` as a (d, d) float matrix, or ``ValueError`` naming
    ``name``.
    """
    M = _matrix(name, value)
    if M.shape != (d, d):
        raise ValueError(
            f"{name} must have shape ({d}, {d}) "
            f"to match X's d_model, got {M.shape}"
        )
    return M


def stable_softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` that subtracts the maximum first, so large scores
    cannot overflow.

    Entries equal to ``-inf`` (masked) get weight exactly 0. Used by every head
    (hw11-q3).
    """
    s = np.asarray(scores, dtype=float)
    e = np.exp(s - np.max(s, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attention_pattern(X, W_QK) -> np.ndarray:
    """Causal attention pattern A (seq_len x seq_len): A_ij = softmax_j(x_i^T
    W_QK x_j), j <= i.

    ``X`` has one row per position, shape (seq_len, d_model); the score is the
    bilinear form of hw11-q2c-i. Raises ``ValueError`` on mismatched shapes.
    """
    X = _matrix("X", X)
    W_QK = _square("W_QK", W_QK, X.shape[1])
    scores = X @ W_QK @ X.T  # scores[i, j] = x_i^T W_QK x_j
    future = np.triu(np.ones(scores.shape, dtype=bool), k=1)
    return stable_softmax(np.where(future, -np.inf, scores))


def single_attention_head(X, W_QK, W_OV) -> np.ndarray:
    """Output of one causal attention head, shape (seq_len, d_model) (hw11-q3).

    Row i is sum_j A_ij W_OV x_j with A from :func:`attention_pattern`: the
    attention-weighted average of hw11-q2d-i, pushed through the OV circuit.
    ``X`` has one row per position; lists are accepted. Raises ``ValueError``
    on mismatched shapes.
    """
    X = _matrix("X", X)
    W_OV = _square("W_OV", W_OV, X.shape[1])
    A = attention_pattern(X, W_QK)
    return A @ X @ W_OV.T  # row i: sum_j A_ij (W_OV x_j)


def concat_output_matrix(per_head_W_O: list) -> np.ndarray:
    """W_O^H = [W_O^1 | ... | W_O^H]: the per-head output matrices side by side
    (hw11-q2b-i).

    per_head_W_O: H matrices of shape (d_model, d_head). Returns (d_model, H *
        d_head).
    """
    mats = [
        _matrix(f"per_head_W_O[{h}]", W) for h, W in enumerate(per_head_W_O)
    ]
    if not mats or len({m.shape for m in mats}) != 1:
        raise ValueError(
            "per_head_W_O must be a non-empty list of equally shaped matrices"
        )
    return np.concatenate(mats, axis=1)


# ---- The coding lab: an induction head from two hand-set heads (hw11-q3) ----
# Residual stream layout: [token one-hot (4) | position one-hot (5) | previous
# token (4)].
TOK, POS, PREV = slice(0, 4), slice(4, 9), slice(9, 13)
D_MODEL = 13


def embed(sequence: str) -> np.ndarray:
    """Residual stream after embedding, shape (len(sequence), D_MODEL): one-hot
    token and
    one-hot position; the last 4 dimensions are free (hw11-q3)."""
    ok = isinstance(sequence, str) and 1 <= len(sequence) <= MAX_LEN
    if not ok or set(sequence) - set(ALPHABET):
        raise ValueError(
            f"sequence must be 1 to {MAX_LEN} letters from {ALPHABET!r}, "
            f"got {sequence!r}"
        )
    X = np.zeros((len(sequence), D_MODEL))
    for i, ch in enumerate(sequence):
        X[i, ALPHABET.index(ch)] = 1.0
        X[i, POS.start + i] = 1.0
    return X


def previous_token_head(
    attention_strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(W_QK, W_OV) of the previous-token head, each (D_MODEL, D_MODEL)
    (hw11-q3).

    QK: the query at position i scores the key at position i-1 with
        ``attention_strength``.
    OV: read the token one-hot, write it into the free "previous token"
        subspace.
    """
    s = float(attention_strength)
    W_QK = np.zeros((D_MODEL, D_MODEL))
    for i in range(1, MAX_LEN):
        W_QK[POS.start + i, POS.start + i - 1] = (
            s  # query position i, key position i-1
        )
    W_OV = np.zeros((D_MODEL, D_MODEL))
    W_OV[PREV, TOK] = np.eye(4)  # token -> "previous token" subspace
    return W_QK, W_OV


def copying_head(
    attention_strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(W_QK, W_OV) of the copying head, each (D_MODEL, D_MODEL) (hw11-q3).

    QK: the query's current token matches each key's previous token.
    Position 0 has no previous token (the first head can only attend to
    itself there), so every query also scores key position 0 down by
    ``attention_strength``. OV: copy the attended token.
    """
    s = float(attention_strength)
    W_QK = np.zeros((D_MODEL, D_MODEL))
    W_QK[TOK, PREV] = s * np.eye(4)  # current token . key's previous token
    W_QK[POS, POS.start] = -s  # any query, key at position 0
    W_OV = np.zeros((D_MODEL, D_MODEL))
    W_OV[TOK, TOK] = np.eye(4)  # copy the token
    return W_QK, W_OV


def induction_output(sequence: str, attention_strength: float) -> np.ndarray:
    """The copy head's output at the last position over the 4 token dimensions
    (a, b, c, d).

    The previous-token head writes into the residual stream; the copying head
    reads the sum. With a large ``attention_strength`` the output approaches
    the one-hot token that followed the last earlier occurrence of the final
    token.
    """
    s = float(attention_strength)
    if not np.isfinite(s) or s < 0:
        raise ValueError(
            "attention_strength must be finite "
            f"and >= 0, got {attention_strength!r}"
        )
    X = embed(sequence)
    X = X + single_attention_head(X, *previous_token_head(s))
    return single_attention_head(X, *copying_head(s))[-1, TOK]


# ---- The zero-layer model: logits = W_U W_E T, a learned bigram table
# (hw11-q2a) ----


def markov_chain(
    n_vocab: int, concentration: float = 0.5, seed: int = 0
) -> np.ndarray:
    """A random transition matrix P (rows sum to 1): P[i, j] = P(next = j |
    current = i).
    """
    if int(n_vocab) < 2 or not concentration > 0:
        raise ValueError("n_vocab must be >= 2 and concentration > 0")
    alpha = np.full(int(n_vocab), float(concentration))
    return np.random.default_rng(seed).dirichlet(alpha, size=int(n_vocab))


def sample_markov(P: np.ndarray, length: int, seed: int = 0) -> np.ndarray:
    """One token sequence of ``length`` drawn from the chain ``P`` (uniform
    start).
    """
    P = _matrix("P", P)
    if P.shape[0] != P.shape[1] or not np.allclose(P.sum(1), 1):
        raise ValueError("P must be a square matrix whose rows sum to 1")
    rng = np.random.default_rng(seed)
    cum = np.cumsum(P, axis=1)
    seq = np.empty(int(length), dtype=int)
    seq[0] = rng.integers(P.shape[0])
    u = rng.random(int(length))
    for t in range(1, int(length)):
        seq[t] = min(
            int(np.searchsorted(cum[seq[t - 1]], u[t])), P.shape[0] - 1
        )
    return seq


def bigram_counts(sequence, n_vocab: int) -> np.ndarray:
    """Counts C[i, j] of token j following token i in ``sequence`` (ints in
    [0, n_vocab)).
    """
    seq = np.asarray(sequence, dtype=int)
    if (
        seq.ndim != 1
        or seq.size < 2
        or seq.min() < 0
        or seq.max() >= int(n_vocab)
    ):
        raise ValueError(
            "sequence must hold at least 2 tokens "
            f"in [0, {n_vocab}), got {seq!r}"
        )
    counts = np.zeros((int(n_vocab), int(n_vocab)))
    np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
    return counts


def bigram_entropy(counts) -> float:
    """The lowest next-token cross-entropy a zero-layer model can reach on
    ``counts`` (nats/token).

    It is reached by the empirical bigram table P(j | i) = C[i, j] / sum_j C[i,
    j] (hw11-q2a-ii).
    """
    C = _matrix("counts", counts)
    if np.any(C < 0) or C.sum() <= 0:
        raise ValueError("counts must be non-negative and not all zero")
    rows = C.sum(axis=1, keepdims=True)
    logp = np.log(np.where(C > 0, C, 1.0) / np.where(rows > 0, rows, 1.0))
    return float(-(C * logp).sum() / C.sum())


def train_zero_layer(
    counts, d_models, steps: int = 400, lr: float = 0.05, seed: int = 0
):
    """Fit one zero-layer model W_U W_E per width in ``d_models``, all at once;
    full batch, Adam.

    counts: (n_vocab, n_vocab) bigram counts (only they matter to a zero-layer
        model).
    Returns ``(losses, tables)``: the final cross-entropy of each model
    (nats/token) and its learned logits (W_U W_E)^T, shape (len(d_models),
    n_vocab, n_vocab), row i = logits after token i. The models share arrays
    masked to their widths; Adam acts elementwise, so they train independently.
    Gradients by hand (hw11-q2a-ii); the tests compare them with autograd.
    """
    C = _matrix("counts", counts)
    widths = np.array(
        [positive_int("d_models", d) for d in np.atleast_1d(d_models)]
    )
    v, d_max = C.shape[0], int(widths.max())
    mask = (np.arange(d_max)[None, :] < widths[:, None]).astype(
        float
    )  # (k, d_max)
    rng = np.random.default_rng(int(seed))
    scale = 1 / np.sqrt(widths)[:, None, None]
    W_E = rng.normal(size=(widths.size, d_max, v)) * mask[:, :, None] * scale
    W_U = rng.normal(size=(widths.size, v, d_max)) * mask[:, None, :] * scale
    adam = [
        np.zeros_like(W) for W in (W_E, W_U, W_E, W_U)
    ]  # m_E, m_U, v_E, v_U
    for t in range(1, positive_int("steps", steps) + 1):
        losses, logits, d_logits = zero_layer_loss(C, W_E, W_U)
        d_G = d_logits.transpose(0, 2, 1)  # gradient of W_U W_E
        grads = (
            W_U.transpose(0, 2, 1) @ d_G * mask[:, :, None],
            d_G @ W_E.transpose(0, 2, 1),
        )
        for j, (W, g) in enumerate(zip((W_E, W_U), grads)):
            adam[j] = 0.9 * adam[j] + 0.1 * g
            adam[j + 2] = 0.999 * adam[j + 2] + 0.001 * g**2
            W -= (
                lr
                * (adam[j] / (1 - 0.9**t))
                / (np.sqrt(adam[j + 2] / (1 - 0.999**t)) + 1e-8)
            )
    losses, logits, _ = zero_layer_loss(C, W_E, W_U)
    return losses, logits


def zero_layer_loss(counts, W_E, W_U):
    """Cross-entropy of zero-layer models on bigram ``counts`` and its gradient
    in the logits.

    W_E: (k, d, n_vocab), W_U: (k, n_vocab, d). Returns (losses (k,), logits
        (k, n_vocab,
    n_vocab) with row i = logits after token i, d loss / d logits of the same
    shape).
    """
    logits = (W_U @ W_E).transpose(0, 2, 1)
    logits = logits - logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    n = counts.sum()
    losses = -(counts * logp).sum(axis=(1, 2)) / n
    d_logits = (counts.sum(axis=1, keepdims=True) * np.exp(logp) - counts) / n
    return losses, logits, d_logits
