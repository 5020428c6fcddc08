"""Bit-level float decoding against torch/numpy for every format, including
subnormals, infinities and NaN; the format table against torch.finfo and
numpy.finfo; the stall of a low-precision running sum."""

import math

import numpy as np
import pytest
import torch

from llmbook.topics import formats

NAMES = sorted(formats.FORMATS)


def _specials(name):
    f = formats.get_format(name)
    p = formats.format_properties(name)
    vals = [
        0.0,
        -0.0,
        p["min_subnormal"],
        -p["min_subnormal"],
        p["min_normal"],
        p["max"],
        -p["max"],
        1.0,
        -2.5,
    ]
    if f.ieee_specials:
        vals += [math.inf, -math.inf]
    return vals


@pytest.mark.parametrize("name", NAMES)
def test_decode_rebuilds_random_and_special_values(name):
    f = formats.get_format(name)
    g = torch.Generator().manual_seed(0)
    p = formats.format_properties(name)
    # random magnitudes over the whole exponent range, both signs
    span = math.log2(p["max"]) - math.log2(p["min_subnormal"])
    exps = torch.rand(2000, generator=g, dtype=torch.float64) * span
    mags = torch.exp2(exps + math.log2(p["min_subnormal"]))
    signs = torch.where(torch.rand(2000, generator=g) < 0.5, -1.0, 1.0)
    x = torch.cat([mags * signs, torch.tensor(_specials(name))])
    x = x.clamp(-p["max"], p["max"]) if not f.ieee_specials else x
    xf = x.to(f.dtype)
    got = formats.compose_value(*formats.split_bits(xf), name)
    want = xf.to(torch.float64)
    assert torch.equal(got, want)
    # the sign of zero survives
    zeros = torch.tensor([0.0, -0.0], dtype=f.dtype)
    assert torch.signbit(
        formats.compose_value(*formats.split_bits(zeros), name)
    ).tolist() == [False, True]


@pytest.mark.parametrize("name", NAMES)
def test_nan_patterns(name):
    f = formats.get_format(name)
    x = torch.tensor([math.nan], dtype=torch.float32).to(f.dtype)
    s, e, m = formats.split_bits(x)
    assert int(e) == 2**f.exp_bits - 1 and int(m) != 0
    assert torch.isnan(formats.compose_value(s, e, m, name)).all()


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_fields_agree_with_numpy_bits(name):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(500) * 1e3).astype(name)
    a[:3] = [np.inf, -np.inf, 2.0**-20]
    uint = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64}
    raw = a.view(uint[name]).astype(object)
    f = formats.get_format(name)
    s, e, m = formats.split_bits(torch.from_numpy(a))
    for i in range(a.size):
        r = int(raw[i])
        assert int(s[i]) == r >> (f.bits - 1)
        assert int(e[i]) == (r >> f.man_bits) & (2**f.exp_bits - 1)
        assert int(m[i]) == r & (2**f.man_bits - 1)


def test_lecture_bit_examples():
    # the lecture: exponent field 01111010 is 2^(122-127); mantissa 11000...
    # with the implicit 1 is 1.75
    assert formats.compose_value(0, 0b01111010, 0, "float32") == 2.0**-5
    assert formats.bit_string(1.75, "bfloat16") == "0|01111111|1100000"
    assert formats.bit_string(-2.0, "float16") == "1|10000|0000000000"


@pytest.mark.parametrize("name", NAMES)
def test_table_against_torch_finfo(name):
    p = formats.format_properties(name)
    fi = torch.finfo(formats.get_format(name).dtype)
    assert p["bits"] == fi.bits
    assert p["max"] == fi.max and p["eps"] == fi.eps
    assert p["min_normal"] == fi.smallest_normal
    # smallest subnormal: the bit pattern 0...01
    one = torch.tensor([1], dtype=torch.int64).to(formats._INT_VIEW[p["bits"]])
    tiny = one.view(formats.get_format(name).dtype).double().item()
    assert p["min_subnormal"] == tiny
    assert p["bits"] == 1 + p["exp_bits"] + p["man_bits"]


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_table_against_numpy_finfo(name):
    p = formats.format_properties(name)
    fi = np.finfo(name)
    assert p["digits"] == fi.precision
    assert p["min_subnormal"] == float(fi.smallest_subnormal)
    assert (p["exp_bits"], p["man_bits"]) == (fi.nexp, fi.nmant)


