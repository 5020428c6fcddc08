"""Mixture-of-experts layers by hand: softmax gating, noisy top-k gating with
the importance and load losses (Shazeer et al. 2017), Switch top-1 routing
with an expert capacity and the load-balancing loss (Fedus et al. 2022), a
small MoE layer, the generated clustered regression task the chapter trains
on, and the parameter count of gpt-oss. Derived in the chapter "Attention on
the hardware, and mixture of experts" (scale-moe).

Tokens are rows: ``x`` has shape (T, d_model), router logits (T, E) for
``E`` experts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from llmbook.core.validate import nonnegative, positive, positive_int


def _logits(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        raise ValueError(f"{name} must be a 2-dimensional torch.Tensor")
    return value


def softmax_gating(x, W_g) -> torch.Tensor:
    """Dense gating ``G(x) = softmax(x W_g)``: every expert gets a weight.

    Args:
        x: (T, d_model); W_g: (d_model, E). Returns (T, E).
    """
    return torch.softmax(_logits("x", x) @ W_g, dim=-1)


def keep_top_k(H, k: int) -> torch.Tensor:
    """``KeepTopK(H, k)``: keep each row's ``k`` largest entries, set the
    rest to ``-inf`` (so the softmax gives them weight 0). Ties are broken
    towards the lower expert index.

    Args:
        H: (T, E) gate logits; k: experts kept per token, ``1 <= k <= E``.
    """
    H = _logits("H", H)
    k = positive_int("k", k)
    if k > H.shape[1]:
        raise ValueError(f"k={k} must be at most the {H.shape[1]} experts")
    idx = H.topk(k, dim=-1).indices
    keep = torch.zeros_like(H, dtype=torch.bool).scatter(1, idx, True)
    return H.masked_fill(~keep, -math.inf)


def noisy_top_k_gating(x, W_g, W_noise, k: int, noise=None):
    """Noisy top-k gating: ``H = x W_g + noise * softplus(x W_noise)``,
    ``G = softmax(KeepTopK(H, k))``.

    Args:
        x: (T, d_model); W_g, W_noise: (d_model, E).
        k: experts per token.
        noise: standard-normal draws (T, E), or ``None`` for the noise-free
            gate (evaluation).

    Returns ``(G, clean, H, noise_std)``, all (T, E): the gates, the clean
    logits ``x W_g``, the noisy logits and the noise scale, as
    :func:`load_probability` needs them. Section "scale-moe".
    """
    clean = _logits("x", x) @ W_g
    noise_std = torch.nn.functional.softplus(x @ W_noise)
    H = clean if noise is None else clean + noise * noise_std
    return torch.softmax(keep_top_k(H, k), dim=-1), clean, H, noise_std


def load_probability(clean, H, noise_std, k: int) -> torch.Tensor:
    """Shazeer et al.'s smooth load: the probability that expert ``i`` is in
    the top ``k`` for token ``x`` if only its own noise were drawn again,
    ``Phi((clean_i - kth_excluding(H, k, i)) / noise_std_i)``, where the
    threshold is the ``k``-th largest of the *other* experts' noisy logits.

    Args:
        clean, H, noise_std: (T, E) from :func:`noisy_top_k_gating`.
        k: experts per token, ``k < E``.

    Returns (T, E) probabilities; summed over tokens they give the load.
    """
    H = _logits("H", H)
    k = positive_int("k", k)
    if k >= H.shape[1]:
        raise ValueError(f"k={k} must be below the {H.shape[1]} experts")
    top = H.topk(k + 1, dim=-1).values
    in_top = H >= top[:, k - 1 : k]  # expert i is among the top k
    # if i is in the top k, the others' k-th largest is the (k+1)-th overall
    threshold = torch.where(in_top, top[:, k : k + 1], top[:, k - 1 : k])
    normal = torch.distributions.Normal(0.0, 1.0)
    return normal.cdf((clean - threshold) / noise_std)


def cv_squared(v) -> torch.Tensor:
    """Squared coefficient of variation ``Var(v) / mean(v)^2`` (population
    variance); 0 when every entry is equal."""
    v = torch.as_tensor(v)
    v = v if v.is_floating_point() else v.double()
    if v.numel() < 2:
        raise ValueError("v must have at least two entries")
    return v.var(unbiased=False) / v.mean() ** 2


def importance_loss(gates, w_importance: float) -> torch.Tensor:
    """``w * CV(Importance)^2`` with ``Importance_i = sum_x G(x)_i``."""
    w = nonnegative("w_importance", w_importance)
    return w * cv_squared(_logits("gates", gates).sum(0))


def load_loss(load_prob, w_load: float) -> torch.Tensor:
    """``w * CV(Load)^2`` with ``Load_i = sum_x P(x, i)``
    (:func:`load_probability`)."""
    w = nonnegative("w_load", w_load)
    return w * cv_squared(_logits("load_prob", load_prob).sum(0))


def expert_capacity(
    n_tokens: int, n_experts: int, capacity_factor: float
) -> int:
    """Switch's expert capacity: ``ceil(capacity_factor * T / E)`` tokens
    per expert and batch."""
    t = positive_int("n_tokens", n_tokens)
    e = positive_int("n_experts", n_experts)
    cf = positive("capacity_factor", capacity_factor)
    return math.ceil(cf * t / e - 1e-9)


def switch_route(logits, capacity_factor: float):
    """Switch (top-1) routing with a capacity: each token goes to its
    arg-max expert; an expert takes tokens in order until it holds
    ``expert_capacity`` of them and drops the rest (their layer output is 0,
    so they pass on through the residual connection).

    Args:
        logits: (T, E) router logits.
        capacity_factor: the capacity factor (1 = exactly T/E per expert).

    Returns ``(expert, gate, kept, probs)``: chosen expert (T,), its router
    probability (T,), whether the token fits (T,) and the router
    probabilities (T, E). Section "scale-moe".
    """
    logits = _logits("logits", logits)
    T, E = logits.shape
    cap = expert_capacity(T, E, capacity_factor)
    probs = torch.softmax(logits, dim=-1)
    gate, expert = probs.max(dim=-1)
    onehot = torch.nn.functional.one_hot(expert, E)
    position = (onehot.cumsum(0) * onehot).sum(-1)  # 1-based place in line
    return expert, gate, position <= cap, probs


def switch_balancing_loss(probs, expert, alpha: float) -> torch.Tensor:
    """Switch's load-balancing loss ``alpha * E * sum_i f_i P_i``: ``f_i``
    the fraction of tokens routed to expert ``i`` (before dropping),
    ``P_i`` the mean router probability of expert ``i``. Equals ``alpha``
    when both are uniform.

    Args:
        probs: (T, E) router probabilities; expert: (T,) chosen experts;
        alpha: the loss weight.
    """
    probs = _logits("probs", probs)
    alpha = nonnegative("alpha", alpha)
    E = probs.shape[1]
    f = torch.bincount(expert, minlength=E).to(probs.dtype) / len(expert)
    return alpha * E * (f * probs.mean(0)).sum()


class MoELayer(torch.nn.Module):
    """A feed-forward mixture of experts: ``E`` ReLU MLPs
    (d_model -> d_hidden -> d_model) and a linear router.

    ``router="switch"``: top-1 with a capacity factor and the Switch
    balancing loss (weight ``alpha``). ``router="topk"``: noisy top-``k``
    gating with the importance and load losses (each weight ``alpha``).
    ``forward(x)`` takes (T, d_model) and returns ``(y, aux_loss)``; the
    caller adds ``y`` to the residual stream. Every expert is evaluated on
    every token and masked, which is exact and fast for the tiny sizes
    here (a real implementation gathers each expert's tokens). After a
    forward pass ``last_fraction`` holds the share of tokens each expert
    was chosen for and ``last_dropped`` the share dropped.
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        n_experts: int,
        router: str = "switch",
        k: int = 1,
        capacity_factor: float = 1.25,
        alpha: float = 0.01,
    ):
        super().__init__()
        d, h = (
            positive_int("d_model", d_model),
            positive_int("d_hidden", d_hidden),
        )
        E = positive_int("n_experts", n_experts)
        if router not in ("switch", "topk"):
            raise ValueError(
                f"router must be 'switch' or 'topk', got {router!r}"
            )
        self.router, self.k = router, positive_int("k", k)
        self.capacity_factor = positive("capacity_factor", capacity_factor)
        self.alpha = nonnegative("alpha", alpha)
        self.W_g = torch.nn.Parameter(torch.zeros(d, E))
        self.W_noise = torch.nn.Parameter(torch.zeros(d, E))
        self.W1 = torch.nn.Parameter(torch.randn(E, d, h) / math.sqrt(d))
        self.b1 = torch.nn.Parameter(torch.zeros(E, 1, h))
        self.W2 = torch.nn.Parameter(torch.randn(E, h, d) / math.sqrt(h))
        self.b2 = torch.nn.Parameter(torch.zeros(E, 1, d))
        torch.nn.init.normal_(self.W_g, std=1 / math.sqrt(d))
        self.last_fraction = torch.zeros(E)
        self.last_dropped = 0.0

    def forward(self, x):
        E = self.W_g.shape[1]
        if self.router == "switch":
            expert, gate, kept, probs = switch_route(
                x @ self.W_g, self.capacity_factor
            )
            aux = switch_balancing_loss(probs, expert, self.alpha)
            onehot = torch.nn.functional.one_hot(expert, E)
            combine = onehot * (gate * kept)[:, None]
            self.last_dropped = 1 - kept.float().mean().item()
        else:
            noise = torch.randn_like(x @ self.W_g) if self.training else None
            G, clean, H, std = noisy_top_k_gating(
                x, self.W_g, self.W_noise, self.k, noise
            )
            combine = G
            aux = importance_loss(G, self.alpha)
            if self.training and self.k < E:
                aux = aux + load_loss(
                    load_probability(clean, H, std, self.k), self.alpha
                )
            onehot = (G > 0).long()
            self.last_dropped = 0.0
        self.last_fraction = onehot.float().mean(0).detach() / (
            onehot.sum(-1).float().mean().item()
        )
        hidden = torch.relu(torch.einsum("td,edh->eth", x, self.W1) + self.b1)
        out = torch.einsum("eth,ehd->etd", hidden, self.W2) + self.b2
        return torch.einsum("te,etd->td", combine.to(x.dtype), out), aux


