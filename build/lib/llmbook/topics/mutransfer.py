"""Learning rates that transfer across width: the maximal-update
parameterisation (muP) against the standard one, on a three-layer MLP swept
over widths and learning rates at once, with a cross-check against
Microsoft's ``mup`` package.

The lecture walkthrough "What training costs", section scale-small-proxies.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from llmbook.core.validate import positive, positive_array, positive_int


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
    :class:`llmbook.topics.batchsize.Problem`) with Adam at every learning
    rate of ``lrs`` at once, under :func:`mup_lr_scales`; return the final training
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
        problem.X.shape[1],
        problem.Y.shape[1],
        width,
        parameterisation,
        base_width,
        seed,
    )
    runs = len(lrs)
    params = [
        w.expand(runs, *w.shape).clone().requires_grad_(True) for w in init
    ]
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
        for w, c, b, l in zip(
            part["width"], curves, part["best lr"], part["loss"]
        ):
            (line,) = ax.plot(lrs, c, marker=".", label=f"width {w}")
            ax.plot(b, l, "*", ms=11, color=line.get_color(), mec="k", mew=0.5)
        ax.set(xscale="log", yscale="log", title=titles[p])
        # diverging runs leave the frame rather than squash the optima
        ax.set_ylim(
            0.8 * finite.min(), 1.2 * min(finite.max(), 100 * finite.min())
        )
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
                mup_package_run(
                    problem, w, lr, base_width, steps, batch_size, seed
                )
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
