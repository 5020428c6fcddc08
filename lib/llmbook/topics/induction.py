"""Induction heads trained from scratch: data, a TransformerLens 4 model, and
the scores that show the circuit (previous-token, induction and K-composition
scores, ablations). Derived in the chapter "Transformer circuits and induction
heads" (beyond hw11-q3).

Models are built with ``TransformerBridge.boot_native`` (TransformerLens 4;
offline, no hub). Weights use TransformerLens's row-vector convention: W_QK =
W_Q W_K^T, W_OV = W_V W_O.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from llmbook.core.validate import positive_int


def attn_only_model(
    n_layers: int,
    n_heads: int = 4,
    d_model: int = 64,
    d_head: int = 16,
    n_ctx: int = 32,
    d_vocab: int = 24,
    seed: int = 0,
):
    """A randomly initialised attention-only transformer (no LayerNorm, no MLP)
    on
    TransformerBridge. Sizes are counts; ``seed`` fixes the initial weights."""
    with warnings.catch_warnings():
        # tqdm.auto (imported by transformer_lens) warns when ipywidgets is
        # absent.
        warnings.filterwarnings("ignore", message="IProgress not found")
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.model_bridge import TransformerBridge

    sizes = {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "d_model": d_model,
        "d_head": d_head,
        "n_ctx": n_ctx,
        "d_vocab": d_vocab,
    }
    for name, value in sizes.items():
        positive_int(name, value)
    cfg = TransformerBridgeConfig(
        **sizes,
        attn_only=True,
        normalization_type=None,
        seed=int(seed),
        positional_embedding_type="standard",
    )
    return TransformerBridge.boot_native(cfg)


def repeated_segment_batch(
    n: int,
    n_ctx: int,
    d_vocab: int,
    min_len: int,
    max_len: int,
    generator: torch.Generator,
    fixed_offset: int | None = None,
):
    """Random tokens in which one segment appears twice. Returns (tokens,
    mask), both (n, n_ctx).

    The segment has a random length in [min_len, max_len] and sits at a random
    place; its copy starts at a random later place. With ``fixed_offset`` the
    segment always starts at 0 with length ``fixed_offset`` and the copy right
    after it (the layout a model can solve by position). ``mask[b, t]`` is True
    when token t+1 is predictable from the earlier copy (the positions where
    induction helps), so it indexes next-token losses.
    """
    n, n_ctx = positive_int("n", n), positive_int("n_ctx", n_ctx)
    d_vocab = positive_int("d_vocab", d_vocab)
    min_len, max_len = (
        positive_int("min_len", min_len),
        positive_int("max_len", max_len),
    )
    if min_len < 2 or max_len < min_len or 2 * max_len > n_ctx:
        raise ValueError(
            "need 2 <= min_len <= max_len <= n_ctx / 2, "
            f"got min_len={min_len}, max_len={max_len}"
        )
    tokens = torch.randint(0, d_vocab, (n, n_ctx), generator=generator)
    mask = torch.zeros(n, n_ctx, dtype=torch.bool)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator)
    u = torch.rand(n, 2, generator=generator)
    for b in range(n):
        L = int(lengths[b]) if fixed_offset is None else int(fixed_offset)
        if fixed_offset is None:
            s1 = int(u[b, 0] * (n_ctx - 2 * L + 1))
            s2 = s1 + L + int(u[b, 1] * (n_ctx - s1 - 2 * L + 1))
        else:
            s1, s2 = 0, L
        tokens[b, s2 : s2 + L] = tokens[b, s1 : s1 + L]
        mask[b, s2 : s2 + L - 1] = True  # predicting tokens s2+1 .. s2+L-1
    return tokens, mask


def repeated_random_tokens(
    n: int, half: int, d_vocab: int, seed: int = 0
) -> torch.Tensor:
    """The standard probe: ``half`` random tokens followed by the same tokens
    again,
    shape (n, 2*half)."""
    g = torch.Generator().manual_seed(int(seed))
    shape = (positive_int("n", n), positive_int("half", half))
    first = torch.randint(
        0, positive_int("d_vocab", d_vocab), shape, generator=g
    )
    return torch.cat([first, first], dim=1)


def copy_candidates(tokens: torch.Tensor, d_vocab: int) -> torch.Tensor:
    """What an induction head could copy at each position ("… A B … A → B").

    tokens: (batch, n_ctx) ints in [0, d_vocab). Returns a bool tensor (batch,
        n_ctx, d_vocab)
    that is True for every token B that followed an earlier occurrence of the
    current token A. A position has a candidate exactly when its token occurred
    before.
    """
    if tokens.ndim != 2:
        raise ValueError(
            f"tokens must be (batch, n_ctx), got shape {tuple(tokens.shape)}"
        )
    n_ctx = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]  # (b, t, s)
    same &= torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril(-1)  # only s < t
    followers = torch.nn.functional.one_hot(
        tokens[:, 1:], positive_int("d_vocab", d_vocab)
    )
    return (
        same[:, :, :-1].float() @ followers.float()
    ) > 0  # s runs to n_ctx - 2


def next_token_losses(
    logits: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """Per-position cross-entropy (nats) of predicting token t+1 from position
    t,
    shape (batch, n_ctx - 1)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None])[..., 0]


