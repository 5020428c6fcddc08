"""Quantization by hand: endpoint equations, k-means codebooks, fixed-point rescaling and the
integer-only CNN within one quantization step of the float reference; torch.ao and autograd
as cross-checks."""

import pytest
import torch
from torch import nn

from llmbook.core import cnn
from llmbook.topics import quant

SMALL_PLAN = (8, 12, "M", 16, 16, "M")


def small_model(seed=0):
    torch.manual_seed(seed)
    m = cnn.VGG(SMALL_PLAN)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def test_qrange_and_bad_bits():
    assert quant.qrange(8) == (-128, 127)
    assert quant.qrange(8, signed=False) == (0, 255)
    assert quant.qrange(2) == (-2, 1)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="bits"):
            quant.qrange(bad)
    with pytest.raises(ValueError, match="bits"):
        quant.kmeans_codebook(torch.randn(10), 0)


def test_scale_zero_point_maps_endpoints_exactly():
    # hand-worked: [-1, 3] onto [-128, 127]: S = 4/255, Z = round(-128 + 255/4) = -64
    s, z = quant.scale_zero_point(-1.0, 3.0)
    assert s == pytest.approx(4 / 255) and z == -64
    r = torch.tensor([-1.0, 0.0, 3.0])
    q = quant.linear_quantize(r, s, z)
    assert q.dtype == torch.int8 and q.tolist() == [-128, -64, 127]
    assert quant.linear_dequantize(q, s, z)[1] == 0.0  # zero is exact
    s, z = quant.scale_zero_point(0.0, 2.0, bits=4, signed=False)
    assert (s, z) == (pytest.approx(2 / 15), 0)


def test_quantize_dequantize_error_is_half_a_step():
    torch.manual_seed(0)
    r = torch.randn(1000) * 3
    s, z = quant.scale_zero_point(float(r.min()), float(r.max()))
    err = (
        (quant.linear_dequantize(quant.linear_quantize(r, s, z), s, z) - r)
        .abs()
        .max()
    )
    assert err <= s / 2 + 1e-6


def test_per_channel_weights_against_torch():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3) * torch.linspace(0.1, 2, 6).reshape(
        -1, 1, 1, 1
    )
    q, s = quant.quantize_weight(w, 8)
    assert torch.allclose(s, w.abs().amax(dim=(1, 2, 3)) / 127)
    ref = torch.fake_quantize_per_channel_affine(
        w, s, torch.zeros(6, dtype=torch.int32), 0, -128, 127
    )
    torch.testing.assert_close(q.float() * s.reshape(-1, 1, 1, 1), ref)
    assert q.abs().max() == 127


def test_bias_scale_is_product_of_scales():
    b, s_w = torch.tensor([0.5, -1.0]), torch.tensor([0.01, 0.02])
    q = quant.quantize_bias(b, s_w, 0.1)
    assert q.dtype == torch.int32 and q.tolist() == [500, -500]


@pytest.mark.parametrize("m", [0.3, 1e-4, 0.999999, 2.5, 0.0123])
def test_fixed_point_multiplier(m):
    m0, shift = quant.fixed_point_multiplier(
        torch.tensor(m, dtype=torch.float64)
    )
    assert 2**30 <= int(m0) < 2**31
    assert int(m0) / 2 ** int(shift) == pytest.approx(m, rel=1e-9)
    acc = torch.arange(-5000, 5000, 7, dtype=torch.int32).reshape(1, -1)
    got = quant.rescale(acc, m0, shift, 3, bits=32)
    want = torch.floor(acc.double() * m + 0.5).long() + 3
    assert (got.long() - want).abs().max() <= 1
    with pytest.raises(ValueError, match="m must be positive"):
        quant.fixed_point_multiplier(torch.tensor(0.0))


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_kmeans_at_most_2_to_the_n_values(bits):
    torch.manual_seed(bits)
    w = torch.randn(32, 16, 3, 3)
    codebook, labels = quant.kmeans_codebook(w, bits)
    assert codebook.numel() == 2**bits
    assert codebook[labels].unique().numel() <= 2**bits
    assert labels.shape == w.shape
    # each weight is at its nearest centroid
    d = (w.reshape(-1, 1) - codebook.reshape(1, -1)).abs()
    assert torch.equal(d.argmin(1), labels.flatten())