def clustered_regression(
    n: int, d_in: int, n_clusters: int, seed: int, spread: float = 0.3
):
    """A generated task with cluster structure: inputs around
    ``n_clusters`` random centres, and a different random linear map with a
    tanh for each cluster, ``y = tanh(A_c x)``.

    Args:
        n: samples; d_in: input (= output) width; n_clusters: clusters;
        seed: the task and the samples (same seed, same task);
        spread: standard deviation of the inputs around their centre.

    Returns ``(x, y, cluster)``: (n, d_in), (n, d_in), (n,).
    """
    n, d_in = positive_int("n", n), positive_int("d_in", d_in)
    c = positive_int("n_clusters", n_clusters)
    spread = positive("spread", spread)
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d_in, generator=g)
    maps = torch.randn(c, d_in, d_in, generator=g) / math.sqrt(d_in) * 2
    gs = torch.Generator().manual_seed(seed + 1_000_003)
    cluster = torch.randint(c, (n,), generator=gs)
    x = centres[cluster] + spread * torch.randn(n, d_in, generator=gs)
    y = torch.tanh(torch.einsum("nij,nj->ni", maps[cluster], x))
    return x, y, cluster


class RegressionNet(torch.nn.Module):
    """The small model of the MoE experiment: input -> linear to
    ``d_model`` -> residual feed-forward layer ``ffn`` -> linear out.
    ``ffn`` is an :class:`MoELayer` (returns ``(y, aux)``) or any module
    mapping (T, d_model) to (T, d_model), e.g. :func:`dense_ffn`.
    ``forward(x)`` returns ``(prediction, aux_loss)``. Section scale-moe.
    """

    def __init__(self, d_in: int, d_model: int, ffn: torch.nn.Module):
        super().__init__()
        d_in = positive_int("d_in", d_in)
        d_model = positive_int("d_model", d_model)
        self.inp = torch.nn.Linear(d_in, d_model)
        self.ffn = ffn
        self.out = torch.nn.Linear(d_model, d_in)

    def forward(self, x):
        z = self.inp(x)
        if isinstance(self.ffn, MoELayer):
            h, aux = self.ffn(z)
        else:
            h, aux = self.ffn(z), torch.zeros(())
        return self.out(z + h), aux


