"""Pruning by hand: fine-grained magnitude masks, sensitivity scans, channel
pruning, MACs, latency.

The functions behind the pruning lab of the chapter "Pruning and quantization"
(hw11-q7a). Fine-grained pruning zeroes single weights of smallest magnitude
and keeps the tensor shapes; channel pruning removes whole output channels of a
convolution (and the matching BatchNorm entries and input channels of the next
convolution), so the model physically shrinks.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn


def _check_sparsity(sparsity: float) -> float:
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return float(sparsity)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The convolutions and linear layers of ``model`` by name
    (``"backbone.0"``, ``"classifier"``).
    """
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def select_layers(model: nn.Module, layers=None) -> dict[str, nn.Module]:
    """The prunable layers named in ``layers`` (default: all of them), by name.

    Raises ``ValueError`` naming a layer that is not a conv or linear layer of
    ``model``.
    """
    available = prunable_layers(model)
    for name in layers or []:
        if name not in available:
            raise ValueError(
                f"layer must be one of {sorted(available)}, got {name!r}"
            )
    return {n: available[n] for n in layers} if layers else available


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask of ``weight``'s shape that zeroes the ``round(sparsity *
    numel)`` smallest |w|.

    Args:
        weight: any shape.
        sparsity: fraction of entries to remove, in [0, 1).

    The threshold is the k-th smallest magnitude; entries strictly above it are
    kept (as ``torch.nn.utils.prune.l1_unstructured``, which also rounds
    ``sparsity * numel``). Assumes no ties at the threshold (true for trained
    float weights).
    """
    k = round(_check_sparsity(sparsity) * weight.numel())
    if k == 0:
        return torch.ones_like(weight)
    threshold = weight.detach().abs().flatten().kthvalue(k).values
    return (weight.detach().abs() > threshold).to(weight.dtype)


@torch.no_grad()
def fine_grained_prune(
    model: nn.Module, sparsity_by_layer: dict[str, float]
) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude weights of each named layer in place; return
    the masks.

    Args:
        sparsity_by_layer: layer name (a key of :func:`prunable_layers`) ->
            sparsity in [0, 1).

    Raises ``ValueError`` naming an unknown layer or a sparsity outside [0, 1).
    Keep the masks to re-apply them after every fine-tuning step
    (:func:`apply_masks`).
    """
    layers = prunable_layers(model)
    masks = {}
    for name, sparsity in sparsity_by_layer.items():
        if name not in layers:
            raise ValueError(
                f"layer must be one of {sorted(layers)}, got {name!r}"
            )
        masks[name] = magnitude_mask(layers[name].weight, sparsity)
    apply_masks(model, masks)
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Multiply each named layer's weight by its mask, in place (after every
    optimizer step).
    """
    layers = prunable_layers(model)
    for name, mask in masks.items():
        layers[name].weight.mul_(mask)


def sparsity_of(model: nn.Module) -> float:
    """Fraction of the prunable layers' weights that are exactly zero."""
    ws = [m.weight for m in prunable_layers(model).values()]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


@torch.no_grad()
def sensitivity_scan(
    model: nn.Module, evaluate, sparsities, layers=None
) -> dict[str, list[float]]:
    """Accuracy when ONE layer at a time is pruned to each sparsity, the others
    left dense.

    Args:
        evaluate: ``evaluate(model) -> float`` (e.g. accuracy on a held-out
            batch).
        sparsities: the sparsities to try, each in [0, 1).
        layers: names to scan (default: every conv and linear layer).

    Returns layer name -> list of accuracies, one per sparsity. ``model`` is
    restored afterwards.
    """
    result = {}
    for name, layer in select_layers(model, layers).items():
        w = layer.weight
        original = w.detach().clone()
        accs = []
        for s in sparsities:
            w.copy_(original * magnitude_mask(original, s))
            accs.append(evaluate(model))
        w.copy_(original)
        result[name] = accs
    return result


