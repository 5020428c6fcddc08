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
    when both are uniform, but that is not its minimum (see
    :func:`switch_loss_two_experts`).

    Args:
        probs: (T, E) router probabilities; expert: (T,) chosen experts;
        alpha: the loss weight.
    """
    probs = _logits("probs", probs)
    alpha = nonnegative("alpha", alpha)
    E = probs.shape[1]
    f = torch.bincount(expert, minlength=E).to(probs.dtype) / len(expert)
    return alpha * E * (f * probs.mean(0)).sum()


def switch_loss_two_experts(q: float, eps: float = 0.0, n: int = 1000):
    """A top-1 routing of ``n`` tokens over E = 2 experts that pushes the
    Switch loss below its value at uniform routing (section scale-moe).

    A share ``q`` of the tokens has router probabilities
    (1/2 + ``eps``, 1/2 - ``eps``) and goes to expert 0; the rest has
    (0, 1) and goes to expert 1. Then f = (q, 1 - q), P = (q/2 + q eps,
    1 - q/2 - q eps) and, for eps -> 0, E sum_i f_i P_i -> q + 2 (1-q)^2,
    smallest (7/8) at q = 3/4. Returns ``(probs, expert)`` for
    :func:`switch_balancing_loss`.
    """
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q!r}")
    if not 0.0 <= float(eps) <= 0.5:
        raise ValueError(f"eps must lie in [0, 1/2], got {eps!r}")
    n = positive_int("n", n)
    n0 = round(q * n)
    probs = torch.zeros(n, 2, dtype=torch.float64)
    probs[:n0] = torch.tensor([0.5 + eps, 0.5 - eps], dtype=torch.float64)
    probs[n0:] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    expert = torch.zeros(n, dtype=torch.long)
    expert[n0:] = 1
    return probs, expert


def switch_loss_infimum_two_experts() -> tuple[float, float]:
    """``(q*, value)``: the share q* of tokens sent to the busier expert at
    which the routings of :func:`switch_loss_two_experts` (eps -> 0) reach
    the smallest E sum_i f_i P_i, found by ``scipy.optimize`` on
    q + 2 (1-q)^2 over [1/2, 1]. A token sent to expert 0 can hold at most
    P_0 = P_1 = 1/2, one sent to expert 1 at least p_1 = 1/2 and at best
    (0, 1), so no top-1 routing of two experts goes lower (closed form:
    q* = 3/4, value 7/8). Section scale-moe.
    """
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda q: q + 2 * (1 - q) ** 2,
        bounds=(0.5, 1.0),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(res.x), float(res.fun)


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


class _RunsLinear(torch.autograd.Function):
    """``x W^T + b`` for n runs at once: x (n, T, i), W (n, o, i), b (n, o).
    The backward forms ``g^T x`` as ``nn.Linear`` does (not ``(x^T g)^T``),
    so each run's gradient is bit-equal to training that run alone."""

    @staticmethod
    def forward(ctx, x, W, b):
        ctx.save_for_backward(x, W)
        return torch.baddbmm(b[:, None], x, W.mT)

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        gx = g @ W if ctx.needs_input_grad[0] else None
        return gx, g.mT @ x, g.sum(1)


class _RunsCombine(torch.autograd.Function):
    """``y[r, t] = sum_e combine[r, t, e] * out[r, e, t]`` for n runs:
    combine (n, T, E), out (n, E, T, d) -> (n, T, d). The einsum of
    :meth:`MoELayer.forward` at a fraction of its cost: a router gives a
    token at most two nonzero weights (top-1, top-2), and a sum of two
    products and zeros is exact in any order, so this equals the einsum
    bit for bit; the weights' gradient is the einsum's own (a batched
    product summed over d in the same order)."""

    @staticmethod
    def forward(ctx, combine, out):
        ctx.save_for_backward(combine, out)
        return (combine.permute(0, 2, 1)[..., None] * out).sum(1)

    @staticmethod
    def backward(ctx, g):
        combine, out = ctx.saved_tensors
        n, E, T, d = out.shape
        g_out = combine.permute(0, 2, 1)[..., None] * g[:, None]
        g_comb = torch.bmm(
            g.reshape(n * T, 1, d),
            out.permute(0, 2, 3, 1).reshape(n * T, d, E),
        )
        return g_comb.view(n, T, E), g_out


def _cv_squared_runs(v) -> torch.Tensor:
    """:func:`cv_squared` along the last axis: (n, E) -> (n,)."""
    return v.var(-1, unbiased=False) / v.mean(-1) ** 2