def dense_ffn(d_model: int, width: int) -> torch.nn.Sequential:
    """The dense baseline of the MoE experiment: a ReLU MLP
    d_model -> ``width`` -> d_model. Section scale-moe."""
    d = positive_int("d_model", d_model)
    w = positive_int("width", width)
    return torch.nn.Sequential(
        torch.nn.Linear(d, w), torch.nn.ReLU(), torch.nn.Linear(w, d)
    )


def train_regressor(
    net: RegressionNet,
    x,
    y,
    x_test,
    y_test,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
):
    """Adam on the mean squared error plus the net's auxiliary (balancing)
    loss, ``steps`` minibatches of ``batch`` rows drawn with a generator
    seeded by ``seed``. Returns ``(test_mse, shares)``: the test error and,
    for an MoE layer, the share of tokens each expert was chosen for at
    every step, (steps, E) (empty otherwise). Section scale-moe.
    """
    steps = positive_int("steps", steps)
    batch = positive_int("batch", batch)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=positive("lr", lr))
    shares = []
    for _ in range(steps):
        i = torch.randint(len(x), (batch,), generator=g)
        pred, aux = net(x[i])
        loss = ((pred - y[i]) ** 2).mean() + aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        if isinstance(net.ffn, MoELayer):
            shares.append(net.ffn.last_fraction.numpy().copy())
    with torch.no_grad():
        test = ((net(x_test)[0] - y_test) ** 2).mean().item()
    return test, np.array(shares)


