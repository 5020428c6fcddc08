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
def interleaved_latency(
    fns: dict, repeats: int = 20, warmup: int = 2
) -> dict[str, float]:
    """Median wall-clock seconds of each zero-argument callable in ``fns``,
    timed in rounds.

    Each round runs every callable once, in turn, so a slow spell of a shared
    machine hits all of them alike instead of whichever happened to be measured
    then. Returns name -> seconds.
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
    return {name: statistics.median(t) for name, t in times.items()}


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