def previous_token_scores(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position t >= 1 to t-1, per head. pattern:
    (batch, head, q, k).
    """
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def induction_scores(pattern: torch.Tensor, half: int) -> torch.Tensor:
    """On repeated random tokens: mean attention from t in the second copy to t
    - half + 1 (the
    token after the earlier occurrence of the current token), per head."""
    diagonal = pattern.diagonal(offset=-(half - 1), dim1=-2, dim2=-1)
    return diagonal[..., 1:].mean(dim=(0, -1))


def k_composition(W_QK: torch.Tensor, W_OV: torch.Tensor) -> float:
    """Elhage et al.'s K-composition score ||W_QK W_OV^T||_F / (||W_QK||_F
    ||W_OV||_F)
    (row convention; both d_model x d_model)."""
    norm = torch.linalg.matrix_norm
    return float(norm(W_QK @ W_OV.T) / (norm(W_QK) * norm(W_OV)))


def head_matrices(
    model, layer: int, head: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_QK, W_OV) of one head as dense d_model x d_model matrices (row-
    vector convention).
    """
    W_Q, W_K, W_V, W_O = (
        getattr(model, name)[layer, head].detach()
        for name in ("W_Q", "W_K", "W_V", "W_O")
    )
    return W_Q @ W_K.T, W_V @ W_O


def ablate_head_hook(head: int):
    """A forward hook for ``blocks.L.attn.hook_z`` that zeroes one head's
    output.
    """

    def hook(z, hook=None):
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return hook


def subspace_fraction(W: torch.Tensor, basis: torch.Tensor) -> float:
    """Fraction of ||W||_F^2 in the span of the orthonormal columns
    ``basis`` (rows of W read it).
    """
    return float(
        torch.linalg.matrix_norm(W @ basis) ** 2
        / torch.linalg.matrix_norm(W) ** 2
    )


def probe(model, tokens: torch.Tensor, half: int) -> dict:
    """Scores of a model on repeated random tokens: per-layer previous-token
    and induction scores per head, and the loss on the first (fresh) and second
    (repeated) half.
    """
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("hook_pattern")
        )
    losses = next_token_losses(logits, tokens)
    out = {
        "loss_fresh": float(losses[:, : half - 1].mean()),
        "loss_repeated": float(losses[:, half:].mean()),
    }
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        out[f"prev_L{layer}"] = previous_token_scores(pattern).numpy()
        out[f"induction_L{layer}"] = induction_scores(pattern, half).numpy()
    return out


def k_composition_table(model) -> np.ndarray:
    """K-composition of every layer-0 head (rows) with every layer-1 head
    (columns).
    """
    heads = range(model.cfg.n_heads)
    W_QK1 = [head_matrices(model, 1, h)[0] for h in heads]
    W_OV0 = [head_matrices(model, 0, h)[1] for h in heads]
    return np.array([[k_composition(q, o) for q in W_QK1] for o in W_OV0])


