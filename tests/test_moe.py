"""The MoE routers against hand-worked examples, the Switch loss and the
smooth load against their definitions, and gpt-oss's published counts."""

import math

import pytest
import torch

from llmbook.topics import moe


def test_keep_top_k_hand_example():
    H = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    got = moe.keep_top_k(H, 2)
    assert got.tolist() == [[-math.inf, 3.0, 2.0, -math.inf]]
    G = torch.softmax(got, -1)
    e = math.exp(1.0)
    assert G[0, 1].item() == pytest.approx(e / (e + 1))
    assert G[0, 0].item() == 0.0


def test_softmax_gating_sums_to_one():
    x, W = torch.eye(2), torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    G = moe.softmax_gating(x, W)
    assert G[0].tolist() == pytest.approx([0.25, 0.75])
    assert G[1].tolist() == pytest.approx([0.5, 0.5])


def test_noisy_gating_hand_example():
    x = torch.tensor([[1.0]])
    W_g = torch.tensor([[2.0, 1.0, 0.0]])
    W_n = torch.tensor([[0.0, 0.0, 0.0]])  # softplus(0) = log 2
    noise = torch.tensor([[0.0, 0.0, 3.0]])
    G, clean, H, std = moe.noisy_top_k_gating(x, W_g, W_n, 1, noise)
    # expert 2 wins with 3 log 2 = 2.08 > 2: the noise changed the choice
    assert H[0, 2].item() == pytest.approx(3 * math.log(2))
    assert G.tolist() == [[0.0, 0.0, 1.0]]
    G0, *_ = moe.noisy_top_k_gating(x, W_g, W_n, 1, None)
    assert G0.tolist() == [[1.0, 0.0, 0.0]]


def test_load_probability_hand_example_and_monte_carlo():
    clean = torch.tensor([[2.0, 1.0, 0.0]])
    std = torch.ones(1, 3)
    H = clean.clone()
    P = moe.load_probability(clean, H, std, 1)
    Phi = torch.distributions.Normal(0.0, 1.0).cdf
    # expert 0 is top: it stays top while its logit beats 1 (the others')
    assert P[0, 0].item() == pytest.approx(Phi(torch.tensor(1.0)).item())
    # expert 1 must beat 2, expert 2 must beat 2
    assert P[0, 1].item() == pytest.approx(Phi(torch.tensor(-1.0)).item())
    assert P[0, 2].item() == pytest.approx(Phi(torch.tensor(-2.0)).item())
    # Monte Carlo: redraw only expert 1's noise
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200_000, generator=g)
    assert ((1.0 + z) > 2.0).double().mean().item() == pytest.approx(
        P[0, 1].item(), abs=0.005
    )


def test_cv_squared_and_losses():
    assert moe.cv_squared(torch.tensor([1.0, 1.0, 1.0])).item() == 0.0
    # [0, 2]: mean 1, population variance 1
    assert moe.cv_squared(torch.tensor([0.0, 2.0])).item() == 1.0
    gates = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # importance [3, 1]: mean 2, var 1 -> CV^2 = 1/4
    assert moe.importance_loss(gates, 0.1).item() == pytest.approx(0.025)
    assert moe.load_loss(gates, 2.0).item() == pytest.approx(0.5)


def test_expert_capacity():
    assert moe.expert_capacity(8, 4, 1.0) == 2
    assert moe.expert_capacity(8, 4, 1.25) == 3
    assert moe.expert_capacity(10, 4, 1.0) == 3


def test_switch_route_hand_example():
    # 6 tokens, 2 experts, capacity ceil(1.0 * 6 / 2) = 3; five want
    # expert 0: tokens 0, 1, 3 fill it, tokens 4 and 5 are dropped
    logits = torch.tensor([[2.0, 0], [1, 0], [0, 3], [5, 0], [1, 0], [4, 0]])
    expert, gate, kept, probs = moe.switch_route(logits, 1.0)
    assert expert.tolist() == [0, 0, 1, 0, 0, 0]
    assert kept.tolist() == [True, True, True, True, False, False]
    assert gate[2].item() == pytest.approx(
        torch.sigmoid(torch.tensor(3.0)).item()
    )
    _, _, kept2, _ = moe.switch_route(logits, 2.0)
    assert kept2.all()