def test_kmeans_caps_at_number_of_weights_and_on_a_trained_layer():
    codebook, labels = quant.kmeans_codebook(torch.tensor([0.1, -0.3, 0.7]), 4)
    assert codebook.numel() == 3 and codebook[labels].unique().numel() == 3
    model, _ = cnn.load_trained()
    state = quant.kmeans_quantize_model(model, 4, layers=["backbone.3"])
    assert model.backbone[3].weight.unique().numel() == 16
    assert set(state) == {"backbone.3"}
    with pytest.raises(ValueError, match="layer"):
        quant.kmeans_quantize_model(model, 4, layers=["backbone.2"])


def test_kmeans_lower_error_than_linear_at_same_bits():
    torch.manual_seed(0)
    w = torch.randn(20000)
    codebook, labels = quant.kmeans_codebook(w, 3)
    s, z = quant.scale_zero_point(float(w.min()), float(w.max()), 3)
    lin = quant.linear_dequantize(quant.linear_quantize(w, s, z, 3), s, z)
    assert (codebook[labels] - w).pow(2).mean() < (lin - w).pow(2).mean()


def test_qat_centroid_update_follows_mean_cluster_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    model = nn.Sequential()
    model.classifier = layer
    state = quant.kmeans_quantize_model(model, 2)
    before = state["classifier"][0].clone()
    labels = state["classifier"][1]
    x = torch.randn(8, 20)
    loss = model(x).pow(2).sum()
    loss.backward()
    grad = layer.weight.grad.clone()
    with torch.no_grad():
        layer.weight -= 0.01 * grad  # a plain SGD step
    quant.kmeans_qat_callback(state)(model)
    after = state["classifier"][0]
    for k in range(4):
        sel = labels == k
        if sel.any():
            assert after[k] == pytest.approx(
                float(before[k] - 0.01 * grad[sel].mean()), abs=1e-6
            )
    assert layer.weight.unique().numel() <= 4


def test_storage_bits():
    assert quant.storage_bits(1000, 4, "kmeans") == 4000 + 32 * 16
    assert quant.storage_bits(1000, 4, "linear", n_channels=10) == 4000 + 320
    assert quant.storage_bits(10, 8, "float32") == 320
    with pytest.raises(ValueError, match="scheme"):
        quant.storage_bits(10, 8, "fp8")


def test_fold_batchnorm_matches_conv_then_bn():
    m = small_model()
    w, b = quant.fold_batchnorm(m.backbone[0], m.backbone[1])
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        want = m.backbone[1](m.backbone[0](x))
    torch.testing.assert_close(
        nn.functional.conv2d(x, w, b, padding=1), want, rtol=1e-5, atol=1e-5
    )


def test_int_conv_accumulate_is_exact_integer_conv():
    torch.manual_seed(0)
    qx = torch.randint(-128, 128, (2, 3, 5, 5), dtype=torch.int8)
    qw = torch.randint(-127, 128, (4, 3, 3, 3), dtype=torch.int8)
    qb = torch.randint(-1000, 1000, (4,), dtype=torch.int32)
    acc = quant.int_conv_accumulate(qx, -7, qw, qb, 1)
    x = nn.functional.pad(qx.double() + 7, (1, 1, 1, 1))  # pad in real zeros
    want = nn.functional.conv2d(x, qw.double(), qb.double())
    assert acc.dtype == torch.int32 and torch.equal(acc.double(), want)


