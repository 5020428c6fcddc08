"""Floating-point formats bit by bit: sign, exponent and mantissa fields,
the table of ranges and precisions they imply, and the accumulation error of
a low-precision running sum.

A finite normal number with exponent field ``e`` (``E`` bits, bias ``2^(E-1)
- 1``) and mantissa field ``m`` (``M`` bits) is ``(-1)^s 2^(e - bias) (1 +
m / 2^M)``; an all-zero exponent field means a subnormal ``(-1)^s 2^(1 -
bias) m / 2^M``; an all-one exponent field means infinity (``m = 0``) or NaN,
except in ``float8_e4m3fn``, which has no infinities and keeps NaN for the
all-ones pattern only. Derivations: chapter "Number formats, linear
quantization and mixed precision", cme295-formats and scale-precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FloatFormat:
    """Field widths of a binary floating-point format.

    Attributes:
        name: the torch dtype name (``"float16"``, ``"bfloat16"``, ...).
        exp_bits: exponent field width ``E``.
        man_bits: mantissa (fraction) field width ``M``.
        ieee_specials: whether the all-ones exponent is reserved for
            infinities and NaN (IEEE 754); ``False`` for ``float8_e4m3fn``.
    """

    name: str
    exp_bits: int
    man_bits: int
    ieee_specials: bool = True

    @property
    def bits(self) -> int:
        """Total width ``1 + E + M``."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        """Exponent bias ``2^(E-1) - 1``."""
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of this format."""
        return getattr(torch, self.name)


FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("float64", 11, 52),
        FloatFormat("float32", 8, 23),
        FloatFormat("bfloat16", 8, 7),
        FloatFormat("float16", 5, 10),
        FloatFormat("float8_e5m2", 5, 2),
        FloatFormat("float8_e4m3fn", 4, 3, ieee_specials=False),
    )
}

SHORT_NAMES: dict[str, str] = {
    "float64": "fp64",
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "float8_e5m2": "e5m2",
    "float8_e4m3fn": "e4m3",
}
"""The short name of each format in glued names and legends (fp16, e4m3)."""

_INT_VIEW = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}


def get_format(name) -> FloatFormat:
    """The :class:`FloatFormat` called ``name`` (a string or torch dtype).

    Raises ``ValueError`` naming ``name`` for an unknown format.
    """
    if isinstance(name, torch.dtype):
        name = str(name).removeprefix("torch.")
    if name not in FORMATS:
        raise ValueError(
            f"name must be one of {sorted(FORMATS)}, got {name!r}"
        )
    return FORMATS[name]


