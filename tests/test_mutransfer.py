"""Tests for llmbook.topics.mutransfer (muP against the standard
parameterisation, and the mup package cross-check)."""

import numpy as np
import pytest
import torch
from llmbook.topics import batchsize, mutransfer


def test_mup_scales_coincide_with_sp_at_base_width():
    assert mutransfer.mup_lr_scales(64, 64, "mup") == mutransfer.mup_lr_scales(
        64, 64, "sp"
    )
    mup = mutransfer.mup_lr_scales(256, 64, "mup")
    assert mup["hidden"][1] == pytest.approx(0.25)
    assert mup["output"][0] == pytest.approx(8 / 256)
    with pytest.raises(ValueError, match="parameterisation"):
        mutransfer.mup_lr_scales(64, 64, "ntk")


def test_width_lr_sweep_runs_match_single_runs():
    from llmbook.topics import batchsize

    prob = batchsize.mlp_problem(n_train=256, n_test=16, d=4, seed=0)
    lrs = np.array([1e-3, 1e-2])
    both = mutransfer.width_lr_sweep(prob, 16, lrs, "mup", 8, steps=5)
    one = mutransfer.width_lr_sweep(prob, 16, lrs[1:], "mup", 8, steps=5)
    assert both.shape == (2,)
    assert both[1] == pytest.approx(one[0], rel=1e-5)
    assert both[1] < both[0]  # a larger lr learns faster in 5 steps


def test_sweep_does_not_depend_on_the_thread_count():
    from llmbook.topics import batchsize

    prob = batchsize.mlp_problem(n_train=256, n_test=16, d=4, seed=0)
    lrs = np.array([1e-3, 1e-2])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mutransfer.width_lr_sweep(prob, 256, lrs, "sp", 64, steps=3)
        torch.set_num_threads(2)
        two = mutransfer.width_lr_sweep(prob, 256, lrs, "sp", 64, steps=3)
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
        ours = mutransfer.width_lr_sweep(prob, 256, [lr], "mup", 32, steps=20)[
            0
        ]
        sp = mutransfer.width_lr_sweep(prob, 256, [lr], "sp", 32, steps=20)[0]
        pkg = mutransfer.mup_package_run(prob, 256, lr, 32, steps=20)
        assert pkg == pytest.approx(ours, rel=1e-5)
        assert abs(sp - pkg) / pkg > 1e-2
    # at the base width the package's model is the plain one
    base = mutransfer.mup_package_run(prob, 32, 1e-2, 32, steps=20)
    assert base == pytest.approx(
        mutransfer.width_lr_sweep(prob, 32, [1e-2], "sp", 32, steps=20)[0],
        rel=1e-6,
    )


def test_plot_width_sweep_one_panel_per_parameterisation():
    import pandas as pd
    from matplotlib import pyplot as plt

    lrs = np.array([1e-3, 1e-2, 1e-1])
    losses = {
        "sp": np.array([[1.0, 0.5, 2.0]]),
        "mup": np.array([[0.9, 0.4, np.inf]]),
    }
    best = pd.DataFrame(
        {
            "parameterisation": ["sp", "mup"],
            "width": [64, 64],
            "best lr": [1e-2, 1e-2],
            "loss": [0.5, 0.4],
        }
    )
    fig = mutransfer.plot_width_sweep(
        lrs, losses, best, {"sp": "SP", "mup": "μP"}
    )
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["SP", "μP"]
    assert axes[0].get_ylim() == axes[1].get_ylim()
    assert axes[0].get_xlabel() and axes[0].get_ylabel()
    plt.close(fig)


def test_mup_package_check_shapes_and_yardstick():
    from llmbook.topics import batchsize

    prob = batchsize.mlp_problem(n_train=256, n_test=16, d=4, seed=0)
    lrs = np.array([1e-3, 1e-2])
    ours = np.stack(
        [
            mutransfer.width_lr_sweep(prob, w, lrs, "mup", 32, steps=10)
            for w in (32, 64)
        ]
    )
    check = mutransfer.mup_package_check(
        prob, [32, 64], lrs, ours, 32, steps=10, n_nudges=1
    )
    assert check["rel"].shape == check["floor"].shape == (2, 2)
    assert check["rel"].max() < 1e-5 and check["best_shift"].max() < 1e-5
    with pytest.raises(ValueError, match="ours"):
        mutransfer.mup_package_check(prob, [32], lrs, ours, 32, steps=10)


def test_width_sweep_matches_the_full_grid_near_each_optimum():
    problem = batchsize.mlp_problem(
        n_train=256, n_test=16, d=4, sigma=0.5, seed=0
    )
    lrs = batchsize.lr_grid(1e-3, n=7, factor=2.5)
    widths = [16, 32, 64]
    for p in ("sp", "mup"):
        full = np.stack(
            [
                mutransfer.width_lr_sweep(problem, w, lrs, p, 16, 30, 16, 0)
                for w in widths
            ]
        )
        part = mutransfer.width_sweep(
            problem, widths, lrs, p, 16, 30, 16, 0, full_grid_max_width=16
        )
        ran = ~np.isnan(part)
        assert ran[0].all() and not ran[1:].all()  # the wide ones skip some
        np.testing.assert_allclose(part[ran], full[ran], rtol=1e-5)
        got, want = (
            batchsize.optimal_lr(lrs, part),
            batchsize.optimal_lr(lrs, full),
        )
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        np.testing.assert_array_equal(got[1], want[1])


def test_width_sweep_rejects_unsorted_widths():
    problem = batchsize.mlp_problem(n_train=64, n_test=8, d=2, seed=0)
    with pytest.raises(ValueError, match="ascending"):
        mutransfer.width_sweep(problem, [32, 16], [1e-3, 1e-2])
