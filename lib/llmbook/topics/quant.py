"""Quantization by hand: k-means codebooks and linear (scale and zero-point)
integer arithmetic.

The book's one quantization module. It holds the general building blocks
(integer ranges for any bit width, scale and zero point from the endpoint
equations, quantize and dequantize, per-channel symmetric weights, int32 bias,
fixed-point rescaling, k-means codebooks) and, on top of them, integer-only
inference of the small CNN of :mod:`llmbook.core.cnn`.
Derivations: chapter "Pruning and quantization", hw11-q7b-i to hw11-q7b-vii.

Conventions: a real value ``r`` is represented by an integer ``q`` as ``r = S
    (q - Z)`` with a
positive float scale ``S`` and an integer zero point ``Z`` in the integer
range.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from llmbook.core.validate import positive, positive_int


def _check_bits(bits: int) -> int:
    if int(bits) != bits or bits < 1:
        raise ValueError(f"bits must be a positive integer, got {bits}")
    return int(bits)


# --- integer ranges, scale and zero point
# ------------------------------------------------------


def qrange(bits: int, signed: bool = True) -> tuple[int, int]:
    """The integer range ``(q_min, q_max)`` of ``bits``-bit integers:
    ``(-2^(b-1), 2^(b-1) - 1)``
    when ``signed``, else ``(0, 2^b - 1)``."""
    bits = _check_bits(bits)
    return (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if signed
        else (0, 2**bits - 1)
    )


def scale_zero_point(
    r_min: float, r_max: float, bits: int = 8, signed: bool = True
):
    """Scale ``S`` and zero point ``Z`` that map ``[r_min, r_max]`` onto the
    ``bits``-bit range.

    From the endpoint equations ``r_max = S (q_max - Z)`` and ``r_min = S
    (q_min - Z)``: subtracting gives ``S = (r_max - r_min) / (q_max - q_min)``;
    then ``Z = round(q_min - r_min / S)``, an integer so that ``r = 0`` is
    represented exactly. The range is first widened to contain 0 (hw11-q7b-iv,
    v). Returns ``(S, Z)`` as (float, int).
    """
    q_min, q_max = qrange(bits, signed)
    r_min, r_max = min(float(r_min), 0.0), max(float(r_max), 0.0)
    if r_max == r_min:
        return 1.0, 0 if signed else q_min
    scale = (r_max - r_min) / (q_max - q_min)
    zero_point = int(round(q_min - r_min / scale))
    return scale, min(max(zero_point, q_min), q_max)


def storage_dtype(bits: int, signed: bool = True) -> torch.dtype:
    """The smallest torch integer dtype that holds ``bits``-bit integers."""
    bits = _check_bits(bits)
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return (
        torch.int16
        if bits <= 16 and signed
        else torch.int32
        if bits <= 32
        else torch.int64
    )


def linear_quantize(
    r: torch.Tensor, scale, zero_point, bits: int = 8, signed: bool = True
):
    """``q = clamp(round(r / S) + Z, q_min, q_max)`` in :func:`storage_dtype`.

    ``scale`` and ``zero_point`` may be tensors that broadcast against ``r``
    (per channel).
    """
    q_min, q_max = qrange(bits, signed)
    q = torch.round(r / scale) + zero_point
    return q.clamp(q_min, q_max).to(storage_dtype(bits, signed))


def linear_dequantize(q: torch.Tensor, scale, zero_point) -> torch.Tensor:
    """``r = S (q - Z)`` as float32."""
    return scale * (q.to(torch.float32) - zero_point)


def symmetric_weight_scale(
    weight: torch.Tensor, bits: int = 8
) -> torch.Tensor:
    """Per-output-channel symmetric scales ``S_c = max |w_c| / q_max`` (zero
    point 0).

    Args:
        weight: ``(C_out, ...)``. Returns ``(C_out,)`` float32. With ``Z = 0``
            the range
        ``[-max|w_c|, max|w_c|]`` maps onto ``[-q_max, q_max]`` (``q_min``
        unused).
    """
    _, q_max = qrange(bits, True)
    w_max = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    return torch.where(
        w_max > 0, w_max / max(q_max, 1), torch.ones_like(w_max)
    )


def quantize_weight(weight: torch.Tensor, bits: int = 8):
    """Symmetric per-output-channel quantization: returns ``(q_w, S_w)``,
    ``q_w`` of weight's shape.
    """
    scale = symmetric_weight_scale(weight, bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return (
        linear_quantize(weight.detach(), scale.reshape(shape), 0, bits, True),
        scale,
    )


def quantize_bias(
    bias: torch.Tensor, weight_scale: torch.Tensor, input_scale: float
):
    """int32 bias ``q_b = round(b / (S_W S_X))`` with zero point 0, so it adds
    straight onto the int32 accumulator of ``sum q_w (q_x - Z_x)``, whose scale
    is ``S_W S_X``.
    """
    return torch.round(bias.detach() / (weight_scale * input_scale)).to(
        torch.int32
    )


def fixed_point_multiplier(m: torch.Tensor, bits: int = 31):
    """Write each positive real multiplier as ``m = m0 * 2^-shift`` with
    integer ``m0`` in ``[2^(bits-1), 2^bits)``. Returns ``(m0, shift)`` as
    int64 tensors.
    """
    m = torch.as_tensor(m, dtype=torch.float64)
    if (m <= 0).any():
        raise ValueError("m must be positive")
    exponent = (
        torch.floor(torch.log2(m)) + 1
    )  # m = f 2^exponent, f in [0.5, 1)
    m0 = torch.round(m * 2.0 ** (bits - exponent)).to(torch.int64)
    shift = (bits - exponent).to(torch.int64)
    carry = m0 >= 2**bits  # rounding up to 2^bits
    return torch.where(carry, m0 // 2, m0), torch.where(
        carry, shift - 1, shift
    )


def rescale(
    acc: torch.Tensor,
    m0,
    shift,
    zero_point: int,
    bits: int = 8,
    signed: bool = True,
):
    """Integer-only requantization ``q = clamp(Z + round(acc * m0 /
    2^shift))``.

    Args:
        acc: int32 accumulator ``(B, C, ...)``; ``m0``, ``shift``: from
            :func:`fixed_point_multiplier`, scalars or ``(C,)`` (per channel).
    The product is formed in int64 and rounded half up by adding
    ``2^(shift-1)`` before the arithmetic right shift: no float anywhere.
    """
    shape = (1, -1) + (1,) * (acc.dim() - 2)
    m0 = torch.as_tensor(m0, dtype=torch.int64).reshape(
        shape if torch.numel(torch.as_tensor(m0)) > 1 else ()
    )
    shift = torch.as_tensor(shift, dtype=torch.int64).reshape(m0.shape)
    prod = acc.to(torch.int64) * m0
    q = ((prod + (1 << (shift - 1))) >> shift) + zero_point
    q_min, q_max = qrange(bits, signed)
    return q.clamp(q_min, q_max).to(storage_dtype(bits, signed))


# --- k-means (codebook) quantization
# ----------------------------------------------------------


def kmeans_codebook(
    weight: torch.Tensor, bits: int, iters: int = 25, init: str = "quantile"
):
    """1-D k-means (Lloyd) of ``weight``'s entries into ``k = min(2^bits,
    numel)`` clusters.

    Centroids start at ``k`` evenly spaced quantiles of the weights
    (deterministic, and every cluster starts with at least one weight; evenly
    spaced *values* would leave the clusters in the sparse tails empty and
    waste codes: ``init="linspace"`` shows it); each iteration assigns every
    weight to its nearest centroid (a bucket search between sorted centroids)
    and moves each centroid to the mean of its cluster (an empty cluster keeps
    its place). Returns ``(codebook (k,), labels)`` with ``labels`` int64 of
    ``weight``'s shape; the quantized tensor ``codebook[labels]`` has at most
    ``2^bits`` distinct values (hw11-q7b-ii).
    """
    k = min(2 ** _check_bits(bits), weight.numel())
    w = weight.detach().flatten().to(torch.float32)
    if init == "quantile":
        codebook = w.sort().values[
            torch.linspace(0, w.numel() - 1, k).round().long()
        ]
    elif init == "linspace":
        codebook = torch.linspace(float(w.min()), float(w.max()), k)
    else:
        raise ValueError(
            f"init must be 'quantile' or 'linspace', got {init!r}"
        )
    for _ in range(iters):
        labels = assign_to_codebook(w, codebook)
        codebook = update_codebook(w, labels, codebook)
    codebook, _ = codebook.sort()
    return codebook, assign_to_codebook(w, codebook).reshape(weight.shape)


def assign_to_codebook(
    weight: torch.Tensor, codebook: torch.Tensor
) -> torch.Tensor:
    """Index of the nearest entry of the sorted ``codebook`` for every entry
    of ``weight``.
    """
    mids = (codebook[1:] + codebook[:-1]) / 2
    return torch.bucketize(weight.detach(), mids)


def update_codebook(
    weight: torch.Tensor, labels: torch.Tensor, codebook: torch.Tensor
):
    """Each centroid becomes the mean of the weights labelled with it (empty
    clusters unchanged).

    In quantization-aware training this is the centroid update: after an SGD
    step ``w <- c[label] - lr g``, the mean of a cluster is ``c - lr mean(g
    over the cluster)``, so the centroid follows the average gradient of its
    weights (Han et al., Deep Compression).
    """
    k = codebook.numel()
    w, lab = weight.detach().flatten().to(torch.float32), labels.flatten()
    sums = torch.zeros(k).scatter_add_(0, lab, w)
    counts = torch.zeros(k).scatter_add_(0, lab, torch.ones_like(w))
    return torch.where(counts > 0, sums / counts.clamp(min=1), codebook)


@torch.no_grad()
def kmeans_quantize_model(model: nn.Module, bits: int, layers=None) -> dict:
    """Replace every conv/linear weight (or those named in ``layers``) by its
    k-means codebook values.

    Returns layer name -> ``(codebook, labels)``, the state
    :func:`kmeans_qat_callback` needs. Raises ``ValueError`` naming an unknown
    layer.
    """
    from llmbook.topics.prune import select_layers

    state = {}
    for name, layer in select_layers(model, layers).items():
        w = layer.weight
        codebook, labels = kmeans_codebook(w, bits)
        w.copy_(codebook[labels])
        state[name] = (codebook, labels)
    return state


def kmeans_qat_callback(state: dict):
    """A ``callback(model)`` for :func:`llmbook.core.cnn.train`: after each
    optimizer step, move each centroid to the mean of its cluster's updated
    weights and snap the weights back onto the
    codebook (cluster labels stay fixed). ``state`` is updated in place."""
    from llmbook.topics.prune import prunable_layers

    @torch.no_grad()
    def callback(model: nn.Module) -> None:
        layers = prunable_layers(model)
        for name, (codebook, labels) in state.items():
            w = layers[name].weight
            codebook = update_codebook(w, labels, codebook)
            w.copy_(codebook[labels])
            state[name] = (codebook, labels)

    return callback


def storage_bits(
    n_weights: int, bits: int, scheme: str, n_channels: int = 1
) -> int:
    """Bits to store one layer's weights: ``n bits`` plus the side information
    of ``scheme``.

    ``"kmeans"``: a float32 codebook of ``2^bits`` entries; ``"linear"``: one
        float32 scale per
    output channel (zero point 0); ``"float32"``: 32 bits per weight.
    """
    bits = _check_bits(bits)
    if scheme == "kmeans":
        return n_weights * bits + 32 * min(2**bits, n_weights)
    if scheme == "linear":
        return n_weights * bits + 32 * n_channels
    if scheme == "float32":
        return 32 * n_weights
    raise ValueError(
        f"scheme must be 'kmeans', 'linear' or 'float32', got {scheme!r}"
    )


# --- integer-only inference of the CNN
# -------------------------------------------------------


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    """Fold an eval-mode BatchNorm into the conv before it: returns float
    ``(W', b')`` with ``W'_c = W_c g_c / sqrt(v_c + eps)`` and ``b'_c = beta_c
    + (b_c - mu_c) g_c / sqrt(v_c + eps)``.
    """
    gain = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = (
        conv.bias.detach() if conv.bias is not None else torch.zeros_like(gain)
    )
    w = conv.weight.detach() * gain.reshape(-1, 1, 1, 1)
    return w, bn.bias.detach() + (bias - bn.running_mean) * gain


def float_stages(model: nn.Module) -> list[dict]:
    """A :class:`llmbook.core.cnn.VGG` as a list of float stages with BatchNorm
    folded into the convs: ``{"kind": "conv", "w", "b", "padding"}`` (each
    followed by ReLU), ``{"kind": "maxpool"}``,
    ``{"kind": "mean"}`` and ``{"kind": "linear", "w", "b"}``."""
    stages, mods = [], list(model.backbone)
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            w, b = fold_batchnorm(m, mods[i + 1])
            stages.append(
                {"kind": "conv", "w": w, "b": b, "padding": m.padding[0]}
            )
        elif isinstance(m, nn.MaxPool2d):
            stages.append({"kind": "maxpool"})
    stages.append({"kind": "mean"})
    stages.append(
        {
            "kind": "linear",
            "w": model.classifier.weight.detach(),
            "b": model.classifier.bias.detach(),
        }
    )
    return stages


def float_stage(stage: dict, x: torch.Tensor) -> torch.Tensor:
    """One float stage of :func:`float_stages` (conv stages include their
    ReLU).
    """
    kind = stage["kind"]
    if kind == "conv":
        return F.relu(
            F.conv2d(x, stage["w"], stage["b"], padding=stage["padding"])
        )
    if kind == "maxpool":
        return F.max_pool2d(x, 2)
    if kind == "mean":
        return x.mean(dim=(2, 3))
    return F.linear(x, stage["w"], stage["b"])


@torch.no_grad()
def quantize_cnn(
    model: nn.Module,
    x_calib: torch.Tensor,
    bits: int = 8,
    input_range=(0.0, 1.0),
):
    """Calibrate and quantize a VGG for integer-only inference
    (:func:`int_forward`).

    Weights: symmetric per output channel (:func:`quantize_weight`); biases
        int32 with
    ``S = S_W S_X``; activations: asymmetric, ``(S, Z)`` from the min and max
    each stage's output takes on the calibration batch ``x_calib`` (the input's
    from ``input_range``). Each conv/linear/mean stage stores its fixed-point
    multiplier ``M = S_W S_X / S_Y``. Returns ``(qstages, (S_in, Z_in))``.
    """
    bits = _check_bits(bits)
    s_x, z_x = scale_zero_point(*input_range, bits)
    x, qstages = x_calib, []
    for st in float_stages(model):
        x = float_stage(st, x)
        q = {"kind": st["kind"], "s_x": s_x, "z_x": z_x}
        if st["kind"] != "maxpool":  # max-pool keeps its input's (S, Z)
            s_x, z_x = scale_zero_point(float(x.min()), float(x.max()), bits)
        q.update(s_y=s_x, z_y=z_x, bits=bits)
        if "w" in st:
            q["q_w"], q["s_w"] = quantize_weight(st["w"], bits)
            q["q_b"] = quantize_bias(st["b"], q["s_w"], q["s_x"])
            q["padding"] = st.get("padding", 0)
            m = q["s_w"].double() * q["s_x"] / q["s_y"]
        else:
            m = torch.tensor(q["s_x"] / q["s_y"], dtype=torch.float64)
        q["m0"], q["shift"] = fixed_point_multiplier(m)
        qstages.append(q)
    return qstages, scale_zero_point(*input_range, bits)


def int_conv_accumulate(
    q_x: torch.Tensor,
    z_x: int,
    q_w: torch.Tensor,
    q_b: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """int32 accumulator ``sum q_w (q_x - Z_x) + q_b`` of a conv (a linear
    layer is a 1 x 1 conv).

    Args:
        q_x: ``(B, C_in, H, W)`` int8; q_w: ``(C_out, C_in, k, k)`` int8; q_b:
            ``(C_out,)`` int32.
    Padding uses ``Z_x`` (the integer that means real 0). The products are int8
    x int8 (``q_w q_x``); the zero-point term ``Z_x sum q_w`` is subtracted
    once per output channel. Returns ``(B, C_out, H', W')`` int32.
    """
    c_out, _, k, _ = q_w.shape
    x = F.pad(q_x.to(torch.int32), (padding,) * 4, value=z_x)
    h, w = x.shape[2] - k + 1, x.shape[3] - k + 1
    cols = (
        F.unfold(x.to(torch.float32), k).round().to(torch.int32)
    )  # exact: |q| <= 128 (im2col)
    wm = q_w.reshape(c_out, -1).to(torch.int32)
    acc = (
        wm @ cols
        - z_x * wm.sum(dim=1, keepdim=True, dtype=torch.int32)
        + q_b.reshape(-1, 1)
    )
    return acc.reshape(q_x.shape[0], c_out, h, w)


def int_stage(q: dict, q_x: torch.Tensor) -> torch.Tensor:
    """One integer-only stage of :func:`quantize_cnn`: int8 in, int8 out, no
    float arithmetic.

    conv: int32 accumulation, fixed-point rescale, clamp to ``[Z_y, q_max]``
        (the ReLU: the
    output zero point is ``q_min`` after calibration on ReLU outputs, so
    clamping at ``q_min`` is clamping at real 0); maxpool: max of integers;
    mean: int32 sum over pixels, rescaled by ``S_x / (S_y H W)``; linear: as
    conv, clamped to the full range.
    """
    kind, bits = q["kind"], q["bits"]
    if kind == "maxpool":
        return F.max_pool2d(q_x, 2)
    if kind == "mean":
        n = q_x.shape[2] * q_x.shape[3]
        acc = (
            q_x.to(torch.int32).sum(dim=(2, 3)) - n * q["z_x"]
        )  # (B, C) int32
        m0, shift = fixed_point_multiplier(
            torch.tensor(q["s_x"] / (q["s_y"] * n))
        )
        return rescale(acc, m0, shift, q["z_y"], bits)
    if kind == "linear":
        acc = int_conv_accumulate(
            q_x[:, :, None, None],
            q["z_x"],
            q["q_w"][:, :, None, None],
            q["q_b"],
            0,
        )[:, :, 0, 0]
        return rescale(acc, q["m0"], q["shift"], q["z_y"], bits)
    acc = int_conv_accumulate(q_x, q["z_x"], q["q_w"], q["q_b"], q["padding"])
    out = rescale(acc, q["m0"], q["shift"], q["z_y"], bits)
    return out.clamp(min=q["z_y"])  # ReLU; a no-op when z_y == q_min


@torch.no_grad()
def int_forward(
    qstages: list[dict], q_x: torch.Tensor, keep_all: bool = False
):
    """Run the integer-only CNN on quantized images ``q_x``; return the int8
    logits
    (or, with ``keep_all``, the list of every stage's int8 output)."""
    outs = []
    for q in qstages:
        q_x = int_stage(q, q_x)
        outs.append(q_x)
    return outs if keep_all else q_x


def dequantized_stage_reference(q: dict, q_x: torch.Tensor) -> torch.Tensor:
    """The real-valued output a stage should produce from the dequantized
    input, weights and bias: the reference the integer stage must match within
    one output step ``S_y``.
    """
    x = linear_dequantize(q_x, q["s_x"], q["z_x"])
    if "q_w" in q:
        shape = (-1,) + (1,) * (q["q_w"].dim() - 1)
        w = linear_dequantize(q["q_w"], q["s_w"].reshape(shape), 0)
        b = q["q_b"].to(torch.float64) * q["s_w"].double() * q["s_x"]
        st = {
            "kind": q["kind"],
            "w": w,
            "b": b.float(),
            "padding": q.get("padding", 0),
        }
    else:
        st = {"kind": q["kind"]}
    return float_stage(st, x)


@torch.no_grad()
def torch_ao_ptq(
    model: nn.Module, x_calib: torch.Tensor, engine: str = "x86"
) -> nn.Module:
    """``torch.ao.quantization`` eager-mode post-training static int8
    quantization of a VGG.

    Fuses each conv-BN-ReLU, wraps the model in Quant/DeQuant stubs, calibrates
    the default observers of ``engine`` on ``x_calib`` and converts. A
    cross-check for :func:`quantize_cnn`. Its deprecation warnings are filtered
    by message in :mod:`llmbook.book.quiet`.
    """
    import torch.ao.quantization as tq

    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(
            "engine must be one of "
            f"{torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = engine
    m = copy.deepcopy(model).eval()
    mods = list(m.backbone)
    groups = [
        [f"backbone.{i}", f"backbone.{i + 1}", f"backbone.{i + 2}"]
        for i, mod in enumerate(mods)
        if isinstance(mod, nn.Conv2d)
    ]
    m = tq.fuse_modules(m, groups)
    wrapped = nn.Sequential(tq.QuantStub(), m, tq.DeQuantStub()).eval()
    wrapped.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(wrapped, inplace=True)
    wrapped(x_calib)
    return tq.convert(wrapped, inplace=True)


# --- granularity, integer-only matmul, outliers (lecture walkthrough)
# ------------------------------------------------------
# Added for the chapter "Number formats, linear quantization and mixed
# precision" (dls-linear-quant, dls-granularity, dls-kmeans-vs-linear,
# scale-precision). Nothing above is changed.


def _check_tensor(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    return x


def asymmetric_quantize(r: torch.Tensor, bits: int = 8, signed: bool = True):
    """Per-tensor asymmetric quantization with ``(S, Z)`` from the tensor's
    own min and max (:func:`scale_zero_point`).

    Args:
        r: any shape, not empty. Returns ``(q, S, Z)``: ``q`` integers of
        ``r``'s shape, ``S`` float, ``Z`` int (dls-linear-quant).
    """
    r = _check_tensor("r", r)
    s, z = scale_zero_point(float(r.min()), float(r.max()), bits, signed)
    return linear_quantize(r, s, z, bits, signed), s, z


def symmetric_quantize(
    r: torch.Tensor,
    bits: int = 8,
    granularity: str = "tensor",
    group_size: int | None = None,
):
    """Symmetric (``Z = 0``) quantization at a chosen granularity.

    ``S = max|r| / q_max`` over the whole tensor (``"tensor"``), over each
    row, the output channel of a weight matrix (``"channel"``), or over each
    run of ``group_size`` consecutive entries of a row (``"group"``; the row
    length must be a multiple of it). ``q = clamp(round(r / S), q_min,
    q_max)``; ``q_min = -2^(b-1)`` is never reached.

    Args:
        r: ``(rows, cols)`` (``"tensor"`` also takes any shape), not empty.
    Returns ``(q, S)``, ``S`` broadcastable against ``r`` (dls-granularity).
    """
    r = _check_tensor("r", r).detach().to(torch.float32)
    _, q_max = qrange(bits, True)
    q_max = max(q_max, 1)
    if granularity == "tensor":
        s = r.abs().max().reshape((1,) * r.dim())
    elif granularity == "channel":
        s = r.abs().amax(dim=1, keepdim=True)
    elif granularity == "group":
        if (
            group_size is None
            or int(group_size) != group_size
            or (group_size < 1 or r.shape[1] % group_size)
        ):
            raise ValueError(
                "group_size must be a positive divisor of the row length "
                f"{r.shape[1]}, got {group_size!r}"
            )
        g = r.reshape(r.shape[0], -1, int(group_size))
        s = g.abs().amax(dim=2, keepdim=True)
        s = s.expand_as(g).reshape(r.shape)
    else:
        raise ValueError(
            "granularity must be 'tensor', 'channel' or 'group', "
            f"got {granularity!r}"
        )
    s = torch.where(s > 0, s / q_max, torch.ones_like(s))
    return linear_quantize(r, s, 0, bits, True), s


def quantization_error(r: torch.Tensor, r_hat: torch.Tensor) -> float:
    """Frobenius norm ``||r - r_hat||_F`` of the reconstruction error."""
    return float(torch.linalg.vector_norm((r - r_hat).double()))


def scale_overhead_bits(group_size: int, scale_bits: int = 16) -> float:
    """Extra storage per weight of one ``scale_bits``-bit scale shared by
    ``group_size`` weights: ``scale_bits / group_size`` bits."""
    if int(group_size) != group_size or group_size < 1:
        raise ValueError(
            f"group_size must be a positive integer, got {group_size!r}"
        )
    return _check_bits(scale_bits) / group_size


def int_linear_accumulate(q_w, z_w: int, q_x, z_x: int) -> torch.Tensor:
    """int32 accumulator ``(q_W - Z_W)(q_X - Z_X)`` of ``Y = W X`` from the
    four-term expansion ``q_W q_X - Z_W q_X - Z_X q_W + Z_W Z_X``.

    Args:
        q_w: ``(m, k)`` integers; q_x: ``(k, n)`` integers; z_w, z_x: ints.
    ``q_W q_X`` is the only ``m k n`` term (``k``-term sums of N-bit
    products); ``Z_X q_W`` (row sums of ``q_W``) and ``Z_W Z_X k`` depend only
    on the weights and are precomputed; ``Z_W q_X`` needs the column sums of
    ``q_X`` at run time, and vanishes with ``Z_W = 0``. All in int32.
    """
    q_w, q_x = _check_tensor("q_w", q_w), _check_tensor("q_x", q_x)
    if q_w.dim() != 2 or q_x.dim() != 2 or q_w.shape[1] != q_x.shape[0]:
        raise ValueError(
            f"q_w (m, k) and q_x (k, n) must chain, got {tuple(q_w.shape)} "
            f"and {tuple(q_x.shape)}"
        )
    w, x = q_w.to(torch.int32), q_x.to(torch.int32)
    k = w.shape[1]
    acc = w @ x  # the heavy term: N-bit products, 32-bit sums
    acc = acc - z_x * w.sum(dim=1, keepdim=True, dtype=torch.int32)
    if z_w != 0:
        acc = acc - z_w * x.sum(dim=0, keepdim=True, dtype=torch.int32)
        acc = acc + z_w * z_x * k  # a constant
    return acc


def int_linear(
    q_w,
    s_w: float,
    z_w: int,
    q_x,
    s_x: float,
    z_x: int,
    s_y: float,
    z_y: int,
    bits: int = 8,
    signed: bool = True,
):
    """Integer-only ``q_Y`` of ``Y = W X``: int32 accumulation
    (:func:`int_linear_accumulate`), then the rescale by ``M = S_W S_X /
    S_Y`` as a fixed-point multiply and shift (:func:`fixed_point_multiplier`,
    :func:`rescale`), plus ``Z_Y``, clamped to ``bits`` bits. Shapes as in
    :func:`int_linear_accumulate`; returns ``(m, n)`` integers.
    """
    acc = int_linear_accumulate(q_w, z_w, q_x, z_x)
    m0, shift = fixed_point_multiplier(
        torch.tensor(s_w * s_x / s_y, dtype=torch.float64)
    )
    return rescale(acc, m0, shift, z_y, bits, signed)


def absmax_quantize(x: torch.Tensor, bits: int = 8, dim: int | None = None):
    """Absmax (symmetric) quantization as LLM.int8() writes it: ``q =
    round(x * q_max / c)`` with ``c = max |x|`` over the tensor or along
    ``dim`` (vector-wise). Returns ``(q, c)``; ``x ~ q c / q_max``
    (scale-precision)."""
    x = _check_tensor("x", x).detach().to(torch.float32)
    _, q_max = qrange(bits, True)
    c = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    c = torch.where(c > 0, c, torch.ones_like(c))
    q = torch.round(x * (q_max / c)).clamp(-q_max, q_max)
    return q.to(storage_dtype(bits, True)), c


def int8_matmul(x: torch.Tensor, w: torch.Tensor, vectorwise: bool = True):
    """``x @ w`` through absmax int8: per tensor, or vector-wise (one
    constant per row of ``x``, one per column of ``w``); int32 accumulation,
    then ``out = acc * (c_x outer c_w) / 127^2``.

    Args:
        x: ``(n, k)`` activations; w: ``(k, m)`` weights. Returns ``(n, m)``
        float32.
    """
    _check_tensor("x", x), _check_tensor("w", w)
    q_x, c_x = absmax_quantize(x, 8, 1 if vectorwise else None)
    q_w, c_w = absmax_quantize(w, 8, 0 if vectorwise else None)
    acc = q_x.to(torch.int32) @ q_w.to(torch.int32)
    return acc.to(torch.float32) * (c_x * c_w) / 127**2


def int8_matmul_decomposed(
    x: torch.Tensor, w: torch.Tensor, threshold: float = 6.0
):
    """LLM.int8() mixed-precision decomposition of ``x @ w``: the feature
    dimensions (columns of ``x``) where any ``|x| >= threshold`` are
    multiplied in 16 bits (float16 inputs, float32 accumulation); the rest
    go through vector-wise int8 (:func:`int8_matmul`). Returns ``(out,
    outlier_columns)``.
    """
    _check_tensor("x", x), _check_tensor("w", w)
    if not float(threshold) > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    cols = (x.abs() >= threshold).any(dim=0)
    out = torch.zeros(x.shape[0], w.shape[1])
    if (~cols).any():
        out = out + int8_matmul(x[:, ~cols], w[~cols, :], True)
    if cols.any():
        x16 = x[:, cols].to(torch.float16).float()
        w16 = w[cols, :].to(torch.float16).float()
        out = out + x16 @ w16
    return out, torch.nonzero(cols).flatten()


def smoothquant_scales(
    x_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors ``s_j = max|X_j|^alpha /
    max|W_j|^(1 - alpha)``: ``X diag(s)^-1`` and ``diag(s) W`` give the same
    product while the activations' outlier channels shrink and the weights'
    grow (alpha = 0.5 makes both channel maxima ``sqrt(max|X_j| max|W_j|)``).
    """
    x_absmax = _check_tensor("x_absmax", x_absmax)
    w_absmax = _check_tensor("w_absmax", w_absmax)
    if not 0 <= float(alpha) <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    s = x_absmax.clamp(min=1e-8) ** alpha / w_absmax.clamp(min=1e-8) ** (
        1 - alpha
    )
    return s


def torch_ao_linear(
    q_x, s_x: float, z_x: int, q_w, s_w: float, s_y: float, z_y: int
) -> torch.Tensor:
    """The same integer product by ``torch.ao``'s quantized linear (fbgemm
    or qnnpack): ``q_x`` ``(n, k)`` as quint8 with ``(S_X, Z_X)``, ``q_w``
    ``(m, k)`` as qint8 with ``(S_W, 0)``, output quint8 with ``(S_Y,
    Z_Y)``. Returns the output's integer codes ``(n, m)`` as int64. A
    cross-check for :func:`int_linear`."""
    from torch.ao.nn.quantized import functional as qF

    xq = torch._make_per_tensor_quantized_tensor(q_x.to(torch.uint8), s_x, z_x)
    wq = torch._make_per_tensor_quantized_tensor(q_w.to(torch.int8), s_w, 0)
    out = qF.linear(xq, wq, None, scale=s_y, zero_point=z_y)
    return out.int_repr().to(torch.int64)


# --- NF4 and double quantization (QLoRA)
# ------------------------------------------------------


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


# --- weight-only baselines for the lab: linear schemes against k-means
# --------------------------------------------------------------------------

WEIGHT_SCHEMES = ("symmetric", "minmax", "mse", "kmeans")


def fake_quantize_weight(
    weight: torch.Tensor, bits: int, scheme: str, grid: int = 100
) -> torch.Tensor:
    """``weight`` ``(C_out, ...)`` rounded onto a ``bits``-bit grid and back
    to float (weight-only quantization), per output channel.

    Schemes:
        ``"symmetric"``: ``Z = 0``, ``S = max|w| / q_max``: the levels
            ``-q_max .. q_max``, so ``2^bits - 1`` of them (3 at 2 bits;
            ``q_min`` is never used), as :func:`quantize_weight`.
        ``"minmax"``: asymmetric, ``(S, Z)`` from the channel's min and max
            (:func:`scale_zero_point`): all ``2^bits`` levels.
        ``"mse"``: asymmetric with all ``2^bits`` levels over the clipped
            range ``[a min, a max]``, ``a`` from ``grid`` evenly spaced
            factors in (0, 1] chosen per channel to minimise the squared
            error (weights outside the range are clamped to its ends).
        ``"kmeans"``: one k-means codebook of ``2^bits`` values for the
            whole tensor (:func:`kmeans_codebook`), for comparison.
    Returns a float32 tensor of ``weight``'s shape.
    """
    bits = _check_bits(bits)
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(
            f"scheme must be one of {WEIGHT_SCHEMES}, got {scheme!r}"
        )
    w = weight.detach().to(torch.float32)
    if scheme == "kmeans":
        codebook, labels = kmeans_codebook(w, bits)
        return codebook[labels]
    shape = (-1,) + (1,) * (w.dim() - 1)
    if scheme == "symmetric":
        q, s = quantize_weight(w, bits)
        return linear_dequantize(q, s.reshape(shape), 0)
    rows = w.reshape(w.shape[0], -1)  # (C, K)
    factors = (
        torch.linspace(1.0 / grid, 1.0, grid)
        if scheme == "mse"
        else torch.ones(1)
    )
    lo = (factors[:, None] * rows.amin(1)).clamp(max=0)  # (A, C)
    hi = (factors[:, None] * rows.amax(1)).clamp(min=0)
    q_min, q_max = qrange(bits)
    s = torch.where(hi > lo, (hi - lo) / (q_max - q_min), torch.ones_like(hi))
    z = torch.round(q_min - lo / s).clamp(q_min, q_max)
    q = (torch.round(rows / s[..., None]) + z[..., None]).clamp(q_min, q_max)
    r = s[..., None] * (q - z[..., None])  # (A, C, K)
    best = (r - rows).pow(2).sum(-1).argmin(0)  # (C,)
    return r[best, torch.arange(rows.shape[0])].reshape(w.shape)


@torch.no_grad()
def weight_quantized_copy(model: nn.Module, bits: int, scheme: str):
    """A copy of ``model`` with every conv and linear weight replaced by
    :func:`fake_quantize_weight` (activations stay float)."""
    from llmbook.topics.prune import prunable_layers

    m = copy.deepcopy(model)
    for layer in prunable_layers(m).values():
        layer.weight.copy_(fake_quantize_weight(layer.weight, bits, scheme))
    return m


def int_pipeline_check(
    model: nn.Module, qstages: list, q_x: torch.Tensor, x: torch.Tensor
):
    """Run the integer-only CNN on ``q_x`` (the quantized ``x``) and compare
    each stage with what it should produce from its own integer input
    (:func:`dequantized_stage_reference`, clamped to the output range) and
    with the float model on ``x``.

    Returns ``(table, logits_q)``: one row per stage (kind, dtype, ``S_y``,
    ``Z_y``, the largest error in output steps, the largest error against
    the float model relative to its largest value), and the int8 logits.
    """
    import pandas as pd

    outs = int_forward(qstages, q_x, keep_all=True)
    rows, q_in, h = [], q_x, x
    for st_f, q, out in zip(float_stages(model), qstages, outs):
        lo, hi = qrange(q["bits"])
        ref = dequantized_stage_reference(q, q_in).clamp(
            q["s_y"] * (lo - q["z_y"]), q["s_y"] * (hi - q["z_y"])
        )
        got = linear_dequantize(out, q["s_y"], q["z_y"])
        h = float_stage(st_f, h)  # the float model, end to end
        rows.append(
            {
                "stage": q["kind"],
                "dtype": str(out.dtype),
                "S_y": q["s_y"],
                "Z_y": q["z_y"],
                "max error (steps)": float((got - ref).abs().max() / q["s_y"]),
                "error vs float model (rel.)": float(
                    (got - h).abs().max() / h.abs().max()
                ),
            }
        )
        q_in = out
    return pd.DataFrame(rows), outs[-1]


def distinct_values_table(weights: dict, bits_range) -> "pd.DataFrame":
    """For each named weight tensor and each bit width ``n``, the number of
    distinct values its k-means quantization (:func:`kmeans_codebook`)
    leaves, beside ``2^n`` and the number of weights (hw11-q7b-ii)."""
    import pandas as pd

    rows = []
    for layer, w in weights.items():
        for n in bits_range:
            codebook, labels = kmeans_codebook(w, n)
            rows.append(
                {
                    "layer": layer,
                    "weights": w.numel(),
                    "bits n": n,
                    "2^n": 2**n,
                    "distinct values": int(codebook[labels].unique().numel()),
                }
            )
    return pd.DataFrame(rows)


def scale_candidates_table(tensors: dict, candidates: dict, bits: int = 8):
    """Each candidate formula ``S = f(r_min, r_max)`` on each tensor, with
    ``Z = round(q_min - r_min / S)``: where ``[q_min, q_max]`` maps back to,
    and the larger endpoint miss as a share of the range (hw11-q7b-iv).

    Returns a table indexed by ``(tensor with its range, candidate)``.
    """
    import pandas as pd

    q_min, q_max = qrange(bits)
    rows = []
    for tname, t in tensors.items():
        a, b = float(t.min()), float(t.max())
        for cname, f in candidates.items():
            s = f(a, b)
            z = round(q_min - a / s)
            lo, hi = s * (q_min - z), s * (q_max - z)
            rows.append(
                {
                    "tensor": f"{tname}: r in [{a:.3g}, {b:.3g}]",
                    "candidate": cname,
                    "S(q_min-Z)": lo,
                    "S(q_max-Z)": hi,
                    "range error": max(abs(lo - a), abs(hi - b)) / (b - a),
                }
            )
    return pd.DataFrame(rows).set_index(["tensor", "candidate"])


def times_phrase(
    ratio: float, more: str = "", less: str = "", digits: int = 2
) -> str:
    """A ratio in words for a sentence "... is <phrase> the other": ``"4.0
    times coarser than"`` (``more``), ``"4.0 times finer than"`` (``less``,
    for a ratio below 1, given as its inverse), or ``"the same as"`` when
    the ratio rounds to 1 at ``digits`` figures. Without ``more`` and
    ``less``: ``"1.1 times"`` or ``"the same as"``.
    """
    from llmbook.book import fmt

    r = positive("ratio", ratio)
    if fmt.sig(r, digits) == fmt.sig(1.0, digits):
        return "the same as"
    if r < 1 and less:
        return f"{fmt.sig(1 / r, digits)} times {less}"
    return f"{fmt.sig(r, digits)} times" + (f" {more}" if more else "")


def storage_kb(weights, bits: int, scheme: str) -> float:
    """Kilobytes (10^3 bytes) to store the weight tensors ``weights``, each
    by :func:`storage_bits` with ``scheme`` (one channel per row,
    ``w.shape[0]``). Used in quantization-lab (hw11-q7b-vii)."""
    return (
        sum(storage_bits(w.numel(), bits, scheme, w.shape[0]) for w in weights)
        / 8e3
    )


def group_size_table(
    w: torch.Tensor, bits: int, group_sizes, scale_bits: int = 16
) -> "pd.DataFrame":
    """Symmetric ``bits``-bit quantization of ``w`` (``(rows, cols)``) in
    groups of each size in ``group_sizes`` (each must divide ``cols``):
    ``relative error`` (Frobenius, :func:`quantization_error` over
    ``||w||_F``) and ``scale bits per weight``
    (:func:`scale_overhead_bits`), indexed by ``group size``.
    Used in formats-linear (granularity on a trained layer).
    """
    import pandas as pd

    rows = []
    for g in group_sizes:
        qg, sg = symmetric_quantize(w, bits, "group", group_size=g)
        rel = quantization_error(w, qg * sg) / float(w.norm())
        rows.append(
            {
                "group size": g,
                "relative error": rel,
                "scale bits per weight": scale_overhead_bits(g, scale_bits),
            }
        )
    return pd.DataFrame(rows).set_index("group size")


def plot_group_sizes(
    table, per_tensor: float, title: str, scale_bits: int = 16
):
    """The error of :func:`group_size_table` against the group size (log
    axis, circles), the per-tensor error as a dotted line, and the scale
    overhead in bits per weight on a second y axis (squares). Returns the
    figure (formats-linear)."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "group size (weights per scale)",
        "relative Frobenius error (fraction)",
        title,
        logx=True,
        figsize=(6.5, 3.8),
    )
    ax.plot(table.index, table["relative error"], "o-", label="per group")
    ax.axhline(per_tensor, ls=":", color="grey", label="per tensor")
    ax.set_xticks(list(table.index), [str(g) for g in table.index])
    ax2 = ax.twinx()
    ax2.plot(
        table.index,
        table["scale bits per weight"],
        "s--",
        color="C1",
        label="scale bits per weight",
    )
    ax2.set_ylabel(f"overhead (bits per weight, {scale_bits}-bit scales)")
    ax.set_ylim(0, per_tensor * 1.15)
    ax.legend(loc="center", bbox_to_anchor=(0.55, 0.75), fontsize=8)
    ax2.legend(loc="center", bbox_to_anchor=(0.55, 0.58), fontsize=8)
    return fig


def kmeans_linear_table(w: torch.Tensor, bits_list) -> "pd.DataFrame":
    """k-means (:func:`kmeans_codebook`) against two per-channel linear
    quantizers of ``w`` (``(rows, cols)``) at each bit width of
    ``bits_list``: symmetric absmax (:func:`symmetric_quantize`, ``2^bits -
    1`` levels, nothing clipped) and the fair baseline, asymmetric with all
    ``2^bits`` levels over the range that minimises the squared error
    (:func:`fake_quantize_weight` ``"mse"``). Relative Frobenius errors and
    bits per weight with the side information of :func:`storage_bits`
    (symmetric linear: one scale per row; the clipped one also stores a
    zero point per row), indexed by ``bits``. Used in formats-linear
    (k-means against linear on a trained layer).
    """
    import pandas as pd

    rows = []
    n_w, n_c = w.numel(), w.shape[0]
    norm = float(w.norm())
    for bits in bits_list:
        cb, lab = kmeans_codebook(w, bits)
        ql, sl = symmetric_quantize(w, bits, "channel")
        clipped = fake_quantize_weight(w, bits, "mse")
        rows.append(
            {
                "bits": bits,
                "k-means error": quantization_error(w, cb[lab]) / norm,
                "linear error": quantization_error(w, ql * sl) / norm,
                "linear, clipped error": quantization_error(w, clipped) / norm,
                "k-means bits/weight": storage_bits(n_w, bits, "kmeans") / n_w,
                "linear bits/weight": storage_bits(n_w, bits, "linear", n_c)
                / n_w,
            }
        )
    return pd.DataFrame(rows).set_index("bits")


def outlier_table(
    x0: torch.Tensor,
    w: torch.Tensor,
    cols,
    magnitudes,
    threshold: float = 6.0,
) -> "pd.DataFrame":
    """Relative error of ``X W`` when the feature columns ``cols`` of ``x0``
    (``(n, k)``; ``w`` is ``(k, m)``) are scaled by each of ``magnitudes``:
    int8 per tensor and vector-wise (:func:`int8_matmul`), the LLM.int8()
    decomposition at ``threshold`` (:func:`int8_matmul_decomposed`, with
    its number of 16-bit columns) and float16 inputs alone; errors are
    Frobenius norms relative to the float64 product. Indexed by ``outlier
    magnitude``. Used in formats-outliers.
    """
    import pandas as pd

    rows = []
    for m in magnitudes:
        x = x0.clone()
        x[:, cols] *= m
        ref = x.double() @ w.double()
        dec, found = int8_matmul_decomposed(x, w, threshold)
        outs = {
            "per tensor": int8_matmul(x, w, vectorwise=False),
            "vector-wise": int8_matmul(x, w, vectorwise=True),
            "decomposed": dec,
            "fp16 only": x.half().float() @ w.half().float(),
        }
        row = {"outlier magnitude": m, "16-bit columns": int(found.numel())}
        for k, y in outs.items():
            row[k] = float((y.double() - ref).norm()) / float(ref.norm())
        rows.append(row)
    columns = [*outs][:3] + ["16-bit columns", "fp16 only"]
    return pd.DataFrame(rows).set_index("outlier magnitude")[columns]


def plot_outlier_errors(table, title: str):
    """The four error columns of :func:`outlier_table` against the outlier
    magnitude, log-log. Returns the figure (formats-outliers)."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "outlier magnitude (times a typical feature)",
        "relative error of X W (fraction)",
        title,
        logx=True,
        logy=True,
        figsize=(6.5, 4),
    )
    for col in ("per tensor", "vector-wise", "decomposed", "fp16 only"):
        ax.plot(table.index, table[col], "o-", label=col)
    ax.legend(fontsize=8)
    return fig


def zero_point_candidates_table(
    r_min: float, scale: float, candidates: dict
) -> "pd.DataFrame":
    """Each candidate zero point ``Z`` (name -> value) with scale ``S``:
    whether it is an integer, and where ``r_min`` and 0 land,
    ``r / S + Z`` (the right ``Z`` sends ``r_min`` to ``q_min``).
    Used in quantization-lab (hw11-q7b-v).
    """
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "candidate": k,
                "Z": v,
                "integer": float(v).is_integer(),
                "r_min -> q": r_min / scale + v,
                "0 -> q": 0 / scale + v,
            }
            for k, v in candidates.items()
        ]
    )
