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
    # one column at the book's 6.4 in: readable on a phone (issue 20)
    assert fig.get_size_inches()[0] <= 6.4
    assert {a.get_subplotspec().colspan.start for a in fig.axes} == {0}
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


TINY = {
    "widths": [16, 32, 64],
    "base_width": 16,
    "lr_min": 1e-2,  # optima inside the grid: finite intervals
    "lr_factor": 2.5,
    "n_lrs": 5,
    "steps": 20,
    "batch_size": 16,
    "n_train": 256,
    "dim": 4,
    "noise": 0.5,
    "full_grid_max_width": 32,
    "lr_window": 1,
}


def test_seed_sweep_is_the_notebook_sweep():
    """seed_sweep draws the problem and runs width_sweep as the notebook
    spells them out; another seed draws another task."""
    problem, lrs, losses = mutransfer.seed_sweep(TINY, seed=3)
    want = batchsize.mlp_problem(
        n_train=256, n_test=16, d=4, sigma=0.5, seed=3
    )
    assert torch.equal(problem.X, want.X)
    np.testing.assert_allclose(lrs, 1e-2 * 2.5 ** np.arange(5))
    direct = mutransfer.width_sweep(
        want, [16, 32, 64], lrs, "mup", 16, 20, 16, 3, 32, 1
    )
    np.testing.assert_array_equal(losses["mup"], direct)
    _, _, other = mutransfer.seed_sweep(TINY, seed=4)
    assert not np.allclose(other["mup"][0], losses["mup"][0])
    with pytest.raises(ValueError, match="lacks"):
        mutransfer.seed_sweep({"widths": [16]}, 0)


def test_sweep_optima_by_hand():
    """Losses with their minimum at lr = 1 / width (a parabola in log lr):
    the exponent is -1 exactly, the drift widths[-1] / widths[0]."""
    lrs = 2.0 ** np.arange(-8, 1)
    widths = [4, 16, 64]
    curves = np.array([(np.log(lrs) + np.log(w)) ** 2 + 1 for w in widths])
    best, fits = mutransfer.sweep_optima(lrs, widths, {"sp": curves})
    np.testing.assert_allclose(best["best lr"], [1 / 4, 1 / 16, 1 / 64])
    f = fits["sp"]
    assert f["slope"] == pytest.approx(-1) and f["drift"] == pytest.approx(16)
    assert f["spread"] == pytest.approx(15)  # 1/4 is 16x the best at 64
    assert not best["at grid edge"].any()
    row = mutransfer.seed_row(7, best, fits)
    assert row["seed"] == 7 and row["sp"]["best_lr"][1] == pytest.approx(
        1 / 16
    )
    assert mutransfer.seed_table([row]).loc[7, "sp slope"] == pytest.approx(-1)


def test_stored_rows_and_their_check(tmp_path):
    import json

    result = mutransfer.seed_check(TINY, [0, 1])
    assert [r["seed"] for r in result["rows"]] == [0, 1]
    assert all(np.isfinite(r["mup"]["lo"]) for r in result["rows"])
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(result))
    rows = mutransfer.stored_seed_rows(dict(TINY, seed=0), path)
    assert rows == result["rows"]
    assert mutransfer.stored_seed_rows(dict(TINY, steps=21), path) is None
    assert mutransfer.stored_seed_rows(TINY, tmp_path / "none.json") is None


def test_seed_rows_falls_back_to_the_live_seed(tmp_path):
    import json

    live = {
        "seed": 0,
        **{
            p: {"best_lr": [1e-2, 5e-3], "at_edge": [False, False]}
            | {"slope": -1.0, "lo": -1.2, "hi": -0.8, "drift": 2, "spread": 1}
            for p in ("sp", "mup")
        },
    }
    other = json.loads(json.dumps(live)) | {"seed": 1}
    path = tmp_path / "seeds.json"
    stored = {
        "settings": mutransfer.sweep_settings(TINY),
        "rows": [live, other],
    }
    path.write_text(json.dumps(stored))
    assert mutransfer.seed_rows(live, TINY, path) == ([live, other], True, [])
    assert mutransfer.seed_rows(live | {"seed": 7}, TINY, path)[1] is False
    changed = dict(TINY, noise=1.0)
    assert mutransfer.seed_rows(live, changed, path) == ([live], False, [])
    stale = json.loads(json.dumps(live))
    stale["sp"]["slope"] = -0.9
    rows, from_file, diffs = mutransfer.seed_rows(stale, TINY, path)
    assert from_file and rows == [stale, other]  # the live row is shown
    assert diffs == ["sp/slope: -0.9 here, -1.0 stored"]
    from matplotlib import pyplot as plt

    fig = mutransfer.plot_seed_exponents(mutransfer.seed_table([live, other]))
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and ax.get_xlabel() and ax.get_ylabel()
    plt.close(fig)


def test_stored_seeds_are_the_notebook_defaults():
    """The page summarises the stored seeds only when the notebook's
    parameters are the stored settings: its defaults must be, and the file
    must hold five seeds with both parameterisations."""
    import json

    from conftest import ROOT

    from llmbook.book.data import data_dir

    nb = json.loads((ROOT / "notebooks" / "cost-mup.ipynb").read_text())
    cell = next(
        c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])
    )
    defaults = {}
    exec("".join(cell["source"]), {}, defaults)
    path = data_dir() / "mup_seeds.json"
    rows = mutransfer.stored_seed_rows(defaults, path)
    assert rows is not None, "run `python tools/mup_seeds.py` and commit"
    assert [r["seed"] for r in rows] == [0, 1, 2, 3, 4]
    n_widths = len(defaults["widths"])
    for r in rows:
        for p in ("sp", "mup"):
            assert len(r[p]["best_lr"]) == n_widths
            assert r[p]["lo"] <= r[p]["slope"] <= r[p]["hi"]