def test_switch_balancing_loss_hand_example():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    expert = probs.argmax(-1)
    # f = [3/4, 1/4], P = [0.6, 0.4]: 2 * (0.45 + 0.1) = 1.1
    got = moe.switch_balancing_loss(probs, expert, 0.01)
    assert got.item() == pytest.approx(0.011)
    uniform = torch.full((4, 2), 0.5)
    assert moe.switch_balancing_loss(
        uniform, torch.tensor([0, 1, 0, 1]), 0.01
    ).item() == pytest.approx(0.01)


def test_moe_layer_switch_matches_a_loop_over_tokens():
    torch.manual_seed(0)
    layer = moe.MoELayer(4, 6, 3, capacity_factor=1.0).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    y, aux = layer(x)
    expert, gate, kept, probs = moe.switch_route(x @ layer.W_g, 1.0)
    for t in range(9):
        e = expert[t]
        h = torch.relu(x[t] @ layer.W1[e] + layer.b1[e, 0])
        want = (h @ layer.W2[e] + layer.b2[e, 0]) * gate[t] * kept[t]
        torch.testing.assert_close(y[t], want)
    assert layer.last_dropped == pytest.approx(1 - kept.double().mean())
    assert layer.last_fraction.sum().item() == pytest.approx(1.0)
    assert aux.item() == pytest.approx(
        moe.switch_balancing_loss(probs, expert, 0.01).item()
    )


def test_moe_layer_topk_weights_two_experts():
    torch.manual_seed(1)
    layer = moe.MoELayer(4, 5, 4, router="topk", k=2).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    y, _ = layer(x)
    G = torch.softmax(moe.keep_top_k(x @ layer.W_g, 2), -1)
    assert ((G > 0).sum(-1) == 2).all()
    h = torch.relu(torch.einsum("td,edh->eth", x, layer.W1) + layer.b1)
    out = torch.einsum("eth,ehd->etd", h, layer.W2) + layer.b2
    want = sum(G[:, e, None] * out[e] for e in range(4))
    torch.testing.assert_close(y, want)


def test_clustered_regression_is_deterministic():
    a = moe.clustered_regression(50, 3, 4, seed=2)
    b = moe.clustered_regression(50, 3, 4, seed=2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert a[0].shape == (50, 3) and a[2].max() < 4


def test_gpt_oss_counts_match_the_model_card():
    # model card (OpenAI 2025): 116.83 B total, 5.13 B active; 20.91 B and
    # 3.61 B; shapes d_model 2880, 64 heads of 64, 8 KV heads, vocab 201088
    big = moe.gpt_oss_params(36, 128, 4, 2880, 2880, 64, 8, 64, 201088)
    small = moe.gpt_oss_params(24, 32, 4, 2880, 2880, 64, 8, 64, 201088)
    assert big["total"] / 1e9 == pytest.approx(116.83, abs=0.01)
    assert big["active"] / 1e9 == pytest.approx(5.13, abs=0.01)
    assert small["total"] / 1e9 == pytest.approx(20.91, abs=0.01)
    assert small["active"] / 1e9 == pytest.approx(3.61, abs=0.01)
    assert big["attention"] / 1e9 == pytest.approx(0.96, abs=0.005)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="k="):
        moe.keep_top_k(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="k="):
        moe.load_probability(
            torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 2
        )
    with pytest.raises(ValueError, match="capacity_factor"):
        moe.expert_capacity(4, 2, 0)
    with pytest.raises(ValueError, match="alpha"):
        moe.switch_balancing_loss(
            torch.ones(2, 2) / 2, torch.tensor([0, 1]), -1
        )
    with pytest.raises(ValueError, match="router"):
        moe.MoELayer(2, 2, 2, router="dense")
    with pytest.raises(ValueError, match="v must"):
        moe.cv_squared(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="active_experts"):
        moe.gpt_oss_params(1, 2, 3, 4, 4, 1, 1, 4, 10)