@pytest.mark.parametrize("bits", [8, 6])
def test_integer_pipeline_within_one_step_per_layer(bits):
    m = small_model()
    torch.manual_seed(1)
    x = torch.rand(16, 1, 8, 8)
    qstages, (s_in, z_in) = quant.quantize_cnn(m, x, bits=bits)
    q_in = quant.linear_quantize(x, s_in, z_in, bits)
    outs = quant.int_forward(qstages, q_in, keep_all=True)
    q_min, q_max = quant.qrange(bits)
    for q, out in zip(qstages, outs):
        ref = quant.dequantized_stage_reference(q, q_in)
        lo, hi = q["s_y"] * (q_min - q["z_y"]), q["s_y"] * (q_max - q["z_y"])
        got = quant.linear_dequantize(out, q["s_y"], q["z_y"])
        assert (got - ref.clamp(lo, hi)).abs().max() <= q["s_y"], q["kind"]
        q_in = out
    # and end to end close to the float model
    with torch.no_grad():
        logits = m(x)
    last = qstages[-1]
    got = quant.linear_dequantize(outs[-1], last["s_y"], last["z_y"])
    assert (got - logits).abs().max() < 0.1 * logits.abs().max() * (
        256 / 2**bits
    )


def test_relu_is_the_clamp_at_the_output_zero_point():
    m = small_model()
    qstages, _ = quant.quantize_cnn(m, torch.rand(16, 1, 8, 8))
    convs = [q for q in qstages if q["kind"] == "conv"]
    assert all(
        q["z_y"] == -128 for q in convs
    )  # calibrated on ReLU outputs: r_min = 0


def test_int_pipeline_agrees_with_torch_ao_ptq():
    m, _ = cnn.load_trained()
    *_, x_te, y_te = cnn.mnist_subset(n_test=200)
    calib = x_te[:100]
    qstages, (s, z) = quant.quantize_cnn(m, calib)
    ours = quant.int_forward(
        qstages, quant.linear_quantize(x_te, s, z)
    ).argmax(1)
    ao = quant.torch_ao_ptq(m, calib, "x86")
    with torch.no_grad():
        theirs = ao(x_te).argmax(1)
        ref = m(x_te).argmax(1)
    assert (ours == theirs).float().mean() >= 0.98
    assert (ours == ref).float().mean() >= 0.98
    with pytest.raises(ValueError, match="engine"):
        quant.torch_ao_ptq(m, calib, "nope")


def test_quantile_init_uses_every_code_where_linspace_wastes_some():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample(
        (5000,)
    )  # long thin tails, like trained weights
    cb_q, lab_q = quant.kmeans_codebook(w, 6)
    cb_l, lab_l = quant.kmeans_codebook(w, 6, init="linspace")
    assert cb_q[lab_q].unique().numel() == 64
    assert cb_l[lab_l].unique().numel() < 64
    with pytest.raises(ValueError, match="init"):
        quant.kmeans_codebook(w, 2, init="random")


# --- lecture walkthrough: number formats and linear quantization ---------
# The lecture's 2-bit 4 x 4 example (DSC 291) and its stated results.
LECTURE_W = torch.tensor(
    [
        [2.09, -0.98, 1.48, 0.09],
        [0.05, -0.14, -1.08, 2.12],
        [-0.91, 1.92, 0.0, -1.03],
        [1.87, 0.0, 1.53, 1.49],
    ]
)


def test_lecture_asymmetric_2bit_example():
    q, s, z = quant.asymmetric_quantize(LECTURE_W, 2)
    assert round(s, 2) == 1.07 and z == -1
    assert q.tolist() == [
        [1, -2, 0, -1],
        [-1, -1, -2, 1],
        [-2, 1, -1, -2],
        [1, -1, 0, 0],
    ]
    codes = {1: "01", 0: "00", -1: "11", -2: "10"}  # two's complement
    for v, c in codes.items():
        assert format(v & 0b11, "02b") == c


