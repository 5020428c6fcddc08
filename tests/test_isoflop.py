"""Tests for llmbook.topics.isoflop (the iso-FLOP experiment)."""

import math
import numpy as np
import pytest
import torch
from llmbook.topics import isoflop


def test_mlp_lm_params_match_module():
    m = isoflop.MLPLanguageModel(vocab=20, context=3, embed=5, width=7)
    named = m.named_parameters()
    got = sum(p.numel() for k, p in named if "embed" not in k)
    assert got == isoflop.mlp_lm_params(20, 3, 5, 7)
    assert m(torch.zeros(4, 3, dtype=torch.long)).shape == (4, 20)


def test_fit_isoflop_parabola_recovers_vertex():
    x = np.linspace(0, 4, 7)
    x0, y0 = isoflop.fit_isoflop_parabola(x, 0.3 * (x - 1.7) ** 2 + 2.0)
    assert x0 == pytest.approx(1.7) and y0 == pytest.approx(2.0)
    with pytest.raises(ValueError):
        isoflop.fit_isoflop_parabola(x, -(x**2))


def test_teacher_language_and_one_isoflop_student():
    state = torch.get_rng_state()
    lang = isoflop.teacher_language(8, 2, 4, 16, sharpness=2.0, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert lang["contexts"].shape == (64, 2)
    torch.testing.assert_close(lang["probs"].sum(-1), torch.ones(64))
    assert 0 < lang["entropy"] < math.log(8)
    again = isoflop.teacher_language(8, 2, 4, 16, sharpness=2.0, seed=0)
    assert torch.equal(again["probs"], lang["probs"])
    row = isoflop.train_isoflop_student(
        lang, 4, 8, budget=6e6, target_steps=20, batch_range=(8, 512)
    )
    n = isoflop.mlp_lm_params(8, 2, 4, 8)
    assert row["N"] == n and row["D"] == row["batch"] * row["steps"]
    assert row["D"] == pytest.approx(6e6 / (6 * n), rel=0.05)
    assert row["loss"] > lang["entropy"]
    assert row == isoflop.train_isoflop_student(
        lang, 4, 8, budget=6e6, target_steps=20, batch_range=(8, 512)
    )
    with pytest.raises(ValueError, match="budget"):
        isoflop.train_isoflop_student(lang, 4, 8, budget=0)
