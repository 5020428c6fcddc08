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
