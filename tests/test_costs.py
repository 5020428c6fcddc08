"""FLOP and byte accounting against hand-worked values, FlopCounterMode and
the tensors of a real training step."""

import math

import numpy as np
import pytest
import torch

from llmbook.topics import costs

SHAPES = [  # b, s, h, n_heads, i, v, n_layers
    (2, 16, 32, 4, 48, 50, 2),
    (1, 7, 24, 3, 40, 11, 1),
    (3, 32, 64, 8, 172, 97, 3),
]


def test_matmul_flops_hand_worked():
    assert costs.matmul_flops(2, 3, 4) == 48        # 2 * 2 * 3 * 4
    assert costs.matmul_flops(2, 3, 4, exact=True) == 40  # 2 * 4 * (6 - 1)
    with pytest.raises(ValueError, match="n"):
        costs.matmul_flops(2, 0, 4)


@pytest.mark.parametrize("shape", SHAPES)
def test_formula_equals_flop_counter(shape):
    b, s, h, n, i, v, L = shape
    torch.manual_seed(0)
    model = costs.TinyLlama(h, n, i, v, L)
    tokens = torch.randint(v, (b, s))
    counted = costs.counted_flops(model, tokens)
    terms = costs.llama_forward_flops(b, s, h, n, i, v, L)
    formula = costs.matmul_total(terms)
    assert counted["forward"] == formula
    assert counted["backward"] == 2 * formula


def test_lecture_formula_is_matmuls_plus_softmax():
    b, s, h, n, i, v, L = SHAPES[2]
    terms = costs.llama_forward_flops(b, s, h, n, i, v, L)
    want = costs.matmul_total(terms) + terms["softmax"]
    assert costs.lecture_total_flops(b, s, h, n, i, v, L) == want


def test_llama2_7b_forward_total():
    # L (6bsh^2 + 4bs^2h + 3bs^2n + 2bsh^2 + 6bshi) + 2bshv by hand
    b, s, h, n, i, v, L = 1, 4096, 4096, 32, 11008, 32000, 32
    per_layer = (
        8 * s * h * h + 4 * s * s * h + 3 * s * s * n + 6 * s * h * i
    )
    want = L * per_layer + 2 * s * h * v
    assert costs.lecture_total_flops(b, s, h, n, i, v, L) == want
    assert want == pytest.approx(6.297e13, rel=1e-3)


def test_exact_matmul_is_smaller_by_one_add_per_output():
    t = costs.llama_layer_flops(1, 8, 16, 2, 24)
    e = costs.llama_layer_flops(1, 8, 16, 2, 24, exact=True)
    assert t["output projection"] - e["output projection"] == 8 * 16


def test_llama_params_7b():
    p = costs.llama_params(4096, 11008, 32000, 32)
    assert sum(p.values()) == 6_738_415_616  # Llama-2-7B's published count


def test_tinyllama_params_match_llama_params():
    h, n, i, v, L = 32, 4, 48, 50, 2
    model = costs.TinyLlama(h, n, i, v, L)
    got = sum(p.numel() for p in model.parameters())
    assert got == sum(costs.llama_params(h, i, v, L).values())


def test_rope_preserves_norm_and_is_identity_at_position_zero():
    x = torch.randn(2, 3, 5, 8)
    y = costs.rope(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])
    with pytest.raises(ValueError):
        costs.rope(torch.randn(1, 1, 2, 3))


def test_rmsnorm_unit_rms():
    y = costs.RMSNorm(16, eps=0.0)(torch.randn(4, 16))
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4), atol=1e-5)


def test_training_state_bytes_16n():
    m = costs.training_state_bytes(175e9)
    assert m["total"] == 16 * 175e9
    assert m["master"] == 700e9
    assert costs.training_state_bytes(1e9, "bf16")["total"] == 8e9
    with pytest.raises(ValueError, match="recipe"):
        costs.training_state_bytes(1e9, "int4")


def test_real_mixed_precision_step_matches_formula():
    torch.manual_seed(0)
    model = costs.TinyLlama(32, 4, 48, 50, 2)
    tokens = torch.randint(50, (2, 9))
    got = costs.mixed_precision_step(model, tokens)
    want = costs.training_state_bytes(got["n_params"], "mixed")
    for k in ("weights", "grads", "master", "adam_m", "adam_v"):
        assert got[k] == want[k]
    assert got["adam_step"] == 4 * got["n_tensors"]
    n = sum(p.numel() for p in model.parameters())
    assert got["n_params"] == n
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_checkpoint_activation_bytes_gpt3():
    got = costs.checkpoint_activation_bytes(96, 3.2e6, 12288, 2)
    assert got == pytest.approx(96 * 3.2e6 * 12288 * 2)
    assert got == pytest.approx(7.5497e12, rel=1e-4)