def train_induction(
    model,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    min_len: int = 4,
    max_len: int = 12,
    seed: int = 0,
    eval_every: int = 50,
    probe_tokens: torch.Tensor | None = None,
    fixed_offset: int | None = None,
) -> list[dict]:
    """Train next-token prediction on repeated-segment data with AdamW; return
    the history.

    Each history entry holds the step, training loss on repeated and on other
    positions, and :func:`probe` scores on ``probe_tokens`` (default: 64
    repeated random sequences).
    """
    cfg = model.cfg
    steps, batch_size = (
        positive_int("steps", steps),
        positive_int("batch_size", batch_size),
    )
    eval_every = positive_int("eval_every", eval_every)
    g = torch.Generator().manual_seed(int(seed))
    half = cfg.n_ctx // 2
    if probe_tokens is None:
        probe_tokens = repeated_random_tokens(
            64, half, cfg.d_vocab, seed + 10_000
        )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    history = []
    for step in range(steps + 1):
        tokens, mask = repeated_segment_batch(
            batch_size,
            cfg.n_ctx,
            cfg.d_vocab,
            min_len,
            max_len,
            g,
            fixed_offset,
        )
        losses = next_token_losses(model(tokens), tokens)
        rep = mask[:, :-1]
        if step % eval_every == 0 or step == steps:
            entry = {
                "step": step,
                "train_repeated": float(losses[rep].mean().detach()),
                "train_other": float(losses[~rep].mean().detach()),
            }
            entry.update(probe(model, probe_tokens, half))
            if cfg.n_layers >= 2:
                entry["k_comp"] = k_composition_table(model)
            history.append(entry)
        if step == steps:
            break
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
    return history


# ---- Many seeds at once: the same attention-only model in plain torch,
# every weight with a leading run axis (the seed check of the chapter) ----

_STACKED = ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")