def test_lecture_granularity_example():
    q, s = quant.symmetric_quantize(LECTURE_W, 2, "tensor")
    assert s.item() == pytest.approx(2.12)
    assert q.tolist() == [
        [1, 0, 1, 0],
        [0, 0, -1, 1],
        [0, 1, 0, 0],
        [1, 0, 1, 1],
    ]
    assert round(quant.quantization_error(LECTURE_W, q * s), 2) == 2.28
    q, s = quant.symmetric_quantize(LECTURE_W, 2, "channel")
    assert s.flatten().tolist() == pytest.approx([2.09, 2.12, 1.92, 1.87])
    assert q[2].tolist() == [0, 1, 0, -1]
    assert round(quant.quantization_error(LECTURE_W, q * s), 2) == 2.08
    # group of the whole row is per channel; group of one entry is exact
    qg, sg = quant.symmetric_quantize(LECTURE_W, 2, "group", group_size=4)
    assert torch.equal(qg, q)
    qg, sg = quant.symmetric_quantize(LECTURE_W, 2, "group", group_size=1)
    assert quant.quantization_error(LECTURE_W, qg * sg) < 1e-6


def test_lecture_kmeans_example():
    codebook, labels = quant.kmeans_codebook(LECTURE_W, 2)
    assert codebook.tolist() == pytest.approx([-1.0, 0.0, 1.5, 2.0])
    assert labels.tolist() == [
        [3, 0, 2, 1],
        [1, 1, 0, 3],
        [0, 3, 1, 0],
        [3, 1, 2, 2],
    ]


def test_group_error_is_half_a_group_step():
    torch.manual_seed(0)
    w = torch.randn(8, 64) * torch.logspace(-1, 1, 64)
    for g in (64, 16, 4):
        q, s = quant.symmetric_quantize(w, 4, "group", group_size=g)
        assert s.shape == w.shape
        # every entry within half of its own group's step
        assert ((q * s - w).abs() <= s / 2 + 1e-6).all()
        blocks = s.reshape(8, -1, g)
        assert (blocks == blocks[..., :1]).all()  # one scale per group
        want = w.reshape(8, -1, g).abs().amax(2) / 7
        torch.testing.assert_close(blocks[..., 0], want)
    assert quant.scale_overhead_bits(128, 16) == 0.125


def test_int_linear_expansion_and_float_product():
    torch.manual_seed(0)
    w, x = torch.randn(6, 32), torch.rand(32, 5) * 3 - 1
    for z_w_mode in ("symmetric", "asymmetric"):
        if z_w_mode == "symmetric":
            q_w, s_w = quant.symmetric_quantize(w, 8, "tensor")
            s_w, z_w = float(s_w), 0
        else:
            q_w, s_w, z_w = quant.asymmetric_quantize(w, 8)
        q_x, s_x, z_x = quant.asymmetric_quantize(x, 8)
        acc = quant.int_linear_accumulate(q_w, z_w, q_x, z_x)
        direct = (q_w.long() - z_w) @ (q_x.long() - z_x)
        assert acc.dtype == torch.int32 and torch.equal(acc.long(), direct)
        y = quant.linear_dequantize(q_w, s_w, z_w) @ quant.linear_dequantize(
            q_x, s_x, z_x
        )
        s_y, z_y = quant.scale_zero_point(float(y.min()), float(y.max()))
        q_y = quant.int_linear(q_w, s_w, z_w, q_x, s_x, z_x, s_y, z_y)
        # within one output step of the product of the dequantized inputs
        err = (quant.linear_dequantize(q_y, s_y, z_y) - y).abs().max()
        assert err <= s_y * 0.5 + 1e-6


def test_int_linear_equals_torch_ao():
    torch.manual_seed(1)
    q_w = torch.randint(-127, 128, (12, 40))
    q_x = torch.randint(0, 256, (7, 40))
    args = dict(s_w=0.013, s_x=0.021, s_y=0.37, z_y=118)
    ours = quant.int_linear(
        q_w,
        args["s_w"],
        0,
        q_x.T,
        args["s_x"],
        97,
        args["s_y"],
        args["z_y"],
        8,
        False,
    ).T
    ref = quant.torch_ao_linear(
        q_x, args["s_x"], 97, q_w, args["s_w"], args["s_y"], args["z_y"]
    )
    assert torch.equal(ours.long(), ref)