def test_saved_activations_double_with_batch():
    torch.manual_seed(0)
    model = costs.TinyLlama(32, 4, 48, 50, 1)
    a2 = costs.saved_activation_bytes(model, torch.randint(50, (2, 16)))
    a4 = costs.saved_activation_bytes(model, torch.randint(50, (4, 16)))
    rope_tables = 4 * 16 * 4 * 4   # cos, sin for q and k: (s, d/2) fp32
    mask = 16 * 16                 # (s, s) bool
    const = rope_tables + mask
    assert a4 - const == 2 * (a2 - const)


def test_tensor_bytes():
    bf16 = torch.zeros(3, dtype=torch.bfloat16)
    assert costs.tensor_bytes([bf16, None, torch.zeros(2, 2)]) == 6 + 16


def test_roofline_and_ridge():
    assert costs.ridge_point(989e12, 3.35e12) == pytest.approx(295.2, rel=1e-3)
    got = costs.roofline(np.array([1.0, 1000.0]), 989e12, 3.35e12)
    assert got[0] == 3.35e12 and got[1] == 989e12
    assert costs.decode_intensity() == 1.0
    assert costs.decode_intensity(batch=64) == 64.0


def test_mlp_lm_params_match_module():
    m = costs.MLPLanguageModel(vocab=20, context=3, embed=5, width=7)
    named = m.named_parameters()
    got = sum(p.numel() for k, p in named if "embed" not in k)
    assert got == costs.mlp_lm_params(20, 3, 5, 7)
    assert m(torch.zeros(4, 3, dtype=torch.long)).shape == (4, 20)


def test_fit_isoflop_parabola_recovers_vertex():
    x = np.linspace(0, 4, 7)
    x0, y0 = costs.fit_isoflop_parabola(x, 0.3 * (x - 1.7) ** 2 + 2.0)
    assert x0 == pytest.approx(1.7) and y0 == pytest.approx(2.0)
    with pytest.raises(ValueError):
        costs.fit_isoflop_parabola(x, -(x**2))


def test_mup_scales_coincide_with_sp_at_base_width():
    assert costs.mup_lr_scales(64, 64, "mup") == costs.mup_lr_scales(
        64, 64, "sp"
    )
    mup = costs.mup_lr_scales(256, 64, "mup")
    assert mup["hidden"][1] == pytest.approx(0.25)
    assert mup["output"][0] == pytest.approx(8 / 256)
    with pytest.raises(ValueError, match="parameterisation"):
        costs.mup_lr_scales(64, 64, "ntk")


def test_width_lr_sweep_runs_match_single_runs():
    from llmbook.topics import batchsize

    prob = batchsize.mlp_problem(n_train=256, n_test=16, d=4, seed=0)
    lrs = np.array([1e-3, 1e-2])
    both = costs.width_lr_sweep(prob, 16, lrs, "mup", 8, steps=5)
    one = costs.width_lr_sweep(prob, 16, lrs[1:], "mup", 8, steps=5)
    assert both.shape == (2,)
    assert both[1] == pytest.approx(one[0], rel=1e-5)
    assert both[1] < both[0]  # a larger lr learns faster in 5 steps


def test_loglog_slope_recovers_a_power_law_and_its_interval():
    w = np.array([64, 128, 256, 512, 1024])
    exact = costs.loglog_slope(w, 3.0 * w**-0.5)
    assert exact["slope"] == pytest.approx(-0.5) and exact["coef"] == pytest.approx(3.0)
    assert exact["hi"] - exact["lo"] == pytest.approx(0.0, abs=1e-9)
    noisy = costs.loglog_slope(w, 3.0 * w**-0.5 * np.array([1, 1.2, 0.9, 1.1, 1]))
    assert noisy["lo"] < -0.5 < noisy["hi"]
    # the interval is scipy's t interval on the slope
    from scipy import stats

    fit = stats.linregress(np.log(w), np.log(3.0 * w**-0.5 * np.array([1, 1.2, 0.9, 1.1, 1])))
    assert noisy["hi"] - noisy["slope"] == pytest.approx(stats.t.ppf(0.975, 3) * fit.stderr)
    with pytest.raises(ValueError, match="level"):
        costs.loglog_slope(w, w**-0.5, level=1.5)
    with pytest.raises(ValueError, match="x and y"):
        costs.loglog_slope(w[:2], w[:2] ** -0.5)