def _forward_runs(p: dict, layer, x, noise):
    """:class:`RegressionNet`'s forward pass for n runs at once, op for op
    as :meth:`MoELayer.forward` (so bit-equal per run).

    Args:
        p: name -> stacked parameter (n, *shape), the names of
            ``RegressionNet.named_parameters()``.
        layer: the first run's :class:`MoELayer` (router, k, capacity,
            alpha), or ``None`` for a :func:`dense_ffn`.
        x: (n, T, d_in) inputs; noise: (n, T, E) standard-normal draws
            (noisy top-k router) or ``None``.

    Returns ``(pred, aux, fraction)``: (n, T, d_in), (n,) or ``None``, and
    each expert's token share (n, E) or ``None``.
    """

    def lin(h, name):
        return _RunsLinear.apply(h, p[name + ".weight"], p[name + ".bias"])

    z = lin(x, "inp")
    if layer is None:
        pred = lin(z + lin(torch.relu(lin(z, "ffn.0")), "ffn.2"), "out")
        return pred, None, None
    W_g = p["ffn.W_g"]
    E, k, alpha = W_g.shape[-1], layer.k, layer.alpha
    if layer.router == "switch":
        logits = z @ W_g
        T = logits.shape[1]
        cap = expert_capacity(T, E, layer.capacity_factor)
        probs = torch.softmax(logits, dim=-1)
        gate, expert = probs.max(dim=-1)
        onehot = torch.nn.functional.one_hot(expert, E)
        kept = (onehot.cumsum(1) * onehot).sum(-1) <= cap
        f = onehot.sum(1).to(probs.dtype) / T
        aux = alpha * E * (f * probs.mean(1)).sum(-1)
        combine = onehot * (gate * kept)[..., None]
    else:
        clean = z @ W_g
        std = torch.nn.functional.softplus(z @ p["ffn.W_noise"])
        H = clean + noise * std
        keep = torch.zeros_like(H, dtype=torch.bool)
        keep = keep.scatter(-1, H.topk(k, dim=-1).indices, True)
        combine = torch.softmax(H.masked_fill(~keep, -math.inf), dim=-1)
        aux = alpha * _cv_squared_runs(combine.sum(1))
        if k < E:  # load_probability, per run
            top = H.topk(k + 1, dim=-1).values
            kth, next_ = top[..., k - 1 : k], top[..., k : k + 1]
            threshold = torch.where(H >= kth, next_, kth)
            normal = torch.distributions.Normal(0.0, 1.0)
            load = normal.cdf((clean - threshold) / std)
            aux = aux + alpha * _cv_squared_runs(load.sum(1))
        onehot = (combine > 0).long()
    fraction = onehot.float().mean(1) / (
        onehot.sum(-1).float().mean(-1, keepdim=True)
    )
    W1, b1, W2, b2 = (p["ffn." + n] for n in ("W1", "b1", "W2", "b2"))
    hidden = torch.relu(torch.einsum("rtd,redh->reth", z, W1) + b1)
    out = torch.einsum("reth,rehd->retd", hidden, W2) + b2
    h = _RunsCombine.apply(combine.to(x.dtype), out)
    return lin(z + h, "out"), aux, fraction


def train_seeds(
    make_ffn,
    data,
    seeds,
    d_in: int,
    d_model: int,
    steps: int,
    batch: int,
    lr: float,
) -> list[dict]:
    """Train one :class:`RegressionNet` per seed around ``make_ffn()``
    (its initial weights from ``torch.manual_seed(seed)``, its minibatches
    from ``seed``) on ``data = (x, y, x_test, y_test)``, each run exactly
    as :func:`train_regressor` trains it alone (bit-equal: same draws, same
    operations per run, Adam elementwise), but all seeds at once on
    stacked parameters. The noisy top-k router draws each run's noise from
    a copy of the global generator as it stands after that run's
    initialisation, as the loop over seeds would; the global state is left
    where that loop leaves it. Returns one dict per seed: ``seed``,
    ``net`` (the trained model), ``test`` (test MSE) and ``shares``
    ((steps, E) per-step expert shares, empty for a dense layer). Section
    scale-moe."""
    steps = positive_int("steps", steps)
    batch = positive_int("batch", batch)
    lr = positive("lr", lr)
    x, y, x_test, y_test = data
    seeds = [int(s) for s in seeds]
    nets, noise_gens = [], []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(RegressionNet(d_in, d_model, make_ffn()))
        noise_gens.append(torch.Generator())
        noise_gens[-1].set_state(torch.get_rng_state())
    layer = nets[0].ffn if isinstance(nets[0].ffn, MoELayer) else None
    noisy = layer is not None and layer.router == "topk"
    E = layer.W_g.shape[1] if layer is not None else 0
    p = {
        name: torch.stack([dict(m.named_parameters())[name] for m in nets])
        .detach()
        .requires_grad_()
        for name, _ in nets[0].named_parameters()
    }
    opt = torch.optim.Adam(p.values(), lr=lr)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    shares = []
    for _ in range(steps):
        i = torch.stack(
            [torch.randint(len(x), (batch,), generator=g) for g in gens]
        )
        noise = None
        if noisy:
            noise = torch.stack(
                [torch.randn(batch, E, generator=g) for g in noise_gens]
            )
        pred, aux, fraction = _forward_runs(p, layer, x[i], noise)
        loss = ((pred - y[i]) ** 2).mean((1, 2))
        loss = loss if aux is None else loss + aux
        opt.zero_grad()
        loss.sum().backward()  # d(sum)/d(run's loss) = 1: own gradients
        opt.step()
        if fraction is not None:
            shares.append(fraction.numpy().copy())
    out = []
    for r, (s, net) in enumerate(zip(seeds, nets)):
        with torch.no_grad():
            for name, t in net.named_parameters():
                t.copy_(p[name][r])
            if noisy:  # evaluation draws noise too (training mode)
                torch.set_rng_state(noise_gens[r].get_state())
            test = ((net(x_test)[0] - y_test) ** 2).mean().item()
        run_shares = np.array([a[r] for a in shares])
        out.append({"seed": s, "net": net, "test": test, "shares": run_shares})
    return out


