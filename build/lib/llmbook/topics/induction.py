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
