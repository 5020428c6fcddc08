"""Tests for llmbook.core.accounting: hand-worked FLOP and byte counts, and the
formulas checked against a real model (FlopCounterMode, a real training step,
activation checkpointing)."""

import pytest
import torch
from llmbook.core import accounting, measure, models

SHAPES = [  # b, s, h, n_heads, i, v, n_layers
    (2, 16, 32, 4, 48, 50, 2),
    (1, 7, 24, 3, 40, 11, 1),
    (3, 32, 64, 8, 172, 97, 3),
]


def test_matmul_flops_hand_worked():
    assert accounting.matmul_flops(2, 3, 4) == 48  # 2 * 2 * 3 * 4
    assert (
        accounting.matmul_flops(2, 3, 4, exact=True) == 40
    )  # 2 * 4 * (6 - 1)
    with pytest.raises(ValueError, match="n"):
        accounting.matmul_flops(2, 0, 4)


@pytest.mark.parametrize("shape", SHAPES)
def test_formula_equals_flop_counter(shape):
    b, s, h, n, i, v, L = shape
    torch.manual_seed(0)
    model = models.TinyLlama(h, n, i, v, L)
    tokens = torch.randint(v, (b, s))
    counted = measure.counted_flops(model, tokens)
    terms = accounting.llama_forward_flops(b, s, h, n, i, v, L)
    formula = accounting.matmul_total(terms)
    assert counted["forward"] == formula
    assert counted["backward"] == 2 * formula


def test_lecture_formula_is_matmuls_plus_softmax():
    b, s, h, n, i, v, L = SHAPES[2]
    terms = accounting.llama_forward_flops(b, s, h, n, i, v, L)
    want = accounting.matmul_total(terms) + terms["softmax"]
    assert accounting.lecture_total_flops(b, s, h, n, i, v, L) == want


def test_llama2_7b_forward_total():
    # L (6bsh^2 + 4bs^2h + 3bs^2n + 2bsh^2 + 6bshi) + 2bshv by hand
    b, s, h, n, i, v, L = 1, 4096, 4096, 32, 11008, 32000, 32
    per_layer = 8 * s * h * h + 4 * s * s * h + 3 * s * s * n + 6 * s * h * i
    want = L * per_layer + 2 * s * h * v
    assert accounting.lecture_total_flops(b, s, h, n, i, v, L) == want
    assert want == pytest.approx(6.297e13, rel=1e-3)


def test_exact_matmul_is_smaller_by_one_add_per_output():
    t = accounting.llama_layer_flops(1, 8, 16, 2, 24)
    e = accounting.llama_layer_flops(1, 8, 16, 2, 24, exact=True)
    assert t["output projection"] - e["output projection"] == 8 * 16


def test_llama_params_7b():
    p = accounting.llama_params(4096, 11008, 32000, 32)
    assert sum(p.values()) == 6_738_415_616  # Llama-2-7B's published count


def test_tinyllama_params_match_llama_params():
    h, n, i, v, L = 32, 4, 48, 50, 2
    model = models.TinyLlama(h, n, i, v, L)
    got = sum(p.numel() for p in model.parameters())
    assert got == sum(accounting.llama_params(h, i, v, L).values())


def test_training_state_bytes_16n():
    m = accounting.training_state_bytes(175e9)
    assert m["total"] == 16 * 175e9
    assert m["master"] == 700e9
    assert accounting.training_state_bytes(1e9, "bf16")["total"] == 8e9
    with pytest.raises(ValueError, match="recipe"):
        accounting.training_state_bytes(1e9, "int4")


def test_real_mixed_precision_step_matches_formula():
    torch.manual_seed(0)
    model = models.TinyLlama(32, 4, 48, 50, 2)
    tokens = torch.randint(50, (2, 9))
    got = measure.mixed_precision_step(model, tokens)
    want = accounting.training_state_bytes(got["n_params"], "mixed")
    for k in ("weights", "grads", "master", "adam_m", "adam_v"):
        assert got[k] == want[k]
    assert got["adam_step"] == 4 * got["n_tensors"]
    n = sum(p.numel() for p in model.parameters())
    assert got["n_params"] == n
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_checkpoint_activation_bytes_gpt3():
    got = accounting.checkpoint_activation_bytes(96, 3.2e6, 12288, 2)
    assert got == pytest.approx(96 * 3.2e6 * 12288 * 2)
    assert got == pytest.approx(7.5497e12, rel=1e-4)