def runs_table(runs: dict, live_share: float) -> "pd.DataFrame":
    """One row per model and seed from ``{model name: train_seeds(...)}``:
    test MSE, and for an MoE the live experts (:func:`live_experts`) and
    the largest token share (missing for dense models). Section
    scale-moe."""
    import pandas as pd

    rows = []
    for name, seed_runs in runs.items():
        for r in seed_runs:
            row = {"model": name, "seed": r["seed"], "test MSE": r["test"]}
            if len(r["shares"]):
                live, top = live_experts(r["shares"], live_share)
                row.update({"live experts": live, "largest share": top})
            rows.append(row)
    return pd.DataFrame(rows)


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


def context_attention_flop(
    context: int,
    n_layers: int,
    n_heads: int,
    d_head: int,
    window: int | None = None,
) -> int:
    """FLOP per token of attention over the context, which no weight count
    sees: the scores q K^T and the weighted sum P V cost 2 d_head FLOP each
    per key and head, 4 ``context`` ``n_heads`` ``d_head`` per layer for a
    token that attends to ``context`` earlier tokens (a decoded token at
    that position; a prefill token attends to half the context on average,
    as the causal mask halves the score matrix). With ``window``, every
    second layer is banded (gpt-oss's alternation, starting with a banded
    one) and attends to at most ``window`` tokens; the others see the whole
    context. Section scale-moe."""
    T = positive_int("context", context)
    L, H = positive_int("n_layers", n_layers), positive_int("n_heads", n_heads)
    dh = positive_int("d_head", d_head)
    if window is None:
        return 4 * T * H * dh * L
    w = positive_int("window", window)
    banded = (L + 1) // 2
    return 4 * H * dh * ((L - banded) * T + banded * min(T, w))


def dropped_fraction(net: RegressionNet, x, capacity_factors) -> list:
    """Share of the rows of ``x`` (one routing batch) that the trained
    Switch router of ``net.ffn`` sends to a full expert, for each capacity
    factor (:func:`switch_route`). Section scale-moe."""
    with torch.no_grad():
        logits = net.inp(x) @ net.ffn.W_g
    return [
        1 - switch_route(logits, cf)[2].float().mean().item()
        for cf in capacity_factors
    ]


def gpt_oss_summary(
    counts: dict,
    n_layers: int,
    active_experts: int,
    d_model: int,
    bf16_bytes: float = 2.0,
    mxfp4_bits: float = 4.25,
) -> dict:
    """What the chapter's gpt-oss table shows, from the ``counts`` of
    :func:`gpt_oss_params`: totals in billions, the active share, the
    experts' share, 2 x active GFLOP per token (the weights only; see
    :func:`context_attention_flop`), weight bytes in bf16 and with the
    experts in MXFP4 (GB), and the all-to-all bytes per token over all
    layers (dispatch and combine of ``active_experts`` vectors of
    ``d_model`` in bf16). Section scale-moe."""
    c = counts
    other = c["total"] - c["experts"]
    a2a = 2 * active_experts * d_model * bf16_bytes
    return {
        "total (B)": c["total"] / 1e9,
        "active (B)": c["active"] / 1e9,
        "active / total": c["active"] / c["total"],
        "experts' share": c["experts"] / c["total"],
        "GFLOP per token": 2 * c["active"] / 1e9,
        "weights, bf16 (GB)": c["total"] * bf16_bytes / 1e9,
        "weights, MXFP4 experts (GB)": (
            c["experts"] * mxfp4_bits / 8 + other * bf16_bytes
        )
        / 1e9,
        "a2a bytes per token": a2a * n_layers,
    }