def conv_blocks(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """The (conv, BatchNorm) pairs of a :class:`llmbook.core.cnn.VGG` backbone,
    in order.
    """
    mods = list(model.backbone)
    return [
        (m, mods[i + 1])
        for i, m in enumerate(mods)
        if isinstance(m, nn.Conv2d)
    ]


def channels_to_keep(
    model: nn.Module, keep_ratio: float
) -> list[torch.Tensor]:
    """For each conv but the last, the output channels to keep (sorted
    indices), most important first.

    A channel's importance is the Frobenius norm of the NEXT conv's weight
    slice that reads it,
    ``||W_next[:, c]||``: a channel the next layer barely listens to can go.
        Each conv keeps
    ``round(keep_ratio * C_out)`` channels. The last conv feeds the classifier
    and keeps all.
    """
    if not 0.0 < float(keep_ratio) <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    convs = [c for c, _ in conv_blocks(model)]
    keep = []
    for conv, nxt in zip(convs[:-1], convs[1:]):
        importance = (
            nxt.weight.detach().pow(2).sum(dim=(0, 2, 3)).sqrt()
        )  # (C_out of conv,)
        n_keep = max(1, round(keep_ratio * conv.out_channels))
        keep.append(importance.argsort(descending=True)[:n_keep].sort().values)
    return keep


def _sliced_conv(conv: nn.Conv2d, out_idx, in_idx) -> nn.Conv2d:
    w = conv.weight.detach()[out_idx][:, in_idx]
    new = nn.Conv2d(
        w.shape[1],
        w.shape[0],
        conv.kernel_size,
        conv.stride,
        conv.padding,
        bias=conv.bias is not None,
    )
    new.weight.data.copy_(w)
    if conv.bias is not None:
        new.bias.data.copy_(conv.bias.detach()[out_idx])
    return new


def _sliced_bn(bn: nn.BatchNorm2d, idx) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).data.copy_(getattr(bn, name).detach()[idx])
    return new


def channel_prune(model: nn.Module, keep_ratio: float) -> nn.Module:
    """A new, physically smaller copy of a VGG keeping ``keep_ratio`` of each
    conv's channels.

    Each conv but the last loses its least important output channels
    (:func:`channels_to_keep`); its BatchNorm and the next conv's input
    channels are sliced to match. The original is untouched.
    """
    import copy

    keep = channels_to_keep(model, keep_ratio)
    new = copy.deepcopy(model)
    mods = list(new.backbone)
    conv_pos = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    in_idx = torch.arange(mods[conv_pos[0]].in_channels)
    for j, pos in enumerate(conv_pos):
        out_idx = (
            keep[j] if j < len(keep) else torch.arange(mods[pos].out_channels)
        )
        new.backbone[pos] = _sliced_conv(mods[pos], out_idx, in_idx)
        new.backbone[pos + 1] = _sliced_bn(mods[pos + 1], out_idx)
        in_idx = out_idx
    return new.train(model.training)  # new modules are built in training mode


@torch.no_grad()
def channel_mask_equivalent(model: nn.Module, keep_ratio: float) -> nn.Module:
    """A same-shape copy where the channels :func:`channel_prune` removes are
    silenced by zeros.

    Zeroing the next conv's input slices ``W_next[:, c]`` of each removed
    channel ``c`` makes the channel's (nonzero, BatchNorm-shifted) activation
    unread, so this model computes exactly what the channel-pruned one does.
    Used to test :func:`channel_prune`.
    """
    import copy

    keep = channels_to_keep(model, keep_ratio)
    new = copy.deepcopy(model)
    convs = [c for c, _ in conv_blocks(new)]
    for kept, nxt in zip(keep, convs[1:]):
        drop = torch.ones(nxt.in_channels, dtype=torch.bool)
        drop[kept] = False
        nxt.weight[:, drop] = 0.0
    return new


