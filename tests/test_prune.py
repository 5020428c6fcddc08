"""Hand pruning against torch.nn.utils.prune, the channel-pruned model against its masked twin,
MACs against the formula and torch.utils.flop_counter, and the CNN training script."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune
from torch.utils.flop_counter import FlopCounterMode

from llmbook.core import cnn, stats
from llmbook.topics import prune

SMALL_PLAN = (8, 12, "M", 16, 16, "M")


def small_model(seed=0):
    torch.manual_seed(seed)
    m = cnn.VGG(SMALL_PLAN)
    for mod in (
        m.modules()
    ):  # non-trivial BatchNorm statistics, so zeroing a conv is not enough
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return m.eval()


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.9, 0.999])
def test_magnitude_mask_equals_torch_prune(sparsity):
    torch.manual_seed(1)
    layer = nn.Conv2d(6, 10, 3)
    mask = prune.magnitude_mask(layer.weight, sparsity)
    tprune.l1_unstructured(layer, "weight", amount=sparsity)
    assert torch.equal(mask, layer.weight_mask)
    assert int((mask == 0).sum()) == round(sparsity * layer.weight.numel())


def test_fine_grained_prune_masks_per_layer_equal_torch_prune():
    a, b = small_model(), small_model()
    plan = {"backbone.0": 0.5, "backbone.3": 0.8, "classifier": 0.3}
    masks = prune.fine_grained_prune(a, plan)
    layers_b = prune.prunable_layers(b)
    for name, s in plan.items():
        tprune.l1_unstructured(layers_b[name], "weight", amount=s)
        assert torch.equal(masks[name], layers_b[name].weight_mask)
        assert torch.equal(
            prune.prunable_layers(a)[name].weight, layers_b[name].weight
        )


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity"):
        prune.magnitude_mask(torch.randn(5, 5), bad)


def test_unknown_layer_raises():
    with pytest.raises(ValueError, match="layer"):
        prune.fine_grained_prune(
            small_model(), {"backbone.1": 0.5}
        )  # a BatchNorm
    with pytest.raises(ValueError, match="layer"):
        prune.sensitivity_scan(
            small_model(), lambda m: 0.0, [0.5], layers=["nope"]
        )


def test_sensitivity_scan_restores_model_and_monotone_zeroing():
    m = small_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    counts = prune.sensitivity_scan(m, prune.sparsity_of, [0.0, 0.5, 0.9])
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    for accs in (
        counts.values()
    ):  # "evaluate" = overall sparsity: grows with the layer's
        assert accs[0] < accs[1] < accs[2]


@pytest.mark.parametrize("keep", [0.7, 0.5, 1.0])
def test_channel_pruned_equals_masked_model(keep):
    m = small_model()
    small = prune.channel_prune(m, keep)
    masked = prune.channel_mask_equivalent(m, keep)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
    assert not any(
        mod.training for mod in small.modules()
    )  # eval in, eval out
    convs = [c for c, _ in prune.conv_blocks(small)]
    assert [c.out_channels for c in convs[:-1]] == [
        round(keep * c) for c in (8, 12, 16)
    ]
    assert convs[-1].out_channels == 16


def test_channel_pruning_keeps_the_most_important_channels():
    m = small_model()
    keep = prune.channels_to_keep(m, 0.5)[0]
    importance = m.backbone[3].weight.detach().pow(2).sum(dim=(0, 2, 3))
    assert set(keep.tolist()) == set(importance.topk(4).indices.tolist())
    with pytest.raises(ValueError, match="keep_ratio"):
        prune.channels_to_keep(m, 0.0)


def test_conv_macs_hand_worked():
    # 3x3 conv 16 -> 32 on a 14x14 output: 32*14*14*16*9 = 903,168
    assert prune.conv_macs(16, 32, 3, 14, 14) == 903_168
    assert prune.conv_macs(16, 32, 3, 14, 14, groups=16) == 903_168 // 16
    with pytest.raises(ValueError, match="c_in"):
        prune.conv_macs(0, 3, 3, 1, 1)


@pytest.mark.parametrize("keep", [1.0, 0.7])
def test_count_macs_matches_flop_counter(keep):
    m = prune.channel_prune(small_model(), keep)
    macs = prune.count_macs(m, (1, 8, 8))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(torch.zeros(1, 1, 8, 8))
    assert 2 * sum(macs.values()) == counter.get_total_flops()


def test_channel_pruning_mac_ratio_is_quadratic_in_kept_fraction():
    m = small_model()
    dense = prune.count_macs(m, (1, 8, 8))
    small = prune.count_macs(prune.channel_prune(m, 0.5), (1, 8, 8))
    # inner convs lose half their inputs and half their outputs: a quarter of the MACs remain
    assert small["backbone.3"] * 4 == dense["backbone.3"]
    assert (
        small["backbone.0"] * 2 == dense["backbone.0"]
    )  # input channels (1) kept


def test_parameter_counts_and_latency():
    m = small_model()
    assert prune.count_parameters(m) == sum(p.numel() for p in m.parameters())
    prune.fine_grained_prune(m, {"backbone.0": 0.5})
    assert (
        prune.count_parameters(m, nonzero_only=True)
        == prune.count_parameters(m) - 36
    )
    t = prune.median_latency(m, torch.zeros(1, 1, 8, 8), repeats=3)
    assert 0 < t < 1
    kinds = prune.time_by_layer_type(m, torch.zeros(2, 1, 8, 8), repeats=2)
    assert set(kinds) == {
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "MaxPool2d",
        "mean",
        "Linear",
    }
    with pytest.raises(ValueError, match="repeats"):
        prune.median_latency(m, torch.zeros(1, 1, 8, 8), repeats=0)
    calls = []
    out = prune.interleaved_latency(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats=3,
        warmup=1,
    )
    assert calls == ["a", "b"] * 4 and set(out) == {"a", "b"}
    x = torch.randn(2, 1, 8, 8)
    steps = prune.layer_steps(m, x)
    with (
        torch.no_grad()
    ):  # the last step, on its stored input, gives the model's output
        torch.testing.assert_close(steps[-1][1](), m(x))


def _load_tool():
    path = Path(__file__).resolve().parents[1] / "tools" / "train_cnn.py"
    spec = importlib.util.spec_from_file_location("train_cnn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_script_fast_version_learns_and_checkpoint_is_what_it_says():
    tool = _load_tool()
    _, meta = tool.train_reference(
        epochs=1, n_train=256, threads=torch.get_num_threads()
    )
    assert meta["final_loss"] < 0.8 * meta["first_loss"]
    model, saved = cnn.load_trained()
    assert cnn.CHECKPOINT.stat().st_size <= 2e6
    assert (
        saved["plan"] == list(cnn.CHANNEL_PLAN) and saved["image_size"] == 14
    )
    *_, x_te, y_te = cnn.mnist_subset(seed=saved["seed"])
    assert cnn.accuracy(model, x_te, y_te) == pytest.approx(
        saved["test_accuracy"], abs=2e-3
    )
    assert saved["test_accuracy"] > 0.95


def test_data_split_shapes_and_bad_args():
    x_tr, y_tr, x_te, y_te = cnn.mnist_subset(n_test=100)
    assert x_tr.shape == (4900, 1, 14, 14) and x_te.shape == (100, 1, 14, 14)
    assert torch.bincount(y_te).tolist() == [10] * 10
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0
    with pytest.raises(ValueError, match="n_test"):
        cnn.mnist_subset(n_test=15)
    x, _, xt, _ = cnn.digits_subset()
    assert x.shape[1:] == (1, 8, 8) and len(xt) == 300


def test_recalibrate_batchnorm_sets_the_inputs_mean_and_unbiased_var():
    m = small_model()
    bn = m.backbone[1]
    seen = []
    bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.randn(32, 1, 8, 8)
    prune.recalibrate_batchnorm(m, x)
    h = seen[0].detach()
    torch.testing.assert_close(bn.running_mean, h.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(
        bn.running_var, h.var(dim=(0, 2, 3), unbiased=True)
    )
    assert bn.momentum == 0.1 and not m.training
    # the weights did not move, and the model now normalises x's statistics
    assert torch.equal(m.backbone[0].weight, small_model().backbone[0].weight)
    with pytest.raises(ValueError, match="x must be"):
        prune.recalibrate_batchnorm(m, torch.randn(1, 1, 8, 8))


def test_recalibration_undoes_stale_statistics_after_pruning():
    # a pruned model's stale BN statistics differ from its inputs'; after
    # recalibration on the same images the BN outputs have mean 0 (beta=0)
    m = small_model()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.bias.data.zero_()
    prune.fine_grained_prune(m, {"backbone.0": 0.8, "backbone.3": 0.8})
    x = torch.randn(64, 1, 8, 8)
    out = []
    m.backbone[1].register_forward_hook(
        lambda mod, i, o: out.append(o.clone())
    )
    with torch.no_grad():
        m(x)
    stale = out[-1].mean(dim=(0, 2, 3)).abs().max()
    prune.recalibrate_batchnorm(m, x)
    with torch.no_grad():
        m(x)
    fresh = out[-1].mean(dim=(0, 2, 3)).abs().max()
    assert fresh < 1e-5 < stale


def test_short_finetune_keeps_masks_and_is_seeded():
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    runs = []
    for seed in (0, 0, 1):
        m = small_model()
        masks = prune.fine_grained_prune(m, {"backbone.3": 0.7})
        prune.short_finetune(
            m, x, y, steps=2, batch=16, seed=seed, masks=masks
        )
        w = m.backbone[3].weight
        assert torch.equal(w == 0, masks["backbone.3"] == 0)
        runs.append(w.detach().clone())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    with pytest.raises(ValueError, match="steps"):
        prune.short_finetune(small_model(), x, y, steps=5, batch=16, seed=0)


def test_recovery_arms_shapes_and_untouched_model():
    x, y = torch.randn(80, 1, 8, 8), torch.randint(0, 10, (80,))
    m = small_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    out = prune.recovery_arms(
        m, None, (x, y), (x[:20], y[:20]), range(3), bn_images=32, steps=1
    )
    assert [len(v) for v in out.values()] == [1, 3, 3]
    assert out["as pruned"][0] == cnn.accuracy(small_model(), x[:20], y[:20])
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_accuracy_interval_covers_every_runs_binomial_interval():
    from scipy.stats import binomtest

    iv = prune.accuracy_interval([0.95, 0.97, 0.96], 1000)
    lo = binomtest(950, 1000).proportion_ci(0.95, "exact").low
    hi = binomtest(970, 1000).proportion_ci(0.95, "exact").high
    assert iv["median"] == 0.96 and iv["n"] == 3
    assert iv["lo"] == pytest.approx(lo) and iv["hi"] == pytest.approx(hi)
    one = prune.accuracy_interval([0.5], 100)
    assert one["lo"] < 0.5 < one["hi"]
    with pytest.raises(ValueError, match="accuracies"):
        prune.accuracy_interval([1.5], 10)


def test_allocate_sparsity_meets_the_target_with_the_least_tolerance():
    sp = [0.5, 0.9]
    scan = {"a": [0.98, 0.90], "b": [0.99, 0.97]}  # base 0.99
    sizes = {"a": 100, "b": 900}
    # tolerance 0: a 0.0, b 0.5 -> kept (100 + 450) / 1000 = 0.55
    got = prune.allocate_sparsity(scan, sp, 0.99, sizes, 0.6, 0.05)
    assert got["sparsity"] == {"a": 0.0, "b": 0.5} and got["met"]
    assert got["kept"] == pytest.approx(0.55) and got["tolerance"] == 0.0
    # target 0.2 needs b at 0.9 (drop 0.02) and a at 0.5 (drop 0.01)
    got = prune.allocate_sparsity(scan, sp, 0.99, sizes, 0.2, 0.05)
    assert got["sparsity"] == {"a": 0.5, "b": 0.9}
    assert got["kept"] == pytest.approx(0.14) and got["met"]
    assert got["tolerance"] == pytest.approx(0.02)
    # a target out of reach within max_drop is reported as missed
    got = prune.allocate_sparsity(scan, sp, 0.99, sizes, 0.1, 0.015)
    assert not got["met"] and got["sparsity"] == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="size_target"):
        prune.allocate_sparsity(scan, sp, 0.99, sizes, 0.0, 0.01)


def test_weight_stats_kurtosis_against_scipy():
    from scipy.stats import kurtosis

    m = small_model()
    stats = prune.weight_stats(prune.prunable_layers(m))
    for name, layer in prune.prunable_layers(m).items():
        w = layer.weight.detach().flatten().double().numpy()
        assert stats.loc[name, "excess kurtosis"] == pytest.approx(
            kurtosis(w), rel=1e-9
        )
    # a fresh (Kaiming uniform) layer is near the uniform's -1.2
    big = nn.Linear(400, 400)
    k = prune.weight_stats({"big": big}).loc["big", "excess kurtosis"]
    assert k == pytest.approx(-1.2, abs=0.02)


def test_figures_and_tables_of_the_lab():
    m = small_model()
    layers = prune.prunable_layers(m)
    fig = prune.plot_weight_histograms(layers, layers, "t")
    assert len([a for a in fig.axes if a.has_data()]) == len(layers)
    # two columns at the book's width, readable on a phone (issue 20)
    cols = {a.get_subplotspec().colspan.start for a in fig.axes}
    assert cols == {0, 1} and fig.get_size_inches()[0] <= 6.4
    rec = prune.recovery_table(
        {0.5: {"x": [0.5], "y": [0.6, 0.7]}, 0.9: {"x": [0.1], "y": [0.2]}},
        100,
    )
    assert rec.loc[0.5, ("y", "median")] == pytest.approx(0.65)
    assert rec.loc[0.9, ("x", "lo")] < 0.1 < rec.loc[0.9, ("x", "hi")]
    assert prune.plot_recovery(rec, 0.9, "t").axes[0].has_data()
    scan = {"a": [0.9, 0.8], "b": [0.95, 0.9]}
    fig = prune.plot_scan(scan, [0.5, 0.9], 0.97, {"a": 1, "b": 2}, "t")
    assert len(fig.axes[0].get_lines()) == 3
    parts = prune.time_by_type(
        {"m": m, "again": m}, torch.zeros(2, 1, 8, 8), 2
    )
    assert list(parts.columns) == ["m", "again"] and "Conv2d" in parts.index
    rounds = prune.latency_rounds({"m": m}, torch.zeros(4, 1, 8, 8), [4], 3)
    assert rounds[4].shape == (3, 1) and (rounds[4].values > 0).all()


def test_speedup_pairs_the_rounds():
    import pandas as pd

    # a slow spell in round 3 hits both models; the paired ratio ignores it
    base = np.array([2.0, 2.1, 2.0, 9.0, 2.0, 2.2, 2.1, 2.0, 2.0, 2.1])
    rounds = pd.DataFrame({"dense": base, "slim": base / 1.5})
    sp = prune.speedup(rounds, "dense", "slim")
    assert sp["median"] == pytest.approx(1.5)
    assert sp["lo"] == pytest.approx(1.5) and sp["hi"] == pytest.approx(1.5)
    noisy = pd.DataFrame({"a": base, "b": base[::-1]})
    iv = prune.speedup(noisy, "a", "b")
    assert iv["lo"] < 1 < iv["hi"]  # the same times in another order
    assert stats.compare(sp, (1, 1)) == "better"
    assert stats.compare(iv, (1, 1)) == "within noise"
    assert prune.SPEED_WORDS["better"] == "faster"
    calls = []
    t = prune.interleaved_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 4, 1
    )
    assert calls == ["a", "b"] * 5 and t["a"].shape == (4,)