def routing_table(logits, expert, gate, kept) -> "pd.DataFrame":
    """The routing of :func:`switch_route` as a table, one row per token:
    its router logits (one column per expert), the chosen expert, its gate
    (three decimals) and whether it was kept. ``logits`` (T, E); the rest
    (T,) as :func:`switch_route` returns them. Section scale-moe (the hand
    example of notebook moe-routing)."""
    import pandas as pd

    columns = {f"logit {e}": logits[:, e] for e in range(logits.shape[1])}
    columns.update(
        {"expert": expert, "gate": gate.numpy().round(3), "kept": kept}
    )
    return pd.DataFrame(columns)


def plot_expert_shares(shares: dict, n_experts: int):
    """Each expert's share of a batch's tokens over training, stacked, one
    panel per entry of ``shares`` (panel title -> per-step shares (steps,
    ``n_experts``) of one run, as :func:`train_seeds` records them), the
    panels one under the other at the book's 6.4 in (readable on a phone,
    issue 20) with a shared x axis, the legend under the last. Section
    scale-moe (notebook moe-routing). Returns the figure."""
    import matplotlib.pyplot as plt

    from llmbook.book.plotting import use_style

    use_style()
    fig, axes = plt.subplots(
        len(shares), 1, figsize=(6.4, 3.0 * len(shares) + 0.8), sharex=True
    )
    axes = np.atleast_1d(axes)
    for ax, (title, sh) in zip(axes, shares.items()):
        ax.stackplot(
            np.arange(1, len(sh) + 1),
            sh.T,
            labels=[f"expert {e}" for e in range(n_experts)],
        )
        ax.set_title(title)
        ax.set_xlim(1, len(sh))
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of tokens (stacked)")
    axes[-1].set_xlabel("training step")
    axes[-1].legend(
        fontsize=9,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncols=min(n_experts, 4),
    )
    fig.tight_layout()
    return fig


def plot_dropped(capacity_factors, drop: dict, title: str):
    """Fraction of tokens dropped against the capacity factor: per router
    (name -> array (runs, len(capacity_factors)) of :func:`dropped_fraction`)
    the median over runs as a line and the range as a band. Section
    scale-moe (notebook moe-routing). Returns the figure."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes("capacity factor", "fraction of tokens dropped", title)
    for name, d in drop.items():
        (line,) = ax.plot(capacity_factors, np.median(d, 0), "o-", label=name)
        ax.fill_between(
            capacity_factors,
            d.min(0),
            d.max(0),
            color=line.get_color(),
            alpha=0.2,
        )
    ax.set_ylim(bottom=0)
    ax.legend()
    return fig


def gpt_oss_table(
    counts: dict,
    layers,
    experts,
    published,
    active_experts: int,
    d_model: int,
    bf16_bytes: float = 2.0,
    mxfp4_bits: float = 4.25,
) -> "pd.DataFrame":
    """The chapter's gpt-oss table, one row per model of ``counts`` (name ->
    :func:`gpt_oss_params`, in order): its ``layers`` and ``experts``, the
    ``published`` (total, active) parameters in billions, and what
    :func:`gpt_oss_summary` computes from the counts. Section scale-moe
    (notebook moe-routing)."""
    import pandas as pd

    rows = {}
    for (name, c), L, E, (pub_t, pub_a) in zip(
        counts.items(), layers, experts, published
    ):
        rows[name] = {
            "layers": L,
            "experts": E,
            "published total": pub_t,
            "published active": pub_a,
            **gpt_oss_summary(
                c, L, active_experts, d_model, bf16_bytes, mxfp4_bits
            ),
        }
    return pd.DataFrame(rows).T


def context_flop_table(
    weight_gflop: dict,
    layers,
    contexts,
    n_heads: int,
    d_head: int,
    window: int | None = None,
) -> "pd.DataFrame":
    """Per decoded token, the GFLOP of the weights against the GFLOP of
    attention over the context (:func:`context_attention_flop`), one row
    per (model, context length): ``weight_gflop`` maps each model to its
    weights' GFLOP per token (a dict or Series, in the order of
    ``layers``, its layer counts); ``contexts`` in tokens. Section
    scale-moe (notebook moe-routing)."""
    import pandas as pd

    rows = {}
    for (name, weights), L in zip(weight_gflop.items(), layers):
        for T in contexts:
            attn = context_attention_flop(T, L, n_heads, d_head, window) / 1e9
            rows[name, T] = {
                "weights (GFLOP)": weights,
                "context (GFLOP)": attn,
                "context / weights": attn / weights,
            }
    return pd.DataFrame(rows).T