def init_stacked(
    seeds,
    n_layers: int = 2,
    n_heads: int = 4,
    d_model: int = 64,
    d_head: int = 16,
    n_ctx: int = 32,
    d_vocab: int = 24,
) -> dict:
    """Weights of one attention-only transformer per seed, stacked on a
    leading run axis: ``W_E`` (R, d_vocab, d_model), ``W_pos`` (R, n_ctx,
    d_model), ``W_Q``/``W_K``/``W_V`` (R, L, H, d_model, d_head), ``W_O``
    (R, L, H, d_head, d_model), ``W_U`` (R, d_model, d_vocab). Entries are
    N(0, 0.8 / sqrt(d_model)) (TransformerLens's default scale), drawn from
    ``torch.Generator().manual_seed(seed)``; no biases, no LayerNorm."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    L, H = positive_int("n_layers", n_layers), positive_int("n_heads", n_heads)
    d, dh = positive_int("d_model", d_model), positive_int("d_head", d_head)
    T, V = positive_int("n_ctx", n_ctx), positive_int("d_vocab", d_vocab)
    shapes = {
        "W_E": (V, d),
        "W_pos": (T, d),
        "W_Q": (L, H, d, dh),
        "W_K": (L, H, d, dh),
        "W_V": (L, H, d, dh),
        "W_O": (L, H, dh, d),
        "W_U": (d, V),
    }
    std = 0.8 / np.sqrt(d)
    runs = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        runs.append(
            {k: torch.randn(v, generator=g) * std for k, v in shapes.items()}
        )
    return {
        k: torch.stack([r[k] for r in runs]).requires_grad_() for k in _STACKED
    }


def stacked_forward(params: dict, tokens: torch.Tensor):
    """Logits (R, B, T, d_vocab) and attention patterns (R, L, B, H, T, T)
    of the stacked models of :func:`init_stacked` on ``tokens`` (R, B, T):
    causal softmax attention scaled by 1/sqrt(d_head), each head's output
    added to the residual stream."""
    p = params
    R, B, T = tokens.shape
    x = p["W_E"][torch.arange(R)[:, None, None], tokens] + p["W_pos"][:, None]
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    scale = p["W_Q"].shape[-1] ** -0.5
    patterns = []
    for layer in range(p["W_Q"].shape[1]):
        q, k, v = (
            torch.einsum("rbtd,rhde->rbhte", x, p[w][:, layer])
            for w in ("W_Q", "W_K", "W_V")
        )
        scores = (q @ k.transpose(-1, -2) * scale).masked_fill(mask, -1e9)
        pattern = scores.softmax(-1)
        z = pattern @ v  # (R, B, H, T, d_head)
        x = x + torch.einsum("rbhte,rhed->rbtd", z, p["W_O"][:, layer])
        patterns.append(pattern)
    return x @ p["W_U"][:, None], torch.stack(patterns, dim=1)


def train_stacked(
    params: dict,
    steps: int,
    data_seeds,
    batch_size: int = 64,
    lr: float = 1e-2,
    min_len: int = 6,
    max_len: int = 16,
    weight_decay: float = 0.01,
) -> torch.Tensor:
    """Train the stacked models of :func:`init_stacked` in place with AdamW
    on repeated-segment batches, run r drawing its own batches from
    ``data_seeds[r]``. AdamW updates every number from its own gradient and
    moments, and the loss is a sum of per-run means, so the runs are
    independent. Returns the training loss on repeated positions, (steps,
    R)."""
    steps = positive_int("steps", steps)
    data_seeds = [int(s) for s in data_seeds]
    R, V = params["W_E"].shape[0], params["W_E"].shape[1]
    T = params["W_pos"].shape[1]
    if len(data_seeds) != R:
        raise ValueError(f"need {R} data_seeds, got {len(data_seeds)}")
    gens = [torch.Generator().manual_seed(s) for s in data_seeds]
    opt = torch.optim.AdamW(
        list(params.values()), lr=lr, weight_decay=weight_decay
    )
    history = torch.empty(steps, R)
    for step in range(steps):
        batches = [
            repeated_segment_batch(batch_size, T, V, min_len, max_len, g)
            for g in gens
        ]
        tokens = torch.stack([b[0] for b in batches])
        rep = torch.stack([b[1] for b in batches])[..., :-1]
        logits, _ = stacked_forward(params, tokens)
        logp = torch.log_softmax(logits[:, :, :-1], dim=-1)
        nll = -logp.gather(-1, tokens[:, :, 1:, None])[..., 0]  # (R, B, T-1)
        opt.zero_grad()
        nll.mean(dim=(1, 2)).sum().backward()
        opt.step()
        with torch.no_grad():
            history[step] = (nll * rep).sum((1, 2)) / rep.sum((1, 2))
    return history


def stacked_probe(params: dict, tokens: torch.Tensor, half: int) -> dict:
    """:func:`probe` for every stacked run on the same ``tokens`` (B, T):
    ``prev_L0`` and ``induction_L1`` (R, H) scores, ``loss_repeated`` (R,)
    on the repeated half."""
    R = params["W_E"].shape[0]
    with torch.no_grad():
        logits, patterns = stacked_forward(params, tokens.expand(R, -1, -1))
        logp = torch.log_softmax(logits[:, :, :-1], dim=-1)
        nll = -logp.gather(-1, tokens.expand(R, -1, -1)[..., 1:, None])[..., 0]
    return {
        "prev_L0": torch.stack(
            [previous_token_scores(pt) for pt in patterns[:, 0]]
        ).numpy(),
        "induction_L1": torch.stack(
            [induction_scores(pt, half) for pt in patterns[:, 1]]
        ).numpy(),
        "loss_repeated": nll[:, :, half:].mean((1, 2)).numpy(),
    }


def phase_change_step(curve, window: int = 50) -> int:
    """The step of the sharpest fall of a training-loss ``curve`` (one value
    per step): the largest drop of its ``window``-step moving average
    between consecutive steps, reported at the window's centre."""
    c = np.asarray(curve, dtype=float)
    w = positive_int("window", window)
    if c.ndim != 1 or c.size <= w:
        raise ValueError(f"curve must be 1-D and longer than window={w}")
    smooth = np.convolve(c, np.ones(w) / w, mode="valid")
    return int(np.argmin(np.diff(smooth))) + w // 2 + 1


SEED_CHECK_KEYS = (
    "seeds",
    "n_heads",
    "d_model",
    "d_head",
    "n_ctx",
    "d_vocab",
    "steps",
    "batch_size",
    "lr",
    "min_len",
    "max_len",
    "probe_seed",
    "min_score",
)


