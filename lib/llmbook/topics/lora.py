"""LoRA by hand: a low-rank update around a frozen linear layer, its memory,
and NF4 (QLoRA).

Notation follows the homework (chapter "LoRA", section hw11-q1): a weight ``W``
with ``m`` rows (outputs) and ``ℓ`` columns (inputs) is replaced by ``W0 + s·A
B`` with ``A`` of shape ``(m, k)``, ``B`` of shape ``(k, ℓ)`` and scaling ``s =
alpha / k`` (``alpha / sqrt(k)`` for rsLoRA). PEFT and the lecture write ``W0 +
B A``: their ``lora_B`` (out × r) is our ``A`` and their ``lora_A`` (r × in) is
our ``B``. ``torch.nn.Linear`` stores ``W`` as ``weight`` of shape ``(out, in)
= (m, ℓ)`` and computes ``y = x Wᵀ + b``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmbook.core.validate import positive, positive_int

INITS = ("peft", "zeros", "xavier", "b_zero")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``k`` update ``s·A B``
    (section hw11-q1).

    Args:
        base: the pretrained layer (weight ``(m, ℓ)``); its parameters are
            frozen in place.
        rank: ``k``, with ``1 <= k <= min(m, ℓ)``.
        alpha: scaling numerator; ``s = alpha / k`` (default ``alpha = k``, so
            ``s = 1``).
        init: ``"peft"`` (PEFT's default: ``A = 0``, ``B`` kaiming-uniform,
            ``U(±1/√ℓ)``),
            ``"b_zero"`` (``B = 0``, ``A`` kaiming-uniform ``U(±1/√k)``),
            ``"zeros"`` (both zero, hw11-q1b) or ``"xavier"`` (both
            Xavier-uniform, hw11-q1c).
        rslora: use ``s = alpha / sqrt(k)``.
        generator: a ``torch.Generator`` for the random factor.
    """

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float | None = None,
        init: str = "peft",
        rslora: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        m, ell = base.out_features, base.in_features
        k = positive_int("rank", rank)
        if k > min(m, ell):
            raise ValueError(
                f"rank must be <= min(m, ℓ) = {min(m, ell)}, got {rank}"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        alpha = float(k) if alpha is None else positive("alpha", alpha)
        self.base, self.rank, self.alpha, self.merged = base, k, alpha, False
        self.scaling = alpha / math.sqrt(k) if rslora else alpha / k
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.A = nn.Parameter(
            torch.zeros(m, k, dtype=w.dtype, device=w.device)
        )
        self.B = nn.Parameter(
            torch.zeros(k, ell, dtype=w.dtype, device=w.device)
        )
        with torch.no_grad():
            if (
                init == "peft"
            ):  # kaiming_uniform_(a=√5) on a (k, ℓ) tensor is U(±1/√ℓ)
                self.B.uniform_(
                    -1 / math.sqrt(ell),
                    1 / math.sqrt(ell),
                    generator=generator,
                )
            elif init == "b_zero":
                self.A.uniform_(
                    -1 / math.sqrt(k), 1 / math.sqrt(k), generator=generator
                )
            elif init == "xavier":
                nn.init.xavier_uniform_(self.A, generator=generator)
                nn.init.xavier_uniform_(self.B, generator=generator)

    def delta_weight(self) -> torch.Tensor:
        """The update ``s·A B``, shape ``(m, ℓ)``, added to ``W0``."""
        return self.scaling * (self.A @ self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (…, ℓ) -> (…, m)``: ``x W0ᵀ + b + s (x Bᵀ) Aᵀ``; no extra
        work once merged.
        """
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * ((x @ self.B.T) @ self.A.T)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``s·A B`` into ``W0`` (inference with zero extra latency);
        idempotent.
        """
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``s·A B`` from the merged weight, restoring ``W0`` (up
        to rounding).
        """
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _targeted(model: nn.Module, targets, types) -> list[tuple[str, nn.Module]]:
    """(name, module) of each layer of ``types`` named by ``targets`` (PEFT's
    rule); ``ValueError`` for an empty list or a target that matches none."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise ValueError("targets must name at least one layer")
    linears = [
        (n, m) for n, m in model.named_modules() if isinstance(m, types)
    ]
    for t in targets:
        if not any(_matches(n, t) for n, _ in linears):
            raise ValueError(f"targets: no nn.Linear named {t!r} in the model")
    return [(n, m) for n, m in linears if any(_matches(n, t) for t in targets)]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_lora(
    model: nn.Module,
    targets,
    rank: int,
    alpha: float | None = None,
    init: str = "peft",
    rslora: bool = False,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Freeze ``model`` and wrap each linear layer named by ``targets`` in a
    ``LoRALinear``.

    Linear layers are ``nn.Linear`` and ``NF4Linear`` (a quantized base:
    QLoRA). A target matches a module whose full name equals it or ends with
    ``"." + target`` (PEFT's ``target_modules`` rule), so ``["q", "v"]`` picks
    every block's ``attn.q`` and ``attn.v``. Returns the wrapped names in
    order. Raises ``ValueError`` naming a target that matches no ``nn.Linear``.
    Chapter section cme295-lora ("where to apply").
    """
    chosen = _targeted(model, targets, (nn.Linear, NF4Linear))
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in chosen:
        _replace(
            model,
            name,
            LoRALinear(module, rank, alpha, init, rslora, generator),
        )
    return [name for name, _ in chosen]


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """Every ``LoRALinear`` in ``model`` by name (to merge, unmerge or swap
    adapters).
    """
    return {
        n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)
    }


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every adapter factor (``<name>.A``, ``<name>.B``): one
    task's adapter.
    """
    return {
        f"{n}.{f}": getattr(m, f).detach().clone()
        for n, m in lora_modules(model).items()
        for f in ("A", "B")
    }


@torch.no_grad()
def load_adapter(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load an adapter saved by :func:`adapter_state` (cme295-lora: swap
    adapters = swap tasks).
    """
    for n, m in lora_modules(model).items():
        if m.merged:
            raise ValueError(
                f"model: layer {n!r} is merged; "
                "unmerge before swapping adapters"
            )
        m.A.copy_(state[f"{n}.A"])
        m.B.copy_(state[f"{n}.B"])


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (what the optimiser
    updates).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_params(m: int, ell: int, k: int) -> int:
    """Entries of ``A (m × k)`` and ``B (k × ℓ)``: ``k (m + ℓ)`` (hw11-q1d)."""
    m, ell, k = (
        positive_int("m", m),
        positive_int("ell", ell),
        positive_int("k", k),
    )
    return k * (m + ell)


def lora_bytes(m: int, ell: int, k: int, bytes_per_param: float = 4) -> float:
    """Bytes to store ``A`` and ``B``: ``bytes_per_param · k (m + ℓ)``
    (fp32: 4; hw11-q1d).
    """
    return positive("bytes_per_param", bytes_per_param) * lora_params(
        m, ell, k
    )


def full_bytes(m: int, ell: int, bytes_per_param: float = 4) -> float:
    """Bytes to store one full-rank update ``ΔW (m × ℓ)``: ``bytes_per_param
    · m ℓ`` (hw11-q1d).
    """
    m, ell = positive_int("m", m), positive_int("ell", ell)
    return positive("bytes_per_param", bytes_per_param) * m * ell


def break_even_rank(m: int, ell: int) -> float:
    """The rank ``k* = m ℓ / (m + ℓ)`` at which ``A``, ``B`` cost as much as
    ``ΔW`` (hw11-q1d).
    """
    m, ell = positive_int("m", m), positive_int("ell", ell)
    return m * ell / (m + ell)


def xavier_product_ratio(m: int, ell: int, k: int, w0_var: float) -> float:
    """Expected ``‖A B‖_F / ‖W0‖_F`` at Xavier init of both factors (hw11-q1c).

    ``A (m × k)`` and ``B (k × ℓ)`` are Xavier-uniform, variances ``2/(m+k)``
    and ``2/(k+ℓ)``; ``W0`` has i.i.d. entries of variance ``w0_var``. Then
    ``E‖AB‖² = m ℓ k · 4 / ((m+k)(k+ℓ))`` and ``‖W0‖² ≈ m ℓ w0_var``.
    """
    m, ell, k = (
        positive_int("m", m),
        positive_int("ell", ell),
        positive_int("k", k),
    )
    w0_var = positive("w0_var", w0_var)
    return math.sqrt(4 * k / ((m + k) * (k + ell) * w0_var))


# ---------------------------------------------------------------- NF4 and
# double quantization


def nf4_offset() -> float:
    """QLoRA's outermost quantile ``δ = ((1 - 1/30) + (1 - 1/32)) / 2 ≈
    0.9677`` (cme295-qlora).

    The midpoint between the last quantile of a 15-level and of a 16-level
    split: it keeps the extreme code values at finite normal quantiles
    (``Φ⁻¹(1)`` is infinite).
    """
    return ((1 - 1 / (2 * 15)) + (1 - 1 / (2 * 16))) / 2


def nf4_code(offset: float | None = None) -> torch.Tensor:
    """The 16 NF4 code values, sorted, in ``[-1, 1]`` (QLoRA's construction,
    cme295-qlora).

    Eight quantiles ``Φ⁻¹(p)`` for ``p`` evenly spaced from ``offset`` down to
    1/2 (excluded) make the positive side, seven make the negative side, plus
    an exact zero; the lot is divided by its maximum. Asymmetric (8 positive, 7
    negative) so that 0 is a code value.
    """
    offset = nf4_offset() if offset is None else positive("offset", offset)
    if not 0.5 < offset < 1:
        raise ValueError(f"offset must lie in (0.5, 1), got {offset!r}")
    ppf = torch.special.ndtri
    pos = ppf(torch.linspace(offset, 0.5, 9)[:-1].double())
    neg = -ppf(torch.linspace(offset, 0.5, 8)[:-1].double())
    values = (
        torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg])
        .sort()
        .values
    )
    return (values / values.max()).float()


def int4_code() -> torch.Tensor:
    """Uniform symmetric 4-bit levels ``q/7`` for ``q = -7 … 7`` (absmax
    int4, for comparison).
    """
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def _blocks(x: torch.Tensor, block_size: int, arg: str = "x") -> torch.Tensor:
    block_size = positive_int("block_size", block_size)
    if x.numel() % block_size:
        raise ValueError(
            f"{arg} has {x.numel()} entries, not a multiple of "
            f"block_size={block_size}"
        )
    return x.reshape(-1, block_size)


def quantize_blockwise(
    x: torch.Tensor, code: torch.Tensor, block_size: int = 64
):
    """Blockwise absmax quantization of ``x`` to the nearest value of ``code``.

    ``x`` is flattened into blocks of ``block_size``; each block is divided by
    its absolute maximum ``c`` (one fp32 constant per block) and each entry
    replaced by the index of the nearest code value. Returns ``(indices uint8
    (numel,), absmax fp32 (n_blocks,))``.
    """
    blocks = _blocks(x.detach().float(), block_size)
    absmax = blocks.abs().amax(dim=1)
    scaled = (
        blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    )
    idx = (scaled.reshape(-1, 1) - code.reshape(1, -1)).abs().argmin(dim=1)
    return idx.to(torch.uint8), absmax


def dequantize_blockwise(
    idx: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    block_size: int = 64,
) -> torch.Tensor:
    """Inverse of :func:`quantize_blockwise`: ``code[idx] · c`` per block,
    flattened fp32.
    """
    values = _blocks(code[idx.long()], block_size, "idx")
    return (values * absmax[:, None]).reshape(-1)


def double_quantize(absmax: torch.Tensor, block_size: int = 256):
    """Quantize the fp32 block constants themselves to int8 (QLoRA's double
    quantization).

    Subtract their mean (they are all positive), then absmax-quantize blocks of
    ``block_size`` linearly to ``round(c · 127.5/max|c|)`` clamped to ``[-128,
    127]`` (torchao's ``to_nf4`` rule); a last, shorter block is allowed.
    Returns ``(q int8 (n,), scales fp32 (ceil(n / block_size),), mean fp32
    scalar)``.
    """
    block_size = positive_int("block_size", block_size)
    mean = absmax.mean()
    n = absmax.numel()
    centred = torch.cat([absmax - mean, absmax.new_zeros(-n % block_size)])
    blocks = centred.reshape(-1, block_size)
    scales = 256 / (2 * blocks.abs().amax(dim=1))
    q = (blocks * scales[:, None]).round().clamp(-128, 127).to(torch.int8)
    return q.reshape(-1)[:n], scales, mean


def dequantize_double(
    q: torch.Tensor,
    scales: torch.Tensor,
    mean: torch.Tensor,
    block_size: int = 256,
) -> torch.Tensor:
    """Inverse of :func:`double_quantize`: the block constants, fp32."""
    block_size = positive_int("block_size", block_size)
    n = q.numel()
    padded = torch.cat(
        [q.float(), q.new_zeros(-n % block_size, dtype=torch.float32)]
    )
    return (padded.reshape(-1, block_size) / scales[:, None]).reshape(-1)[
        :n
    ] + mean


def constant_bits_per_param(
    block_size: int = 64,
    const_bits: int = 32,
    block_size2: int | None = None,
    const2_bits: int = 32,
) -> float:
    """Bits per weight spent on quantization constants (cme295-qlora).

    One ``const_bits`` constant per ``block_size`` weights: ``32/64 = 0.5``
    bits. With double quantization (``block_size2`` given) the first constants
    take ``const_bits`` (8) each and one ``const2_bits`` constant per
    ``block_size2`` of them is added: ``8/64 + 32/(64·256) ≈ 0.127``.
    """
    bits = positive("const_bits", const_bits) / positive_int(
        "block_size", block_size
    )
    if block_size2 is not None:
        bits += positive("const2_bits", const2_bits) / (
            block_size * positive_int("block_size2", block_size2)
        )
    return bits


class NF4Linear(nn.Module):
    """A frozen linear layer stored as NF4 indices and block constants (the
    QLoRA base).

    ``block_size2=None`` keeps the fp32 constants; otherwise they are
    double-quantized. The weight is dequantized on every forward (QLoRA does it
    to bf16; here to fp32), so gradients flow to the input and to any LoRA
    factors around it but never to the weight.
    """

    def __init__(
        self,
        base: nn.Linear,
        block_size: int = 64,
        block_size2: int | None = 256,
    ):
        super().__init__()
        self.in_features, self.out_features = (
            base.in_features,
            base.out_features,
        )
        self.block_size, self.block_size2 = block_size, block_size2
        code = nf4_code()
        idx, absmax = quantize_blockwise(base.weight, code, block_size)
        if block_size2 is None:
            q, scales, mean = absmax, None, None
        else:
            q, scales, mean = double_quantize(absmax, block_size2)
        for name, t in (
            ("code", code),
            ("idx", idx),
            ("q", q),
            ("scales", scales),
            ("mean", mean),
        ):
            self.register_buffer(name, t)
        bias = None if base.bias is None else base.bias.detach().clone()
        self.register_buffer("bias", bias)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight the layer computes with, shape ``(m, ℓ)``."""
        absmax = (
            self.q
            if self.block_size2 is None
            else dequantize_double(
                self.q, self.scales, self.mean, self.block_size2
            )
        )
        w = dequantize_blockwise(self.idx, absmax, self.code, self.block_size)
        return w.reshape(self.out_features, self.in_features)

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.dequantized_weight(), self.bias)


def quantize_model_nf4(
    model: nn.Module, targets, block_size: int = 64, block_size2: int = 256
) -> list[str]:
    """Replace each ``nn.Linear`` named by ``targets`` (PEFT's matching) by
    an ``NF4Linear``.
    """
    chosen = _targeted(model, targets, nn.Linear)
    for name, module in chosen:
        _replace(model, name, NF4Linear(module, block_size, block_size2))
    return [name for name, _ in chosen]


# ------------------------------------------------- teacher-student: many small
# fits at once


def teacher_student(
    m: int,
    ell: int,
    r_star: int,
    generator: torch.Generator,
    sigma: float = 1.0,
):
    """A "pretrained" ``W0 (m × ℓ)`` and a target update ``ΔW*`` of rank
    exactly ``r_star``.

    ``W0`` has i.i.d. ``N(0, 1/ℓ)`` entries; ``ΔW* = sigma · U Vᵀ`` with
    orthonormal ``U (m × r*)``, ``V (ℓ × r*)``, so its ``r*`` singular values
    all equal ``sigma``: the best rank-``k`` fit leaves ``(r* - k) sigma²``
    (Eckart–Young). Chapter section hw11-q1a.
    """
    m, ell, r_star = (
        positive_int("m", m),
        positive_int("ell", ell),
        positive_int("r_star", r_star),
    )
    if r_star > min(m, ell):
        raise ValueError(
            f"r_star must be <= min(m, ℓ) = {min(m, ell)}, got {r_star}"
        )
    w0 = torch.randn(m, ell, generator=generator) / math.sqrt(ell)
    u = torch.linalg.qr(torch.randn(m, r_star, generator=generator)).Q
    v = torch.linalg.qr(torch.randn(ell, r_star, generator=generator)).Q
    return w0, positive("sigma", sigma) * u @ v.T


def train_stacked(
    w0: torch.Tensor,
    w_target: torch.Tensor,
    factors,
    lrs,
    steps: int,
    batch: int,
    seed: int,
    noise: float = 0.0,
    scaling: float = 1.0,
    optimizer: str = "adam",
    betas=(0.9, 0.999),
    eps: float = 1e-8,
):
    """Fit ``S`` independent students at once: ``W0 + s·A_i B_i`` (LoRA) or
    ``W0 + D_i`` (full).

    Args:
        w0, w_target: ``(m, ℓ)``; data are ``x ~ N(0, I_ℓ)``, ``y = w_target x
            + noise·ε``.
        factors: ``[A (S, m, k), B (S, k, ℓ)]`` for LoRA or ``[D (S, m, ℓ)]``
            for full finetuning;
            copied, not modified. All students see the same mini-batches.
        lrs: ``(S,)`` learning rates, one per student; ``scaling``: ``s``, a
            number or ``(S,)``.
        optimizer: ``"adam"`` (hand-written, as ``torch.optim.Adam``),
            ``"sgd"`` or ``"momentum"``.
    Returns ``(losses (steps, S), factors)``: mean squared error per output per
    step, and the trained factors. Each student's loss depends only on its own
    slice, so summing the losses gives every slice its own gradient (the
    batch-size chapter's vectorised sweeps).
    """
    ps = [f.detach().clone().requires_grad_() for f in factors]
    lr = torch.as_tensor(lrs, dtype=w0.dtype).reshape(-1, 1, 1)
    s = torch.as_tensor(scaling, dtype=w0.dtype).reshape(-1, 1, 1)
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ps]
    g = torch.Generator().manual_seed(seed)
    history = torch.empty(positive_int("steps", steps), lr.shape[0])
    for t in range(1, steps + 1):
        x = torch.randn(batch, w0.shape[1], generator=g)
        y = x @ w_target.T + noise * torch.randn(
            batch, w0.shape[0], generator=g
        )
        delta = s * ps[0] @ ps[1] if len(ps) == 2 else ps[0]
        err = x @ (w0 + delta).transpose(1, 2) - y  # (S, batch, m)
        loss = (err**2).mean(dim=(1, 2))
        grads = torch.autograd.grad(loss.sum(), ps)
        history[t - 1] = loss.detach()
        with torch.no_grad():
            for p, gr, (m1, m2) in zip(ps, grads, state):
                if optimizer == "sgd":
                    p -= lr * gr
                elif optimizer == "momentum":
                    m1.mul_(0.9).add_(gr)
                    p -= lr * m1
                elif optimizer == "adam":
                    m1.mul_(betas[0]).add_((1 - betas[0]) * gr)
                    m2.mul_(betas[1]).add_((1 - betas[1]) * gr**2)
                    step = (m1 / (1 - betas[0] ** t)) / (
                        (m2 / (1 - betas[1] ** t)).sqrt() + eps
                    )
                    p -= lr * step
                else:
                    raise ValueError(
                        "optimizer must be 'adam', 'sgd' or 'momentum', "
                        f"got {optimizer!r}"
                    )
    return history, [p.detach() for p in ps]
