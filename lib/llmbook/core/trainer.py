"""Train many independent runs of one model at once: seeds, data draws and
learning rates side by side on stacked parameters.

Every parameter of the n runs is one tensor with a leading run axis
(``torch.func.stack_module_state``); a step evaluates all runs with
``torch.vmap`` over ``torch.func.functional_call`` and takes one backward
pass through the *sum* of the n losses. Run i's loss depends only on run i's
slice, and the derivative of a sum with respect to each term is exactly 1,
so the gradient of that slice is run i's own gradient. Adam and SGD (with
momentum and L2 weight decay) update each number from its own gradient and
its own moments, elementwise, so one optimiser over the stacked tensors is n
independent optimisers, each with its own learning rate. Nothing here mixes
runs: gradient clipping is per run (the norm of run i's gradients only); a
clip of the norm over the whole stack, batch statistics across runs or a
loss that is not one number per run would couple them and are not offered.
The batch-size and LoRA chapters' hand-stacked sweeps follow the same idea.

Two shortcuts save vmap's overhead where it dominates small models: an
``nn.Sequential`` of ``nn.Linear`` and elementwise activations runs as one
batched matmul per layer, and ``F.cross_entropy`` / ``F.mse_loss`` are
computed for all runs at once; the tests check both against plain vmap.
A model may also bring its own ``stacked_forward(params, x, shared)``
(all runs at once, bit-equal to vmap, e.g. the iso-FLOP student), which
then replaces vmap.
Speed: ``tools/bench_trainer.py``.

Typical use::

    params, buffers, base = init_runs(make_model, seeds=range(8))
    batches = sample_batches(X, Y, batch_size=128, seeds=range(8),
                             steps=300)
    out = train_runs(base, params, F.cross_entropy, batches, 300,
                     lr=1e-3, buffers=buffers)
    out.losses  # (300, 8) training loss of every run and step
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from llmbook.core.validate import nonnegative, positive, positive_int

OPTIMIZERS = ("adam", "sgd")


class Trained(NamedTuple):
    """What :func:`train_runs` returns.

    params: the trained parameters, name -> ``(n, *shape)`` tensor.
    losses: ``(steps, n)`` training loss of every run at every step (the
        loss before that step's update); ``nan`` from the step at which a
        run was frozen by ``max_loss`` on.
    alive: ``(n,)`` bool, False for runs frozen by ``max_loss``.
    """

    params: dict
    losses: torch.Tensor
    alive: torch.Tensor


def _seed_list(seeds) -> list[int]:
    try:
        seeds = list(seeds)
    except TypeError as exc:
        raise ValueError(f"seeds must be a sequence of ints: {exc}") from exc
    if not seeds:
        raise ValueError("seeds must not be empty")
    for s in seeds:
        if isinstance(s, bool) or int(s) != s or s < 0:
            raise ValueError(f"seeds must be ints >= 0, got {s!r}")
    return [int(s) for s in seeds]


def init_runs(make_model: Callable[[], nn.Module], seeds):
    """One model per seed, built under ``torch.manual_seed(seed)``, stacked.

    Args:
        make_model: called with no argument, returns an ``nn.Module``; called
            once per seed, so run i starts exactly where ``make_model()``
            after ``torch.manual_seed(seeds[i])`` starts. The global random
            state is restored afterwards.
        seeds: n ints >= 0 (repeats allowed: same start, e.g. for runs that
            differ only by data draw or learning rate).
    Returns ``(params, buffers, base_model)``: dicts name -> ``(n, *shape)``
    tensors, and a copy of the first model on the "meta" device (no
    storage) that gives the stacked tensors their structure.
    """
    if not callable(make_model):
        raise ValueError(f"make_model must be callable, got {make_model!r}")
    models = []
    with torch.random.fork_rng(devices=[]):
        for s in _seed_list(seeds):
            torch.manual_seed(s)
            model = make_model()
            if not isinstance(model, nn.Module):
                raise ValueError(
                    "make_model must return an nn.Module, got "
                    f"{type(model).__name__}"
                )
            models.append(model)
    for name, m in models[0].named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"make_model: {name!r} is a BatchNorm layer; its running "
                "statistics are updated in place, which the stacked "
                "trainer does not support (use LayerNorm)"
            )
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    return params, buffers, base


def n_runs(params: dict) -> int:
    """The number of runs n: the common leading size of the stacked
    tensors in ``params`` (name -> ``(n, *shape)``)."""
    if not isinstance(params, dict) or not params:
        raise ValueError("params must be a non-empty dict of tensors")
    sizes = {
        v.shape[0] if isinstance(v, torch.Tensor) and v.dim() else None
        for v in params.values()
    }
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "params must be tensors sharing one leading run axis, got "
            f"leading sizes {sorted(map(str, sizes))}"
        )
    return sizes.pop()


def _check_state(base_model, params, buffers):
    if not isinstance(base_model, nn.Module):
        raise ValueError(
            f"base_model must be an nn.Module, got {type(base_model)}"
        )
    n = n_runs(params)
    buffers = {} if buffers is None else dict(buffers)
    want_p = {k for k, _ in base_model.named_parameters()}
    want_b = {k for k, _ in base_model.named_buffers()}
    if set(params) != want_p:
        raise ValueError(
            "params: names differ from base_model's parameters: "
            f"{sorted(set(params) ^ want_p)}"
        )
    if set(buffers) != want_b:
        raise ValueError(
            "buffers: names differ from base_model's buffers: "
            f"{sorted(set(buffers) ^ want_b)} (pass init_runs' buffers)"
        )
    if buffers and n_runs(buffers) != n:
        raise ValueError("buffers: leading size differs from params'")
    return n, buffers


def _per_run_lr(lr, n: int, like: torch.Tensor) -> torch.Tensor:
    if isinstance(lr, torch.Tensor):
        lr = lr.detach().to(like.dtype).reshape(-1)
    else:
        lr = torch.full((n,), positive("lr", lr), dtype=like.dtype)
    if lr.numel() != n:
        raise ValueError(f"lr must be a number or {n} rates, got {lr.numel()}")
    if not bool(torch.isfinite(lr).all() and (lr > 0).all()):
        raise ValueError(f"lr must be finite and > 0, got {lr.tolist()}")
    return lr


def _batch(batches, step: int, n: int, shared: bool):
    got = batches(step)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise ValueError("batches(step) must return (inputs, targets)")
    x, y = got
    if not shared:
        for name, t in (("inputs", x), ("targets", y)):
            if not isinstance(t, torch.Tensor) or t.dim() == 0:
                raise ValueError(f"batches: {name} must be a tensor")
            if t.shape[0] != n:
                raise ValueError(
                    f"batches: {name} must lead with the {n} runs, got "
                    f"shape {tuple(t.shape)} (or pass shared=True)"
                )
    return x, y


# Elementwise layers that act on a leading run axis unchanged.
_ELEMENTWISE = (
    nn.ReLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.SiLU,
    nn.Identity,
    nn.LeakyReLU,
)


def _is_plain_mlp(base_model: nn.Module) -> bool:
    """True for an ``nn.Sequential`` of ``nn.Linear`` and elementwise
    activations: its forward runs as batched matmuls, without vmap."""
    return isinstance(base_model, nn.Sequential) and all(
        isinstance(m, (nn.Linear, *_ELEMENTWISE)) for m in base_model
    )


def _mlp_forward(base_model, params, x, shared: bool):
    """A plain MLP (see :func:`_is_plain_mlp`) on stacked weights: x ``(n,
    ..., d)``, or ``(..., d)`` when shared, -> ``(n, ..., d_out)``; one
    batched matmul per linear layer (what vmap makes of ``F.linear``)."""
    batched = not shared
    for name, m in base_model.named_children():
        if not isinstance(m, nn.Linear):
            x = m(x)
            continue
        w = params[f"{name}.weight"]  # (n, out, in)
        n = w.shape[0]
        lead = x.shape[1:-1] if batched else x.shape[:-1]
        x = x.reshape(n if batched else 1, -1, x.shape[-1])
        x = torch.matmul(x, w.transpose(1, 2))
        if m.bias is not None:
            x = x + params[f"{name}.bias"][:, None]
        x, batched = x.reshape(n, *lead, w.shape[1]), True
    return x


def _outputs(base_model, shared: bool, fast: bool = True):
    """``f(params, buffers, x) -> (n, ...)``: every run's output. A model
    with a method ``stacked_forward(params, x, shared)`` (all runs at once,
    bit-equal to vmap; its tests check that) runs it instead of vmap."""
    stacked = getattr(base_model, "stacked_forward", None)
    if fast and callable(stacked):

        def own(p, b, x):
            return stacked(p, x, shared)

        return own
    if fast and _is_plain_mlp(base_model):

        def mlp(p, b, x):
            return _mlp_forward(base_model, p, x, shared)

        return mlp

    def one(p, b, x):
        return functional_call(base_model, (p, b), (x,))

    return torch.vmap(one, in_dims=(0, 0, None if shared else 0))


class _TokenCrossEntropy(torch.autograd.Function):
    """``logsumexp(out) - out[y]``, ``out (n, B, C)``, ``y (n, B)`` -> ``(n,
    B)``, with autograd's own gradient of that expression computed in one
    buffer: ``g exp(out - lse)`` (logsumexp's backward), then ``-g`` added
    at each target (what gather's backward scatters into zeros and
    autograd adds). The same operations on the same numbers, so bit-equal
    to the plain expression (tests/test_trainer.py), without its zero
    tensor and extra passes over ``(n, B, C)``."""

    @staticmethod
    def forward(ctx, out, y):
        lse = out.logsumexp(-1)
        picked = out.gather(-1, y[..., None])[..., 0]
        ctx.save_for_backward(out, y, lse)
        return lse - picked

    @staticmethod
    def backward(ctx, g):
        out, y, lse = ctx.saved_tensors
        grad = (out - lse[..., None]).exp_().mul_(g[..., None])
        return grad.scatter_add_(-1, y[..., None], -g[..., None]), None


def _losses(loss_fn, shared: bool, fast: bool = True):
    """``f(outputs (n, ...), targets) -> (n,)``: ``loss_fn`` of each run.

    With ``fast``, ``F.cross_entropy`` on class indices (as log-sum-exp
    minus the target logit: torch's log_softmax is slow on many rows of
    few classes) and ``F.mse_loss``, both with their default mean
    reduction, run on all runs at once; any other loss is vmapped."""
    each = torch.vmap(loss_fn)

    def per_run(out, y):
        n = out.shape[0]
        if shared:
            y = y.expand(n, *y.shape)
        if (
            fast
            and loss_fn is F.cross_entropy
            and out.dim() == 3
            and (y.shape == out.shape[:2] and not y.is_floating_point())
        ):  # log-sum-exp minus the target's logit: F.cross_entropy's value
            return _TokenCrossEntropy.apply(out, y).mean(1)
        if fast and loss_fn is F.mse_loss and y.shape == out.shape:
            return F.mse_loss(out, y, reduction="none").reshape(n, -1).mean(1)
        return each(out, y)

    return per_run


def _vmapped(base_model, loss_fn, shared: bool, fast: bool = True):
    """``f(params, buffers, x, y) -> (n,)`` per-run losses: the model's
    output (batched matmuls for a plain MLP, else vmap over
    ``functional_call``), then the loss of each run."""
    outputs, losses = (
        _outputs(base_model, shared, fast),
        _losses(loss_fn, shared, fast),
    )

    def f(p, b, x, y):
        return losses(outputs(p, b, x), y)

    return f


def _check_options(optimizer, betas, eps, momentum, weight_decay):
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}"
        )
    if len(betas) != 2 or not all(0 <= float(b) < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
    positive("eps", eps)
    if not 0 <= nonnegative("momentum", momentum) < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    if momentum and optimizer != "sgd":
        raise ValueError("momentum applies to optimizer='sgd' only")
    nonnegative("weight_decay", weight_decay)


def train_runs(
    base_model: nn.Module,
    params: dict,
    loss_fn: Callable,
    batches: Callable[[int], tuple],
    steps: int,
    lr,
    *,
    buffers: dict | None = None,
    shared: bool = False,
    optimizer: str = "adam",
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    schedule: Callable[[int], float] | None = None,
    max_grad_norm: float | None = None,
    max_loss: float | None = None,
) -> Trained:
    """Train n stacked runs for ``steps`` steps; each run as if alone.

    Run i follows exactly the updates of ``torch.optim.Adam`` (or ``SGD``)
    on the model of seed i, fed run i's batches, at rate ``lr[i]``; the
    tests check this against plain loops.

    Args:
        base_model, params, buffers: from :func:`init_runs` (params are
            copied, not modified; buffers are read, never updated).
        loss_fn: ``loss_fn(output, target) -> scalar`` for ONE run, e.g.
            ``F.cross_entropy``; it is vmapped over the runs.
        batches: ``batches(step) -> (inputs, targets)`` for step = 0 ..
            steps-1: tensors ``(n, B, ...)``, run i's batch in slice i (see
            :func:`sample_batches`), or, with ``shared=True``, one ``(B,
            ...)`` batch that every run sees (common random numbers).
        steps: number of optimiser steps.
        lr: learning rate, a number or an ``(n,)`` tensor of per-run rates.
        optimizer: "adam" (``torch.optim.Adam``: ``betas``, ``eps``) or
            "sgd" (``torch.optim.SGD``: ``momentum``, no dampening).
        weight_decay: L2 penalty added to the gradient, as torch.optim's.
        schedule: rate multiplier of step t (from 0), as ``LambdaLR``.
        max_grad_norm: clip each run's gradient to this norm over its own
            parameters (``clip_grad_norm_`` on run i alone); None: no clip.
        max_loss: freeze a run (rate 0 from then on) once its loss is not
            finite or exceeds this, as the batch-size sweeps do with runs
            whose learning rate is too high; None: never freeze.
    Returns a :class:`Trained` ``(params, losses (steps, n), alive (n,))``.
    """
    n, buffers = _check_state(base_model, params, buffers)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not callable(batches):
        raise ValueError(f"batches must be callable, got {batches!r}")
    if schedule is not None and not callable(schedule):
        raise ValueError(f"schedule must be callable, got {schedule!r}")
    steps = positive_int("steps", steps)
    _check_options(optimizer, betas, eps, momentum, weight_decay)
    clip = (
        None
        if max_grad_norm is None
        else positive("max_grad_norm", max_grad_norm)
    )
    cap = None if max_loss is None else positive("max_loss", max_loss)
    names = list(params)
    ps = [params[k].detach().clone().requires_grad_() for k in names]
    lr = _per_run_lr(lr, n, ps[0])
    m1 = [torch.zeros_like(p) for p in ps]
    m2 = [torch.zeros_like(p) for p in ps] if optimizer == "adam" else []
    alive = torch.ones(n, dtype=torch.bool)
    history = torch.empty(steps, n, dtype=ps[0].dtype)
    run_losses = _vmapped(base_model, loss_fn, shared)
    for t in range(steps):
        x, y = _batch(batches, t, n, shared)
        loss = run_losses(dict(zip(names, ps)), buffers, x, y)
        if loss.shape != (n,):
            raise ValueError(
                "loss_fn must return one number per run, got shape "
                f"{tuple(loss.shape[1:])} per run"
            )
        grads = torch.autograd.grad(loss.sum(), ps)
        with torch.no_grad():
            if cap is not None:
                alive &= torch.isfinite(loss) & (loss <= cap)
            history[t] = torch.where(alive, loss, math.nan)
            rate = lr * alive * (1.0 if schedule is None else schedule(t))
            if clip is not None:
                grads = _clip_per_run(grads, clip)
            if optimizer == "adam":
                _adam(ps, grads, m1, m2, rate, t + 1, betas, eps, weight_decay)
            else:
                _sgd(ps, grads, m1, rate, momentum, weight_decay)
    return Trained({k: p.detach() for k, p in zip(names, ps)}, history, alive)


def _expand(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """An ``(n,)`` per-run value shaped to broadcast against ``p``."""
    return v.reshape(-1, *([1] * (p.dim() - 1)))


def _clip_per_run(grads, max_norm: float):
    """``clip_grad_norm_`` of each run alone: the norm of run i's gradients
    over all its parameters, and the same 1e-6 guard."""
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    return [g * _expand(coef, g) for g in grads]


def _adam(ps, grads, m1, m2, rate, t, betas, eps, weight_decay):
    """Step t (from 1) of ``torch.optim.Adam`` with a per-run learning rate:
    its moment updates, bias corrections and eps in its order; the last
    division is regrouped, ``m / (denom / step)``, to save a pass."""
    b1, b2 = betas
    for p, g, m, v in zip(ps, grads, m1, m2):
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step_size = _expand(rate / (1 - b1**t), p)
        denom = v.sqrt().div_(math.sqrt(1 - b2**t)).add_(eps)
        p.addcdiv_(m, denom.div_(step_size), value=-1)


def _sgd(ps, grads, bufs, rate, momentum, weight_decay):
    """One step of ``torch.optim.SGD`` (momentum without dampening) with a
    per-run learning rate."""
    for p, g, buf in zip(ps, grads, bufs):
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        if momentum:  # buf starts at 0: step 0 gives buf = g, as torch's
            g = buf.mul_(momentum).add_(g)
        p.sub_(_expand(rate, p) * g)


def sample_batches(X, Y, batch_size: int, seeds, steps: int):
    """Mini-batches drawn with replacement, each run from its own stream.

    Run i's indices are ``torch.randint(N, (steps, batch_size),
    generator=torch.Generator().manual_seed(seeds[i]))``, all drawn here,
    so the returned function is pure and a plain loop can replay them.

    Args:
        X, Y: ``(N, ...)`` inputs and targets shared by every run.
        seeds: n ints, one data stream per run (repeat a seed to give two
            runs the same batches).
    Returns ``batches(step) -> (X[idx], Y[idx])`` of shapes
    ``(n, batch_size, ...)``; its attribute ``index`` is the
    ``(n, steps, batch_size)`` index tensor.
    """
    if not isinstance(X, torch.Tensor) or not isinstance(Y, torch.Tensor):
        raise ValueError("X and Y must be tensors")
    if X.dim() == 0 or Y.dim() == 0 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"X and Y must share their first axis, got {tuple(X.shape)} "
            f"and {tuple(Y.shape)}"
        )
    B, steps = (
        positive_int("batch_size", batch_size),
        positive_int("steps", steps),
    )
    index = torch.stack(
        [
            torch.randint(
                X.shape[0],
                (steps, B),
                generator=torch.Generator().manual_seed(s),
            )
            for s in _seed_list(seeds)
        ]
    )

    def batches(step: int):
        if not 0 <= step < steps:
            raise ValueError(f"step must lie in [0, {steps}), got {step}")
        idx = index[:, step].reshape(-1)  # index_select: fast gather
        return (
            X.index_select(0, idx).reshape(-1, B, *X.shape[1:]),
            Y.index_select(0, idx).reshape(-1, B, *Y.shape[1:]),
        )

    batches.index = index
    return batches


@torch.no_grad()
def run_outputs(
    base_model: nn.Module,
    params: dict,
    inputs: torch.Tensor,
    buffers: dict | None = None,
    shared: bool = True,
) -> torch.Tensor:
    """Every run's output on ``inputs``: ``(n, *output shape)``.

    ``inputs`` is one batch for all runs (``shared=True``, e.g. a test set)
    or ``(n, ...)`` with run i's inputs in slice i.
    """
    n, buffers = _check_state(base_model, params, buffers)
    if not shared and inputs.shape[0] != n:
        raise ValueError(f"inputs must lead with the {n} runs")
    return _outputs(base_model, shared)(params, buffers, inputs)


@torch.no_grad()
def evaluate_runs(
    base_model: nn.Module,
    params: dict,
    loss_fn: Callable,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    buffers: dict | None = None,
    shared: bool = True,
) -> torch.Tensor:
    """``loss_fn(output_i, targets)`` of every run: an ``(n,)`` tensor.

    Same conventions as :func:`run_outputs`; with ``shared=False`` the
    targets lead with the runs too.
    """
    n, buffers = _check_state(base_model, params, buffers)
    x, y = _batch(lambda _: (inputs, targets), 0, n, shared)
    loss = _vmapped(base_model, loss_fn, shared)(params, buffers, x, y)
    if loss.shape != (n,):
        raise ValueError("loss_fn must return one number per run")
    return loss


def run_model(
    base_model: nn.Module,
    params: dict,
    i: int,
    buffers: dict | None = None,
) -> nn.Module:
    """Run ``i`` as an ordinary ``nn.Module`` with its own copy of the
    weights (to inspect, plot or keep training it alone)."""
    n, buffers = _check_state(base_model, params, buffers)
    if isinstance(i, bool) or int(i) != i or not -n <= i < n:
        raise ValueError(f"i must be a run index in [0, {n}), got {i!r}")
    device = next(iter(params.values())).device
    model = copy.deepcopy(base_model).to_empty(device=device)
    with torch.no_grad():
        for k, v in params.items():
            model.get_parameter(k).copy_(v[i])
        for k, v in buffers.items():
            model.get_buffer(k).copy_(v[i])
    return model


__all__ = (
    "Trained",
    "evaluate_runs",
    "init_runs",
    "n_runs",
    "run_model",
    "run_outputs",
    "sample_batches",
    "train_runs",
)
