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
