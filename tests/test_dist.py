"""Tests for llmbook.topics.dist (torch.distributed, gloo, 2 processes) and
llmbook.topics.zero (the ZeRO paper's formulas and the planner)."""

import numpy as np
import pytest
import torch

from llmbook.book.plotting import legible
from llmbook.core import accounting
from llmbook.topics import dist as D
from llmbook.topics import zero as Z

N = 2
WIDTH, DEPTH, BATCH = 16, 4, 8
PSI = WIDTH * WIDTH * DEPTH  # parameters of the bias-free MLP


# ------------------------------------------------------------ zero.py


def test_zero_paper_example():
    # ZeRO paper, Figure 1: 7.5B parameters, 64 GPUs, K = 12.
    want = [120, 31.4, 16.6, 1.9]
    for stage, gb in enumerate(want):
        got = Z.zero_bytes_per_gpu(7.5e9, 64, stage)["total"] / 1e9
        assert got == pytest.approx(gb, abs=0.05)


def test_zero_formulas_closed_form():
    psi, n, k = 1e6, 8, 12
    tot = [Z.zero_bytes_per_gpu(psi, n, s)["total"] for s in range(4)]
    assert tot == pytest.approx(
        [16 * psi, 4 * psi + k * psi / n, 2 * psi + 14 * psi / n, 16 * psi / n]
    )
    assert [Z.zero_comm_volume(s) for s in range(4)] == [2, 2, 2, 3]


def test_plan_and_smallest_fit():
    p = Z.plan(64e9, 64, 1, tp=8, pp=2)
    assert p["n_dp"] == 4
    want = Z.zero_bytes_per_gpu(4e9, 4, 1)["total"]
    assert p["total"] == pytest.approx(want)
    fit = Z.smallest_fit(65e9, 80e9, 3)
    # 16 GPUs hold 16 * 65e9 B / 16 = 65 GB each; 8 would need 130 GB.
    assert fit["n_gpus"] == 16 and fit["total"] <= 80e9
    assert Z.plan(65e9, 8, 3)["total"] > 80e9
    # pure data parallelism: stages 0-2 never fit (4 Psi, 4 Psi, 2 Psi)
    for stage in (0, 1, 2):
        assert Z.smallest_fit(65e9, 80e9, stage, max_mp=1) is None
    assert Z.smallest_fit(65e9, 80e9, 3, max_mp=1)["n_gpus"] == 16
    assert Z.pipeline_bubble(4, 8) == pytest.approx(3 / 11)
    assert Z.ring_all_reduce_bytes(100, 4) == pytest.approx(150)


@pytest.mark.parametrize(
    "call",
    [
        lambda: Z.zero_bytes_per_gpu(1e9, 0, 1),
        lambda: Z.zero_bytes_per_gpu(1e9, 8, 4),
        lambda: Z.plan(1e9, 12, 1, tp=8),
        lambda: Z.plan(1e9, 8, 1, pp=0),
        lambda: Z.pipeline_bubble(0, 4),
        lambda: D.launch(D.collectives_worker, 0, [4], 1),
        lambda: D.make_mlp(0, 2),
        lambda: D.launch_many([(None, ())], 2),
        lambda: D.Attention(10, 3),
    ],
)
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_tensor_bytes_and_models():
    t = [torch.ones(3), None, torch.ones(2, dtype=torch.float16)]
    assert D.tensor_bytes(t) == 3 * 4 + 2 * 2
    m = D.make_mlp(8, 3)
    assert D.tensor_bytes(m.parameters()) == 3 * 8 * 8 * 4
    blocks = D.make_pipeline_model(4, 2, 0.0, 0.0)
    x = torch.randn(5, 4)
    y = torch.tanh(blocks[1].lin(torch.tanh(blocks[0].lin(x))))
    torch.testing.assert_close(blocks(x), y)


# ------------------------------------------- dist.py, several processes