def seed_check(settings: dict) -> dict:
    """Train the two-layer model of the chapter once per seed (weights and
    batches from that seed), all seeds at once with :func:`train_stacked`,
    and score each on the repeated-random-token probe. ``settings`` holds
    :data:`SEED_CHECK_KEYS`. Returns ``{"settings": ..., "rows": [...]}``,
    a row per seed: best previous-token and induction scores, the probe's
    loss on the repeated half, the phase-change step and whether both
    scores reach ``min_score`` (an induction head formed)."""
    s = {k: settings[k] for k in SEED_CHECK_KEYS}
    params = init_stacked(
        s["seeds"],
        2,
        s["n_heads"],
        s["d_model"],
        s["d_head"],
        s["n_ctx"],
        s["d_vocab"],
    )
    curves = train_stacked(
        params,
        s["steps"],
        s["seeds"],
        s["batch_size"],
        s["lr"],
        s["min_len"],
        s["max_len"],
    )
    half = s["n_ctx"] // 2
    probe_tokens = repeated_random_tokens(
        64, half, s["d_vocab"], s["probe_seed"]
    )
    scores = stacked_probe(params, probe_tokens, half)
    rows = []
    for r, seed in enumerate(s["seeds"]):
        prev = float(scores["prev_L0"][r].max())
        ind = float(scores["induction_L1"][r].max())
        rows.append(
            {
                "seed": int(seed),
                "prev": prev,
                "induction": ind,
                "loss_repeated": float(scores["loss_repeated"][r]),
                "jump_step": phase_change_step(curves[:, r].numpy()),
                "formed": bool(min(prev, ind) >= s["min_score"]),
            }
        )
    return {
        "settings": {
            k: (list(v) if k == "seeds" else v) for k, v in s.items()
        },
        "rows": rows,
    }


def load_or_run_seed_check(settings: dict, path) -> tuple[dict, bool]:
    """The :func:`seed_check` stored at ``path`` (JSON, written by
    ``tools/induction_seeds.py``) when it was made with exactly these
    ``settings``; otherwise run it (minutes on a laptop CPU). Returns
    ``(result, from_file)``."""
    from llmbook.book.stored import load_stored

    want = {
        k: (list(settings[k]) if k == "seeds" else settings[k])
        for k in SEED_CHECK_KEYS
    }
    stored = load_stored(path, want)
    if stored is not None and stored["settings"]["seeds"] == want["seeds"]:
        return stored, True
    return seed_check(want), False


# ---- The trained-model notebook's tables and figures (induction-trained) --


def plot_training(curves, history: list, best_prev: int, jump: int, d_vocab):
    """The phase change in four panels: training loss on repeated and other
    positions (with ln ``d_vocab``, guessing), the previous-token score of
    every layer-0 head, the induction score of every layer-1 head, and the
    K-composition of layer-0 head ``best_prev`` with every layer-1 head,
    against the training step, with a dashed line at step ``jump``.

    Args:
        curves: DataFrame indexed by step with ``train_repeated`` and
            ``train_other`` (the scalar entries of ``history``).
        history: :func:`train_induction`'s history of a two-layer model.
        best_prev: the layer-0 head whose K-composition is drawn.
        jump: the step of the phase change.
        d_vocab: vocabulary size.

    Returns the figure (induction-trained notebook, chapter "Transformer
    circuits and induction heads").
    """
    import matplotlib.pyplot as plt

    from llmbook.book.plotting import use_style

    prev = np.stack([h["prev_L0"] for h in history])  # (evals, heads)
    induct = np.stack([h["induction_L1"] for h in history])
    kc = np.stack([h["k_comp"][best_prev] for h in history])
    use_style()
    fig, axes = plt.subplots(
        2, 2, figsize=(8, 6.4), sharex=True, layout="constrained"
    )
    ax = axes[0, 0]
    ax.plot(curves.index, curves["train_repeated"], label="repeated positions")
    ax.plot(curves.index, curves["train_other"], label="other positions")
    ax.axhline(
        np.log(d_vocab),
        color="grey",
        ls=":",
        lw=1,
        label="ln(vocab): guessing",
    )
    ax.set_ylabel("training loss (nats / token)")
    ax.set_title("The phase change")
    for h in range(prev.shape[1]):
        axes[0, 1].plot(curves.index, prev[:, h], label=f"L0H{h}")
        axes[1, 0].plot(curves.index, induct[:, h], label=f"L1H{h}")
    axes[0, 1].set_ylabel("previous-token score")
    axes[0, 1].set_title("Layer 0: previous-token heads")
    axes[1, 0].set_ylabel("induction score")
    axes[1, 0].set_title("Layer 1: induction heads")
    for h in range(kc.shape[1]):
        axes[1, 1].plot(
            curves.index, kc[:, h], label=f"L0H{best_prev} → L1H{h}"
        )
    axes[1, 1].set_ylabel("K-composition score")
    axes[1, 1].set_title("Layer 1 keys read layer 0")
    for ax in axes.flat:
        ax.axvline(jump, color="grey", lw=1, ls="--")
        ax.legend(fontsize=10)
    for ax in axes[1]:
        ax.set_xlabel("training step")
    return fig


