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


def induction_answer(sequence: str) -> str:
    """The token an induction head should predict after ``sequence``: the
    one that followed the earlier occurrences of the final token ("... A B
    ... A -> B"). Raises ``ValueError`` when the final token did not occur
    before, or was followed by different tokens (then no single answer
    exists; the head splits its weight). Section hw11-q3.
    """
    embed(sequence)  # validates the sequence
    last = sequence[-1]
    nexts = {
        sequence[i + 1]
        for i in range(len(sequence) - 1)
        if sequence[i] == last
    }
    if len(nexts) != 1:
        raise ValueError(
            f"sequence {sequence!r} has no single induction answer: its "
            f"final token was followed by {sorted(nexts) or 'nothing'}"
        )
    return nexts.pop()


def answer_weight(sequence: str, attention_strength: float) -> dict:
    """The weight the hand-built induction head puts on the right answer,
    and where its largest weight sits (hw11-q3).

    Returns a dict: ``answer`` (from :func:`induction_answer`),
    ``p_answer`` (its output weight), ``top`` and ``p_top`` (the token with
    the largest weight and that weight), ``right`` (whether they agree) and
    ``where``, a phrase for the page: "on the answer c" or "on b, not on
    the answer c".
    """
    answer = induction_answer(sequence)
    out = induction_output(sequence, attention_strength)
    top = ALPHABET[int(np.argmax(out))]
    where = f"on the answer {answer}"
    if top != answer:
        where = f"on {top}, not on the answer {answer}"
    return {
        "answer": answer,
        "p_answer": float(out[ALPHABET.index(answer)]),
        "top": top,
        "p_top": float(out.max()),
        "right": top == answer,
        "where": where,
    }


def induction_steps(sequence: str, attention_strength: float) -> list:
    """The three stages of the hand-built induction head on ``sequence``,
    as (matrix, column labels, title) panels (hw11-q3): the previous-token
    head's pattern (T, T), what it wrote into the previous-token subspace
    (T, 4), and the copying head's pattern (T, T)."""
    X0 = embed(sequence)
    prev = previous_token_head(attention_strength)
    X1 = X0 + single_attention_head(X0, *prev)
    copy_qk = copying_head(attention_strength)[0]
    keys = [f"{i}:{ch}" for i, ch in enumerate(sequence)]
    return [
        (attention_pattern(X0, prev[0]), keys, "previous-token head: pattern"),
        (X1[:, PREV], list(ALPHABET), "what it wrote (prev subspace)"),
        (attention_pattern(X1, copy_qk), keys, "copying head: pattern"),
    ]


def plot_induction_steps(sequence: str, attention_strength: float):
    """A figure of :func:`induction_steps`: three heat maps on one colour
    scale [0, 1], stacked (legible on a phone), rows are query positions.
    Returns the figure."""
    from matplotlib import pyplot as plt

    from llmbook.book.plotting import heatmap

    panels = induction_steps(sequence, attention_strength)
    rows = panels[0][1]
    fig, axes = plt.subplots(3, 1, figsize=(4.6, 9.2), layout="constrained")
    for ax, (M, xlabels, title) in zip(axes, panels):
        im = heatmap(
            ax,
            M,
            xlabels=xlabels,
            ylabels=rows,
            title=title,
            signed=False,
            vmin=0,
            vmax=1,
            fmt="{:.1f}",
        )
        ax.set_xlabel(
            "key position" if xlabels is rows else "previous-token dimension"
        )
        for t in ax.texts:
            t.set_fontsize(11)
    for ax in axes:
        ax.set_ylabel("query position")
    fig.colorbar(im, ax=axes, shrink=0.5, label="weight")
    return fig


def plot_hand_set_matrices(attention_strength: float = 1.0):
    """The four hand-set matrices (W_QK, W_OV of both heads) as heat maps on
    one signed colour scale, axes labelled by residual-stream dimension
    (hw11-q3). Returns the figure."""
    from matplotlib import pyplot as plt

    from llmbook.book.plotting import heatmap

    dims = (
        [f"tok {t}" for t in ALPHABET]
        + [f"pos {p}" for p in range(MAX_LEN)]
        + [f"prev {t}" for t in ALPHABET]
    )
    s = attention_strength
    mats = {}
    for name, head in (
        ("previous-token", previous_token_head),
        ("copying", copying_head),
    ):
        W_QK, W_OV = head(s)
        mats[f"{name} head: W_QK"], mats[f"{name} head: W_OV"] = W_QK, W_OV
    bound = max(np.abs(M).max() for M in mats.values())
    fig, axes = plt.subplots(2, 2, figsize=(8, 8), layout="constrained")
    for ax, (title, M) in zip(axes.flat, mats.items()):
        im = heatmap(
            ax,
            M,
            xlabels=dims,
            ylabels=dims,
            title=f"{title} (strength {s:g})",
            signed=True,
            annotate=False,
            vmin=-bound,
            vmax=bound,
        )
        ax.tick_params(axis="x", labelrotation=90, labelsize=10)
        ax.tick_params(axis="y", labelsize=10)
    label = "entry (units of attention_strength for W_QK)"
    fig.colorbar(im, ax=axes, shrink=0.6, label=label)
    fig.supxlabel("input (key side for W_QK, source for W_OV)")
    fig.supylabel("query side for W_QK, output for W_OV")
    return fig