def test_moe_param_counts_by_hand():
    d, h, E = 6, 4, 5
    sw = moe.MoELayer(d, h, E)
    expert = d * h + h + h * d + d
    assert moe.moe_param_counts(sw) == {
        "total": E * expert + d * E,
        "active": expert + d * E,
    }
    tk = moe.MoELayer(d, h, E, router="topk", k=2)
    # the noisy router also uses W_noise; two experts run per token
    assert moe.moe_param_counts(tk) == {
        "total": E * expert + 2 * d * E,
        "active": 2 * expert + 2 * d * E,
    }


def test_regression_net_trains_and_reports_expert_shares():
    import numpy as np

    x, y, _ = moe.clustered_regression(512, 4, 4, seed=0)
    torch.manual_seed(0)
    net = moe.RegressionNet(4, 8, moe.MoELayer(8, 8, 4, alpha=0.01))
    with torch.no_grad():
        before = ((net(x)[0] - y) ** 2).mean().item()
    test, shares = moe.train_regressor(
        net, x, y, x, y, steps=60, batch=64, lr=1e-2, seed=0
    )
    assert test < 0.5 * before
    assert shares.shape == (60, 4) and np.allclose(shares.sum(1), 1)
    live, top = moe.live_experts(shares, 0.02)
    assert 1 <= live <= 4 and 0.25 <= top <= 1
    # the dense baseline has no shares; same seed, same run
    torch.manual_seed(0)
    dense = moe.RegressionNet(4, 8, moe.dense_ffn(8, 16))
    t1, s1 = moe.train_regressor(
        dense, x, y, x, y, steps=20, batch=64, lr=1e-2, seed=3
    )
    torch.manual_seed(0)
    dense = moe.RegressionNet(4, 8, moe.dense_ffn(8, 16))
    t2, _ = moe.train_regressor(
        dense, x, y, x, y, steps=20, batch=64, lr=1e-2, seed=3
    )
    assert s1.size == 0 and t1 == t2
    with pytest.raises(ValueError, match="shares"):
        moe.live_experts(np.zeros((0, 4)), 0.02)
    with pytest.raises(ValueError, match="width"):
        moe.dense_ffn(8, 0)


def test_switch_loss_goes_below_uniform():
    # the review's example: 90 % of tokens at (0.51, 0.49), 10 % at
    # (0.01, 0.99): by hand f = (0.9, 0.1), P = (0.46, 0.54), 2 sum f P
    # = 2 (0.414 + 0.054) = 0.936
    probs = torch.tensor([[0.51, 0.49]] * 9 + [[0.01, 0.99]], dtype=float)
    expert = probs.argmax(1)
    loss = moe.switch_balancing_loss(probs, expert, 1.0)
    assert loss.item() == pytest.approx(0.936)
    # the two-expert family: q + 2 (1 - q)^2 at eps = 0, 7/8 at q = 3/4
    for q in (0.5, 0.75, 0.9):
        p, e = moe.switch_loss_two_experts(q, 0.0, n=1000)
        assert torch.equal(e, p.argmax(1))  # consistent top-1 routing
        got = moe.switch_balancing_loss(p, e, 1.0).item()
        assert got == pytest.approx(q + 2 * (1 - q) ** 2)
    q_star, value = moe.switch_loss_infimum_two_experts()
    assert q_star == pytest.approx(0.75, abs=1e-6)
    assert value == pytest.approx(7 / 8, abs=1e-9)
    # no random consistent top-1 routing of 2 experts goes below 7/8
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        p0 = torch.rand(50, generator=g, dtype=torch.float64)
        p = torch.stack([p0, 1 - p0], 1)
        assert moe.switch_balancing_loss(p, p.argmax(1), 1.0) >= 7 / 8 - 1e-12
    with pytest.raises(ValueError, match="q"):
        moe.switch_loss_two_experts(1.5)