def test_checkpointed_layers_keep_exactly_one_input_per_layer():
    """With every block checkpointed, autograd keeps n_layers * b * s * h fp32 values more
    than the same model with no blocks (embedding, norm and head): the formula of
    checkpoint_activation_bytes, measured. Without checkpointing it keeps far more."""
    h, nh, i, v, layers, b, s = 32, 4, 86, 50, 3, 2, 16
    tokens = torch.randint(
        v, (b, s), generator=torch.Generator().manual_seed(0)
    )
    torch.manual_seed(0)
    ck = models.TinyLlama(h, nh, i, v, layers, checkpoint_layers=True)
    torch.manual_seed(0)
    bare = models.TinyLlama(h, nh, i, v, 1)
    bare.blocks = torch.nn.ModuleList()
    kept = measure.saved_activation_bytes(
        ck, tokens
    ) - measure.saved_activation_bytes(bare, tokens)
    assert kept == accounting.checkpoint_activation_bytes(layers, b * s, h, 4)
    ck.checkpoint_layers = False
    assert measure.saved_activation_bytes(ck, tokens) > 5 * kept
    # the checkpointed model computes the same gradients
    grads = []
    for flag in (True, False):
        ck.checkpoint_layers = flag
        ck.zero_grad()
        ck(tokens).sum().backward()
        grads.append([p.grad.clone() for p in ck.parameters()])
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c)


def test_causal_counts_the_lower_triangle():
    b, s, h, n, i = 2, 8, 16, 2, 24
    d = h // n
    kept = int(torch.tril(torch.ones(s, s)).sum())  # s (s + 1) / 2 pairs
    full = accounting.llama_layer_flops(b, s, h, n, i)
    cz = accounting.llama_layer_flops(b, s, h, n, i, causal=True)
    assert cz["scores q k^T"] == b * n * kept * 2 * d
    assert cz["P v"] == b * n * kept * 2 * d
    assert cz["softmax"] == 3 * b * n * kept
    for key in ("q, k, v projections", "down projection", "swish"):
        assert cz[key] == full[key]
    # exact count: row r of P v sums r + 1 products, r adds, per output
    ex = accounting.llama_layer_flops(b, s, h, n, i, exact=True, causal=True)
    want = b * n * d * sum(2 * (r + 1) - 1 for r in range(s))
    assert ex["P v"] == want
    assert ex["scores q k^T"] == b * n * kept * (2 * d - 1)


def test_layer_activation_bytes_gpt3_hand_value():
    # Korthikanti et al. eq. 1 for a GPT-3 layer, s = 2048, b = 1:
    # s b h (34 + 5 a s / h) = 2048 * 12288 * (34 + 5 * 96 * 2048 / 12288)
    s, h, a = 2048, 12288, 96
    assert accounting.layer_activation_bytes(s, 1, h, a) == 2048 * 12288 * 114
    flash = accounting.layer_activation_bytes(s, 1, h, a, store_scores=False)
    assert flash == 34 * s * h


def test_llama_65b_count_and_recipes_by_hand():
    h, i, v, L = 8192, 22016, 32000, 80
    by_hand = L * (4 * h * h + 3 * h * i + 2 * h) + h + 2 * v * h
    assert accounting.llama_65b_params() == by_hand
    assert round(by_hand / 1e9, 2) == 65.29
    per = {
        r: accounting.training_state_bytes(1, r)["total"]
        for r in ("mixed", "mixed_no_master", "fp32", "bf16")
    }
    assert per == {"mixed": 16, "mixed_no_master": 12, "fp32": 16, "bf16": 8}


def test_attention_and_mlp_terms_split_the_layer():
    """Attention, MLP, the two norms and the residual adds are every term of
    a layer, each once; the MLP terms of Llama-2-7B's layer are 6 t h i for
    the matmuls plus 5 t i elementwise (swish 4, gate product 1)."""
    layer = accounting.llama_layer_flops(1, 8, 16, 2, 24)
    groups = (*accounting.ATTENTION_TERMS, *accounting.MLP_TERMS)
    assert len(set(groups)) == len(groups)
    rest = {"RMSNorm (two)", "residual adds"}
    assert set(groups) | rest == set(layer)
    t, h, i = 8, 16, 24
    mlp = sum(layer[k] for k in accounting.MLP_TERMS)
    assert mlp == 6 * t * h * i + 5 * t * i
