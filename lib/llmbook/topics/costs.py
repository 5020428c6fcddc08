"""What training costs: FLOP and byte accounting for a Llama-style decoder.

Term-by-term forward FLOP of a decoder layer (the matmul rule ``2 m n h`` and
its exact form ``m h (2n - 1)``), a small plain-``torch.nn`` Llama-style model
to check the count against ``torch.utils.flop_counter``, the bytes of
mixed-precision Adam training (the 16-bytes-per-parameter rule), counting
bytes from the tensors of a real training step, activation bytes, the roofline
and a tiny next-token MLP for the iso-FLOP experiment. Derived in the chapter
"What training costs" (lecture walkthrough), sections dls-flops, scale-6pd,
dls-mixed-precision, scale-memory, cme295-memory and scale-chinchilla.

Notation (glossary): ``b`` sequences, ``s`` tokens per sequence, ``h`` model
width, ``n_heads`` heads of width ``d`` (h = n_heads d), ``i`` SwiGLU width,
``v`` vocabulary, ``n_layers`` layers. Units: FLOP, bytes, FLOP/s, bytes/s.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmbook.core.validate import positive, positive_array, positive_int

# --- FLOP accounting
# ----------------------------------------------------------------------


def matmul_flops(m: int, n: int, h: int, exact: bool = False) -> int:
    """FLOP of an (m x n) @ (n x h) product: ``2 m n h`` (n multiplies and n
    additions per output, the convention of ``torch.utils.flop_counter``), or
    with ``exact`` the ``m h (2n - 1)`` of a sum of n products (n - 1 adds).

    Section dls-flops.
    """
    m, n, h = (positive_int(k, x) for k, x in (("m", m), ("n", n), ("h", h)))
    return m * h * (2 * n - 1) if exact else 2 * m * n * h


def llama_layer_flops(
    b: int, s: int, h: int, n_heads: int, i: int, exact: bool = False
) -> dict[str, int]:
    """Forward FLOP of one Llama decoder layer, term by term, as the DSC 291
    lecture's table lists them: a dict ``{term: FLOP}``.

    Matmul terms use :func:`matmul_flops`; elementwise terms the lecture's
    counts (RoPE 3 FLOP per rotated element, applied to Q and K; softmax 3 per
    score; swish 4 and the gate product 1 per SwiGLU element; RMSNorm 4 per
    element plus 2 per token, two norms per layer; one add per element for
    each of the two residual connections). Args: b sequences, s tokens each,
    width h = n_heads * d, SwiGLU width i. Section dls-flops.
    """
    b, s, h = positive_int("b", b), positive_int("s", s), positive_int("h", h)
    n_heads, i = positive_int("n_heads", n_heads), positive_int("i", i)
    if h % n_heads:
        raise ValueError(f"h={h} must be a multiple of n_heads={n_heads}")
    d, t = h // n_heads, b * s  # head width, tokens

    def mm(m, n, k):
        return matmul_flops(m, n, k, exact)

    return {
        "q, k, v projections": 3 * mm(t, h, h),
        "RoPE on q and k": 2 * 3 * t * h,
        "scores q k^T": b * n_heads * mm(s, d, s),
        "softmax": 3 * b * n_heads * s * s,
        "P v": b * n_heads * mm(s, s, d),
        "output projection": mm(t, h, h),
        "residual adds": 2 * t * h,
        "gate and up projections": 2 * mm(t, h, i),
        "swish": 4 * t * i,
        "gate product": t * i,
        "down projection": mm(t, i, h),
        "RMSNorm (two)": 2 * (4 * t * h + 2 * t),
    }


MATMUL_TERMS = (
    "q, k, v projections",
    "scores q k^T",
    "P v",
    "output projection",
    "gate and up projections",
    "down projection",
)


def llama_forward_flops(
    b: int,
    s: int,
    h: int,
    n_heads: int,
    i: int,
    v: int,
    n_layers: int,
    exact: bool = False,
) -> dict[str, int]:
    """Forward FLOP of a whole Llama decoder: ``n_layers`` times
    :func:`llama_layer_flops`, the final RMSNorm and the output head
    ``2 b s h v``. The embedding lookup is a gather: 0 FLOP. Section
    dls-flops.
    """
    n_layers = positive_int("n_layers", n_layers)
    v = positive_int("v", v)
    layer = llama_layer_flops(b, s, h, n_heads, i, exact)
    out = {k: n_layers * x for k, x in layer.items()}
    t = b * s
    out["final RMSNorm"] = 4 * t * h + 2 * t
    out["output head"] = matmul_flops(t, h, v, exact)
    return out


def matmul_total(flops: dict[str, int]) -> int:
    """Sum of the matmul terms (:data:`MATMUL_TERMS` and the output head) of
    a dict from :func:`llama_forward_flops`: what
    ``torch.utils.flop_counter.FlopCounterMode`` counts. Section dls-flops.
    """
    keys = set(MATMUL_TERMS) | {"output head"}
    return int(sum(x for k, x in flops.items() if k in keys))


def lecture_total_flops(
    b: int, s: int, h: int, n_heads: int, i: int, v: int, n_layers: int
) -> int:
    """The DSC 291 lecture's closed form of the forward FLOP:
    ``L (6bsh^2 + 4bs^2h + 3bs^2n + 2bsh^2) + L 6bshi + 2bshv``
    (L layers, n heads): the matmuls and the softmax only. Section dls-flops.
    """
    b, s, h = positive_int("b", b), positive_int("s", s), positive_int("h", h)
    n, i = positive_int("n_heads", n_heads), positive_int("i", i)
    v, L = positive_int("v", v), positive_int("n_layers", n_layers)
    attn = 6 * b * s * h**2 + 4 * b * s**2 * h + 3 * b * s**2 * n
    mlp = 6 * b * s * h * i
    return L * (attn + 2 * b * s * h**2) + L * mlp + 2 * b * s * h * v


def llama_params(h: int, i: int, v: int, n_layers: int) -> dict[str, int]:
    """Parameters of a Llama decoder without biases, untied embedding and
    head: per layer ``4h^2`` (attention) + ``3hi`` (SwiGLU) + ``2h`` (norms);
    plus ``vh`` embedding, ``vh`` head and ``h`` final norm. Section
    scale-6pd.
    """
    h, i = positive_int("h", h), positive_int("i", i)
    v, L = positive_int("v", v), positive_int("n_layers", n_layers)
    return {
        "attention": L * 4 * h * h,
        "mlp": L * 3 * h * i,
        "norms": L * 2 * h + h,
        "embedding": v * h,
        "head": v * h,
    }


# --- A small Llama-style model in plain torch.nn
# --------------------------------------------------


def rope(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding of ``x`` (b, n_heads, s, d), d even: each
    pair (x_2j, x_2j+1) at position p is rotated by p * base^(-2j/d).
    Section dls-flops.
    """
    s, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"x: the head width must be even, got {d}")
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * gain, over the last axis."""

    def __init__(self, h: int, eps: float = 1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(positive_int("h", h)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., h)."""
        rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * rms * self.gain