def conv_macs(
    c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, groups: int = 1
) -> int:
    """Multiply-accumulates of one conv on one image: ``c_out h_out w_out (c_in
    / groups) k^2``.

    Removing a fraction ``p`` of the channels of two consecutive convs scales
    the second one's MACs by ``(1 - p)^2``: both its ``c_in`` and ``c_out``
    shrink (chapter, hw11-q7a-vi).
    """
    for arg, v in (
        ("c_in", c_in),
        ("c_out", c_out),
        ("kernel", kernel),
        ("h_out", h_out),
        ("w_out", w_out),
        ("groups", groups),
    ):
        if int(v) != v or v < 1:
            raise ValueError(f"{arg} must be a positive integer, got {v}")
    return c_out * h_out * w_out * (c_in // groups) * kernel * kernel


@torch.no_grad()
def count_macs(model: nn.Module, input_shape) -> dict[str, int]:
    """MACs per conv and linear layer for one input of ``input_shape`` ``(C, H,
    W)``, by formula.

    The output sizes come from forward hooks; the MACs from :func:`conv_macs`
    (a linear layer is a 1 x 1 conv on a 1 x 1 image). Normalisation, ReLU and
    pooling are not counted.
    """
    macs, hooks = {}, []

    def hook(name):
        def f(m, inp, out):
            if isinstance(m, nn.Conv2d):
                macs[name] = conv_macs(
                    m.in_channels,
                    m.out_channels,
                    m.kernel_size[0],
                    out.shape[2],
                    out.shape[3],
                    m.groups,
                )
            else:
                macs[name] = conv_macs(m.in_features, m.out_features, 1, 1, 1)

        return f

    for name, m in prunable_layers(model).items():
        hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return macs


def count_parameters(model: nn.Module, nonzero_only: bool = False) -> int:
    """Number of parameters (or of nonzero ones) of ``model``."""
    return sum(
        int((p != 0).sum()) if nonzero_only else p.numel()
        for p in model.parameters()
    )


@torch.no_grad()
def median_latency(
    fn, x: torch.Tensor, repeats: int = 20, warmup: int = 3
) -> float:
    """Median wall-clock seconds of ``fn(x)`` over ``repeats`` runs after
    ``warmup`` runs.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def interleaved_times(
    fns: dict, repeats: int = 20, warmup: int = 2
) -> dict[str, np.ndarray]:
    """Wall-clock seconds of each zero-argument callable in ``fns`` in each
    of ``repeats`` rounds (after ``warmup`` untimed rounds).

    Each round runs every callable once, in turn, so a slow spell of a shared
    machine hits all of them alike instead of whichever happened to be measured
    then, and the times of one round can be compared pairwise. Returns
    name -> array of seconds, one per round.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: np.array(t) for name, t in times.items()}


def interleaved_latency(
    fns: dict, repeats: int = 20, warmup: int = 2
) -> dict[str, float]:
    """Median wall-clock seconds of each zero-argument callable in ``fns``
    over the rounds of :func:`interleaved_times`. Returns name -> seconds.
    """
    times = interleaved_times(fns, repeats, warmup)
    return {name: float(np.median(t)) for name, t in times.items()}


@torch.no_grad()
def layer_steps(model: nn.Module, x: torch.Tensor) -> list[tuple[str, object]]:
    """The forward pass of a VGG on ``x`` as ``(layer type, zero-argument
    callable)`` steps.

    Types: "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "mean", "Linear". Each
        callable runs one
    module on its stored input (ReLU out of place, so the inputs are not
    overwritten).
    """
    steps = [
        (type(m).__name__, torch.relu if isinstance(m, nn.ReLU) else m)
        for m in model.backbone
    ]
    steps += [
        ("mean", lambda t: t.mean(dim=(2, 3), keepdim=True).flatten(1)),
        ("Linear", model.classifier),
    ]
    model.eval()
    out, h = [], x
    for kind, f in steps:
        out.append((kind, lambda f=f, h=h: f(h)))
        h = f(h)
    return out