def test_llm_int8_lecture_vector():
    x = torch.tensor(
        [-0.10, -0.23, 0.08, -0.38, -0.28, -0.29, -2.11, 0.34, -0.53, -67.0]
    )
    q, c = quant.absmax_quantize(x)
    back = (q.float() * c / 127).tolist()
    lecture = [
        -0.00,
        -0.00,
        0.00,
        -0.53,
        -0.53,
        -0.53,
        -2.11,
        0.53,
        -0.53,
        -67.00,
    ]
    assert [round(v, 2) for v in back] == pytest.approx(lecture)


def test_int8_matmul_and_decomposition():
    torch.manual_seed(0)
    x, w = torch.randn(16, 64), torch.randn(64, 32) * 0.1
    x[:, 3] *= 60.0  # one outlier feature dimension
    ref = x @ w
    err = {}
    err["tensor"] = (quant.int8_matmul(x, w, False) - ref).norm()
    err["vector"] = (quant.int8_matmul(x, w, True) - ref).norm()
    out, cols = quant.int8_matmul_decomposed(x, w, 6.0)
    err["decomp"] = (out - ref).norm()
    assert cols.tolist() == [3]
    assert err["decomp"] < err["vector"] < err["tensor"]
    # no outliers: the decomposition is plain vector-wise int8
    x2 = torch.randn(16, 64)
    out2, cols2 = quant.int8_matmul_decomposed(x2, w, 1e3)
    assert cols2.numel() == 0
    assert torch.equal(out2, quant.int8_matmul(x2, w, True))


def test_smoothquant_keeps_the_product():
    torch.manual_seed(0)
    x, w = torch.randn(8, 16), torch.randn(16, 4)
    x[:, 2] *= 50
    s = quant.smoothquant_scales(x.abs().amax(0), w.abs().amax(1), 0.5)
    torch.testing.assert_close((x / s) @ (s[:, None] * w), x @ w)
    xs, ws = x / s, s[:, None] * w
    torch.testing.assert_close(xs.abs().amax(0), ws.abs().amax(1))


def test_new_quant_functions_reject_bad_arguments():
    with pytest.raises(ValueError, match="r"):
        quant.asymmetric_quantize(torch.tensor([]), 8)
    with pytest.raises(ValueError, match="bits"):
        quant.symmetric_quantize(LECTURE_W, 0)
    with pytest.raises(ValueError, match="granularity"):
        quant.symmetric_quantize(LECTURE_W, 2, "row")
    with pytest.raises(ValueError, match="group_size"):
        quant.symmetric_quantize(LECTURE_W, 2, "group", group_size=3)
    with pytest.raises(ValueError, match="group_size"):
        quant.scale_overhead_bits(0)
    with pytest.raises(ValueError, match="q_w"):
        quant.int_linear_accumulate(torch.ones(2, 3), 0, torch.ones(2, 2), 0)
    with pytest.raises(ValueError, match="x"):
        quant.absmax_quantize(torch.tensor([]))
    with pytest.raises(ValueError, match="threshold"):
        quant.int8_matmul_decomposed(torch.ones(2, 2), torch.ones(2, 2), 0)
    with pytest.raises(ValueError, match="alpha"):
        quant.smoothquant_scales(torch.ones(2), torch.ones(2), 1.5)


def test_fake_quantize_weight_levels_and_torch_cross_check():
    torch.manual_seed(0)
    w = torch.rand(6, 64, 3, 3) * 2 - 1  # every level gets weights
    for bits in (2, 3, 4):
        sym = quant.fake_quantize_weight(w, bits, "symmetric")
        mm = quant.fake_quantize_weight(w, bits, "minmax")
        for c in range(6):  # levels per channel: 2^b - 1 against 2^b
            assert sym[c].unique().numel() == 2**bits - 1
            assert mm[c].unique().numel() == 2**bits
        # min-max equals torch's per-channel affine fake quantization
        rows = w.reshape(6, -1)
        lo, hi = rows.amin(1).clamp(max=0), rows.amax(1).clamp(min=0)
        q_min, q_max = quant.qrange(bits)
        s = (hi - lo) / (q_max - q_min)
        z = torch.round(q_min - lo / s).to(torch.int32)
        ref = torch.fake_quantize_per_channel_affine(w, s, z, 0, q_min, q_max)
        torch.testing.assert_close(mm, ref)


