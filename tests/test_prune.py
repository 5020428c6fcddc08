"""Hand pruning against torch.nn.utils.prune, the channel-pruned model against its masked twin,
MACs against the formula and torch.utils.flop_counter, and the CNN training script."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune
from torch.utils.flop_counter import FlopCounterMode

from llmbook.core import cnn
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