def time_by_layer_type(
    model: nn.Module, x: torch.Tensor, repeats: int = 20
) -> dict[str, float]:
    """Median seconds spent in each kind of layer of a VGG forward pass on
    ``x``, summed by type
    over the steps of :func:`layer_steps` (timed in interleaved rounds)."""
    steps = layer_steps(model, x)
    medians = interleaved_latency(
        {i: fn for i, (_, fn) in enumerate(steps)}, repeats, warmup=1
    )
    totals: dict[str, float] = {}
    for i, (kind, _) in enumerate(steps):
        totals[kind] = totals.get(kind, 0.0) + medians[i]
    return totals


# --- recovery after pruning: BatchNorm statistics, short fine-tune, seeds
# --------------------------------------------------------------------------


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on images
    ``x`` ``(n, C, H, W)`` (training data, never test data), in place; no
    weight changes.

    Pruning changes what each convolution outputs, so the statistics a
    BatchNorm stored during training no longer describe its input. One
    forward pass in training mode over all of ``x`` with ``momentum=None``
    (a cumulative average, here over one batch) sets each running mean to
    the per-channel mean of the BatchNorm's input and each running variance
    to its unbiased variance. Returns ``model``, in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        raise ValueError("model has no BatchNorm2d layer to recalibrate")
    if x.dim() != 4 or len(x) < 2:
        raise ValueError(f"x must be (n >= 2, C, H, W), got {tuple(x.shape)}")
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()(x)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    return model.eval()


def short_finetune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    seed: int,
    lr: float = 0.01,
    batch: int = 64,
    masks: dict | None = None,
    callback=None,
) -> nn.Module:
    """Fine-tune ``model`` in place for ``steps`` SGD steps of ``batch``
    images drawn (by ``seed``) from the pool ``x, y``; re-apply pruning
    ``masks`` after every step so pruned weights stay zero, then call
    ``callback(model)`` if given (e.g. the k-means QAT update).

    The seed picks both which ``steps * batch`` images of the pool are used
    and their order (:func:`llmbook.core.cnn.train`, one epoch, cosine
    schedule). Returns ``model`` in eval mode.
    """
    from llmbook.core import cnn

    n = steps * batch
    if int(steps) != steps or steps < 1 or n > len(y):
        raise ValueError(
            f"steps must be a positive integer with steps * batch <= "
            f"{len(y)} (the pool), got steps={steps}, batch={batch}"
        )
    pick = torch.randperm(
        len(y), generator=torch.Generator().manual_seed(seed)
    )
    pick = pick[:n]

    def after_step(m):
        if masks is not None:
            apply_masks(m, masks)
        if callback is not None:
            callback(m)

    cnn.train(
        model,
        x[pick],
        y[pick],
        epochs=1,
        batch=batch,
        lr=lr,
        seed=seed,
        callback=after_step,
    )
    return model.eval()