def split_bits(x: torch.Tensor):
    """Split a floating tensor into its integer sign, exponent and mantissa
    fields.

    Args:
        x: a tensor of one of the :data:`FORMATS` dtypes, any shape.

    Returns ``(sign, exponent, mantissa)``, int64 tensors of ``x``'s shape,
    read from the stored bits (``Tensor.view`` as an integer type).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    f = get_format(x.dtype)
    raw = x.view(_INT_VIEW[f.bits]).to(torch.int64)
    # masks after the (arithmetic) shifts read the unsigned bit pattern
    mantissa = raw & ((1 << f.man_bits) - 1)
    exponent = (raw >> f.man_bits) & ((1 << f.exp_bits) - 1)
    sign = (raw >> (f.bits - 1)) & 1
    return sign, exponent, mantissa


def compose_value(sign, exponent, mantissa, name) -> torch.Tensor:
    """Rebuild the real value of the fields of format ``name`` as float64.

    Args:
        sign, exponent, mantissa: integer tensors (or ints) of one shape.
        name: a :data:`FORMATS` name or torch dtype.

    Uses the formula of the module docstring, computed in float64 (exact for
    every format narrower than float64; float64 itself is rebuilt with
    ``ldexp``, also exact).
    """
    f = get_format(name)
    s = torch.as_tensor(sign, dtype=torch.int64)
    e = torch.as_tensor(exponent, dtype=torch.int64)
    m = torch.as_tensor(mantissa, dtype=torch.int64)
    e_max = (1 << f.exp_bits) - 1
    m_all = (1 << f.man_bits) - 1
    normal = e > 0
    # significand as an integer, then one exact power-of-two scaling
    sig = torch.where(normal, m + (1 << f.man_bits), m).to(torch.float64)
    power = torch.where(normal, e, torch.ones_like(e)) - f.bias - f.man_bits
    value = torch.ldexp(sig, power.to(torch.float64))
    if f.ieee_specials:
        special = e == e_max
        value = torch.where(
            special & (m == 0), torch.full_like(value, math.inf), value
        )
        value = torch.where(
            special & (m != 0), torch.full_like(value, math.nan), value
        )
    else:
        nan = (e == e_max) & (m == m_all)
        value = torch.where(nan, torch.full_like(value, math.nan), value)
    return torch.where(s == 1, -value, value)


def bit_string(x: float, name) -> str:
    """The bits of ``x`` rounded to format ``name``, as
    ``"s|exponent|mantissa"``.

    Example: ``bit_string(1.75, "bfloat16") == "0|01111111|1100000"``.
    """
    f = get_format(name)
    s, e, m = split_bits(torch.tensor([float(x)], dtype=f.dtype))
    return f"{int(s)}|{int(e):0{f.exp_bits}b}|{int(m):0{f.man_bits}b}"


def format_properties(name) -> dict:
    """Range and precision of format ``name`` computed from its field widths.

    Returns a dict with ``bits``, ``exp_bits``, ``man_bits``, ``max`` (largest
    finite value), ``min_normal``, ``min_subnormal``, ``eps`` (the gap from 1
    to the next number, ``2^-M``) and ``digits`` (decimal digits always kept,
    ``floor(M log10 2)``, numpy's ``finfo.precision``). The largest finite
    value is ``(2 - 2^-M) 2^(e_max - bias)`` with ``e_max = 2^E - 2`` for
    IEEE formats; ``float8_e4m3fn`` uses the all-ones exponent too, minus the
    NaN pattern, so its largest is ``(2 - 2^(1-M)) 2^(2^E - 1 - bias)``.
    """
    f = get_format(name)
    if f.ieee_specials:
        top = math.ldexp(2 - 2.0**-f.man_bits, (2**f.exp_bits - 2) - f.bias)
    else:
        top = math.ldexp(
            2 - 2.0 ** (1 - f.man_bits), (2**f.exp_bits - 1) - f.bias
        )
    return {
        "format": f.name,
        "bits": f.bits,
        "exp_bits": f.exp_bits,
        "man_bits": f.man_bits,
        "max": top,
        "min_normal": math.ldexp(1.0, 1 - f.bias),
        "min_subnormal": math.ldexp(1.0, 1 - f.bias - f.man_bits),
        "eps": math.ldexp(1.0, -f.man_bits),
        "digits": int(math.floor(f.man_bits * math.log10(2))),
    }


def properties_table(rows: list) -> "pd.DataFrame":
    """The table of formats as the page shows it: one column per format
    (``float8_`` dropped from the name), one row per property of
    :func:`format_properties`; ``max``, ``min_normal``, ``min_subnormal``
    and ``eps`` written at 3 significant figures (``.3g``).

    Args:
        rows: :func:`format_properties` dicts, one per format, in order.
    Used in formats-floats (the table of the number-formats lecture).
    """
    import pandas as pd

    table = pd.DataFrame(rows).set_index("format")
    for col in ("max", "min_normal", "min_subnormal", "eps"):
        table[col] = [f"{v:.3g}" for v in table[col]]
    return table.rename(index=lambda n: n.replace("float8_", "")).T


def representable_values(name) -> torch.Tensor:
    """Every finite non-negative value of an 8- or 16-bit format, sorted, as
    float64 (enumerates all bit patterns with sign 0)."""
    f = get_format(name)
    if f.bits > 16:
        raise ValueError(
            f"name must be an 8- or 16-bit format to enumerate, got {name!r}"
        )
    fields = torch.arange(2 ** (f.bits - 1), dtype=torch.int64)
    vals = compose_value(
        torch.zeros_like(fields),
        fields >> f.man_bits,
        fields & ((1 << f.man_bits) - 1),
        f.name,
    )
    return vals[torch.isfinite(vals)].sort().values


def running_sum(x, name) -> np.ndarray:
    """Left-to-right running sum of ``x`` with the accumulator rounded to
    format ``name`` after every addition (as a naive loop in that format
    would do).

    Args:
        x: 1-D array of addends, ``n >= 1``.
        name: ``"float16"``, ``"float32"`` or ``"float64"`` (numpy types).

    Returns the ``n`` partial sums (``numpy.add.accumulate`` in that dtype,
    which rounds after each step).
    """
    dtypes = {
        "float16": np.float16,
        "float32": np.float32,
        "float64": np.float64,
    }
    if name not in dtypes:
        raise ValueError(f"name must be one of {sorted(dtypes)}, got {name!r}")
    arr = np.asarray(x, dtype=dtypes[name])
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("x must be a non-empty 1-D array")
    return np.add.accumulate(arr, dtype=dtypes[name])


def stall_value(increment: float, name) -> float:
    """Smallest running total at which adding ``increment`` (> 0) in format
    ``name`` no longer changes it, with round-to-nearest-even.

    At a total ``t`` in ``[2^k, 2^(k+1))`` the spacing is ``2^(k - M)``; the
    sum ``t + increment`` rounds back to ``t`` once ``increment`` is at most
    half the spacing (exactly half ties to the even neighbour, ``t`` itself,
    when ``t``'s last mantissa bit is 0). So the total stalls at the first
    power of two ``2^k`` with ``2^(k - M - 1) >= increment``.
    """
    f = get_format(name)
    increment = float(increment)
    if not increment > 0:
        raise ValueError(f"increment must be > 0, got {increment!r}")
    k = math.ceil(math.log2(increment)) + f.man_bits + 1
    return math.ldexp(1.0, k)


def update_lost(w, step, name) -> torch.Tensor:
    """Whether the update ``w - step`` rounds back to ``w`` in format
    ``name`` (round to nearest, ties to even), predicted from the gap on the
    side the step moves to.

    Args:
        w: values representable in ``name`` (any shape); ``step``: the
            update ``eta g`` (same shape), applied as ``w - step``.
        name: a :data:`FORMATS` name or torch dtype.

    With ``2^k <= |w| < 2^(k+1)`` (``k`` at least the smallest normal
    exponent ``1 - bias``) the gap to the neighbour away from zero is
    ``ulp(w) = 2^(k - M)``; towards zero it is the same, except at an exact
    power of two above the smallest normal, where it is ``ulp(w) / 2``. The
    update is lost if ``|step|`` is below half that gap, or equal to it with
    ``w``'s last mantissa bit 0 (the tie goes to the even neighbour, ``w``).
    A zero step counts as not lost. Derivation: chapter "Number formats,
    linear quantization and mixed precision", proposition "A lost update".
    """
    f = get_format(name)
    w64 = torch.as_tensor(w, dtype=torch.float64)
    s64 = torch.as_tensor(step, dtype=torch.float64)
    if w64.shape != s64.shape:
        raise ValueError(
            f"step must have w's shape {tuple(w64.shape)}, "
            f"got {tuple(s64.shape)}"
        )
    wf = w64.to(f.dtype)
    if not bool((wf.to(torch.float64) == w64).all()):
        raise ValueError(f"w must be representable in {f.name}")
    a = w64.abs()
    k_min = 1 - f.bias
    k = torch.floor(torch.log2(a)).clamp(min=k_min)  # log2(0) = -inf
    ulp = torch.ldexp(torch.ones_like(a), k - f.man_bits)
    toward_zero = (torch.sign(s64) == torch.sign(w64)) & (w64 != 0)
    at_power = (a == torch.ldexp(torch.ones_like(a), k)) & (k > k_min)
    gap = torch.where(at_power & toward_zero, ulp / 2, ulp)
    _, _, mantissa = split_bits(wf)
    size = s64.abs()
    lost = (size < gap / 2) | ((size == gap / 2) & (mantissa % 2 == 0))
    return lost & (s64 != 0)


# --- mixed-precision training of a small MLP
# ------------------------------------------------------

PRECISION_RECIPES = ("fp32", "fp16", "bf16", "fp16-master", "bf16-master")


def mlp_init(n_in: int, hidden: int, n_out: int, seed: int = 0) -> list:
    """Float32 parameters ``[W1 (n_in, hidden), b1, W2 (hidden, n_out),
    b2]`` of a one-hidden-layer ReLU MLP, ``W ~ N(0, 1/fan_in)``."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n_in, hidden, generator=g) / math.sqrt(n_in),
        torch.zeros(hidden),
        torch.randn(hidden, n_out, generator=g) / math.sqrt(hidden),
        torch.zeros(n_out),
    ]


def mlp_forward(params: list, x: torch.Tensor) -> torch.Tensor:
    """Logits ``relu(x W1 + b1) W2 + b2`` in the dtype of ``params``."""
    w1, b1, w2, b2 = params
    return torch.relu(x @ w1 + b1) @ w2 + b2


def mlp_grads(params: list, x, y, dtype, loss_scale: float = 1.0):
    """Gradients of ``loss_scale`` times the mean cross-entropy, with the
    forward and backward pass in ``dtype`` (the loss itself, a softmax and a
    mean, in float32). Returns ``(grads in dtype, loss float)``."""
    from torch.nn import functional as F

    p = [t.detach().to(dtype).requires_grad_() for t in params]
    loss = F.cross_entropy(mlp_forward(p, x.to(dtype)).float(), y)
    (loss * loss_scale).backward()
    return [t.grad for t in p], float(loss.detach())


def train_mlp_precision(
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: str,
    steps: int = 300,
    lr: float = 0.1,
    batch: int = 128,
    hidden: int = 64,
    seed: int = 0,
    loss_scale: float = 1.0,
    dynamic: bool = False,
    growth_interval: int = 100,
) -> dict:
    """SGD on an MLP classifier under one precision recipe.

    Recipes: ``"fp32"``; ``"fp16"``/``"bf16"``: weights, gradients and the
    update ``w <- w - lr g`` all in 16 bits; ``"fp16-master"``/
    ``"bf16-master"``: float32 master weights cast to 16 bits for the forward
    and backward pass, gradients unscaled and applied in float32. The loss is
    multiplied by ``loss_scale`` before the backward pass and the gradients
    divided by it after; with ``dynamic`` a step whose gradients hold an inf
    or NaN is skipped and the scale halved, and the scale doubles after
    ``growth_interval`` good steps in a row (the rule of
    ``torch.amp.GradScaler``).

    Args:
        x: ``(n, d)`` float32 inputs; y: ``(n,)`` int64 labels.
    Returns a dict: ``loss`` (per step), ``params`` (float32),
    ``lost_updates`` (fraction of nonzero updates that left a 16-bit weight
    unchanged), ``skipped`` (steps), ``scales`` (loss scale per step).
    """
    if recipe not in PRECISION_RECIPES:
        raise ValueError(
            f"recipe must be one of {PRECISION_RECIPES}, got {recipe!r}"
        )
    if not float(loss_scale) > 0:
        raise ValueError(f"loss_scale must be > 0, got {loss_scale!r}")
    dtype = {
        "fp32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
    }[recipe.split("-")[0]]
    params = mlp_init(x.shape[1], hidden, int(y.max()) + 1, seed)
    pure = recipe in ("fp16", "bf16")
    if pure:
        params = [t.to(dtype) for t in params]
    g = torch.Generator().manual_seed(seed + 1)
    scale, good, skipped, lost, moved = float(loss_scale), 0, 0, 0, 0
    losses, scales = [], []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch,), generator=g)
        grads, loss = mlp_grads(params, x[idx], y[idx], dtype, scale)
        losses.append(loss)
        scales.append(scale)
        finite = all(bool(torch.isfinite(t).all()) for t in grads)
        used = scale  # the gradients carry this factor
        if dynamic:
            scale, good = update_loss_scale(
                scale, good, not finite, growth_interval
            )
        if dynamic and not finite:
            skipped += 1
            continue
        if pure:
            upd = [(t / used) * lr for t in grads]  # in 16 bits
            new = [p - u for p, u in zip(params, upd)]
            lost += sum(
                int(((n == p) & (u != 0)).sum())
                for n, p, u in zip(new, params, upd)
            )
            moved += sum(int((u != 0).sum()) for u in upd)
            params = new
        else:
            params = [
                p - lr * (t.float() / used) for p, t in zip(params, grads)
            ]
    return {
        "loss": losses,
        "params": [t.float() for t in params],
        "lost_updates": lost / moved if moved else 0.0,
        "skipped": skipped,
        "scales": scales,
    }


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of two tensors of one dtype, summed in float32 and rounded
    once to that dtype (forward and backward), as tensor cores accumulate
    16-bit products; on a CPU also far faster than float16 matmuls."""
    return (a.float() @ b.float()).to(a.dtype)


def train_precision_runs(
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: str,
    seeds,
    steps: int = 300,
    lr=0.1,
    batch: int = 128,
    hidden: int = 64,
    loss_scale: float = 1.0,
    dynamic: bool = False,
    growth_interval: int = 100,
) -> dict:
    """:func:`train_mlp_precision`'s recipes for n runs at once.

    The n runs (one per entry of ``seeds``, each with its own learning
    rate if ``lr`` is a sequence) are stacked on a leading axis and trained
    together, as :mod:`llmbook.core.trainer` does: one batched matmul per
    layer, one backward pass through the sum of the n losses (run i's
    gradient is its own). Run i starts from ``mlp_init(..., seeds[i])``
    and draws its batches with :func:`llmbook.core.trainer.sample_batches`
    from seed ``seeds[i] + 1``; repeat a seed to compare learning rates on
    the same start and batches. In the pure recipes the update ``lr g``
    is rounded once to 16 bits and ``w - lr g`` again; the cross-entropy
    is computed in float32 in every recipe. Dynamic loss scaling keeps one
    scale per run.

    Args:
        x: ``(N, d)`` float32 inputs; y: ``(N,)`` int64 labels.
        seeds: n ints >= 0; lr: a number or n numbers.
    Returns a dict: ``loss`` ``(steps, n)``, ``params`` (list of float32
    ``(n, ...)`` tensors), ``lost_updates`` ``(n,)`` (fraction of nonzero
    updates that left a 16-bit weight unchanged), ``skipped`` ``(n,)``
    steps, ``scales`` ``(steps, n)``.
    """
    from llmbook.core import trainer

    if recipe not in PRECISION_RECIPES:
        raise ValueError(
            f"recipe must be one of {PRECISION_RECIPES}, got {recipe!r}"
        )
    if not float(loss_scale) > 0:
        raise ValueError(f"loss_scale must be > 0, got {loss_scale!r}")
    seeds = trainer._seed_list(seeds)
    n = len(seeds)
    rates = torch.as_tensor(lr, dtype=torch.float64).reshape(-1)
    rates = rates.expand(n) if rates.numel() == 1 else rates
    rate = rates.float()
    if rate.shape != (n,) or not bool((rate > 0).all()):
        raise ValueError(f"lr must be one or {n} positive numbers, got {lr}")
    dtype = {"fp32": torch.float32, "fp16": torch.float16}.get(
        recipe.split("-")[0], torch.bfloat16
    )
    pure = recipe in ("fp16", "bf16")
    runs = [mlp_init(x.shape[1], hidden, int(y.max()) + 1, s) for s in seeds]
    params = [torch.stack(p) for p in zip(*runs)]  # [W1, b1, W2, b2]
    params = [p.to(dtype) for p in params] if pure else params
    batches = trainer.sample_batches(
        x, y, batch, [s + 1 for s in seeds], steps
    )
    scale = torch.full((n,), float(loss_scale))
    good = torch.zeros(n, dtype=torch.int64)
    skipped, lost, moved = (torch.zeros(n) for _ in range(3))
    losses, scales = torch.empty(steps, n), torch.empty(steps, n)

    def per_run(v, p):  # an (n,) vector shaped to broadcast against p
        return v.reshape(-1, *([1] * (p.dim() - 1)))

    for t in range(steps):
        xb, yb = batches(t)
        p = [q.detach().to(dtype).requires_grad_() for q in params]
        h = torch.relu(_mm(xb.to(dtype), p[0]) + p[1][:, None])
        logits = (_mm(h, p[2]) + p[3][:, None]).float()
        picked = logits.gather(-1, yb[..., None])[..., 0]
        loss = (logits.logsumexp(-1) - picked).mean(1)  # (n,), float32
        grads = torch.autograd.grad((loss * scale).sum(), p)
        losses[t], scales[t] = loss.detach(), scale
        finite = torch.ones(n, dtype=torch.bool)
        for g in grads:
            finite &= torch.isfinite(g).reshape(n, -1).all(1)
        ok = finite if dynamic else torch.ones(n, dtype=torch.bool)
        step_rate = rate / scale
        if dynamic:
            skipped += ~finite
            good = torch.where(finite, good + 1, 0)
            grow = good == growth_interval
            scale = torch.where(finite, scale, scale * 0.5)
            scale = torch.where(grow, scale * 2.0, scale)
            good = torch.where(grow, 0, good)
        with torch.no_grad():
            for i, (q, g) in enumerate(zip(params, grads)):
                u = torch.where(
                    per_run(ok, g), g.float() * per_run(step_rate, g), 0.0
                )
                if pure:
                    u = u.to(dtype)  # lr g rounded once to 16 bits
                    new = q - u
                    nz = (u != 0).reshape(n, -1)
                    lost += ((new == q).reshape(n, -1) & nz).sum(1)
                    moved += nz.sum(1)
                    params[i] = new
                else:
                    params[i] = q - u
    return {
        "loss": losses,
        "params": [q.float() for q in params],
        "lost_updates": torch.where(moved > 0, lost / moved.clamp(min=1), 0),
        "skipped": skipped.long(),
        "scales": scales,
        "seeds": seeds,
        "lr": rates.tolist(),
    }


def run_table(r: dict, x_test, y_test, last: int = 20):
    """One row per run of :func:`train_precision_runs`' result ``r``:
    ``seed``, ``lr``, ``loss`` (mean training loss of the last ``last``
    steps), ``accuracy`` on ``(x_test, y_test)`` (float32 forward pass of
    the final weights), ``correct`` (its count), ``lost`` (lost-update
    share), ``skipped`` steps and ``last_scale``. A pandas DataFrame."""
    import pandas as pd

    last = int(last)
    if not 1 <= last <= len(r["loss"]):
        raise ValueError(f"last must lie in [1, {len(r['loss'])}], got {last}")
    w1, b1, w2, b2 = r["params"]
    h = torch.relu(x_test @ w1 + b1[:, None])
    hits = ((h @ w2 + b2[:, None]).argmax(-1) == y_test).sum(1)
    return pd.DataFrame(
        {
            "seed": r["seeds"],
            "lr": r["lr"],
            "loss": r["loss"][-last:].mean(0).tolist(),
            "accuracy": (hits / len(y_test)).tolist(),
            "correct": hits.tolist(),
            "lost": r["lost_updates"].tolist(),
            "skipped": r["skipped"].tolist(),
            "last_scale": r["scales"][-1].tolist(),
        }
    )


def plot_lr_sweep(table, recipes, labels):
    """Final training loss and test accuracy against the learning rate:
    median over seeds (markers) and range (bars) of each recipe.

    Args:
        table: rows of :func:`run_table` with a ``recipe`` column.
        recipes: the recipes to draw, in order; labels: their legend names.
    Returns the matplotlib figure (two panels, log learning-rate axis).
    """
    import matplotlib.pyplot as plt

    from llmbook.book.plotting import use_style

    use_style()
    # stacked at the book's 6.4 in: readable on a phone (issue 20)
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 6.8))
    for col, ax, ylab in zip(
        ("loss", "accuracy"),
        axes,
        ("final training loss (nats)", "test accuracy (fraction)"),
    ):
        for k, (rec, lab) in enumerate(zip(recipes, labels)):
            g = table[table.recipe == rec].groupby("lr")[col]
            med, lo, hi = g.median(), g.min(), g.max()
            x = med.index.to_numpy() * (1 + 0.06 * (k - 1))  # side by side
            ax.errorbar(
                x,
                med,
                yerr=[med - lo, hi - med],
                marker="osd^v"[k % 5],
                capsize=3,
                label=lab,
            )
        ax.set_xscale("log")
        ax.set_xlabel("SGD learning rate")
        ax.set_ylabel(ylab)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=9)
    fig.suptitle("Median and range over seeds")
    fig.tight_layout()
    return fig


def plot_spacing(names, lo: float, hi: float, slope_bits: int = 7):
    """Gap from each representable number to the next against its
    magnitude, for formats ``names`` (8- or 16-bit, see
    :func:`representable_values`), on log-log axes between ``lo`` and
    ``hi``, with the line ``x 2^-slope_bits`` (bfloat16's relative step).
    Legends use :data:`SHORT_NAMES`. Returns the figure (formats-floats).
    """
    from llmbook.book.plotting import new_axes

    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo!r}, hi={hi!r}")
    fig, ax = new_axes(
        "magnitude x",
        "gap to the next number (same units)",
        "Spacing of representable numbers",
        logx=True,
        logy=True,
        figsize=(7, 4.2),
    )
    for n in names:
        v = representable_values(n)
        g = torch.diff(v)
        keep = (v[:-1] >= lo) & (v[:-1] <= hi)
        ax.step(v[:-1][keep], g[keep], where="post", label=SHORT_NAMES[n])
    ax.plot(
        [lo, hi],
        [lo * 2.0**-slope_bits, hi * 2.0**-slope_bits],
        ":",
        color="grey",
        label=f"x 2^-{slope_bits} (bf16's relative step)",
    )
    ax.legend(fontsize=8)
    return fig


def plot_running_sums(runs: dict, mixed, increment: float):
    """A running sum of ``increment`` against the number of terms, on a
    log-spaced sample of 300 term counts.

    Args:
        runs: format name -> partial sums (:func:`running_sum`); its
            ``"float16"`` and ``"float32"`` entries are drawn.
        mixed: partial sums of float16 addends in a float32 accumulator.
        increment: the addend, for the exact line ``k * increment``.
    Returns the figure (formats-floats, the long sum in float16).
    """
    from llmbook.book.plotting import new_axes

    n = len(mixed)
    fig, ax = new_axes(
        "number of terms added",
        "running sum",
        f"Summing {increment} again and again",
        figsize=(6.5, 3.8),
    )
    idx = np.unique(np.geomspace(1, n, 300).astype(int)) - 1
    for name in ("float16", "float32"):
        ax.plot(idx + 1, runs[name][idx], label=f"{name} accumulator")
    ax.plot(
        idx + 1, mixed[idx], "--", label="float16 addends, float32 accumulator"
    )
    ax.plot(idx + 1, (idx + 1) * increment, ":", color="grey", label="exact")
    ax.legend()
    return fig


def plot_loss_curves(out: dict, labels: dict, lr: float, last: int, title):
    """Training loss against the SGD step: for each recipe, the median over
    the runs trained at rate ``lr`` of the loss averaged over a sliding
    window of ``last`` steps; log loss axis.

    Args:
        out: recipe -> result of :func:`train_precision_runs`.
        labels: recipe -> legend name, in drawing order.
    Returns the figure (formats-mixed-precision).
    """
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "SGD step",
        "training loss (cross-entropy, nats)",
        title,
        figsize=(7, 4),
    )
    for j, (k, label) in enumerate(labels.items()):
        cols = [i for i, a in enumerate(out[k]["lr"]) if a == lr]
        if not cols:
            raise ValueError(f"no run of {k!r} at lr={lr!r}")
        loss = out[k]["loss"]
        med = loss[:, cols].unfold(0, last, 1).mean(-1).median(1).values
        ax.plot(
            range(last, len(loss) + 1),
            med,
            label=label,
            marker="osd^v<"[j % 6],
            markevery=(j * 23, 150),
            ms=4,
            lw=1,
        )
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def plot_gradient_range(
    grads: dict, scaled: str, loss_scale: float, name="float16"
):
    """Histogram of log2 gradient magnitudes (share of entries per bin of
    width 1, from 2^-34 to 2^7) against format ``name``'s smallest
    subnormal and smallest normal (dotted lines).

    Args:
        grads: legend label -> 1-D tensor of positive magnitudes.
        scaled: the label of ``grads`` drawn again, dashed, times
            ``loss_scale`` (where loss scaling moves it).
    Returns the figure (formats-mixed-precision, gradients that underflow).
    """
    import math

    from llmbook.book.plotting import new_axes

    p = format_properties(name)
    fig, ax = new_axes(
        "log2 of gradient magnitude",
        "share of nonzero entries (fraction per bin)",
        f"Gradients against the {name} range",
        figsize=(7, 4),
    )
    bins = np.arange(-34, 8)
    for label, v in grads.items():
        ax.hist(
            np.log2(v.numpy()),
            bins=bins,
            histtype="step",
            lw=1.5,
            weights=np.full(v.numel(), 1 / v.numel()),
            label=label,
        )
    g = grads[scaled]
    ax.hist(
        np.log2(g.numpy()) + math.log2(loss_scale),
        bins=bins,
        histtype="step",
        ls="--",
        weights=np.full(g.numel(), 1 / g.numel()),
        label=f"{scaled} x {int(loss_scale):,}",
    )
    for val, lab in (
        (p["min_subnormal"], "smallest subnormal"),
        (p["min_normal"], "smallest normal"),
    ):
        ax.axvline(math.log2(val), color="grey", ls=":")
        ax.text(
            math.log2(val) + 0.3,
            ax.get_ylim()[1] * 0.45,
            lab,
            fontsize=8,
            rotation=90,
            va="top",
        )
    ax.legend(fontsize=8, loc="upper left")
    return fig


def update_loss_scale(
    scale: float, good_steps: int, found_inf: bool, growth_interval: int
):
    """One step of dynamic loss scaling: returns ``(scale, good_steps)``.

    An inf or NaN in the gradients halves the scale and restarts the count
    of good steps (the step itself is skipped by the caller); otherwise the
    count grows, and when it reaches ``growth_interval`` the scale doubles
    and the count restarts. The rule of ``torch.amp.GradScaler`` with its
    default factors (tested against ``torch._amp_update_scale_``).
    """
    if int(growth_interval) != growth_interval or growth_interval < 1:
        raise ValueError(
            "growth_interval must be a positive integer, "
            f"got {growth_interval!r}"
        )
    if found_inf:
        return scale * 0.5, 0
    good_steps += 1
    if good_steps == growth_interval:
        return scale * 2.0, 0
    return scale, good_steps


def underflow_count(params: list, x, y, dtype, loss_scale: float = 1.0):
    """Gradient entries that are nonzero in float32 but exactly zero (or not
    finite) after a ``dtype`` backward pass with ``loss_scale``. Returns
    ``(zeroed, nonfinite, nonzero_fp32)`` counts for one batch."""
    g32, _ = mlp_grads(params, x, y, torch.float32)
    glo, _ = mlp_grads(params, x, y, dtype, loss_scale)
    a = torch.cat([t.flatten() for t in g32])
    b = torch.cat([t.flatten().float() for t in glo])
    nz = a != 0
    return (
        int(((b == 0) & nz).sum()),
        int((~torch.isfinite(b)).sum()),
        int(nz.sum()),
    )


def hidden_grad(params: list, x, y, dtype, loss_scale: float = 1.0):
    """Gradient of ``loss_scale`` times the mean cross-entropy with respect to
    the hidden pre-activations ``z = x W1 + b1``, computed in ``dtype`` as
    the backward pass of :func:`mlp_grads` computes it.

    Args:
        params: as :func:`mlp_init`; x: ``(n, d)``; y: ``(n,)``.
    Returns ``(n, hidden)`` in ``dtype``. These activation gradients carry a
    factor ``1/n`` from the mean and are smaller than the weight gradients,
    which sum over the batch: they are the ones that underflow first.
    """
    from torch.nn import functional as F

    w1, b1, w2, b2 = [t.detach().to(dtype) for t in params]
    z = (x.to(dtype) @ w1 + b1).requires_grad_()
    logits = torch.relu(z) @ w2 + b2
    loss = F.cross_entropy(logits.float(), y) * loss_scale
    (g,) = torch.autograd.grad(loss, z)
    return g
