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

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from llmbook.core.validate import positive, positive_int
from llmbook.topics import seqtasks as st
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


def memory_table(shapes: dict, ranks):
    """Homework 11, Problem 1(d) as a table, one row per weight of
    ``shapes`` (name -> ``(m, ℓ)``): the shape, the fp32 bytes of a full
    ``ΔW`` (:func:`full_bytes`), of ``A`` and ``B`` at each rank of
    ``ranks`` (:func:`lora_bytes`) and their share of the full update, and
    the break-even rank ``k*`` (:func:`break_even_rank`). Every entry is
    text as the page prints it. Section hw11-q1d (notebook
    lora-student-check)."""
    import pandas as pd

    from llmbook.book import fmt

    rows = []
    for name, (mm, ll) in shapes.items():
        row = {
            "weight": name,
            "m × ℓ": f"{mm} × {ll}",
            "full ΔW": fmt.nbytes(full_bytes(mm, ll)),
        }
        for k in ranks:
            row[f"A, B at k={k}"] = fmt.nbytes(lora_bytes(mm, ll, k))
            row[f"ratio k={k}"] = (
                f"{lora_bytes(mm, ll, k) / full_bytes(mm, ll):.2%}"
            )
        row["break-even k*"] = fmt.sig(break_even_rank(mm, ll), 4)
        rows.append(row)
    return pd.DataFrame(rows).set_index("weight")


def plot_memory_ratio(shapes: dict):
    """Bytes of ``A`` and ``B`` over bytes of ``ΔW`` against the rank ``k``
    (1 to ``min(m, ℓ)``, log-log), one line per weight of ``shapes`` (name
    -> ``(m, ℓ)``), each break-even rank marked on the line ratio = 1.
    Section hw11-q1d (notebook lora-student-check). Returns the figure.
    """
    import numpy as np

    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "rank k",
        "bytes of A and B / bytes of ΔW",
        "LoRA pays off until k reaches mℓ/(m + ℓ)",
        logx=True,
        logy=True,
    )
    for name, (mm, ll) in shapes.items():
        ks = np.unique(np.logspace(0, np.log10(min(mm, ll)), 60).astype(int))
        ax.plot(
            ks,
            [lora_bytes(mm, ll, k) / full_bytes(mm, ll) for k in ks],
            label=name,
        )
        ax.plot(break_even_rank(mm, ll), 1, "k|", ms=10)
    ax.axhline(1, color="k", lw=0.8)
    ax.legend(fontsize=8)
    return fig


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


# ------------------------------------------- many finetuning runs at once
# (core.trainer on the small transformer of topics.seqtasks)

IGNORE = -100  # target id that the loss skips (F.cross_entropy's default)