def recovery_arms(
    pruned: nn.Module,
    masks: dict | None,
    train: tuple,
    test: tuple,
    seeds,
    *,
    bn_images: int,
    steps: int,
    lr: float = 0.01,
) -> dict[str, list[float]]:
    """Test accuracy of a pruned model as it is, after BatchNorm
    recalibration, and after recalibration plus a short fine-tune.

    Args:
        pruned: the pruned model (left untouched; each arm works on a copy).
        masks: its pruning masks (None for a channel-pruned model).
        train, test: ``(x, y)`` pools; recalibration and fine-tuning see
            only ``train``, accuracies only ``test``.
        seeds: one run per seed; the seed draws the ``bn_images``
            recalibration images and the fine-tune's images and order.
        bn_images, steps, lr: :func:`recalibrate_batchnorm` and
            :func:`short_finetune` settings.
    Returns ``{"as pruned": [acc], "BN recalibrated": [acc per seed],
    "recalibrated + fine-tuned": [acc per seed]}`` (fractions in [0, 1];
    the first needs no seed: nothing random happens to it).
    """
    import copy

    from llmbook.core import cnn

    (x_tr, y_tr), (x_te, y_te) = train, test
    out = {
        "as pruned": [cnn.accuracy(pruned, x_te, y_te)],
        "BN recalibrated": [],
        "recalibrated + fine-tuned": [],
    }
    for seed in seeds:
        g = torch.Generator().manual_seed(10_000 + seed)
        pick = torch.randperm(len(y_tr), generator=g)[:bn_images]
        m = recalibrate_batchnorm(copy.deepcopy(pruned), x_tr[pick])
        out["BN recalibrated"].append(cnn.accuracy(m, x_te, y_te))
        short_finetune(
            m, x_tr, y_tr, steps=steps, seed=seed, lr=lr, masks=masks
        )
        out["recalibrated + fine-tuned"].append(cnn.accuracy(m, x_te, y_te))
    return out


def accuracy_interval(accuracies, n_test: int) -> dict[str, float]:
    """Median over runs of accuracies measured on ``n_test`` images, with an
    interval that covers every run's 95 % binomial (Clopper-Pearson)
    interval: from the lowest run's lower bound to the highest run's upper
    bound. One run gives its binomial interval.

    So the interval holds both the test-set noise and the spread over seeds.
    Returns ``{"median", "lo", "hi", "n"}`` (n: the number of runs), the
    form :func:`llmbook.book.verdict.glue_verdict` takes.
    """
    from llmbook.core.stats import binomial_interval

    accs = np.asarray(accuracies, dtype=float)
    if accs.ndim != 1 or accs.size < 1:
        raise ValueError("accuracies must be a non-empty 1-D sequence")
    if np.any((accs < 0) | (accs > 1)):
        raise ValueError(f"accuracies must lie in [0, 1], got {accs}")
    boxes = [binomial_interval(int(round(a * n_test)), n_test) for a in accs]
    return {
        "median": float(np.median(accs)),
        "lo": min(b["lo"] for b in boxes),
        "hi": max(b["hi"] for b in boxes),
        "n": int(accs.size),
    }


def allocate_sparsity(
    scan: dict,
    sparsities,
    base: float,
    sizes: dict,
    size_target: float,
    max_drop: float,
) -> dict:
    """Per-layer sparsities from a sensitivity scan that meet a size target
    with the least damage any single layer does alone.

    For a tolerance ``d``, each layer gets the largest scanned sparsity
    whose accuracy drop (``base`` minus its scanned accuracy) is at most
    ``d``. The tolerances tried are the drops the scan measured, smallest
    first, up to ``max_drop``; the first allocation that keeps at most
    ``size_target`` of the weights wins.

    Args:
        scan: layer -> accuracies at ``sparsities`` (:func:`sensitivity_scan`).
        base: the dense model's accuracy on the scan's images.
        sizes: layer -> number of weights.
        size_target: the fraction of the prunable weights to keep at most.
        max_drop: the largest tolerance allowed.
    Returns ``{"sparsity": layer -> sparsity, "kept": fraction kept,
    "tolerance": d, "met": bool}``; when no tolerance up to ``max_drop``
    meets the target, the allocation at ``max_drop`` with ``met=False``.
    """
    if not 0.0 < size_target <= 1.0:
        raise ValueError(f"size_target must be in (0, 1], got {size_target}")
    if max_drop < 0:
        raise ValueError(f"max_drop must be >= 0, got {max_drop}")
    drops = sorted(
        {max(0.0, base - a) for accs in scan.values() for a in accs} | {0.0}
    )
    tolerances = [d for d in drops if d <= max_drop] + [max_drop]
    total = sum(sizes[name] for name in scan)
    for d in tolerances:
        choice = {
            name: max(
                [s for s, a in zip(sparsities, accs) if base - a <= d],
                default=0.0,
            )
            for name, accs in scan.items()
        }
        kept = sum(sizes[n] * (1 - s) for n, s in choice.items()) / total
        if kept <= size_target:
            return {
                "sparsity": choice,
                "kept": kept,
                "tolerance": d,
                "met": True,
            }
    return {"sparsity": choice, "kept": kept, "tolerance": d, "met": False}