def induction_threshold(
    sequence: str,
    weight: float | None = None,
    s_max: float = 64.0,
    n_grid: int = 641,
) -> float:
    """The smallest ``attention_strength`` from which on the hand-built
    induction head gets the answer of :func:`induction_answer` right.

    With ``weight=None`` "right" means the answer carries the largest
    output weight (the head predicts it); with a number in (0, 1), that the
    answer's weight is at least ``weight``. The margin (answer's weight
    minus the largest other weight, or minus ``weight``) is scanned on
    ``n_grid`` strengths in [0, ``s_max``]; the last sign change is then
    located by Brent's method (``scipy.optimize.brentq``) to 1e-12. Returns
    0.0 when the margin is positive on the whole grid; raises
    ``ValueError`` when it is not yet positive at ``s_max``. Section
    hw11-q3.
    """
    from scipy.optimize import brentq

    answer = ALPHABET.index(induction_answer(sequence))
    if weight is not None and not 0.0 < float(weight) < 1.0:
        raise ValueError(f"weight must lie in (0, 1), got {weight!r}")
    s_max = float(s_max)
    if not np.isfinite(s_max) or s_max <= 0:
        raise ValueError(f"s_max must be finite and > 0, got {s_max!r}")
    n_grid = positive_int("n_grid", n_grid)

    def margin(s: float) -> float:
        out = induction_output(sequence, s)
        if weight is None:
            return float(out[answer] - np.delete(out, answer).max())
        return float(out[answer] - weight)

    grid = np.linspace(0.0, s_max, max(n_grid, 2))
    wrong = [i for i, s in enumerate(grid) if margin(s) <= 0]
    if not wrong:
        return 0.0
    if wrong[-1] == len(grid) - 1:
        raise ValueError(
            f"the answer is not reached by attention_strength = {s_max}"
        )
    lo, hi = grid[wrong[-1]], grid[wrong[-1] + 1]
    return float(brentq(margin, lo, hi, xtol=1e-12))


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


def plot_wqk_grid(values: dict, names: list, label: str, **style):
    """Four example ``W_QK`` side by side (hw11-q2c): a 2 x 2 grid of heat
    maps, one per entry of ``values`` (``{case name: (n, n) matrix}``,
    rows query tokens, columns key tokens, both labelled by ``names``),
    with one colour bar labelled ``label``. ``style`` goes to
    :func:`llmbook.book.plotting.heatmap` (pass the same ``vmin``/``vmax``
    so the panels share one scale). Used in the circuits-proofs notebook
    for the scores and for the attention patterns. Returns the figure."""
    from matplotlib import pyplot as plt

    from llmbook.book.plotting import heatmap, use_style

    use_style()
    fig, axes = plt.subplots(2, 2, figsize=(7, 6.6), layout="constrained")
    for ax, (name, M) in zip(axes.flat, values.items()):
        im = heatmap(
            ax,
            M,
            xlabels=names,
            ylabels=names,
            title=f"W_QK = {name}",
            **style,
        )
        ax.tick_params(axis="x", labelrotation=90)
        for t in ax.texts:
            t.set_fontsize(9)
    fig.colorbar(im, ax=axes, shrink=0.8, label=label)
    fig.supxlabel("key token j")
    fig.supylabel("query token i")
    return fig


def plot_width_sweep(sweep, n_vocab: int, floor: float = 1e-9):
    """Excess loss of the zero-layer model over the bigram optimum against
    ``d_model`` (``sweep``: a Series indexed by width, nats per token), on
    a log axis where values below ``floor`` are drawn at ``floor`` (and a
    note says so), with a dashed line at ``n_vocab - 1``, the width from
    which the table is learned exactly (hw11-q2a, circuits-proofs
    notebook). Returns the figure."""
    import numpy as np

    from llmbook.book import fmt
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "d_model (width of the residual stream)",
        "excess loss over the bigram optimum (nats)",
        "The table is learned exactly only from d_model = n_vocab − 1 on",
        logy=True,
    )
    ax.plot(sweep.index, np.maximum(sweep.values, floor), "o-")
    ax.axvline(
        n_vocab - 1,
        color="grey",
        ls="--",
        lw=1,
        label=f"n_vocab − 1 = {n_vocab - 1}",
    )
    if (sweep.values < floor).any():
        ax.text(
            0.98,
            0.95,
            f"values below {fmt.sci(floor)} drawn at {fmt.sci(floor)}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
        )
    ax.legend()
    return fig
