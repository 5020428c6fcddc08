"""LoRA by hand: a low-rank update around a frozen linear layer, its memory,
and QLoRA (LoRA on a base quantized to NF4 by :mod:`llmbook.topics.quant`).

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
from llmbook.topics.quant import NF4Linear

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