def test_mse_clipping_never_worse_than_minmax_and_beats_brute_force():
    torch.manual_seed(1)
    w = torch.randn(4, 200) ** 3  # heavy tails: clipping pays
    err = {
        s: (quant.fake_quantize_weight(w, 2, s) - w).pow(2).sum(1)
        for s in ("minmax", "mse")
    }
    assert (err["mse"] <= err["minmax"] + 1e-6).all()
    assert (err["mse"] < 0.8 * err["minmax"]).any()
    # brute force over the same 100 clipping factors, channel by channel,
    # with torch's fake quantization on each clipped range
    q_min, q_max = quant.qrange(2)
    for c in range(4):
        errs = []
        for a in torch.linspace(0.01, 1.0, 100):
            lo, hi = a * w[c].min(), a * w[c].max()
            s = (hi - lo) / (q_max - q_min)
            z = int(torch.round(q_min - lo / s))
            r = torch.fake_quantize_per_tensor_affine(
                w[c], float(s), z, q_min, q_max
            )
            errs.append(float((r - w[c]).pow(2).sum()))
        assert float(err["mse"][c]) == pytest.approx(min(errs), rel=1e-4)


def test_weight_quantized_copy_leaves_model_and_k_means_matches():
    m = cnn.VGG((4, "M", 8, "M")).eval()
    before = m.backbone[0].weight.detach().clone()
    q = quant.weight_quantized_copy(m, 2, "kmeans")
    assert torch.equal(m.backbone[0].weight, before)
    cb, lab = quant.kmeans_codebook(before, 2)
    torch.testing.assert_close(q.backbone[0].weight, cb[lab])
    with pytest.raises(ValueError, match="scheme"):
        quant.fake_quantize_weight(before, 2, "nope")


def test_distinct_values_and_scale_candidates_tables():
    torch.manual_seed(0)
    w = torch.randn(4, 3)  # 12 weights: 8 bits give 12 values, not 256
    t = quant.distinct_values_table({"w": w}, [1, 2, 8])
    assert t["distinct values"].tolist() == [2, 4, 12]
    r = torch.tensor([-1.0, 0.0, 3.0])
    q_min, q_max = quant.qrange(8)
    cands = {
        "right": lambda a, b: (b - a) / (q_max - q_min),
        "max only": lambda a, b: b / q_max,
    }
    tab = quant.scale_candidates_table({"r": r}, cands)
    err = tab["range error"].droplevel(0)
    # the right S maps the range back within one step; r_max/q_max cannot
    # reach r_min = -1 from Z = q_min + round(1 / S) without a miss > 0.2
    assert err["right"] <= 1 / (q_max - q_min)
    s = 3.0 / q_max
    z = round(q_min + 1 / s)
    want = max(abs(s * (q_min - z) + 1), abs(s * (q_max - z) - 3)) / 4
    assert err["max only"] == pytest.approx(want) and want > 0.2


@pytest.mark.parametrize(
    "ratio, more, less, want",
    [
        (4.0, "coarser than", "finer than", "4.0 times coarser than"),
        (0.25, "coarser than", "finer than", "4.0 times finer than"),
        (1.0, "coarser than", "finer than", "the same as"),
        (1.004, "", "", "the same as"),
        (1.1, "", "", "1.1 times"),
    ],
)
def test_times_phrase(ratio, more, less, want):
    assert quant.times_phrase(ratio, more, less) == want


def test_storage_kb_sums_storage_bits():
    ws = [torch.zeros(4, 3), torch.zeros(2, 5)]
    # 2 bits a weight plus one 32-bit scale per row: 24 + 128 + 20 + 64 bits
    assert quant.storage_kb(ws, 2, "linear") == pytest.approx(236 / 8e3)
    # k-means: a codebook of min(4, n) float32 entries per tensor
    assert quant.storage_kb(ws, 2, "kmeans") == pytest.approx(
        (24 + 128 + 20 + 128) / 8e3
    )