def test_train_seeds_and_table():
    x, y, _ = moe.clustered_regression(64, 4, 2, 0)
    data = (x[:48], y[:48], x[48:], y[48:])

    def make_moe():
        return moe.MoELayer(8, 4, 2)

    runs = {
        "moe": moe.train_seeds(make_moe, data, [0, 1], 4, 8, 3, 16, 1e-2),
        "dense": moe.train_seeds(
            lambda: moe.dense_ffn(8, 4), data, [0, 1], 4, 8, 3, 16, 1e-2
        ),
    }
    # the same seed gives the same run, as train_regressor by hand does
    torch.manual_seed(1)
    net = moe.RegressionNet(4, 8, make_moe())
    test, _ = moe.train_regressor(net, *data, 3, 16, 1e-2, 1)
    assert runs["moe"][1]["test"] == pytest.approx(test)
    table = moe.runs_table(runs, 0.02)
    assert list(table["seed"]) == [0, 1, 0, 1]
    assert table["live experts"].isna().tolist() == [False, False, True, True]
    assert runs["moe"][0]["shares"].shape == (3, 2)


@pytest.mark.parametrize("router", ["switch", "topk", "dense"])
def test_train_seeds_is_bit_equal_to_one_run_at_a_time(router):
    # the stacked runs against the loop over seeds it replaces: every
    # weight, test error and per-step share equal to the last bit, and
    # the global random state left where the loop leaves it
    import numpy as np

    x, y, _ = moe.clustered_regression(300, 4, 3, 0)
    data = (x[:200], y[:200], x[200:], y[200:])
    make = {
        "switch": lambda: moe.MoELayer(8, 4, 4, capacity_factor=1.0),
        "topk": lambda: moe.MoELayer(8, 4, 4, "topk", 2, alpha=0.1),
        "dense": lambda: moe.dense_ffn(8, 12),
    }[router]
    seeds = [3, 0, 7]
    runs = moe.train_seeds(make, data, seeds, 4, 8, 25, 32, 1e-2)
    after = torch.get_rng_state()
    for s, run in zip(seeds, runs):
        torch.manual_seed(s)
        net = moe.RegressionNet(4, 8, make())
        test, shares = moe.train_regressor(net, *data, 25, 32, 1e-2, s)
        assert run["seed"] == s and run["test"] == test
        assert np.array_equal(run["shares"], shares)
        for a, b in zip(run["net"].parameters(), net.parameters()):
            assert torch.equal(a, b)
    assert torch.equal(after, torch.get_rng_state())
    assert runs[0]["test"] != runs[1]["test"]  # the seeds differ


def test_context_attention_flop():
    # the review's hand value: 64 heads of 64, 18 full layers of 36,
    # 4k context: 4 * 4096 * 64 * 64 * 18 = 1.21 GFLOP, plus 18 banded
    # layers at 128 tokens
    got = moe.context_attention_flop(4096, 36, 64, 64, window=128)
    assert got == 4 * 64 * 64 * (18 * 4096 + 18 * 128)
    assert (
        moe.context_attention_flop(4096, 36, 64, 64) == 4 * 4096 * 64 * 64 * 36
    )
    # below the window every layer sees the whole context
    assert moe.context_attention_flop(100, 3, 2, 8, window=128) == (
        moe.context_attention_flop(100, 3, 2, 8)
    )
    # cross-check against counting the two products of one layer
    T, H, dh = 7, 3, 5
    q, K, V = torch.ones(H, 1, dh), torch.ones(H, T, dh), torch.ones(H, T, dh)
    flop = 2 * (q @ K.transpose(1, 2)).numel() * dh + 2 * H * T * dh
    assert moe.context_attention_flop(T, 1, H, dh) == flop


def test_dropped_fraction_matches_switch_route():
    torch.manual_seed(0)
    net = moe.RegressionNet(4, 8, moe.MoELayer(8, 4, 2))
    x = torch.randn(40, 4)
    got = moe.dropped_fraction(net, x, [0.5, 1.0, 4.0])
    logits = net.inp(x) @ net.ffn.W_g
    kept = moe.switch_route(logits.detach(), 0.5)[2]
    assert got[0] == pytest.approx(1 - kept.float().mean().item())
    assert got[2] == 0.0  # 4 x the fair share holds every token
    assert got[0] >= got[1] >= got[2]