def test_sweep_does_not_depend_on_the_thread_count():
    from llmbook.topics import batchsize

    prob = batchsize.mlp_problem(n_train=256, n_test=16, d=4, seed=0)
    lrs = np.array([1e-3, 1e-2])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = costs.width_lr_sweep(prob, 256, lrs, "sp", 64, steps=3)
        torch.set_num_threads(2)
        two = costs.width_lr_sweep(prob, 256, lrs, "sp", 64, steps=3)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_mup_package_reproduces_the_hand_written_mup():
    """Microsoft's mup (MuReadout, set_base_shapes, MuAdam) from the same
    function and batches: the same losses up to rounding. The standard
    parameterisation at the same width does not match, so the check can
    fail."""
    from llmbook.topics import batchsize

    prob = batchsize.mlp_problem(n_train=512, n_test=16, d=4, seed=0)
    for lr in (1e-3, 1e-2):
        ours = costs.width_lr_sweep(prob, 256, [lr], "mup", 32, steps=20)[0]
        sp = costs.width_lr_sweep(prob, 256, [lr], "sp", 32, steps=20)[0]
        pkg = costs.mup_package_run(prob, 256, lr, 32, steps=20)
        assert pkg == pytest.approx(ours, rel=1e-5)
        assert abs(sp - pkg) / pkg > 1e-2
    # at the base width the package's model is the plain one
    base = costs.mup_package_run(prob, 32, 1e-2, 32, steps=20)
    assert base == pytest.approx(
        costs.width_lr_sweep(prob, 32, [1e-2], "sp", 32, steps=20)[0], rel=1e-6
    )


def test_plot_width_sweep_one_panel_per_parameterisation():
    import pandas as pd
    from matplotlib import pyplot as plt

    lrs = np.array([1e-3, 1e-2, 1e-1])
    losses = {"sp": np.array([[1.0, 0.5, 2.0]]), "mup": np.array([[0.9, 0.4, np.inf]])}
    best = pd.DataFrame({"parameterisation": ["sp", "mup"], "width": [64, 64],
                         "best lr": [1e-2, 1e-2], "loss": [0.5, 0.4]})
    fig = costs.plot_width_sweep(lrs, losses, best, {"sp": "SP", "mup": "μP"})
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["SP", "μP"]
    assert axes[0].get_ylim() == axes[1].get_ylim()
    assert axes[0].get_xlabel() and axes[0].get_ylabel()
    plt.close(fig)


def test_mup_package_check_shapes_and_yardstick():
    from llmbook.topics import batchsize

    prob = batchsize.mlp_problem(n_train=256, n_test=16, d=4, seed=0)
    lrs = np.array([1e-3, 1e-2])
    ours = np.stack([costs.width_lr_sweep(prob, w, lrs, "mup", 32, steps=10) for w in (32, 64)])
    check = costs.mup_package_check(prob, [32, 64], lrs, ours, 32, steps=10, n_nudges=1)
    assert check["rel"].shape == check["floor"].shape == (2, 2)
    assert check["rel"].max() < 1e-5 and check["best_shift"].max() < 1e-5
    with pytest.raises(ValueError, match="ours"):
        costs.mup_package_check(prob, [32], lrs, ours, 32, steps=10)


def test_checkpointed_layers_keep_exactly_one_input_per_layer():
    """With every block checkpointed, autograd keeps n_layers * b * s * h fp32 values more
    than the same model with no blocks (embedding, norm and head): the formula of
    checkpoint_activation_bytes, measured. Without checkpointing it keeps far more."""
    h, nh, i, v, layers, b, s = 32, 4, 86, 50, 3, 2, 16
    tokens = torch.randint(v, (b, s), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ck = costs.TinyLlama(h, nh, i, v, layers, checkpoint_layers=True)
    torch.manual_seed(0)
    bare = costs.TinyLlama(h, nh, i, v, 1)
    bare.blocks = torch.nn.ModuleList()
    kept = costs.saved_activation_bytes(ck, tokens) - costs.saved_activation_bytes(bare, tokens)
    assert kept == costs.checkpoint_activation_bytes(layers, b * s, h, 4)
    ck.checkpoint_layers = False
    assert costs.saved_activation_bytes(ck, tokens) > 5 * kept
    # the checkpointed model computes the same gradients
    grads = []
    for flag in (True, False):
        ck.checkpoint_layers = flag
        ck.zero_grad()
        ck(tokens).sum().backward()
        grads.append([p.grad.clone() for p in ck.parameters()])
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c)


def test_teacher_language_and_one_isoflop_student():
    state = torch.get_rng_state()
    lang = costs.teacher_language(8, 2, 4, 16, sharpness=2.0, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert lang["contexts"].shape == (64, 2)
    torch.testing.assert_close(lang["probs"].sum(-1), torch.ones(64))
    assert 0 < lang["entropy"] < math.log(8)
    again = costs.teacher_language(8, 2, 4, 16, sharpness=2.0, seed=0)
    assert torch.equal(again["probs"], lang["probs"])
    row = costs.train_isoflop_student(lang, 4, 8, budget=6e6, target_steps=20,
                                      batch_range=(8, 512))
    n = costs.mlp_lm_params(8, 2, 4, 8)
    assert row["N"] == n and row["D"] == row["batch"] * row["steps"]
    assert row["D"] == pytest.approx(6e6 / (6 * n), rel=0.05)
    assert row["loss"] > lang["entropy"]
    assert row == costs.train_isoflop_student(lang, 4, 8, budget=6e6, target_steps=20,
                                              batch_range=(8, 512))
    with pytest.raises(ValueError, match="budget"):
        costs.train_isoflop_student(lang, 4, 8, budget=0)