def test_collectives_ring_volume_and_comm_counter():
    res, counted = D.launch_many(
        [(D.collectives_worker, ([64, 256], 1)), (_count_both, ())], N
    )
    counter, debug = counted[0]
    # CommCounter sees what torch's CommDebugMode sees
    assert counter == debug == {"allreduce": 1, "broadcast": 1}
    for r in res:
        assert all(r["ok"].values()), r["ok"]
        assert r["ring_bytes"] == [
            Z.ring_all_reduce_bytes(4 * s, N) for s in (64, 256)
        ]


def _single_adam(steps):
    m = D.make_mlp(WIDTH, DEPTH)
    x, y = D.make_batch(BATCH, WIDTH)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()
        opt.zero_grad()
    return list(m.parameters())


def test_ddp_and_zero_stages():
    ddp, res = D.launch_many(
        [
            (D.ddp_worker, (WIDTH, DEPTH, BATCH)),
            (D.zero_worker, ([0, 1, 2, 3], WIDTH, DEPTH, BATCH, 2)),
        ],
        N,
    )
    m = D.make_mlp(WIDTH, DEPTH)
    x, y = D.make_batch(BATCH, WIDTH)
    torch.nn.functional.mse_loss(m(x), y).backward()
    for r in ddp:
        for g, p in zip(r["grads"], m.parameters()):
            torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-5)
        assert r["all_reduces"] == 1 and r["all_reduce_bytes"] == 4 * PSI

    ref = _single_adam(2)
    for r in res:
        for stage in range(4):
            s = r[stage]
            # fp32 weights and gradients, Adam's two fp32 moments
            want = Z.zero_bytes_per_gpu(PSI, N, stage, 4, 4, 8)
            # FSDP2 frees the gathered weights after backward even without
            # resharding after forward: between steps stage 2 holds 1/N.
            assert s["param_bytes"] == (
                want["params"] if stage < 2 else 4 * PSI / N
            )
            assert s["grad_bytes"] == want["grads"]
            assert s["optim_bytes"] == want["optim"]
            for w, p in zip(s["weights"], ref):
                torch.testing.assert_close(w, p, atol=1e-5, rtol=1e-4)
        assert r[3]["param_bytes_after_forward"] == 4 * PSI / N
        assert r[2]["param_bytes_after_forward"] == 4 * PSI
        assert r[0]["comm"]["allreduce"] == 1
        assert r[1]["comm_bytes"]["broadcast"] >= 4 * PSI  # owner -> all
        assert r[2]["comm"] == {
            "allgather_base": DEPTH,
            "reduce_scatter_base": DEPTH,
        }
        assert r[3]["comm"]["allgather_base"] == 2 * DEPTH
        assert r[3]["comm_bytes"] == {
            "allgather_base": 2 * 4 * PSI,
            "reduce_scatter_base": 4 * PSI,
        }