def test_gpt_oss_summary_by_hand():
    counts = {"total": 10e9, "active": 1e9, "experts": 8e9}
    got = moe.gpt_oss_summary(counts, 4, 2, 100, 2, 4)
    assert got["GFLOP per token"] == 2.0
    assert got["active / total"] == 0.1
    assert got["weights, bf16 (GB)"] == 20.0
    assert got["weights, MXFP4 experts (GB)"] == pytest.approx(4 + 4)
    assert got["a2a bytes per token"] == 2 * 2 * 100 * 2 * 4


def test_routing_table_hand_example():
    logits = torch.tensor([[2.0, 0], [1, 0], [0, 3], [5, 0], [1, 0], [4, 0]])
    expert, gate, kept, _ = moe.switch_route(logits, 1.0)
    table = moe.routing_table(logits, expert, gate, kept)
    assert list(table.columns) == [
        "logit 0",
        "logit 1",
        "expert",
        "gate",
        "kept",
    ]
    assert table["expert"].tolist() == [0, 0, 1, 0, 0, 0]
    assert table["kept"].tolist() == [True, True, True, True, False, False]
    # token 2: softmax of (0, 3) gives expert 1 the gate 1 / (1 + e^-3)
    assert table["gate"][2] == pytest.approx(1 / (1 + math.exp(-3)), abs=5e-4)


def test_plot_expert_shares_panels():
    import matplotlib.pyplot as plt
    import numpy as np

    sh = np.full((5, 4), 0.25)
    fig = moe.plot_expert_shares({"a": sh, "b": sh}, 4)
    # one column at the book's 6.4 in: readable on a phone (issue 20)
    assert fig.get_size_inches()[0] <= 6.4
    assert {a.get_subplotspec().colspan.start for a in fig.axes} == {0}
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert len(fig.axes[0].collections) == 4  # one stacked band per expert
    assert fig.axes[0].get_ylabel() and fig.axes[1].get_legend()
    assert fig.axes[0].get_xlim() == (1, 5)
    plt.close(fig)


def test_plot_dropped_median_and_band():
    import matplotlib.pyplot as plt
    import numpy as np

    d = np.array([[0.5, 0.1, 0.0], [0.3, 0.3, 0.0], [0.4, 0.2, 0.0]])
    fig = moe.plot_dropped([0.5, 1.0, 2.0], {"r": d}, "t")
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    assert line.get_label() == "r"
    assert list(line.get_ydata()) == pytest.approx([0.4, 0.2, 0.0])
    assert len(ax.collections) == 1 and ax.get_title() == "t"
    plt.close(fig)


def test_gpt_oss_table_rows_match_the_summary():
    arch = (4, 2880, 2880, 64, 8, 64, 201088)
    counts = {
        "big": moe.gpt_oss_params(36, 128, *arch),
        "small": moe.gpt_oss_params(24, 32, *arch),
    }
    table = moe.gpt_oss_table(
        counts, [36, 24], [128, 32], [(117, 5.1), (21, 3.6)], 4, 2880
    )
    assert table.index.tolist() == ["big", "small"]
    small = table.loc["small"]
    assert small["layers"] == 24 and small["published active"] == 3.6
    want = moe.gpt_oss_summary(counts["small"], 24, 4, 2880)
    for key, value in want.items():
        assert small[key] == value


def test_context_flop_table_hand_row():
    table = moe.context_flop_table({"m": 2.0}, [36], [4096], 64, 64, 128)
    row = table.loc[("m", 4096)]
    # 4 * 64 * 64 * (18 * 4096 + 18 * 128) FLOP, the review's hand value
    attn = 4 * 64 * 64 * (18 * 4096 + 18 * 128) / 1e9
    assert row["context (GFLOP)"] == pytest.approx(attn)
    assert row["weights (GFLOP)"] == 2.0
    assert row["context / weights"] == pytest.approx(attn / 2.0)