def test_representable_values_count_and_spacing():
    v = formats.representable_values("float8_e4m3fn")
    # 128 non-negative patterns minus one NaN
    assert v.numel() == 127 and v.max() == 448.0
    v16 = formats.representable_values("float16")
    assert v16.numel() == 2**15 - 2**10  # exponent 31 is inf/NaN
    assert torch.equal(v16, v16.to(torch.float16).double())
    gaps = torch.diff(v16)
    assert gaps[v16[:-1] >= 1024].min() == 1.0  # spacing 2^(10-10)


@pytest.mark.parametrize(
    "inc,name",
    [
        (1.0, "float16"),
        (0.01, "float16"),
        (1e-3, "float16"),
        (0.01, "float32"),
    ],
)
def test_running_sum_stalls_where_predicted(inc, name):
    stall = formats.stall_value(inc, name)
    n = int(4 * stall / inc) if name == "float16" else 2_000_000
    sums = formats.running_sum(np.full(n, inc), name)
    if name == "float16":
        assert float(sums[-1]) == stall
        # and it was still growing just below the stall
        below = sums[sums < stall]
        assert below.size > 0 and float(below[-1]) < stall
    else:
        assert float(sums[-1]) < stall


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        formats.get_format("float12")
    with pytest.raises(ValueError, match="name"):
        formats.format_properties("int8")
    with pytest.raises(ValueError, match="x"):
        formats.split_bits([1.0])
    with pytest.raises(ValueError, match="name"):
        formats.representable_values("float32")
    with pytest.raises(ValueError, match="x"):
        formats.running_sum([], "float16")
    with pytest.raises(ValueError, match="name"):
        formats.running_sum([1.0], "bfloat16")
    with pytest.raises(ValueError, match="increment"):
        formats.stall_value(0.0, "float16")


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_update_lost_matches_rounding(name):
    f = formats.get_format(name)
    g = torch.Generator().manual_seed(0)
    # random 16-bit weights (normal and subnormal) plus exact powers of two
    raw = torch.randint(0, 2**15, (4000,), generator=g, dtype=torch.int16)
    w = raw.view(f.dtype).double()
    w = w[torch.isfinite(w) & (w.abs() < 1e4)]
    pows = torch.ldexp(
        torch.ones(29, dtype=torch.float64), torch.arange(-14, 15)
    )
    w = torch.cat([w, pows, -pows, torch.zeros(1, dtype=torch.float64)])
    # steps on a grid of 1/16 of the local gap: every w - step is exact in
    # float64, and ties (step = half a gap) occur
    k = torch.floor(torch.log2(w.abs())).clamp(min=1 - f.bias)
    j = torch.arange(-24, 25, dtype=torch.float64)
    step = torch.ldexp(j[None, :], (k - f.man_bits - 4)[:, None])
    ww = w[:, None].expand_as(step)
    real = (ww - step).to(f.dtype).double() == ww
    want = real & (step != 0)
    got = formats.update_lost(ww, step, name)
    assert torch.equal(got, want)
    # the grid hits both outcomes, ties and steps towards zero at 2^k
    assert 0 < int(got.sum()) < got.numel()