def _count_both(rank, world_size):
    import warnings

    import torch.distributed as dist
    from torch.distributed.tensor.debug import CommDebugMode

    x = torch.ones(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with CommDebugMode() as mode, D.CommCounter() as c:
            dist.all_reduce(x)
            dist.broadcast(x, 0)
    debug = {
        str(k).split(".")[1].strip("_"): v
        for k, v in mode.get_comm_counts().items()
    }
    return c.counts, debug


def test_tensor_parallel_mlp_and_block():
    res, res_block = D.launch_many(
        [
            (D.tensor_parallel_worker, (8, 32, 4)),
            (D.tensor_parallel_block_worker, (8, 2, 32, 4)),
        ],
        N,
    )
    block = D.MLP(8, 32)
    x = D.make_batch(4, 8)[0].requires_grad_(True)
    y = block(x)
    y.pow(2).sum().backward()
    full = sum(p.numel() * 4 for p in block.parameters())
    for r in res:
        torch.testing.assert_close(r["y"], y.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r["x_grad"], x.grad, atol=1e-5, rtol=1e-5)
        assert r["forward"] == {"all_reduce": 1}
        assert r["backward"] == {"all_reduce": 1}
        # everything is split but the second bias (replicated)
        assert r["param_bytes"] == (full - 8 * 4) / N + 8 * 4

    block = D.Block(8, 2, 32)
    x = D.make_batch(4, 8)[0].requires_grad_(True)
    y = block(x)
    y.pow(2).sum().backward()
    for r in res_block:
        torch.testing.assert_close(r["y"], y.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r["x_grad"], x.grad, atol=1e-5, rtol=1e-5)
        # one all-reduce per sub-block forward; backward, one per
        # column-parallel input: q, k, v separately, and the MLP's up
        assert r["forward"] == {"all_reduce": 2}
        assert r["backward"] == {"all_reduce": 4}


def test_pipeline_schedules_equal_unsplit_model():
    runs = [("gpipe", 2), ("1f1b", 4)]
    res = D.launch(D.pipeline_worker, N, runs, 4, 8, 0.01, 0.02)
    full = D.make_pipeline_model(4, N, 0.0, 0.0)
    x, y = D.make_batch(8, 4)
    loss = torch.nn.functional.mse_loss(full(x), y)
    loss.backward()
    for i, (_, m) in enumerate(runs):
        grads = [g for r in res for g in r[i]["grads"]]
        for g, p in zip(grads, full.parameters()):
            torch.testing.assert_close(g, p.grad, atol=1e-6, rtol=1e-5)
        assert res[-1][i]["loss"] == pytest.approx(loss.item(), rel=1e-5)
        for r in res:  # m forwards and m backwards per stage, none extra
            kinds = [e[0] for e in r[i]["events"]]
            assert kinds.count("F") == kinds.count("B") == m


def test_ring_attention_and_expert_routing():
    q, k, v = D.make_qkv(8, 4)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q[None], k[None], v[None], is_causal=True
    )[0]
    res, res_ep = D.launch_many(
        [
            (D.ring_attention_worker, (8, 4, True)),
            (D.expert_parallel_worker, (16, 4)),
        ],
        N,
    )
    got = torch.cat([r["out"] for r in res])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # each rank forwards N - 1 key/value shards of 8/N tokens x 4 x 2
    assert res[0]["bytes_sent"] == (N - 1) * 2 * (8 // N) * 4 * 4

    res = res_ep
    x, gate, experts = D.make_moe(16, 4, N)
    got = torch.cat([r["out"] for r in res])
    torch.testing.assert_close(got, D.moe_reference(x, gate, experts))
    routed = torch.softmax(x @ gate, -1).argmax(-1)
    sent = torch.tensor([r["sent_to"] for r in res]).sum(0)
    assert sent.tolist() == torch.bincount(routed, minlength=N).tolist()


def test_four_ranks_ring_volume():
    res = D.launch(D.collectives_worker, 4, [64], 1)
    for r in res:
        assert all(r["ok"].values()), r["ok"]
        # 2 (n - 1) / n = 1.5 times the 256-byte message
        assert r["ring_bytes"] == [384]


def _fail_on_rank_one(rank, world_size):
    if rank == 1:
        raise RuntimeError("rank one fails")
    return rank


def test_a_failing_worker_fails_the_launch():
    import torch.multiprocessing as mp

    # the error reported is rank 1's, or rank 0's lost connection to it
    with pytest.raises(mp.ProcessRaisedException):
        D.launch(_fail_on_rank_one, 2)


def test_zero_defaults_are_the_mixed_precision_recipe():
    """The ZeRO formulas' default bytes come from the training-cost chapter's 16N recipe."""
    from llmbook.topics import zero

    per_param = accounting.training_state_bytes(1.0, "mixed")
    assert (
        zero.zero_bytes_per_gpu(1.0, 1, 0)["total"] == per_param["total"] == 16
    )
    assert (
        zero.OPTIM_BYTES
        == per_param["master"] + per_param["adam_m"] + per_param["adam_v"]
    )


def test_interleaved_bubble_divides_the_fill_time():
    # p = 4 stages, m = 8 microbatches, v = 2 chunks per device: the fill
    # and drain take (p - 1) / v = 1.5 slots of a whole stage's time, so
    # the idle fraction is 1.5 / (8 + 1.5) = 3 / 19.
    assert Z.pipeline_bubble(4, 8, 2) == pytest.approx(3 / 19)
    assert Z.pipeline_bubble(4, 8, 1) == Z.pipeline_bubble(4, 8)
    with pytest.raises(ValueError):
        Z.pipeline_bubble(4, 8, 0)


def test_expert_parallel_bytes_count_routed_vectors():
    # every rank's tokens pick experts j and j + 1 (mod n): uniform routing
    tokens, h, n, k, nbytes = 64, 16, 4, 2, 2
    per_rank = tokens // n
    sent = []
    for rank in range(n):
        dest = [(j + c) % n for j in range(per_rank) for c in range(k)]
        off = sum(d != rank for d in dest)
        sent.append(2 * off * h * nbytes)  # dispatch and combine
    got = Z.expert_parallel_bytes(tokens, h, n, k, nbytes)
    assert got == pytest.approx(np.mean(sent))
    # tensor parallelism all-reduces all tokens x h: n / k times more
    tp = Z.tensor_parallel_bytes(tokens, h, n, nbytes)
    assert tp == pytest.approx(2 * 3 / 4 * tokens * h * nbytes)
    assert tp / got == pytest.approx(n / k)


def test_plan_counts_activations_split_by_tensor_parallelism():
    base = Z.plan(64e9, 64, 1, tp=8, pp=2)
    with_act = Z.plan(64e9, 64, 1, tp=8, pp=2, act_bytes=16e9)
    assert with_act["act"] == 2e9 and base["act"] == 0
    assert with_act["total"] == pytest.approx(base["total"] + 2e9)
    # 40 GB of activations: one GPU's 80 GB cannot take them unsplit, so
    # the fit needs tp >= 2 although the states alone fit at tp = 1
    alone = Z.smallest_fit(65e9, 80e9, 3)
    fit = Z.smallest_fit(65e9, 80e9, 3, act_bytes=40e9)
    assert alone["tp"] == 1 and fit["tp"] >= 2
    assert fit["total"] <= 80e9 and fit["act"] == 40e9 / fit["tp"]
    with pytest.raises(ValueError):
        Z.plan(1e9, 8, 1, act_bytes=-1)


def test_measured_comm_volume_counts_all_reduce_twice():
    # psi = 100 fp32 values: an all-reduce of 400 bytes is 2 units, a
    # reduce-scatter and an all-gather of 400 bytes each 1 unit
    assert Z.measured_comm_volume({"allreduce": 400}, 100) == 2.0
    both = {"reduce_scatter_base": 400, "allgather_base": 400}
    assert Z.measured_comm_volume(both, 100) == 2.0
    assert Z.measured_comm_volume({"broadcast": 200}, 100, 2) == 1.0


def test_idle_fraction_and_bubble_table_hand_values():
    # two stages, span 0..3 s: stage 0 busy 2 s, stage 1 busy 1 s -> 1 - 1.5/3
    ev = [[("F", 0.0, 1.0), ("B", 2.0, 3.0)], [("F", 1.0, 2.0)]]
    assert D.idle_fraction(ev) == pytest.approx(0.5)
    bub = D.bubble_table({(2, "gpipe", 1): ev, (2, "1f1b", 2): ev})
    assert bub[["p", "schedule", "m"]].values.tolist() == [
        [2, "gpipe", 1],
        [2, "1f1b", 2],
    ]
    assert bub["idle measured"].tolist() == pytest.approx([0.5, 0.5])
    assert bub["(p-1)/(m+p-1)"].tolist() == pytest.approx([1 / 2, 1 / 3])


def test_bubble_and_timeline_figures():
    import matplotlib

    matplotlib.use("Agg")
    ev = [[("F", 0.0, 1.0), ("B", 2.0, 3.0)], [("F", 1.0, 2.0)]]
    pipe = {(2, s, m): ev for s in ("gpipe", "1f1b") for m in (1, 2)}
    fig = D.plot_bubble(D.bubble_table(pipe), [2], [1, 2])
    # one formula line and a marker line per schedule for the one depth
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 3
    assert legible(fig)  # issue 20: on a phone and a laptop
    fig = D.plot_pipeline_timeline(pipe, 2, 2)
    assert len(fig.axes) == 2
    assert [len(ax.patches) for ax in fig.axes] == [3, 3]  # one bar per event
    assert [t.get_text() for t in fig.axes[0].texts] == ["F0", "B0", "F0"]
    assert legible(fig)