def test_group_size_table_one_group_per_row_is_per_channel():
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    w = torch.randn(4, 8)
    t = quant.group_size_table(w, 4, [2, 8], scale_bits=16)
    q, s = quant.symmetric_quantize(w, 4, "channel")
    want = quant.quantization_error(w, q * s) / float(w.norm())
    assert t.loc[8, "relative error"] == pytest.approx(want)
    assert t["scale bits per weight"].tolist() == [8.0, 2.0]
    fig = quant.plot_group_sizes(t, 0.2, "t")
    ax, ax2 = fig.axes  # error, and the overhead on a twin axis
    assert ax.get_ylim()[1] == pytest.approx(0.2 * 1.15)
    assert [x.get_text() for x in ax.get_xticklabels()] == ["2", "8"]
    assert list(ax2.get_lines()[0].get_ydata()) == [8.0, 2.0]
    plt.close(fig)


def test_kmeans_linear_table_hand_values():
    torch.manual_seed(0)
    w = torch.randn(4, 3)  # 12 weights: 8-bit k-means keeps every one
    t = quant.kmeans_linear_table(w, [8])
    assert t.loc[8, "k-means error"] == pytest.approx(0.0, abs=1e-7)
    assert t.loc[8, "k-means bits/weight"] == 8 + 32  # 12 entries of 32 bits
    assert t.loc[8, "linear bits/weight"] == pytest.approx(8 + 32 * 4 / 12)
    q, s = quant.symmetric_quantize(w, 8, "channel")
    want = quant.quantization_error(w, q * s) / float(w.norm())
    assert t.loc[8, "linear error"] == pytest.approx(want)
    clipped = quant.fake_quantize_weight(w, 8, "mse")
    want = quant.quantization_error(w, clipped) / float(w.norm())
    assert t.loc[8, "linear, clipped error"] == pytest.approx(want)


def test_clipped_linear_is_the_fair_two_bit_baseline():
    # Gaussian weights: absmax 2-bit has 3 levels and rounds most weights to
    # 0; all 4 levels over an MSE-chosen range do far better
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(0))
    t = quant.kmeans_linear_table(w, [2])
    assert t.loc[2, "linear, clipped error"] < 0.6 * t.loc[2, "linear error"]
    assert t.loc[2, "k-means error"] <= t.loc[2, "linear, clipped error"]


def test_outlier_table_decomposition_at_its_extremes():
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(0)
    x0, w = torch.randn(6, 8, generator=g), torch.randn(8, 5, generator=g)
    cols = torch.tensor([1, 4])
    # a threshold above every |x|: nothing in 16 bits, as vector-wise int8
    t = quant.outlier_table(x0, w, cols, [1, 10], threshold=1e6)
    assert list(t.columns) == [
        "per tensor",
        "vector-wise",
        "decomposed",
        "16-bit columns",
        "fp16 only",
    ]
    assert t["16-bit columns"].tolist() == [0, 0]
    assert t["decomposed"].tolist() == t["vector-wise"].tolist()
    # a threshold below every |x|: every column in 16 bits, as fp16 only
    t = quant.outlier_table(x0, w, cols, [10], threshold=1e-9)
    assert t.loc[10, "16-bit columns"] == 8
    assert t.loc[10, "decomposed"] == pytest.approx(t.loc[10, "fp16 only"])
    fig = quant.plot_outlier_errors(t, "t")
    assert len(fig.axes[0].get_lines()) == 4
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_zero_point_candidates_table_hand_values():
    t = quant.zero_point_candidates_table(-1.0, 0.5, {"a": 2, "b": 2.5})
    assert t["r_min -> q"].tolist() == [0.0, 0.5]  # -1 / 0.5 + Z
    assert t["0 -> q"].tolist() == [2.0, 2.5]
    assert t["integer"].tolist() == [True, False]