def test_update_lost_at_a_power_of_two():
    # bfloat16 w = 1.0 moved down by 0.003: below half ulp(1) = 2^-8, so
    # the half-ulp rule would call it lost, but the gap below 1 is 2^-8
    w, step = torch.tensor([1.0]), torch.tensor([0.003])
    assert 0.003 < 0.5 * 2.0**-7
    after = (w.double() - step.double()).to(torch.bfloat16).item()
    assert after == 0.99609375 and after != 1.0
    assert not formats.update_lost(w, step, "bfloat16").item()
    # the same step upwards is lost, and so is a smaller one downwards
    assert formats.update_lost(w, -step, "bfloat16").item()
    assert formats.update_lost(w, torch.tensor([0.0019]), "bfloat16").item()


def test_update_lost_bad_arguments():
    with pytest.raises(ValueError, match="representable"):
        formats.update_lost(
            torch.tensor([0.1]), torch.tensor([0.0]), "bfloat16"
        )
    with pytest.raises(ValueError, match="step"):
        formats.update_lost(torch.ones(2), torch.ones(3), "float16")


def _toy_data(n=512, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    return x, y


def test_master_weights_match_fp32_and_pure_bf16_loses_updates():
    x, y = _toy_data()
    kw = dict(steps=60, lr=0.01, batch=64, hidden=16)
    ref = formats.train_mlp_precision(x, y, "fp32", **kw)
    mix = formats.train_mlp_precision(x, y, "bf16-master", **kw)
    pure = formats.train_mlp_precision(x, y, "bf16", **kw)
    # bf16 rounding of the forward pass only: losses agree closely
    assert abs(mix["loss"][-1] - ref["loss"][-1]) < 0.02
    # w - lr g rounds back to w whenever lr |g| < ulp(w) / 2 = 2^-9 |w|
    assert pure["lost_updates"] > 0.5 and ref["lost_updates"] == 0.0


def test_dynamic_loss_scale_halves_on_overflow():
    x, y = _toy_data()
    r = formats.train_mlp_precision(
        x,
        y,
        "fp16-master",
        steps=40,
        batch=64,
        hidden=16,
        loss_scale=2.0**40,
        dynamic=True,
        growth_interval=1000,
    )
    # fp16 overflows above 65504: each overflow skips a step, halves scale
    assert r["skipped"] >= 1
    assert r["scales"][-1] == 2.0**40 / 2 ** r["skipped"]
    assert r["scales"][-1] * 1e-4 < 65504  # gradient scale now fits


def test_underflow_count_drops_with_loss_scaling():
    x, y = _toy_data()
    params = formats.mlp_init(20, 16, 3)
    params = [p * 1e-3 for p in params]  # tiny weights, tiny gradients
    z1, _, n = formats.underflow_count(
        params, x[:64], y[:64], torch.float16, 1.0
    )
    z2, inf2, _ = formats.underflow_count(
        params, x[:64], y[:64], torch.float16, 2.0**12
    )
    assert z1 > z2 and inf2 == 0 and n > 0


def test_bad_recipe():
    x, y = _toy_data()
    with pytest.raises(ValueError, match="recipe"):
        formats.train_mlp_precision(x, y, "fp8")
    with pytest.raises(ValueError, match="loss_scale"):
        formats.train_mlp_precision(x, y, "fp32", loss_scale=0)


def test_hidden_grad_closed_form():
    x, y = _toy_data(n=32)
    params = formats.mlp_init(20, 16, 3, seed=2)
    w1, b1, w2, b2 = params
    z = x @ w1 + b1
    p = torch.softmax(torch.relu(z) @ w2 + b2, dim=1)
    onehot = torch.nn.functional.one_hot(y, 3).float()
    want = ((p - onehot) / len(y)) @ w2.T * (z > 0).float()
    got = formats.hidden_grad(params, x, y, torch.float32)
    torch.testing.assert_close(got, want)
    scaled = formats.hidden_grad(params, x, y, torch.float32, 8.0)
    torch.testing.assert_close(scaled, 8.0 * want)
    half = formats.hidden_grad(params, x, y, torch.float16)
    assert half.dtype == torch.float16


def test_loss_scale_rule_matches_torch_amp():
    g = torch.Generator().manual_seed(3)
    flags = (torch.rand(300, generator=g) < 0.1).tolist()
    scale, good = 2.0**16, 0
    t_scale = torch.tensor([2.0**16])
    t_good = torch.tensor([0], dtype=torch.int32)
    for inf in flags:
        scale, good = formats.update_loss_scale(scale, good, inf, 7)
        torch._amp_update_scale_(
            t_scale, t_good, torch.tensor([float(inf)]), 2.0, 0.5, 7
        )
        assert scale == t_scale.item() and good == t_good.item()
    with pytest.raises(ValueError, match="growth_interval"):
        formats.update_loss_scale(1.0, 0, False, 0)


def test_dynamic_scaling_without_overflow_matches_static_unscaled():
    # a growing but never overflowing scale only multiplies and divides by
    # powers of two: the run matches the unscaled one, up to the few fp16
    # gradients the scale lifts out of the subnormal range (~5e-5 relative)
    x, y = _toy_data()
    kw = dict(steps=30, batch=64, hidden=16)
    plain = formats.train_mlp_precision(x, y, "fp16-master", **kw)
    dyn = formats.train_mlp_precision(
        x,
        y,
        "fp16-master",
        loss_scale=4.0,
        dynamic=True,
        growth_interval=5,
        **kw,
    )
    assert dyn["skipped"] == 0 and dyn["scales"][-1] == 4.0 * 2**5
    for a, b in zip(plain["params"], dyn["params"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_precision_runs_fp32_matches_core_trainer():
    # the fp32 recipe is plain SGD: core.trainer on the same starts and
    # batches (nn.Linear stores W transposed) must give the same losses
    from torch import nn
    from torch.nn import functional as F

    from llmbook.core import trainer

    x, y = _toy_data()
    seeds, lrs = [0, 1, 1], [0.05, 0.05, 0.2]
    r = formats.train_precision_runs(
        x, y, "fp32", seeds, steps=25, lr=lrs, batch=32, hidden=16
    )
    inits = [formats.mlp_init(20, 16, 3, s) for s in seeds]
    params = {
        "0.weight": torch.stack([p[0].T for p in inits]),
        "0.bias": torch.stack([p[1] for p in inits]),
        "2.weight": torch.stack([p[2].T for p in inits]),
        "2.bias": torch.stack([p[3] for p in inits]),
    }
    base = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
    batches = trainer.sample_batches(x, y, 32, [s + 1 for s in seeds], 25)
    ref = trainer.train_runs(
        base,
        params,
        F.cross_entropy,
        batches,
        25,
        torch.tensor(lrs),
        optimizer="sgd",
    )
    torch.testing.assert_close(r["loss"], ref.losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        r["params"][0], ref.params["0.weight"].transpose(1, 2)
    )
    assert r["lost_updates"].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "recipe, kw",
    [
        ("bf16", {}),
        ("fp16", {}),
        ("fp16-master", dict(loss_scale=2.0**30, dynamic=True)),
    ],
)
def test_precision_runs_are_independent(recipe, kw):
    # run i of a stack is bit for bit the run trained alone
    x, y = _toy_data()
    opts = dict(steps=30, batch=32, hidden=16, growth_interval=4, **kw)
    both = formats.train_precision_runs(
        x, y, recipe, [3, 5], lr=[0.01, 0.3], **opts
    )
    one = formats.train_precision_runs(x, y, recipe, [5], lr=0.3, **opts)
    assert torch.equal(both["loss"][:, 1], one["loss"][:, 0])
    for a, b in zip(both["params"], one["params"]):
        assert torch.equal(a[1], b[0])
    assert torch.equal(both["skipped"][1:], one["skipped"])


def test_precision_runs_pure_bf16_loses_updates_master_does_not():
    x, y = _toy_data()
    kw = dict(steps=60, lr=0.01, batch=64, hidden=16)
    ref = formats.train_precision_runs(x, y, "fp32", [0, 1], **kw)
    mix = formats.train_precision_runs(x, y, "bf16-master", [0, 1], **kw)
    pure = formats.train_precision_runs(x, y, "bf16", [0, 1], **kw)
    # bf16 rounding of the forward pass only: losses agree closely
    assert (mix["loss"][-1] - ref["loss"][-1]).abs().max() < 0.02
    # lr |g| < 2^-9 |w| for most weights: most updates are lost
    assert bool((pure["lost_updates"] > 0.5).all())
    assert mix["lost_updates"].tolist() == [0.0, 0.0]
    # a lost update leaves the weight where it started
    w0 = formats.mlp_init(20, 16, 3, 0)[0].to(torch.bfloat16).float()
    assert float((pure["params"][0][0] == w0).float().mean()) > 0.2


def test_precision_runs_dynamic_scale_per_run():
    x, y = _toy_data()
    r = formats.train_precision_runs(
        x,
        y,
        "fp16-master",
        [0, 1],
        steps=40,
        batch=64,
        hidden=16,
        loss_scale=2.0**40,
        dynamic=True,
        growth_interval=1000,
    )
    # each overflow skips that run's step and halves that run's scale
    # (scales[t] is the scale step t used; no growth in 40 steps)
    halvings = (r["scales"][1:] == r["scales"][:-1] / 2).sum(0)
    assert bool((r["scales"][1:] <= r["scales"][:-1]).all())
    assert bool((r["skipped"] >= 1).all())
    assert bool(((r["skipped"] - halvings) <= 1).all())
    assert bool((r["skipped"] >= halvings).all())
    assert bool((r["scales"][-1] * 1e-4 < 65504).all())


def test_precision_runs_bad_arguments():
    x, y = _toy_data()
    with pytest.raises(ValueError, match="recipe"):
        formats.train_precision_runs(x, y, "fp8", [0])
    with pytest.raises(ValueError, match="lr"):
        formats.train_precision_runs(x, y, "fp32", [0, 1], lr=[0.1] * 3)
    with pytest.raises(ValueError, match="seeds"):
        formats.train_precision_runs(x, y, "fp32", [])


def test_run_table_and_spread():
    x, y = _toy_data()
    r = formats.train_precision_runs(
        x, y, "bf16", [0, 1], steps=10, lr=[0.1, 0.2], batch=32, hidden=16
    )
    t = formats.run_table(r, x[:100], y[:100], last=4)
    assert t["seed"].tolist() == [0, 1]
    assert t["lr"].tolist() == pytest.approx([0.1, 0.2])
    torch.testing.assert_close(
        torch.tensor(t["loss"].tolist()), r["loss"][-4:].mean(0)
    )
    w = [p[1] for p in r["params"]]  # run 1 by hand
    want = (formats.mlp_forward(w, x[:100]).argmax(1) == y[:100]).float()
    assert t["accuracy"][1] == pytest.approx(float(want.mean()))
    assert t["correct"][1] == int(want.sum())
    with pytest.raises(ValueError, match="last"):
        formats.run_table(r, x, y, last=11)


def test_plot_lr_sweep_draws_median_and_range():
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.DataFrame(
        {
            "recipe": ["a"] * 4 + ["b"] * 4,
            "lr": [0.1, 0.1, 1.0, 1.0] * 2,
            "loss": [1.0, 3.0, 0.5, 0.7, 2.0, 2.0, 0.4, 0.6],
            "accuracy": [0.5, 0.7, 0.8, 0.9, 0.6, 0.6, 0.9, 0.9],
        }
    )
    fig = formats.plot_lr_sweep(table, ["a", "b"], ["A", "B"])
    # one column at the book's 6.4 in: readable on a phone (issue 20)
    assert fig.get_size_inches()[0] <= 6.4
    assert {a.get_subplotspec().colspan.start for a in fig.axes} == {0}
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if ln.get_marker() not in ("_",)]
    ys = sorted(tuple(ln.get_ydata()) for ln in lines if len(ln.get_ydata()))
    assert (2.0, 0.6) in ys and (2.0, 0.5) in ys  # medians of a and b
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    plt.close(fig)


def test_short_names_and_properties_table():
    assert set(formats.SHORT_NAMES) == set(formats.FORMATS)
    rows = [formats.format_properties(n) for n in ("float16", "float8_e4m3fn")]
    t = formats.properties_table(rows)
    assert list(t.columns) == ["float16", "e4m3fn"]  # one column per format
    # float16: largest 65504, eps 2^-10; E4M3 (OCP): largest 448
    assert t.loc["max", "float16"] == "6.55e+04"
    assert t.loc["eps", "float16"] == "0.000977"
    assert t.loc["max", "e4m3fn"] == "448"
    assert t.loc["bits", "float16"] == 16 and t.loc["man_bits", "e4m3fn"] == 3


def test_plot_spacing_draws_the_gap_of_each_format():
    import matplotlib.pyplot as plt

    fig = formats.plot_spacing(["float16", "float8_e4m3fn"], 2.0**-4, 4.0)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["fp16", "e4m3", "x 2^-7 (bf16's relative step)"]
    fp16 = ax.get_lines()[0]
    x, y = np.asarray(fp16.get_xdata()), np.asarray(fp16.get_ydata())
    assert x.min() >= 2.0**-4 and x.max() <= 4.0
    assert y[x == 1.0][0] == 2.0**-10  # float16's gap above 1: 2^-M
    plt.close(fig)
    with pytest.raises(ValueError, match="lo < hi"):
        formats.plot_spacing(["float16"], 1.0, 0.5)


def test_plot_running_sums_draws_three_sums_and_the_exact_line():
    import matplotlib.pyplot as plt

    adds = np.full(1000, 0.1)
    runs = {n: formats.running_sum(adds, n) for n in ("float16", "float32")}
    mixed = formats.running_sum(adds.astype(np.float16), "float32")
    fig = formats.plot_running_sums(runs, mixed, 0.1)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    k = np.asarray(lines[3].get_xdata())
    assert k[0] == 1 and k[-1] == 1000
    assert np.allclose(lines[3].get_ydata(), 0.1 * k)  # the exact sums
    assert np.array_equal(lines[0].get_ydata(), runs["float16"][k - 1])
    plt.close(fig)


def test_plot_loss_curves_median_of_the_sliding_mean():
    import matplotlib.pyplot as plt

    loss = torch.tensor(
        [[9.0, 1.0, 3.0], [9.0, 2.0, 4.0], [9.0, 3.0, 5.0], [9.0, 4.0, 6.0]]
    )
    out = {"a": {"lr": [0.1, 0.5, 0.5], "loss": loss}}
    fig = formats.plot_loss_curves(out, {"a": "A"}, 0.5, 2, "t")
    (line,) = fig.axes[0].get_lines()
    # windows of 2: run 1 gives 1.5, 2.5, 3.5 and run 2 gives 3.5, 4.5, 5.5;
    # torch's median of two is the lower one; the lr=0.1 run is left out
    assert list(line.get_xdata()) == [2, 3, 4]
    assert line.get_ydata().tolist() == [1.5, 2.5, 3.5]
    plt.close(fig)
    with pytest.raises(ValueError, match="lr"):
        formats.plot_loss_curves(out, {"a": "A"}, 1.0, 2, "t")


def test_plot_gradient_range_marks_the_format_limits():
    import matplotlib.pyplot as plt

    grads = {"w": torch.tensor([2.0**-3, 2.0**-3]), "a": torch.tensor([1e-7])}
    fig = formats.plot_gradient_range(grads, "w", 2.0**4)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["w", "a", "w x 16"]
    assert len(ax.patches) == 3  # two histograms and the scaled one
    # float16: smallest subnormal 2^-24, smallest normal 2^-14
    assert [ln.get_xdata()[0] for ln in ax.get_lines()] == [-24.0, -14.0]
    plt.close(fig)