def prompt_split(n: int, n_test: int, generator: torch.Generator):
    """All ``10**n`` digit strings of length ``n``, shuffled and split into
    ``(train, test)`` int64 tensors of shapes ``(10**n - n_test, n)`` and
    ``(n_test, n)``: a held-out prompt is never trained on (chapter
    section cme295-sft). ``n`` is at most 6 (a million prompts).
    """
    n, n_test = positive_int("n", n), positive_int("n_test", n_test)
    if n > 6:
        raise ValueError(f"n must be <= 6 (10**n prompts), got {n}")
    if n_test >= 10**n:
        raise ValueError(f"n_test must be < 10**n = {10**n}, got {n_test}")
    perm = torch.randperm(10**n, generator=generator)
    powers = 10 ** torch.arange(n - 1, -1, -1)
    digits = (perm[:, None] // powers) % 10
    return digits[n_test:], digits[:n_test]


def task_sequences(task: str, x: torch.Tensor) -> torch.Tensor:
    """``[task, x, SEP, y]`` for digits ``x (..., n)``: shape ``(..., 2n +
    2)``, int64, as :func:`llmbook.topics.seqtasks.make_batch` builds them.
    """
    head = torch.full((*x.shape[:-1], 1), st.task_token(task))
    sep = torch.full((*x.shape[:-1], 1), st.SEP)
    return torch.cat([head, x, sep, st.respond(task, x)], dim=-1)


def lm_targets(seq: torch.Tensor, masked: bool = True) -> torch.Tensor:
    """Next-token targets ``seq[..., 1:]``; with ``masked`` every target
    that is not a response token is :data:`IGNORE` (SFT's loss on the
    response only)."""
    y = seq[..., 1:].clone()
    if masked:
        y[..., ~st.response_mask((seq.shape[-1] - 2) // 2)] = IGNORE
    return y


def lm_run_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of one run over the targets
    that are not :data:`IGNORE`: ``logits (B, T, V)``, ``targets (B, T)``.
    The loss function :func:`llmbook.core.trainer.train_runs` vmaps."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
    )


def run_batches(runs, pool, batch: int, steps: int, masked: bool = True):
    """Mini-batches for :func:`llmbook.core.trainer.train_runs`, one stream
    per run.

    Args:
        runs: one ``(tasks, seed)`` per run: run i draws, at every step,
            ``batch`` prompts per task of ``tasks`` (a name or a list)
            from ``pool`` with a generator seeded ``seed``.
        pool: ``(N, n)`` digit strings to draw from (the training side of
            :func:`prompt_split`).
        masked: score only the response tokens (SFT), else every token.
    Returns ``batches(step) -> (inputs (runs, B, 2n+1), targets (runs, B,
    2n+1))`` with ``B = batch · len(tasks)`` (the same for every run).
    """
    batch, steps = positive_int("batch", batch), positive_int("steps", steps)
    seqs = []
    for tasks, seed in runs:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        g = torch.Generator().manual_seed(int(seed))
        idx = torch.randint(len(pool), (steps, len(tasks), batch), generator=g)
        per_task = [
            task_sequences(t, pool[idx[:, i]]) for i, t in enumerate(tasks)
        ]
        seqs.append(torch.cat(per_task, dim=1))  # (steps, B, 2n+2)
    if len({s.shape for s in seqs}) != 1:
        raise ValueError("runs must all draw the same number of tasks")
    seqs = torch.stack(seqs)  # (runs, steps, B, 2n+2)
    targets = lm_targets(seqs, masked)

    def batches(step: int):
        return seqs[:, step, :, :-1], targets[:, step]

    return batches


def freeze_to_buffers(model: nn.Module) -> nn.Module:
    """Turn every parameter that does not require grad into a buffer of the
    same name, in place, and return ``model``: the stacked trainer then
    trains only the adapters (or whatever still requires grad)."""
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and not p.requires_grad:
                del mod._parameters[name]
                mod.register_buffer(name, p.detach())
    return model


def stack_models(models):
    """Stack models of one structure for :mod:`llmbook.core.trainer`.

    Frozen parameters become buffers (:func:`freeze_to_buffers`, on the
    models themselves). Returns ``(params, buffers, base)`` as
    :func:`llmbook.core.trainer.init_runs` does: dicts name -> ``(n,
    *shape)`` and a "meta" copy of the first model.
    """
    from torch.func import stack_module_state

    models = [freeze_to_buffers(m) for m in models]
    if not models:
        raise ValueError("models must not be empty")
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    return params, buffers, copy.deepcopy(models[0]).to("meta")


def lora_copy(
    base: nn.Module,
    targets,
    rank: int,
    alpha: float,
    seed: int,
    quantize: bool = False,
) -> nn.Module:
    """A copy of ``base`` with LoRA on ``targets`` (the random factor drawn
    from ``seed``), on an NF4 copy of every linear layer when ``quantize``
    (QLoRA); ``targets=None`` gives a plain copy, every weight trainable
    (full finetuning)."""
    model = copy.deepcopy(base)
    if quantize:
        quantize_model_nf4(model, ALL_LAYERS)
    if targets is not None:
        gen = torch.Generator().manual_seed(int(seed))
        apply_lora(model, targets, rank, alpha, generator=gen)
    return model


ATTENTION = ("q", "k", "v", "o")
ALL_LAYERS = ("q", "k", "v", "o", "fc1", "fc2")


@torch.no_grad()
def runs_scores(base, params, buffers, seq: torch.Tensor) -> dict:
    """Held-out scores of every stacked run on the sequences ``seq (N,
    2n+2)``: ``{"correct": (n,) int exact matches out of N, "loss": (n,)
    masked response loss in nats per token}``."""
    from llmbook.core.trainer import run_outputs

    n = (seq.shape[1] - 2) // 2
    logits = run_outputs(base, params, seq[:, :-1], buffers)
    resp = st.response_mask(n)
    right = logits.argmax(-1)[:, :, resp] == seq[:, n + 2 :]
    y = lm_targets(seq)
    loss = torch.stack([lm_run_loss(lg, y) for lg in logits])
    return {"correct": right.all(-1).sum(-1), "loss": loss}


def finetune_runs(
    bases,
    runs,
    targets,
    rank: int,
    alpha: float,
    lr: float,
    task: str,
    pool: torch.Tensor,
    test: torch.Tensor,
    batch: int,
    steps: int,
    masked: bool = True,
    quantize: bool = False,
) -> dict:
    """Finetune ``len(runs)`` copies of the pretrained ``bases`` on
    ``task`` at once (:mod:`llmbook.core.trainer`, Adam), and score them.

    Args:
        bases: pretrained models; ``runs``: one ``(base index, seed)`` per
            run; the seed draws the adapter's random factor and (as
            ``10_000 + seed``) the run's mini-batches, so two methods given
            the same runs see the same data (paired comparisons).
        targets, rank, alpha, quantize: as :func:`lora_copy` (``targets``
            None: full finetuning).
        pool: ``(N, n)`` training prompts; ``test``: held-out sequences of
            ``task`` (never drawn from ``pool``).
    Returns a dict: ``losses (steps, n)`` training loss per step,
    ``final (n,)`` its mean over the last 10 steps, ``correct (n,)`` and
    ``loss (n,)`` held-out exact matches and response loss
    (:func:`runs_scores`), ``state`` ``(base, params, buffers)`` to score or
    rebuild the runs (``core.trainer.run_model``).
    """
    runs = [(int(b), int(s)) for b, s in runs]
    base, out, buffers = _train_stack(
        bases,
        runs,
        [task] * len(runs),
        targets,
        rank,
        alpha,
        lr,
        pool,
        batch,
        steps,
        masked,
        quantize,
    )
    return _scored(base, out.params, buffers, out.losses, test)


def _train_stack(
    bases,
    runs,
    tasks,
    targets,
    rank,
    alpha,
    lr,
    pool,
    batch,
    steps,
    masked,
    quantize,
):
    """Train the runs ``(base index, seed)``, run i on ``tasks[i]``, in
    one stack; ``(base, Trained, buffers)``."""
    from llmbook.core.trainer import train_runs

    models = [
        lora_copy(bases[b], targets, rank, alpha, s, quantize) for b, s in runs
    ]
    params, buffers, base = stack_models(models)
    data = run_batches(
        [(t, 10_000 + s) for (_, s), t in zip(runs, tasks)],
        pool,
        batch,
        steps,
        masked,
    )
    out = train_runs(
        base, params, lm_run_loss, data, steps, lr, buffers=buffers
    )
    return base, out, buffers


def _scored(base, params, buffers, losses, test) -> dict:
    """The dict :func:`finetune_runs` returns, for trained stacked runs."""
    return {
        "losses": losses,
        "final": losses[-10:].mean(0),
        **runs_scores(base, params, buffers, test),
        "state": (base, params, buffers),
    }


def finetune_tasks(
    bases,
    runs,
    targets,
    rank: int,
    alpha: float,
    lr: float,
    tasks,
    pool: torch.Tensor,
    held_out: dict,
    batch: int,
    steps: int,
    masked: bool = True,
    quantize: bool = False,
) -> dict:
    """:func:`finetune_runs` of the same ``runs`` on every task of
    ``tasks``, all tasks' runs trained in one stack (one step of len(tasks)
    x len(runs) runs costs less than len(tasks) steps of len(runs): the
    per-step overhead is paid once). Nothing mixes runs in the stacked
    trainer, so each task's result is bit-equal to its own
    :func:`finetune_runs` call (tests/test_lora.py). Returns ``{task: the
    dict finetune_runs returns}``, each scored on ``held_out[task]``
    with its own slice of the stack as "state". Section cme295-lora (the
    two adapters over one base).
    """
    runs = [(int(b), int(s)) for b, s in runs]
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    if not tasks or not runs:
        raise ValueError("tasks and runs must not be empty")
    base, out, buffers = _train_stack(
        bases,
        runs * len(tasks),
        [t for t in tasks for _ in runs],
        targets,
        rank,
        alpha,
        lr,
        pool,
        batch,
        steps,
        masked,
        quantize,
    )
    n, res = len(runs), {}
    for j, t in enumerate(tasks):
        sl = slice(j * n, (j + 1) * n)
        res[t] = _scored(
            base,
            {k: v[sl] for k, v in out.params.items()},
            {k: v[sl] for k, v in buffers.items()},
            out.losses[:, sl],
            held_out[t],
        )
    return res


@torch.no_grad()
def evaluate(model: nn.Module, held_out: dict, tasks) -> dict:
    """``{task: (exact match, masked response loss in nats per token)}`` of
    one model on the held-out sequences ``held_out[task]``."""
    was = model.training
    model.eval()
    out = {}
    for t in tasks:  # one forward pass per task serves both scores
        seq = held_out[t]
        logits = model(seq[:, :-1])
        out[t] = (
            st.logits_exact_match(logits, seq),
            st.logits_loss(logits, seq).item(),
        )
    model.train(was)
    return out


def interval_text(interval: dict, fmt_one) -> str:
    """``"[lo, hi]"`` of an interval dict (``core.stats``), each end
    formatted by ``fmt_one``."""
    return f"[{fmt_one(interval['lo'])}, {fmt_one(interval['hi'])}]"


def accuracy_text(p: float) -> str:
    """An exact-match rate on the page: one decimal of a per cent (the
    resolution of 1,000 prompts), ``"100 %"`` and ``"0 %"`` at the ends."""
    p = float(p)
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    return "100 %" if p == 1 else "0 %" if p == 0 else f"{100 * p:.1f} %"


def runs_table(results: dict, n_test: int):
    """One row per method of :func:`finetune_runs` results: median and
    range over runs of held-out exact match, held-out response loss and
    final training loss, and the runs with every held-out answer right."""
    import pandas as pd

    from llmbook.book import fmt

    pct = accuracy_text

    def sig(v):
        return fmt.sig(v, 2)

    def spread(values, show):  # "median (lo–hi)", one value if all agree
        values = torch.as_tensor(values, dtype=torch.float64).numpy()
        return fmt.median_range(values, show, sep="–", when_equal="")

    rows = {}
    for name, r in results.items():
        rows[name] = {
            "held-out exact match": spread(r["correct"] / n_test, pct),
            "held-out response loss": spread(r["loss"], sig),
            "final training loss": spread(r["final"], sig),
            "runs all right": f"{int((r['correct'] == n_test).sum())} "
            f"of {len(r['correct'])}",
        }
    return pd.DataFrame(rows).T


def plot_median_band(ax, losses, label: str, **kw):
    """Draw the median over runs of ``losses (steps, n)`` as a line and
    the range (smallest to largest run) as a shaded band; returns the
    line."""
    import numpy as np

    q = np.asarray(losses, dtype=float)
    steps = np.arange(q.shape[0])
    (line,) = ax.plot(steps, np.median(q, 1), label=label, **kw)
    ax.fill_between(
        steps,
        q.min(1),
        q.max(1),
        color=line.get_color(),
        alpha=0.2,
        lw=0,
    )
    return line


def blockwise_error(w: torch.Tensor, code: torch.Tensor, block: int) -> float:
    """Relative Frobenius error ``‖w - Q(w)‖ / ‖w‖`` of 4-bit blockwise
    quantization of ``w`` with the code values ``code`` (NF4 or int4) and
    one absmax constant per ``block`` numbers (cme295-qlora)."""
    from llmbook.topics.quant import dequantize_blockwise, quantize_blockwise

    idx, absmax = quantize_blockwise(w, code, block)
    back = dequantize_blockwise(idx, absmax, code, block)
    return ((back - w.flatten()).norm() / w.norm()).item()


# ------------------------------------- teacher-student sweeps (lora-basics)


def peft_init(n: int, m: int, ell: int, k, k_pad: int | None = None, seed=1):
    """Stacked factors at PEFT's default for ``n`` students: ``A = 0 (n, m,
    k_pad)``, ``B ~ U(±1/√ℓ) (n, k_pad, ℓ)``; ``k`` is one rank or ``n``
    ranks, and the rows of ``B`` beyond a student's rank are zero (padding,
    so students of different ranks train in one stack). Section hw11-q1a."""
    n, m, ell = (
        positive_int("n", n),
        positive_int("m", m),
        positive_int("ell", ell),
    )
    ks = torch.as_tensor(k).reshape(-1)
    k_pad = int(ks.max()) if k_pad is None else positive_int("k_pad", k_pad)
    if ks.numel() not in (1, n) or int(ks.min()) < 1 or int(ks.max()) > k_pad:
        raise ValueError(f"k must be 1 or {n} ranks in [1, k_pad], got {k}")
    g = torch.Generator().manual_seed(int(seed))
    b = (torch.rand(n, k_pad, ell, generator=g) * 2 - 1) / math.sqrt(ell)
    keep = torch.arange(k_pad)[None, :] < ks.reshape(-1, 1)
    return [torch.zeros(n, m, k_pad), b * keep[:, :, None]]


def init_factors(kind: str, m: int, ell: int, k: int, generator):
    """One student's ``[A (1, m, k), B (1, k, ℓ)]`` for ``kind`` in
    ``"peft"`` (``A = 0``), ``"b_zero"`` (``B = 0``, ``A ~ U(±1/√k)``) and
    ``"xavier"`` (both Xavier-uniform), as :class:`LoRALinear` draws
    them. Section hw11-q1c."""
    a, b = torch.zeros(1, m, k), torch.zeros(1, k, ell)
    if kind == "peft":
        b.uniform_(
            -1 / math.sqrt(ell), 1 / math.sqrt(ell), generator=generator
        )
    elif kind == "b_zero":
        a.uniform_(-1 / math.sqrt(k), 1 / math.sqrt(k), generator=generator)
    elif kind == "xavier":
        nn.init.xavier_uniform_(a[0], generator=generator)
        nn.init.xavier_uniform_(b[0], generator=generator)
    else:
        raise ValueError(
            f"kind must be 'peft', 'b_zero' or 'xavier', got {kind!r}"
        )
    return [a, b]


def final_loss(hist: torch.Tensor, last: int = 20):
    """Mean of the last ``last`` rows of ``hist (steps, S)``: each student's
    loss at the end of the run, as a numpy array."""
    return hist[-positive_int("last", last) :].mean(0).numpy()


def eckart_young_floor(ranks, r_star: int, sigma: float, m: int, noise: float):
    """The least loss per output of a rank-``k`` fit to a rank-``r*`` update
    with singular values ``sigma``: ``max(r* - k, 0) σ² / m + noise²``, one
    per ``k`` in ``ranks`` (numpy array). Section hw11-q1a."""
    import numpy as np

    k = np.asarray(ranks, dtype=float)
    return np.maximum(r_star - k, 0) * sigma**2 / m + noise**2


def lr_sweep(w0, w_target, r_star, lrs, steps, batch, seed, noise):
    """Final loss against the Adam learning rate, full finetuning (``D``
    from 0) and LoRA (``k = r*``, PEFT's init, ``s = 1``) on the same
    mini-batches: ``(full (n_lr,), lora (n_lr,))`` numpy arrays, the mean
    over the last tenth of the steps (at least one). Section cme295-lora."""
    (m, ell), n_lr = w0.shape, len(lrs)
    last = max(1, steps // 10)
    out = []
    for init in ([torch.zeros(n_lr, m, ell)], peft_init(n_lr, m, ell, r_star)):
        hist, _ = train_stacked(
            w0, w_target, init, lrs, steps, batch, seed, noise=noise
        )
        out.append(final_loss(hist, last))
    return tuple(out)


def xavier_table(dims, ranks, seed: int):
    """``‖AB‖/‖W0‖`` at Xavier init for square ``W0 (d × d)`` with entries
    ``N(0, 1/d)``: one sample (from ``seed``) and the formula of
    :func:`xavier_product_ratio`, one row per ``(d, k)``. Section
    hw11-q1c."""
    import pandas as pd

    rows = []
    for d in dims:
        for k in ranks:
            g = torch.Generator().manual_seed(int(seed))
            base = nn.Linear(d, d, bias=False)
            layer = LoRALinear(base, k, init="xavier", generator=g)
            with torch.no_grad():
                base.weight.normal_(0, 1 / math.sqrt(d), generator=g)
            ab = (layer.A @ layer.B).norm() / base.weight.norm()
            rows.append(
                {
                    "m = ℓ": d,
                    "k": k,
                    "‖AB‖/‖W0‖ sampled": ab.item(),
                    "formula": xavier_product_ratio(d, d, k, 1 / d),
                }
            )
    return pd.DataFrame(rows)