def live_experts(shares, live_share: float, last: int = 20):
    """From per-step token shares (steps, E): the number of experts whose
    mean share over the ``last`` steps exceeds ``live_share``, and the
    largest mean share. Section scale-moe."""
    shares = np.asarray(shares, dtype=float)
    if shares.ndim != 2 or len(shares) == 0:
        raise ValueError("shares must be a non-empty (steps, E) array")
    final = shares[-positive_int("last", last) :].mean(0)
    return int((final > positive("live_share", live_share)).sum()), float(
        final.max()
    )


def moe_param_counts(layer: MoELayer) -> dict[str, int]:
    """Parameters of an :class:`MoELayer` that its router uses: all experts
    and ``W_g`` (``W_noise`` only with the noisy top-k router) as "total",
    one expert per token's top-k plus the router as "active". Section
    scale-moe."""
    E = layer.W_g.shape[1]
    experts = sum(p.numel() for p in (layer.W1, layer.b1, layer.W2, layer.b2))
    router = layer.W_g.numel() + (
        layer.W_noise.numel() if layer.router == "topk" else 0
    )
    return {
        "total": experts + router,
        "active": layer.k * experts // E + router,
    }


def gpt_oss_params(
    n_layers: int,
    n_experts: int,
    active_experts: int,
    d_model: int,
    d_expert: int,
    n_heads: int,
    n_kv_heads: int,
    d_head: int,
    vocab: int,
) -> dict:
    """Parameter count of a gpt-oss-style model from its architecture:
    attention with biases (``n_heads`` query heads, ``n_kv_heads`` key/value
    heads of ``d_head``, one learned "sink" logit per head), a router with
    bias, experts that are SwiGLU MLPs with biases (``d_model ->
    2 d_expert -> d_model``), two RMSNorm gains per layer and a final one,
    untied embedding and unembedding.

    Returns a dict of counts: ``expert`` (one expert), ``experts`` (all,
    all layers), ``router``, ``attention``, ``norms``, ``embedding``,
    ``unembedding``, ``total``, and ``active`` (per token: ``active_experts``
    experts per layer, attention, router, norms and the unembedding; the
    embedding is a table look-up, no multiply). Section "scale-moe".
    """
    L, E, k = (
        positive_int(n, v)
        for n, v in (
            ("n_layers", n_layers),
            ("n_experts", n_experts),
            ("active_experts", active_experts),
        )
    )
    if k > E:
        raise ValueError("active_experts must be at most n_experts")
    d, f, H, Hkv, dh, V = (
        positive_int(n, v)
        for n, v in (
            ("d_model", d_model),
            ("d_expert", d_expert),
            ("n_heads", n_heads),
            ("n_kv_heads", n_kv_heads),
            ("d_head", d_head),
            ("vocab", vocab),
        )
    )
    expert = d * 2 * f + 2 * f + f * d + d
    attn = (
        d * H * dh
        + H * dh
        + 2 * (d * Hkv * dh + Hkv * dh)
        + H * dh * d
        + d
        + H
    ) * L
    router = (d * E + E) * L
    norms = 2 * d * L + d
    out = {
        "expert": expert,
        "experts": expert * E * L,
        "router": router,
        "attention": attn,
        "norms": norms,
        "embedding": V * d,
        "unembedding": V * d,
    }
    out["total"] = out["experts"] + router + attn + norms + 2 * V * d
    out["active"] = expert * k * L + router + attn + norms + V * d
    return out
