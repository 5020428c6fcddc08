"""Tests for llmbook.core.models (the book's small Llama-style decoder)."""

import pytest
import torch
from llmbook.core import models


def test_rope_preserves_norm_and_is_identity_at_position_zero():
    x = torch.randn(2, 3, 5, 8)
    y = models.rope(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])
    with pytest.raises(ValueError):
        models.rope(torch.randn(1, 1, 2, 3))


def test_rmsnorm_unit_rms():
    y = models.RMSNorm(16, eps=0.0)(torch.randn(4, 16))
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4), atol=1e-5)
