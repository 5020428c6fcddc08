"""Attention by hand against PyTorch's own (SDPA, nn.MultiheadAttention,
nn.TransformerEncoderLayer, silu, transformers' LlamaMLP), FlashAttention's
tiles against the reference and autograd, and the HBM counters against their
closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.core import accounting, measure
from llmbook.topics import attention as at

DT = torch.float64


def rand(*shape, seed=0):
    return torch.randn(
        *shape, generator=torch.Generator().manual_seed(seed), dtype=DT
    )


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_sdpa(causal):
    Q, K, V = (
        rand(2, 3, 7, 5, seed=1),
        rand(2, 3, 7, 5, seed=2),
        rand(2, 3, 7, 4, seed=3),
    )
    want = F.scaled_dot_product_attention(Q, K, V, is_causal=causal)
    torch.testing.assert_close(at.self_attention(Q, K, V, causal), want)


def test_causal_mask_hand_example():
    M = at.causal_mask(3)
    assert M.tolist() == [[0, math.inf, math.inf], [0, 0, math.inf], [0, 0, 0]]
    assert at.causal_mask(2, 3)[1].tolist() == [0, 0, math.inf]


def test_causal_output_ignores_the_future():
    Q, K, V = rand(6, 4, seed=1), rand(6, 4, seed=2), rand(6, 4, seed=3)
    out = at.self_attention(Q, K, V, causal=True)
    K2, V2 = K.clone(), V.clone()
    K2[4:] += 10
    V2[4:] -= 3
    torch.testing.assert_close(at.self_attention(Q, K2, V2, True)[:4], out[:4])


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_matches_nn_multihead_attention(causal):
    d_model, H, T = 12, 3, 5
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(
        d_model, H, bias=False, batch_first=True
    ).double()
    X = rand(2, T, d_model)
    W = mha.in_proj_weight.detach()
    mask = (
        torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if causal else None
    )
    want, _ = mha(X, X, X, attn_mask=mask, need_weights=False)
    got = at.multi_head_attention(
        X,
        W[:d_model].T,
        W[d_model : 2 * d_model].T,
        W[2 * d_model :].T,
        mha.out_proj.weight.detach().T,
        H,
        causal=causal,
    )
    torch.testing.assert_close(got, want.detach())


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_grouped_query_matches_sdpa_with_repeated_kv(n_kv):
    d_model, H, d_head, T = 16, 4, 4, 6
    X = rand(2, T, d_model)
    W_Q, W_O = (
        rand(d_model, H * d_head, seed=1),
        rand(H * d_head, d_model, seed=2),
    )
    W_K, W_V = (
        rand(d_model, n_kv * d_head, seed=3),
        rand(d_model, n_kv * d_head, seed=4),
    )
    q = (X @ W_Q).view(2, T, H, d_head).transpose(1, 2)
    k = (X @ W_K).view(2, T, n_kv, d_head).transpose(1, 2)
    v = (X @ W_V).view(2, T, n_kv, d_head).transpose(1, 2)
    rep = H // n_kv
    o = F.scaled_dot_product_attention(
        q,
        k.repeat_interleave(rep, 1),
        v.repeat_interleave(rep, 1),
        is_causal=True,
    )
    want = o.transpose(1, 2).reshape(2, T, H * d_head) @ W_O
    got = at.multi_head_attention(X, W_Q, W_K, W_V, W_O, H, n_kv, True)
    torch.testing.assert_close(got, want)
    # PyTorch's own GQA path agrees too
    o2 = F.scaled_dot_product_attention(
        q, k, v, is_causal=True, enable_gqa=True
    )
    torch.testing.assert_close(o2, o)


def test_mqa_heads_share_one_key_value_head():
    K = rand(1, 5, 3)
    R = at.repeat_kv(K, 4)
    assert R.shape == (4, 5, 3)
    assert all(torch.equal(R[h], K[0]) for h in range(4))


def test_block_matches_transformer_encoder_layer():
    d_model, H, d_ff = 12, 3, 20
    torch.manual_seed(1)
    layer = (
        torch.nn.TransformerEncoderLayer(
            d_model,
            H,
            d_ff,
            dropout=0.0,
            activation="relu",
            batch_first=True,
            norm_first=False,
            bias=False,
        )
        .double()
        .eval()
    )
    with torch.no_grad():
        layer.norm1.weight.uniform_(0.5, 1.5)
        layer.norm2.weight.uniform_(0.5, 1.5)
    W = layer.self_attn.in_proj_weight.detach()
    p = {
        "W_Q": W[:d_model].T,
        "W_K": W[d_model : 2 * d_model].T,
        "W_V": W[2 * d_model :].T,
        "W_O": layer.self_attn.out_proj.weight.detach().T,
        "W_1": layer.linear1.weight.detach().T,
        "W_2": layer.linear2.weight.detach().T,
        "ln1": layer.norm1.weight.detach(),
        "ln2": layer.norm2.weight.detach(),
    }
    X = rand(2, 7, d_model)
    with torch.no_grad():
        want = layer(
            X,
            src_mask=torch.nn.Transformer.generate_square_subsequent_mask(
                7, dtype=DT
            ),
            is_causal=True,
        )
    torch.testing.assert_close(
        at.transformer_block(X, p, H, causal=True), want
    )


def test_layer_norm_matches_torch():
    X, g = rand(4, 9), rand(9, seed=5)
    torch.testing.assert_close(
        at.layer_norm(X, g), F.layer_norm(X, (9,), weight=g)
    )


def test_swish_and_swiglu():
    z = rand(50)
    torch.testing.assert_close(at.swish(z), F.silu(z))
    assert at.swish(torch.tensor(0.0)).item() == 0.0
    x, W1, W2 = rand(3, 4), rand(4, 6, seed=1), rand(4, 6, seed=2)
    b1, b2 = rand(6, seed=3), rand(6, seed=4)
    want = F.silu(x @ W1 + b1) * (x @ W2 + b2)
    torch.testing.assert_close(at.swiglu(x, W1, b1, W2, b2), want)


def test_swiglu_ffn_matches_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    cfg = LlamaConfig(
        hidden_size=8,
        intermediate_size=12,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    mlp = LlamaMLP(cfg).double()
    x = rand(2, 5, 8)
    got = at.swiglu_ffn(
        x,
        mlp.gate_proj.weight.detach().T,
        mlp.up_proj.weight.detach().T,
        mlp.down_proj.weight.detach().T,
    )
    torch.testing.assert_close(got, mlp(x).detach())


def test_kv_cache_bytes_hand_values():
    # Llama-2-7B shape: 32 layers, 32 heads of 128, fp16: 0.5 MiB per token
    assert accounting.kv_cache_bytes_per_token(32, 32, 128, 2) == 2**19
    assert accounting.kv_cache_bytes_per_token(32, 8, 128, 2) == 2**17
    assert accounting.kv_cache_bytes_per_token(32, 1, 128, 2) == 2**14


# ---------------------------------------------------------------- tiles


SHAPES = [
    (7, 7, 3, 2, 3),
    (16, 16, 4, 4, 4),
    (13, 13, 5, 4, 6),
    (10, 17, 3, 3, 5),
    (9, 9, 2, 9, 9),
    (11, 11, 4, 1, 1),
]


# causal attention needs a square score matrix
CASES = [
    s + (c,) for s in SHAPES for c in (False, True) if not c or s[0] == s[1]
]


@pytest.mark.parametrize("n_q,n_k,d,bq,bk,causal", CASES)
def test_flash_forward_matches_reference(n_q, n_k, d, bq, bk, causal):
    Q, K, V = rand(n_q, d, seed=1), rand(n_k, d, seed=2), rand(n_k, d, seed=3)
    O, lse = at.flash_attention_forward(Q, K, V, bq, bk, causal)
    torch.testing.assert_close(
        O, F.scaled_dot_product_attention(Q, K, V, is_causal=causal)
    )
    S = Q @ K.T / math.sqrt(d)
    if causal:
        S = S - at.causal_mask(n_q).to(DT)
    torch.testing.assert_close(lse, torch.logsumexp(S, -1))


@pytest.mark.parametrize("n_q,n_k,d,bq,bk,causal", CASES)
def test_flash_backward_matches_autograd(n_q, n_k, d, bq, bk, causal):
    Q, K, V = (
        rand(n, d, seed=s).requires_grad_()
        for n, s in ((n_q, 1), (n_k, 2), (n_k, 3))
    )
    dO = rand(n_q, d, seed=4)
    out = F.scaled_dot_product_attention(Q, K, V, is_causal=causal)
    want = torch.autograd.grad(out, (Q, K, V), dO)
    with torch.no_grad():
        O, lse = at.flash_attention_forward(Q, K, V, bq, bk, causal)
        got = at.flash_attention_backward(Q, K, V, O, dO, lse, bq, bk, causal)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_standard_backward_matches_autograd():
    Q, K, V = (rand(6, 3, seed=s).requires_grad_() for s in (1, 2, 3))
    dO = rand(6, 3, seed=4)
    O, P = at.standard_attention(Q, K, V)
    want = torch.autograd.grad(O, (Q, K, V), dO)
    got = at.standard_attention_backward(
        Q.detach(), K.detach(), V.detach(), P.detach(), dO
    )
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("n_q,n_k,d,bq,bk", SHAPES)
def test_hbm_counters_match_closed_forms(n_q, n_k, d, bq, bk):
    Q, K, V = rand(n_q, d, seed=1), rand(n_k, d, seed=2), rand(n_k, d, seed=3)
    dO = rand(n_q, d, seed=4)
    c = at.HBMCounter()
    O, P = at.standard_attention(Q, K, V, counter=c)
    assert c.total == at.standard_hbm_elements(n_q, n_k, d)
    at.standard_attention_backward(Q, K, V, P, dO, counter=c)
    assert c.total == at.standard_hbm_elements(n_q, n_k, d, backward=True)
    c = at.HBMCounter()
    O, lse = at.flash_attention_forward(Q, K, V, bq, bk, counter=c)
    assert c.total == at.flash_hbm_elements(n_q, n_k, d, bk)
    at.flash_attention_backward(Q, K, V, O, dO, lse, bq, bk, counter=c)
    assert c.total == at.flash_hbm_elements(n_q, n_k, d, bk, backward=True)


def test_hbm_hand_count():
    # N = 2, d = 1, one key tile: standard 2*2 + 2*2 + 4*4 = 24 elements;
    # flash: 2 + 10 + 4 + 1*(6 + 8) = 30 (tiny N: the N^2 term is small)
    assert at.standard_hbm_elements(2, 2, 1) == 24
    assert at.flash_hbm_elements(2, 2, 1, 2) == 30


def test_causal_flash_skips_masked_tiles():
    Q = K = V = rand(8, 2)
    full, causal = at.HBMCounter(), at.HBMCounter()
    at.flash_attention_forward(Q, K, V, 2, 2, counter=full)
    at.flash_attention_forward(Q, K, V, 2, 2, causal=True, counter=causal)
    # 4 x 4 tiles; the 6 above the diagonal are skipped, each saving the
    # reads of Q_i, O_i, l_i, m_i and the writes of O_i, l_i, m_i
    per_tile = 3 * 2 * 2 + 4 * 2
    assert full.total - causal.total == 6 * per_tile


def test_block_sizes_and_flops():
    assert at.flash_block_sizes(98304, 64) == (64, 384)
    assert at.flash_block_sizes(1000, 64) == (4, 4)
    assert at.attention_flops(4, 2) == 128
    assert at.attention_flops(4, 2, backward=True) == 384
    assert at.attention_flops(4, 2, True, True) == 448


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_queries"):
        at.causal_mask(0)
    with pytest.raises(ValueError, match="n_kv_heads"):
        at.multi_head_attention(
            rand(3, 6), rand(6, 6), rand(6, 4), rand(6, 4), rand(6, 6), 3, 2
        )
    with pytest.raises(ValueError, match="n_heads"):
        at.split_heads(rand(3, 6), 4)
    with pytest.raises(ValueError, match="Q and K"):
        at.self_attention(rand(3, 4), rand(3, 5), rand(3, 5))
    with pytest.raises(ValueError, match="block_k"):
        at.flash_attention_forward(rand(3, 2), rand(3, 2), rand(3, 2), 1, 0)
    with pytest.raises(ValueError, match="M"):
        at.flash_block_sizes(-1, 4)
    with pytest.raises(ValueError, match="d_head"):
        accounting.kv_cache_bytes_per_token(2, 2, 0)
    with pytest.raises(ValueError, match="recompute"):
        at.attention_flops(4, 2, backward=False, recompute=True)


def test_naive_attention_matches_sdpa():
    Q, K, V = (
        rand(2, 9, 4, seed=1),
        rand(2, 9, 4, seed=2),
        rand(2, 9, 4, seed=3),
    )
    torch.testing.assert_close(
        at.naive_attention(Q, K, V), F.scaled_dot_product_attention(Q, K, V)
    )


def test_peak_memory_sees_a_known_allocation():
    def nothing():
        return None

    def allocate(n_bytes):
        torch.ones(n_bytes // 4, dtype=torch.float32)

    assert measure.peak_memory_increase(nothing) < 2**20
    got = measure.peak_memory_increase(allocate, 64 * 2**20)
    assert 60 * 2**20 < got < 72 * 2**20
    with pytest.raises(ValueError, match="fn"):
        measure.peak_memory_increase(3)


# --- the notebooks' helpers (tables and figures) ---------------------------


def test_torch_weights_reproduce_torch_modules():
    torch.manual_seed(0)
    X = rand(2, 5, 8, seed=4)
    mha = torch.nn.MultiheadAttention(
        8, 2, bias=False, batch_first=True
    ).double()
    W_Q, W_K, W_V, W_O = at.torch_mha_weights(mha)
    assert W_Q.shape == W_O.shape == (8, 8)
    want = mha(X, X, X, need_weights=False)[0].detach()
    got = at.multi_head_attention(X, W_Q, W_K, W_V, W_O, 2)
    torch.testing.assert_close(got, want)
    layer = torch.nn.TransformerEncoderLayer(
        8, 2, 12, dropout=0.0, batch_first=True, bias=False
    )
    layer = layer.double().eval()
    params = at.encoder_layer_params(layer)
    assert params["W_1"].shape == (8, 12) and params["W_2"].shape == (12, 8)
    with torch.no_grad():
        want = layer(X)
    torch.testing.assert_close(at.transformer_block(X, params, 2), want)


def test_kv_cache_table_hand_values():
    t = at.kv_cache_table(2, {"MHA": 4, "MQA": 1}, 8, 2, 1000)
    # K and V, 2 layers, H_kv heads of 8 values, 2 bytes each
    assert list(t["bytes per token"]) == [2 * 2 * 4 * 8 * 2, 2 * 2 * 8 * 2]
    assert list(t.index) == ["MHA", "MQA"]
    assert list(t["K/V heads"]) == [4, 1]
    assert "1000 tokens" in t.columns


def test_softmax_scaling_table():
    gen = torch.Generator().manual_seed(0)
    t = at.softmax_scaling_table([4, 64], 2048, 16, gen)
    assert list(t["d"]) == [4, 64]
    # dividing the scores by sqrt(d) divides their variance by d
    torch.testing.assert_close(
        torch.tensor(t["Var(q·k)"] / t["d"]),
        torch.tensor(t["Var(q·k/√d)"]),
    )
    assert abs(t["Var(q·k)"].iloc[1] / 64 - 1) < 0.15
    # raw scores at d = 64 put most weight on one key; scaled ones do not
    raw, scaled = t["mean top weight, raw"], t["mean top weight, scaled"]
    assert raw.iloc[1] > 0.8 and scaled.iloc[1] < 0.5
    assert ((1 / 16 < scaled) & (scaled <= 1)).all()


def test_hbm_traffic_tables_match_closed_forms():
    gen = torch.Generator().manual_seed(0)
    by_n = at.hbm_traffic_by_length([16, 32, 64], 4, 64, 32, gen)
    assert list(by_n.index) == [16, 32, 64]
    done = by_n.dropna()
    assert list(done.index) == [16, 32]  # counted only up to count_max_n
    assert (done["standard counted"] == done["standard"]).all()
    assert (done["flash counted"] == done["flash"]).all()
    assert by_n.loc[64, "standard"] == at.standard_hbm_elements(64, 64, 4)
    by_m = at.hbm_traffic_by_buffer(32, 4, [64, 256], gen)
    assert list(by_m["B_c"]) == [
        at.flash_block_sizes(M, 4)[1] for M in (64, 256)
    ]
    assert (by_m["flash counted"] == by_m["flash"]).all()
    assert (by_m["standard"] == at.standard_hbm_elements(32, 32, 4)).all()
    s, f = at.counted_hbm_elements(16, 4, 64, gen)
    assert s == at.standard_hbm_elements(16, 16, 4)
    assert f == at.flash_hbm_elements(
        16, 16, 4, at.flash_block_sizes(64, 4)[1]
    )


def test_hbm_and_cpu_figures():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    gen = torch.Generator().manual_seed(0)
    by_n = at.hbm_traffic_by_length([16, 32, 64], 4, 64, 32, gen)
    by_m = at.hbm_traffic_by_buffer(32, 4, [64, 256], gen)
    fig = at.plot_hbm_traffic(by_n, by_m, 4, 64, 32)
    ax1, ax2 = fig.axes
    # one column at the book's 6.4 in: readable on a phone (issue 20)
    assert fig.get_size_inches()[0] <= 6.4
    assert {a.get_subplotspec().colspan.start for a in fig.axes} == {0}
    assert len(ax1.lines) == 6 and len(ax2.lines) == 4
    assert list(ax1.lines[0].get_ydata()) == list(by_n["standard"])
    assert ax1.get_xscale() == ax2.get_yscale() == "log"
    plt.close(fig)
    cpu = at.cpu_attention_table([16, 32], 8, 1)
    assert list(cpu.index) == [16, 32]
    assert cpu.loc[32, "N² float32 MB"] == 32 * 32 * 4 / 1e6
    assert (cpu[["naive ms", "SDPA ms"]] > 0).all().all()
    fig = at.plot_cpu_memory(cpu, 8)
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and "d = 8" in ax.get_title()
    assert list(ax.lines[2].get_ydata()) == list(2 * cpu["N² float32 MB"])
    plt.close(fig)