class LlamaBlock(nn.Module):
    """One pre-norm Llama decoder layer: causal multi-head attention with
    RoPE, then a SwiGLU MLP, each added back to the residual stream."""

    def __init__(self, h: int, n_heads: int, i: int):
        super().__init__()
        if h % n_heads:
            raise ValueError(f"h={h} must be a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm1, self.norm2 = RMSNorm(h), RMSNorm(h)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.out = nn.Linear(h, h, bias=False)
        self.gate_up = nn.Linear(h, 2 * i, bias=False)
        self.down = nn.Linear(i, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the residual stream ``x`` (b, s, h) to the next one."""
        b, s, h = x.shape
        d = h // self.n_heads
        q, k, v = self.qkv(self.norm1(x)).split(h, dim=-1)
        q, k, v = (
            t.view(b, s, self.n_heads, d).transpose(1, 2) for t in (q, k, v)
        )
        q, k = rope(q), rope(k)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        mask = torch.ones(s, s, dtype=torch.bool).triu(1)
        p = scores.masked_fill(mask, float("-inf")).softmax(-1)
        a = (p @ v).transpose(1, 2).reshape(b, s, h)
        x = x + self.out(a)
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(nn.functional.silu(gate) * up)


class TinyLlama(nn.Module):
    """A Llama-style decoder (embedding, ``n_layers`` :class:`LlamaBlock`,
    final RMSNorm, untied head) at any size; random weights, no download.
    With ``checkpoint_layers`` each block runs under
    ``torch.utils.checkpoint`` (the reentrant form, which keeps only the
    block's input for the backward pass and recomputes the rest).
    Section dls-flops."""

    def __init__(
        self,
        h: int,
        n_heads: int,
        i: int,
        v: int,
        n_layers: int,
        checkpoint_layers: bool = False,
    ):
        super().__init__()
        self.checkpoint_layers = bool(checkpoint_layers)
        self.embed = nn.Embedding(positive_int("v", v), positive_int("h", h))
        self.blocks = nn.ModuleList(
            LlamaBlock(h, n_heads, positive_int("i", i))
            for _ in range(positive_int("n_layers", n_layers))
        )
        self.norm = RMSNorm(h)
        self.head = nn.Linear(h, v, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (b, s, v) of the next token for ``tokens`` (b, s)."""
        x = self.embed(tokens)
        for block in self.blocks:
            if self.checkpoint_layers and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=True)
            else:
                x = block(x)
        return self.head(self.norm(x))


def counted_flops(
    model: nn.Module, tokens: torch.Tensor, backward: bool = True
) -> dict[str, int]:
    """FLOP that ``torch.utils.flop_counter.FlopCounterMode`` counts for one
    forward (and, with ``backward``, one backward of the summed logits) of
    ``model`` on ``tokens``: ``{"forward": .., "backward": ..}``. The counter
    sees matrix products only. Section dls-flops.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fwd:
        logits = model(tokens)
    out = {"forward": int(fwd.get_total_flops()), "backward": 0}
    if backward:
        with FlopCounterMode(display=False) as bwd:
            logits.float().sum().backward()
        out["backward"] = int(bwd.get_total_flops())
    return out


# --- Memory accounting
# --------------------------------------------------------------------

# Bytes per parameter of each persistent training tensor, by recipe.
RECIPES: dict[str, dict[str, int]] = {
    # fp16/bf16 weights and gradients, fp32 master copy, fp32 Adam moments
    "mixed": {"weights": 2, "grads": 2, "master": 4, "adam_m": 4, "adam_v": 4},
    # everything in fp32 (and autocast's mixed precision: fp32 params)
    "fp32": {"weights": 4, "grads": 4, "master": 0, "adam_m": 4, "adam_v": 4},
    # pure bf16: weights, gradients and moments in bf16, no master copy
    "bf16": {"weights": 2, "grads": 2, "master": 0, "adam_m": 2, "adam_v": 2},
}


def training_state_bytes(n_params: float, recipe: str = "mixed") -> dict:
    """Bytes of weights, gradients, master copy and the two Adam moments for
    ``n_params`` parameters under ``recipe`` (a key of :data:`RECIPES`); the
    dict also holds ``"total"`` (16 N for "mixed"). Section
    dls-mixed-precision.
    """
    n = positive("n_params", n_params)
    if recipe not in RECIPES:
        raise ValueError(
            f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}"
        )
    out = {k: n * x for k, x in RECIPES[recipe].items()}
    out["total"] = sum(out.values())
    return out


def checkpoint_activation_bytes(
    n_layers: int, tokens: float, h: int, bytes_per_value: float = 2.0
) -> float:
    """Bytes of activations kept when checkpointing at layer boundaries: one
    (tokens x h) layer input per layer, ``n_layers * tokens * h *
    bytes_per_value``. Section dls-mixed-precision.
    """
    return (
        positive_int("n_layers", n_layers)
        * positive("tokens", tokens)
        * positive_int("h", h)
        * positive("bytes_per_value", bytes_per_value)
    )


def tensor_bytes(tensors) -> int:
    """Total bytes of the tensors in ``tensors`` (``None`` entries skipped):
    numel times element size; of a distributed tensor, the local shard this
    process holds. Sections dls-mixed-precision and cme295-zero."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        if hasattr(t, "to_local"):
            t = t.to_local()
        total += t.numel() * t.element_size()
    return total


def mixed_precision_step(
    model: nn.Module,
    tokens: torch.Tensor,
    lr: float = 1e-3,
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, int]:
    """Run one mixed-precision Adam step on ``model`` (its weights cast to
    ``dtype`` in place) and count the bytes of every persistent tensor.

    The recipe of the lecture: ``dtype`` weights run the forward and backward
    pass (next-token cross-entropy on ``tokens`` (b, s)) and get ``dtype``
    gradients; an fp32 master copy takes the step with ``torch.optim.Adam``
    (fp32 moments) and is cast back. Returns bytes of ``weights``, ``grads``,
    ``master``, ``adam_m``, ``adam_v``, ``adam_step`` (Adam's step counters:
    one 4-byte scalar per parameter tensor) and ``n_params``, all read off the
    tensors themselves. Section dls-mixed-precision.
    """
    model.to(dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(master, lr=positive("lr", lr))
    logits = model(tokens[:, :-1])
    loss = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
    )
    loss.backward()
    for m, p in zip(master, params):
        m.grad = p.grad.float()
    opt.step()
    with torch.no_grad():
        for m, p in zip(master, params):
            p.copy_(m)
            m.grad = None  # the fp32 gradient copy is transient
    state = [opt.state[m] for m in master]
    return {
        "weights": tensor_bytes(params),
        "grads": tensor_bytes(p.grad for p in params),
        "master": tensor_bytes(master),
        "adam_m": tensor_bytes(st["exp_avg"] for st in state),
        "adam_v": tensor_bytes(st["exp_avg_sq"] for st in state),
        "adam_step": tensor_bytes(st["step"] for st in state),
        "n_params": int(sum(p.numel() for p in params)),
        "n_tensors": len(params),
    }


def saved_activation_bytes(model: nn.Module, tokens: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for the backward pass during one
    forward of ``model`` on ``tokens``, counted with saved-tensor hooks;
    parameters (saved by reference, not copied) are left out and each
    storage is counted once. Section dls-mixed-precision.
    """
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens)
    return int(sum(seen.values()))


# --- Roofline
# -----------------------------------------------------------------------------


def ridge_point(peak_flop_per_s: float, bandwidth_bytes_per_s: float) -> float:
    """Arithmetic intensity (FLOP per byte) where the roofline's slope meets
    its flat top: peak / bandwidth. Section cme295-memory.
    """
    return positive("peak_flop_per_s", peak_flop_per_s) / positive(
        "bandwidth_bytes_per_s", bandwidth_bytes_per_s
    )


def roofline(intensity, peak_flop_per_s: float, bandwidth_bytes_per_s: float):
    """Attainable FLOP/s at arithmetic ``intensity`` (FLOP per byte, scalar or
    array): min(peak, intensity * bandwidth). Section cme295-memory.
    """
    x = positive_array("intensity", intensity)
    peak = positive("peak_flop_per_s", peak_flop_per_s)
    bw = positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    out = np.minimum(peak, x * bw)
    return float(out) if out.ndim == 0 else out


def decode_intensity(
    batch: float = 1.0,
    bytes_per_param: float = 2.0,
    flop_per_param: float = 2.0,
) -> float:
    """FLOP per byte of one decoding step of a dense model for ``batch``
    sequences, counting weight reads only: ``flop_per_param * batch /
    bytes_per_param`` (1 for batch 1 in bf16). Section cme295-memory.
    """
    return (
        positive("flop_per_param", flop_per_param)
        * positive("batch", batch)
        / positive("bytes_per_param", bytes_per_param)
    )


# --- Iso-FLOP experiment: a next-token MLP language model
# ----------------------------------------------------------------------------


def mlp_lm_params(vocab: int, context: int, embed: int, width: int) -> int:
    """Matmul parameters (weights and biases of the two linear layers; the
    embedding is a lookup and costs no FLOP) of :class:`MLPLanguageModel`.
    Section scale-chinchilla.
    """
    v, k = positive_int("vocab", vocab), positive_int("context", context)
    e, w = positive_int("embed", embed), positive_int("width", width)
    return (k * e + 1) * w + (w + 1) * v


class MLPLanguageModel(nn.Module):
    """Next-token MLP language model (Bengio et al. 2003 style): embed the
    ``context`` previous tokens, concatenate, one tanh hidden layer of
    ``width`` units, logits over ``vocab``. Section scale-chinchilla."""

    def __init__(self, vocab: int, context: int, embed: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(positive_int("vocab", vocab), embed)
        k = positive_int("context", context)
        self.hidden = nn.Linear(k * embed, width)
        self.out = nn.Linear(positive_int("width", width), vocab)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) for contexts ``ctx`` (B, context)."""
        return self.out(torch.tanh(self.hidden(self.embed(ctx).flatten(1))))


def teacher_language(
    vocab: int,
    context: int,
    embed: int,
    width: int,
    sharpness: float = 3.0,
    seed: int = 0,
) -> dict:
    """A generated language for the iso-FLOP experiment: a random
    :class:`MLPLanguageModel` (the teacher, initialised after
    ``torch.manual_seed(seed)`` with its output weights times
    ``sharpness``) gives P(next | context) for every one of the
    vocab**context contexts. The global random state is left as it was.

    Returns "contexts" (vocab**context, context), "probs" and its row-wise
    "cdf" (for sampling), and "entropy", the loss of a perfect model in nats
    per token. Section scale-chinchilla.
    """
    vocab, context = positive_int("vocab", vocab), positive_int("context", context)
    sharpness = positive("sharpness", sharpness)
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        teacher = MLPLanguageModel(vocab, context, embed, width)
    contexts = torch.cartesian_prod(*[torch.arange(vocab)] * context)
    with torch.no_grad():
        teacher.out.weight.mul_(sharpness)
        probs = teacher(contexts).softmax(-1)
    cdf = probs.cumsum(-1)
    cdf[:, -1] = 1.0
    entropy = -(probs * probs.log()).sum(-1).mean().item()
    return {"contexts": contexts, "probs": probs, "cdf": cdf, "entropy": entropy}


def train_isoflop_student(
    language: dict,
    embed: int,
    width: int,
    budget: float,
    target_steps: int = 400,
    batch_range: tuple[int, int] = (32, 8192),
    lr: float = 1e-2,
    seed: int = 0,
) -> dict:
    """Train one student :class:`MLPLanguageModel` of hidden ``width`` on
    ``budget`` FLOP of the ``language`` of :func:`teacher_language`: D =
    C / (6 N) tokens drawn fresh, about ``target_steps`` Adam steps (the
    batch is D / target_steps, clipped to ``batch_range``) with a cosine
    learning-rate decay. Returns the run's row: C, width, N, D (tokens
    actually seen), batch, steps and "loss", the exact expected
    cross-entropy over the whole language (nats per token). Section
    scale-chinchilla.
    """
    contexts, probs, cdf = (language[k] for k in ("contexts", "probs", "cdf"))
    vocab, context = probs.shape[1], contexts.shape[1]
    budget = positive("budget", budget)
    lo, hi = (positive_int("batch_range", b) for b in batch_range)
    torch.manual_seed(int(seed))
    model = MLPLanguageModel(vocab, context, embed, width)
    n = mlp_lm_params(vocab, context, embed, width)
    d = budget / (6 * n)
    b = int(np.clip(round(d / positive_int("target_steps", target_steps)), lo, hi))
    steps = max(1, round(d / b))
    opt = torch.optim.Adam(model.parameters(), lr=positive("lr", lr))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(int(seed) + 1)
    for _ in range(steps):
        idx = torch.randint(len(contexts), (b,), generator=g)
        nxt = torch.searchsorted(cdf[idx], torch.rand(b, 1, generator=g))
        loss = nn.functional.cross_entropy(model(contexts[idx]), nxt[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():  # exact expected loss over the whole language
        ce = -(probs * model(contexts).log_softmax(-1)).sum(-1).mean()
    return {"C": budget, "width": width, "N": n, "D": steps * b,
            "batch": b, "steps": steps, "loss": ce.item()}


def fit_isoflop_parabola(log_n, loss) -> tuple[float, float]:
    """Fit loss = a (log N)^2 + b log N + c to one iso-FLOP curve; return the
    vertex ``(log N_opt, loss at the vertex)``. Raises ``ValueError`` when the
    parabola opens downwards (no minimum). Section scale-chinchilla.
    """
    x = np.asarray(log_n, dtype=float)
    y = np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError("log_n and loss must be 1-D of equal length >= 3")
    a, b, c = np.polyfit(x, y, 2)
    if a <= 0:
        raise ValueError("loss: the fitted parabola has no minimum")
    x0 = -b / (2 * a)
    return float(x0), float(c - b * b / (4 * a))


# --- muP: learning rates that transfer across width
# ----------------------------------------------------------------------------


def mup_lr_scales(
    width: int, base_width: int, parameterisation: str = "mup"
) -> dict[str, tuple[float, float]]:
    """Initial standard deviation and Adam learning-rate multiplier of the
    input, hidden and output weights of an MLP of hidden ``width``.

    "sp" (standard): std 1/sqrt(fan-in) everywhere, one learning rate. "mup"
    (Yang et al. 2022, for Adam): hidden and output learning rates times
    base_width/width, output std proportional to 1/width and equal to "sp"
    at ``base_width``. Returns ``{layer: (std, lr multiplier)}``; the input
    layer's std is per unit fan-in (the caller divides it by sqrt(d_in)).
    Section scale-small-proxies.
    """
    w = positive_int("width", width)
    w0 = positive_int("base_width", base_width)
    if parameterisation == "sp":
        return {
            "input": (1.0, 1.0),
            "hidden": (w**-0.5, 1.0),
            "output": (w**-0.5, 1.0),
        }
    if parameterisation == "mup":
        return {
            "input": (1.0, 1.0),
            "hidden": (w**-0.5, w0 / w),
            "output": (w0**0.5 / w, w0 / w),
        }
    raise ValueError(
        f"parameterisation must be 'sp' or 'mup', got {parameterisation!r}"
    )


def mlp3_forward(params, X: torch.Tensor) -> torch.Tensor:
    """relu(relu(X W_in) W_hid) W_out for stacked weights (runs, ., .) and X
    (B, d_in): outputs (runs, B, d_out). Section scale-small-proxies."""
    w_in, w_hid, w_out = params
    return torch.relu(torch.relu(X @ w_in) @ w_hid) @ w_out


def mlp3_init(
    d_in: int,
    d_out: int,
    width: int,
    parameterisation: str = "mup",
    base_width: int = 32,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Initial weights ``[W_in (d_in, width), W_hid (width, width), W_out
    (width, d_out)]`` of the three-layer MLP of :func:`mlp3_forward`, Gaussian
    with the standard deviations of :func:`mup_lr_scales` (the input layer's
    divided by sqrt(d_in)), drawn from a generator seeded with ``seed``.
    Section scale-small-proxies.
    """
    d_in, d_out = positive_int("d_in", d_in), positive_int("d_out", d_out)
    scales = mup_lr_scales(width, base_width, parameterisation)
    g = torch.Generator().manual_seed(int(seed))
    shapes = {
        "input": (d_in, width),
        "hidden": (width, width),
        "output": (width, d_out),
    }
    weights = []
    for layer, shape in shapes.items():
        std = scales[layer][0]
        std = std / math.sqrt(d_in) if layer == "input" else std
        weights.append(torch.randn(*shape, generator=g) * std)
    return weights


def _batches(problem, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """Row indices (steps, batch_size) of the minibatches, from their own
    generator so that every run and every implementation sees the same."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    return torch.randint(problem.X.shape[0], (steps, batch_size), generator=g)


def width_lr_sweep(
    problem,
    width: int,
    lrs,
    parameterisation: str = "mup",
    base_width: int = 32,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
) -> np.ndarray:
    """Train a three-layer ReLU MLP of ``width`` on ``problem`` (a
    :class:`llmbook.topics.batchsize.Problem`) with Adam at every learning rate of
    ``lrs`` at once, under :func:`mup_lr_scales`; return the final training
    MSE of each run, ``inf`` where a run diverged.

    The runs share the initial weights (:func:`mlp3_init`) and the batches and
    are stacked along a leading axis, as in the batch-size chapter's sweeps:
    one batched forward and backward pass serves them all. The update is
    ``torch.optim.Adam`` (fused) with one parameter group per run and layer,
    on views of the stacked weights, so each group carries its own learning
    rate times the layer's multiplier. Section scale-small-proxies.
    """
    lrs = positive_array("lrs", lrs)
    if lrs.ndim != 1:
        raise ValueError("lrs must be a one-dimensional grid")
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    scales = mup_lr_scales(width, base_width, parameterisation)
    init = mlp3_init(
        problem.X.shape[1], problem.Y.shape[1], width, parameterisation,
        base_width, seed,
    )
    runs = len(lrs)
    params = [w.expand(runs, *w.shape).clone().requires_grad_(True) for w in init]
    mults = [scales[layer][1] for layer in ("input", "hidden", "output")]
    views = [[p.detach()[r] for p in params] for r in range(runs)]
    groups = [
        {"params": [v], "lr": float(lrs[r]) * m}
        for r in range(runs)
        for v, m in zip(views[r], mults)
    ]
    opt = torch.optim.Adam(groups, fused=True)
    for idx in _batches(problem, steps, batch_size, seed):
        out = mlp3_forward(params, problem.X[idx])
        loss = ((out - problem.Y[idx]) ** 2).mean(dim=(-2, -1))
        loss = torch.where(torch.isfinite(loss), loss, 0.0)
        grads = torch.autograd.grad(loss.sum(), params)
        for r in range(runs):
            for v, gr in zip(views[r], grads):
                v.grad = gr[r]
        opt.step()
    with torch.no_grad():
        mse = ((mlp3_forward(params, problem.X) - problem.Y) ** 2).mean(
            dim=(-2, -1)
        )
    return torch.where(torch.isfinite(mse), mse, math.inf).numpy()


def loglog_slope(x, y, level: float = 0.95) -> dict[str, float]:
    """Least-squares slope of log y against log x (y ~ x**slope) with its
    ``level`` confidence interval from Student's t on the residuals (it
    covers the scatter of the points about the line, not the variation
    between seeds). Returns ``{"slope", "lo", "hi", "coef"}`` (y = coef *
    x**slope on the line). Sections
    scale-chinchilla and scale-small-proxies.
    """
    from scipy import stats

    x = positive_array("x", x)
    y = positive_array("y", y)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError("x and y must be 1-D of equal length >= 3")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    fit = stats.linregress(np.log(x), np.log(y))
    half = stats.t.ppf(0.5 + level / 2, x.size - 2) * fit.stderr
    slope = float(fit.slope)
    return {
        "slope": slope,
        "lo": slope - half,
        "hi": slope + half,
        "coef": float(np.exp(fit.intercept)),
    }


def mup_package_run(
    problem,
    width: int,
    lr: float,
    base_width: int = 32,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """The μP run of :func:`width_lr_sweep` at one learning rate, written
    with Microsoft's ``mup`` package instead: ``nn.Linear`` layers and a
    ``MuReadout`` output, base shapes from models of ``base_width`` and twice
    it, ``MuAdam``. The weights start equal to :func:`mlp3_init`'s in
    function (the readout's stored weight is times width/base_width, which
    its forward pass divides back out) and the batches are the same, so the
    two compute the same run in a different order of rounding: equal at
    first, they can drift apart where training is barely stable (see
    :func:`mup_package_check`). Returns the final training MSE. Needs
    ``mup`` (an optional extra). Section scale-small-proxies.
    """
    import mup

    lr = positive("lr", lr)
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    d_in, d_out = problem.X.shape[1], problem.Y.shape[1]

    def build(w: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(d_in, w, bias=False),
            nn.ReLU(),
            nn.Linear(w, w, bias=False),
            nn.ReLU(),
            mup.MuReadout(w, d_out, bias=False),
        )

    w0 = positive_int("base_width", base_width)
    model = build(positive_int("width", width))
    mup.set_base_shapes(
        model, build(w0), delta=build(2 * w0), rescale_params=False
    )
    w_in, w_hid, w_out = mlp3_init(d_in, d_out, width, "mup", w0, seed)
    with torch.no_grad():
        model[0].weight.copy_(w_in.T)
        model[2].weight.copy_(w_hid.T)
        model[4].weight.copy_(w_out.T * model[4].width_mult())
    opt = mup.MuAdam(model.parameters(), lr=lr)
    for idx in _batches(problem, steps, batch_size, seed):
        opt.zero_grad()
        ((model(problem.X[idx]) - problem.Y[idx]) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        return float(((model(problem.X) - problem.Y) ** 2).mean())


def plot_width_sweep(lrs, losses: dict, best, titles: dict):
    """Final loss against learning rate, one panel per parameterisation (keys
    of ``losses``: arrays (widths, lrs)) on one loss scale, one line per
    width, the refined optima of ``best`` (a table with columns
    "parameterisation", "width", "best lr", "loss") starred in the width's
    colour. Returns the figure. Section scale-small-proxies.
    """
    from matplotlib import pyplot as plt

    from llmbook.book.plotting import use_style

    use_style()
    lrs = positive_array("lrs", lrs)
    fig, axes = plt.subplots(
        1, len(losses), figsize=(4.6 * len(losses), 3.8), sharey=True
    )
    axes = np.atleast_1d(axes)
    finite = np.concatenate([c[np.isfinite(c)] for c in losses.values()])
    for ax, (p, curves) in zip(axes, losses.items()):
        part = best[best["parameterisation"] == p]
        for w, c, b, l in zip(part["width"], curves, part["best lr"], part["loss"]):
            (line,) = ax.plot(lrs, c, marker=".", label=f"width {w}")
            ax.plot(b, l, "*", ms=11, color=line.get_color(), mec="k", mew=0.5)
        ax.set(xscale="log", yscale="log", title=titles[p])
        # diverging runs leave the frame rather than squash the optima
        ax.set_ylim(0.8 * finite.min(), 1.2 * min(finite.max(), 100 * finite.min()))
        ax.set_xlabel("Adam learning rate")
    axes[0].set_ylabel("final training MSE")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def mup_package_check(
    problem,
    widths,
    lrs,
    ours,
    base_width: int = 32,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
    n_nudges: int = 3,
) -> dict[str, np.ndarray]:
    """Rerun the μP sweep at ``widths`` with the ``mup`` package
    (:func:`mup_package_run`, one learning rate at a time) and compare with
    our final losses ``ours`` (widths, lrs). The yardstick for rounding: our
    own sweep on data nudged by one part in 10^7 (``n_nudges`` random draws).

    Returns "package" losses, "rel" (package vs ours, relative), "floor"
    (largest relative move of ours under the nudges, per width and lr) and
    "best_shift" (relative difference of the refined optima). Section
    scale-small-proxies.
    """
    from llmbook.topics.batchsize import Problem, optimal_lr

    lrs = positive_array("lrs", lrs)
    ours = np.asarray(ours, dtype=float)
    if ours.shape != (len(widths), lrs.size):
        raise ValueError(
            f"ours must have shape (widths, lrs) = {(len(widths), lrs.size)},"
            f" got {ours.shape}"
        )
    pkg = np.array(
        [
            [
                mup_package_run(problem, w, lr, base_width, steps, batch_size, seed)
                for lr in lrs
            ]
            for w in widths
        ]
    )
    floor = np.zeros_like(ours)
    for k in range(positive_int("n_nudges", n_nudges)):
        g = torch.Generator().manual_seed(int(seed) + k)
        nudge = 1 + 1e-7 * torch.randn(problem.X.shape, generator=g)
        nudged = Problem(**{**vars(problem), "X": problem.X * nudge})
        moved = np.stack(
            [
                width_lr_sweep(
                    nudged, w, lrs, "mup", base_width, steps, batch_size, seed
                )
                for w in widths
            ]
        )
        floor = np.maximum(floor, np.abs(moved - ours) / ours)
    pkg_best, _ = optimal_lr(lrs, pkg)
    our_best, _ = optimal_lr(lrs, ours)
    return {
        "package": pkg,
        "rel": np.abs(pkg - ours) / ours,
        "floor": floor,
        "best_shift": np.abs(pkg_best / our_best - 1),
    }