# --- weight statistics and figures of the pruning lab
# --------------------------------------------------------------------------


def weight_stats(layers: dict) -> "pd.DataFrame":
    """One row per layer (name -> module with ``.weight``): number of
    weights, mean / std, excess kurtosis, the share of weights below a
    quarter of the largest magnitude, and the share of the squared norm
    held by the smaller half of the magnitudes.

    Excess kurtosis ``E[(w - mean)^4] / std^4 - 3`` (population moments,
    as ``scipy.stats.kurtosis``) is 0 for a Gaussian, -1.2 for a uniform
    distribution (light tails) and positive for a peaked, long-tailed one.
    """
    import pandas as pd

    rows = []
    for name, layer in layers.items():
        w = layer.weight.detach().flatten().double()
        c = w - w.mean()
        a = w.abs().sort().values
        rows.append(
            {
                "layer": name,
                "weights": w.numel(),
                "mean / std": float(w.mean() / w.std()),
                "excess kurtosis": float(
                    c.pow(4).mean() / c.pow(2).mean() ** 2 - 3
                ),
                "share |w| < max/4": float((a < a[-1] / 4).double().mean()),
                "norm² in smallest half": float(
                    a[: a.numel() // 2].pow(2).sum() / a.pow(2).sum()
                ),
            }
        )
    return pd.DataFrame(rows).set_index("layer")


def plot_weight_histograms(layers: dict, init_layers: dict, title: str):
    """Histograms of each layer's trained weights (filled) over the same
    layer at initialisation (outline), 2 panels to a row; returns the figure.

    Two columns at the book's 6.4-inch width, so that on a 390 px phone its
    tick labels stay readable (issue 20; ``tests/test_phone.py`` measures
    them). Used in the pruning lab's weight histograms.
    """
    import math

    import matplotlib.pyplot as plt

    ncols = 2
    nrows = math.ceil(len(layers) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(6.4, 2.2 * nrows + 0.6), squeeze=False
    )
    axes = axes.flatten()
    for ax, (name, layer) in zip(axes, layers.items()):
        w = layer.weight.detach().flatten().numpy()
        w0 = init_layers[name].weight.detach().flatten().numpy()
        _, edges, _ = ax.hist(w, bins=40, color="#0072B2", label="trained")
        ax.hist(
            w0,
            bins=edges,
            histtype="step",
            color="#D55E00",
            lw=1.2,
            label="initial",
        )
        ax.set_title(f"{name} ({w.size:,})", fontsize=11)
        ax.set_xlabel("weight value", fontsize=10)
        ax.tick_params(labelsize=10)
    for ax in axes[::ncols]:
        ax.set_ylabel("count", fontsize=10)
    axes[0].legend(fontsize=10)
    for ax in axes[len(layers) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_recovery(
    table: "pd.DataFrame",
    dense: float,
    title: str,
    xlabel: str = "sparsity of every layer (fraction)",
    dense_label: str = "dense",
):
    """Test accuracy against sparsity, one line per recovery arm, with the
    interval of each point as an error bar.

    ``table`` rows are sparsities, columns ``(arm, "median" | "lo" |
    "hi")`` (a pandas MultiIndex); ``dense`` is drawn as a dashed line.
    """
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(xlabel, "test accuracy (fraction)", title)
    for i, arm in enumerate(table.columns.get_level_values(0).unique()):
        t = table[arm]
        ax.errorbar(
            t.index,
            t["median"],
            yerr=[t["median"] - t["lo"], t["hi"] - t["median"]],
            fmt="os^vD"[i % 5] + "-",
            capsize=3,
            color=f"C{i}",
            label=arm,
        )
    ax.axhline(dense, color="grey", ls="--", lw=1, label=dense_label)
    ax.legend(fontsize=9)
    return fig


def recovery_table(arms: dict, n_test: int) -> "pd.DataFrame":
    """The results of :func:`recovery_arms` for several pruned models
    (key -> arms) as one table: rows the keys, columns ``(arm, "median" |
    "lo" | "hi")`` from :func:`accuracy_interval` on ``n_test`` images."""
    import pandas as pd

    return pd.DataFrame(
        {
            key: {
                (arm, stat): v
                for arm, accs in runs.items()
                for stat, v in accuracy_interval(accs, n_test).items()
                if stat != "n"
            }
            for key, runs in arms.items()
        }
    ).T


def plot_scan(scan: dict, sparsities, base: float, sizes: dict, title: str):
    """The sensitivity scan: accuracy against the sparsity of the one pruned
    layer, one line per layer (legend: name and number of weights), the
    dense model dashed. Returns the figure."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "sparsity of the one pruned layer (fraction)",
        "test accuracy (fraction)",
        title,
    )
    for i, (name, accs) in enumerate(scan.items()):
        ax.plot(
            sparsities,
            accs,
            marker="os^vD<>"[i % 7],
            label=f"{name} ({sizes[name]:,})",
        )
    ax.axhline(base, color="grey", ls="--", lw=1, label="dense")
    ax.legend(fontsize=8, ncol=2)
    return fig


def latency_rounds(
    models: dict, x: torch.Tensor, batches, repeats: int
) -> dict:
    """Milliseconds per forward pass of each model on the first ``b`` images
    of ``x``, per round of :func:`interleaved_times`: ``{b: DataFrame}``
    with one row per round and one column per model; their medians are the
    latencies the pages report."""
    import pandas as pd

    return {
        b: 1e3
        * pd.DataFrame(
            interleaved_times(
                {k: (lambda m=m, xb=x[:b]: m(xb)) for k, m in models.items()},
                repeats,
            )
        )
        for b in batches
    }


#: Words for :func:`llmbook.book.verdict.glue_verdict` on a speed-up
#: interval against no speed-up, ``(1, 1)``.
SPEED_WORDS = {
    "better": "faster",
    "worse": "slower",
    "within noise": "not measurably faster",
}


def speedup(rounds, base: str, other: str, level: float = 0.95) -> dict:
    """Speed-up of model ``other`` over ``base`` from one batch size's
    :func:`latency_rounds` table: the median over rounds of base's time
    over other's in the same round, with its distribution-free ``level``
    interval (:func:`llmbook.core.stats.median_interval`): ``{"median",
    "lo", "hi", "n"}``. Pairing the rounds cancels a busy machine's slow
    spells; the interval is the evidence for "faster" (above 1), "slower"
    (below 1) or neither."""
    from llmbook.core.stats import median_interval

    return median_interval((rounds[base] / rounds[other]).to_numpy(), level)


def time_by_type(models: dict, x: torch.Tensor, repeats: int):
    """Seconds each kind of layer takes in each model's forward pass on
    ``x`` (rows layer types, columns models), every layer of every model
    timed on its own in the same interleaved rounds (:func:`layer_steps`)."""
    import pandas as pd

    steps, kinds = {}, {}
    for label, model in models.items():
        for i, (kind, fn) in enumerate(layer_steps(model, x)):
            steps[(label, i)], kinds[(label, i)] = fn, kind
    med = interleaved_latency(steps, repeats)
    parts = pd.Series({(k[0], kinds[k], k[1]): t for k, t in med.items()})
    return parts.groupby(level=[0, 1]).sum().unstack(0)[list(models)]
