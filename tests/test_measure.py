"""Tests for llmbook.core.measure (bytes of tensors and of saved activations)."""

import torch
from llmbook.core import measure, models


def test_saved_activations_double_with_batch():
    torch.manual_seed(0)
    model = models.TinyLlama(32, 4, 48, 50, 1)
    a2 = measure.saved_activation_bytes(model, torch.randint(50, (2, 16)))
    a4 = measure.saved_activation_bytes(model, torch.randint(50, (4, 16)))
    rope_tables = 4 * 16 * 4 * 4  # cos, sin for q and k: (s, d/2) fp32
    mask = 16 * 16  # (s, s) bool
    const = rope_tables + mask
    assert a4 - const == 2 * (a2 - const)


def test_tensor_bytes():
    bf16 = torch.zeros(3, dtype=torch.bfloat16)
    assert measure.tensor_bytes([bf16, None, torch.zeros(2, 2)]) == 6 + 16


def test_formula_vs_counter_rows():
    """One row per shape; the formula equals the counted forward and the
    backward is twice it (hand value for the one-layer shape: 2 t (3 h^2 +
    h^2 + 3 h i) + 4 t s h + 2 t h v with t = b s)."""
    torch.manual_seed(0)
    shapes = [(1, 7, 24, 3, 40, 11, 1), (2, 4, 16, 2, 24, 9, 2)]
    checks = measure.formula_vs_counter(shapes)
    assert len(checks) == 2
    assert checks["b, s, h, n, i, v, L"].tolist() == shapes
    assert (checks["formula (matmuls)"] == checks["counted forward"]).all()
    assert (checks["backward / forward"] == 2).all()
    b, s, h, n, i, v, L = shapes[0]
    t = b * s
    want = 2 * t * (4 * h * h + 3 * h * i) + 4 * t * s * h + 2 * t * h * v
    assert checks["formula (matmuls)"][0] == want