def copy_split(model, tokens: torch.Tensor, mask: torch.Tensor, d_vocab):
    """Why the loss on unpredictable positions rises above guessing: split
    the positions of ``tokens`` (batch, n_ctx) into those inside a repeat
    (``mask``, as from :func:`repeated_segment_batch`) and the others, the
    others by whether their current token occurred earlier, and measure for
    each group its share of positions, its loss (nats), the probability the
    model puts on the copy candidates (:func:`copy_candidates`) and the
    candidates' share of the vocabulary.

    Returns ``(split, inside)``: a DataFrame with one row per group
    (``other, token new``, ``other, token seen before``, ``repeated (copy
    predictable)``), and the fraction of seen-before positions that lie in
    a repeat. Used in the induction-trained notebook.
    """
    import pandas as pd

    with torch.no_grad():
        logits = model(tokens)
    losses = next_token_losses(logits, tokens)  # (batch, n_ctx - 1)
    probs = torch.softmax(logits[:, :-1].float(), dim=-1)
    cand = copy_candidates(tokens, d_vocab)[:, :-1]  # (.., n_ctx - 1, d_vocab)
    seen, rep = cand.any(-1), mask[:, :-1]
    groups = {
        "other, token new": ~rep & ~seen,
        "other, token seen before": ~rep & seen,
        "repeated (copy predictable)": rep,
    }
    split = pd.DataFrame(
        {
            name: {
                "share of positions": float(m.float().mean()),
                "loss (nats)": float(losses[m].mean()),
                "probability on copy candidates": float(
                    (probs * cand).sum(-1)[m].mean()
                ),
                "candidates' share when guessing": float(
                    cand.sum(-1)[m].float().mean() / d_vocab
                ),
            }
            for name, m in groups.items()
        }
    ).T
    inside = float((rep & seen).sum() / seen.sum())
    return split, inside


def plot_attention_patterns(model, tokens: torch.Tensor):
    """Every head's attention pattern on the first sequence of ``tokens``
    (rows query positions, columns keys), one row of panels per layer, on
    one colour scale [0, 1]. Returns the figure (induction-trained
    notebook)."""
    import matplotlib.pyplot as plt

    from llmbook.book.plotting import heatmap

    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[:1])
    fig, axes = plt.subplots(
        n_layers,
        n_heads,
        figsize=(8, 4.6),
        layout="constrained",
        squeeze=False,
    )
    for layer in range(n_layers):
        for h in range(n_heads):
            im = heatmap(
                axes[layer, h],
                cache[f"blocks.{layer}.attn.hook_pattern"][0, h].numpy(),
                annotate=False,
                signed=False,
                title=f"L{layer}H{h}",
                vmin=0,
                vmax=1,
            )
            axes[layer, h].set_xticks([])
            axes[layer, h].set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    fig.supxlabel("key position")
    fig.supylabel("query position")
    return fig


def plot_k_composition(kc_first: np.ndarray, kc_final: np.ndarray, when):
    """K-composition of every layer-0 head (rows) with every layer-1 head
    (columns), as from :func:`k_composition_table`, at initialisation and
    at the end of training (``when``, the panel's label), on one colour
    scale. Returns the figure (induction-trained notebook)."""
    import matplotlib.pyplot as plt

    from llmbook.book.plotting import heatmap

    top = max(kc_first.max(), kc_final.max())
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.6), layout="constrained")
    labels0 = [f"L0H{h}" for h in range(kc_first.shape[0])]
    labels1 = [f"L1H{h}" for h in range(kc_first.shape[1])]
    for ax, M, title in zip(
        axes, [kc_first, kc_final], ["initialisation", when]
    ):
        im = heatmap(
            ax,
            M,
            xlabels=labels1,
            ylabels=labels0,
            title=f"K-composition, {title}",
            signed=False,
            vmin=0,
            vmax=top,
        )
        for t in ax.texts:
            t.set_fontsize(11)
    fig.colorbar(im, ax=axes, shrink=0.9, label="K-composition score")
    return fig


def ablated_probe(model, tokens: torch.Tensor, half: int, heads, layer=0):
    """:func:`probe` with the outputs of ``heads`` of ``layer`` zeroed
    (:func:`ablate_head_hook` on ``blocks.{layer}.attn.hook_z``), to test
    whether the induction circuit needs them (induction-trained
    notebook)."""
    hooks = [
        (f"blocks.{layer}.attn.hook_z", ablate_head_hook(h)) for h in heads
    ]
    with model.hooks(fwd_hooks=hooks):
        return probe(model, tokens, half)


def probe_table(runs: dict):
    """One column per :func:`probe` result in ``runs`` (``{name: probe}``
    of a two-layer model): the best layer-1 induction score and the loss
    on the repeated and on the fresh half. Returns the DataFrame
    (induction-trained notebook, the ablation)."""
    import pandas as pd

    return pd.DataFrame(
        {
            name: [
                r["induction_L1"].max(),
                r["loss_repeated"],
                r["loss_fresh"],
            ]
            for name, r in runs.items()
        },
        index=[
            "best induction score",
            "loss, repeated half",
            "loss, fresh half",
        ],
    )


def repeated_loss(model, tokens: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean next-token loss (nats) of ``model`` over the positions of
    ``tokens`` (batch, n_ctx) whose next token is inside a repeat
    (``mask`` from :func:`repeated_segment_batch`)."""
    with torch.no_grad():
        per_position = next_token_losses(model(tokens), tokens)
    return float(per_position[mask[:, :-1]].mean())


def controls_table(runs: dict, tokens, mask, probe_offset: int):
    """The controls side by side: for each ``{name: (model, history)}`` in
    ``runs`` (from :func:`train_induction`), the best induction score of
    the model's last layer on the probe, the loss on the probe's repeats
    (at offset ``probe_offset``), and the loss on repeats at random
    offsets (:func:`repeated_loss` on ``tokens``, ``mask``). Returns a
    DataFrame indexed by name (induction-trained notebook)."""
    import pandas as pd

    models = [m for m, _ in runs.values()]
    ends = [h[-1] for _, h in runs.values()]
    best = [
        e[f"induction_L{m.cfg.n_layers - 1}"].max()
        for m, e in zip(models, ends)
    ]
    return pd.DataFrame(
        {
            "best induction score (probe)": best,
            f"loss on repeats, probe (offset {probe_offset})": [
                e["loss_repeated"] for e in ends
            ],
            "loss on repeats, random offsets": [
                repeated_loss(m, tokens, mask) for m in models
            ],
        },
        index=list(runs),
    )


def plot_ov_spectra(model, highlight: int, floor: float = 1e-12):
    """Singular values of every layer-0 head's ``W_OV``
    (:func:`head_matrices`) on a log axis, values below ``floor`` drawn at
    ``floor`` (and a note says so), with a dashed line after index
    ``d_head``: at most ``d_head`` are nonzero. Head ``highlight`` is
    labelled as the previous-token head. Returns the figure
    (induction-trained notebook, hw11-q2e)."""
    import matplotlib.pyplot as plt

    from llmbook.book import fmt

    d_head = model.cfg.d_head
    spectra = [
        torch.linalg.svdvals(head_matrices(model, 0, h)[1]).numpy()
        for h in range(model.cfg.n_heads)
    ]
    fig, ax = plt.subplots(figsize=(6.2, 4.4), layout="constrained")
    for h, sv in enumerate(spectra):
        name = f"L0H{h}" + (" (previous-token)" if h == highlight else "")
        ax.semilogy(
            np.arange(1, sv.size + 1),
            np.maximum(sv, floor),
            "o-",
            ms=3,
            label=name,
        )
    ax.axvline(
        d_head + 0.5, color="grey", ls="--", lw=1, label=f"d_head = {d_head}"
    )
    if any((sv < floor).any() for sv in spectra):
        ax.text(
            0.98,
            0.5,
            f"values below {fmt.sci(floor)}\ndrawn at {fmt.sci(floor)}",
            transform=ax.transAxes,
            ha="right",
            fontsize=9,
        )
    ax.set_xlabel("singular value index k")
    ax.set_ylabel("singular value σ_k of W_OV")
    ax.set_title(
        f"Each layer-0 W_OV has at most d_head = {d_head}\n"
        "nonzero singular values"
    )
    ax.legend(fontsize=9)
    return fig


def top_heads(scores: np.ndarray, k: int = 5) -> list[tuple[int, int]]:
    """The ``(layer, head)`` pairs of the ``k`` largest entries of
    ``scores`` (layers x heads), largest first (induction-trained
    notebook: GPT-2 small's induction heads)."""
    flat = np.argsort(-scores, axis=None)[:k]
    return [
        (int(l), int(h)) for l, h in zip(*np.unravel_index(flat, scores.shape))
    ]
