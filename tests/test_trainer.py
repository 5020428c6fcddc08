"""The vectorised multi-seed trainer against plain single-model loops.

Tolerances. The float64 cross-checks use rtol=1e-8 (atol=1e-11): the stacked
and the plain run do the same arithmetic, but batched kernels may sum in
another order and the trainer's Adam regroups its last division, so they
differ in the last bits (~1e-16), which up to 40 steps amplify; the largest
gap measured here is ~3e-10 relative, in the transformer block (softmax and
LayerNorm sums), a 30x margin for other CPUs. Real mistakes land far
outside: an Adam bias correction one step off, beta1 or weight decay 0.1% /
1% off, eps doubled, a gradient clip over all runs or a schedule one step
late each make these tests fail (tried). The float32 check uses rtol=1e-4
for float32's ~1e-7 rounding (gap measured: ~3e-6). Independence between
runs is checked bit for bit.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmbook.core import trainer as tr

RTOL64, ATOL64 = 1e-8, 1e-11


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small batched ops run fastest on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class NormMLP(nn.Module):
    """MLP with LayerNorm, GELU and a fixed input-scaling buffer."""

    def __init__(self, d_in=5, hidden=12, d_out=3):
        super().__init__()
        self.register_buffer("scale", torch.linspace(0.5, 1.5, d_in))
        self.fc1 = nn.Linear(d_in, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.fc2(F.gelu(self.norm(self.fc1(x * self.scale))))


class TinyConv(nn.Module):
    """Conv2d, ReLU, pooling and a linear head on 1 x 6 x 6 images."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(-2, -1)))


class TinyBlock(nn.Module):
    """One causal pre-norm transformer block over token ids; the causal mask
    is a buffer."""

    def __init__(self, vocab=7, d=8, t=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.1 * torch.randn(t, d))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)
        )
        self.unemb = nn.Linear(d, vocab)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        self.register_buffer("mask", mask)

    def forward(self, ids):
        h = self.emb(ids) + self.pos
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        att = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        att = att.masked_fill(self.mask, -math.inf).softmax(-1)
        h = h + self.out(att @ v)
        h = h + self.mlp(self.ln2(h))
        return self.unemb(h)


def seq_loss(logits, ids):
    """Next-token cross-entropy of one run's (B, T, vocab) logits."""
    return F.cross_entropy(
        logits[..., :-1, :].reshape(-1, logits.shape[-1]),
        ids[..., 1:].reshape(-1),
    )


def mse(out, y):
    return ((out - y) ** 2).mean()


def regression_data(n=64, d_in=5, d_out=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=g, dtype=dtype)
    W = torch.randn(d_in, d_out, generator=g, dtype=dtype)
    return X, torch.tanh(X @ W)


def plain_run(make_model, seed, batches, i, steps, lr, loss_fn, **kw):
    """Reference: one model, torch.optim, run i's batches (i=None: the
    batch is shared)."""
    torch.manual_seed(seed)
    model = make_model()
    optimizer = kw.pop("optimizer", "adam")
    schedule, clip = kw.pop("schedule", None), kw.pop("max_grad_norm", None)
    cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = cls(model.parameters(), lr=lr, **kw)
    sched = None
    if schedule is not None:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses = []
    for t in range(steps):
        x, y = batches(t)
        if i is not None:
            x, y = x[i], y[i]
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return model, torch.tensor(losses, dtype=torch.float64)


def assert_run_matches(out, base, buffers, i, model, losses, rtol, atol):
    """Run i of ``out`` has the plain model's weights and loss curve."""
    got = tr.run_model(base, out.params, i, buffers)
    for (name, a), (_, b) in zip(
        got.named_parameters(), model.named_parameters()
    ):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=name)
    torch.testing.assert_close(
        out.losses[:, i].double(), losses, rtol=rtol, atol=atol
    )


def norm_mlp64():
    return NormMLP().double()


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "adam"},
        {"optimizer": "adam", "betas": (0.8, 0.99), "weight_decay": 0.1},
        {"optimizer": "sgd"},
        {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.01},
    ],
)
def test_each_run_equals_a_plain_torch_optim_loop(options):
    seeds, steps, lr = [3, 4, 5], 30, 0.02
    X, Y = regression_data()
    params, buffers, base = tr.init_runs(norm_mlp64, seeds)
    batches = tr.sample_batches(X, Y, 8, [10, 11, 12], steps)
    out = tr.train_runs(
        base, params, mse, batches, steps, lr, buffers=buffers, **options
    )
    assert out.losses.shape == (steps, 3) and bool(out.alive.all())
    for i, seed in enumerate(seeds):
        model, losses = plain_run(
            norm_mlp64, seed, batches, i, steps, lr, mse, **options
        )
        assert_run_matches(
            out, base, buffers, i, model, losses, RTOL64, ATOL64
        )
    # the runs really differ (different inits and data)
    assert not torch.allclose(out.losses[-1, 0], out.losses[-1, 1])


def test_per_run_learning_rates_equal_separate_runs():
    lrs = torch.tensor([0.003, 0.03, 0.3], dtype=torch.float64)
    X, Y = regression_data(seed=1)
    params, buffers, base = tr.init_runs(norm_mlp64, [7, 7, 7])
    batches = tr.sample_batches(X, Y, 16, [1, 2, 3], 25)
    out = tr.train_runs(base, params, mse, batches, 25, lrs, buffers=buffers)
    for i, lr in enumerate(lrs.tolist()):
        p1, b1, base1 = tr.init_runs(norm_mlp64, [7])
        one = tr.train_runs(
            base1,
            p1,
            mse,
            lambda t, i=i: [z[i : i + 1] for z in batches(t)],
            25,
            lr,
            buffers=b1,
        )
        for k in out.params:
            torch.testing.assert_close(
                out.params[k][i], one.params[k][0], rtol=RTOL64, atol=ATOL64
            )
        model, losses = plain_run(norm_mlp64, 7, batches, i, 25, lr, mse)
        assert_run_matches(
            out, base, buffers, i, model, losses, RTOL64, ATOL64
        )


def test_schedule_and_per_run_clipping_equal_lambdalr_and_clip_grad_norm():
    X, Y = regression_data(seed=2)
    params, buffers, base = tr.init_runs(norm_mlp64, [0, 1])
    batches = tr.sample_batches(X, Y, 8, [5, 6], 20)
    kw = {
        "optimizer": "sgd",
        "momentum": 0.5,
        "schedule": lambda t: 1 / (1 + t),
        "max_grad_norm": 0.05,
    }
    out = tr.train_runs(
        base, params, mse, batches, 20, 0.5, buffers=buffers, **kw
    )
    for i in range(2):
        model, losses = plain_run(
            norm_mlp64, i, batches, i, 20, 0.5, mse, **dict(kw)
        )
        assert_run_matches(
            out, base, buffers, i, model, losses, RTOL64, ATOL64
        )


def test_float32_mlp_matches_plain_loop():
    def make():
        return nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 3))

    X, Y = regression_data(n=200, dtype=torch.float32)
    params, buffers, base = tr.init_runs(make, range(4))
    batches = tr.sample_batches(X, Y, 32, range(4), 40)
    out = tr.train_runs(base, params, F.mse_loss, batches, 40, 1e-2)
    for i in range(4):
        model, losses = plain_run(make, i, batches, i, 40, 1e-2, F.mse_loss)
        assert_run_matches(out, base, buffers, i, model, losses, 1e-4, 1e-6)


def test_conv_model_matches_plain_loop():
    def make():
        return TinyConv().double()

    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 1, 6, 6, generator=g, dtype=torch.float64)
    Y = torch.randint(0, 3, (40,), generator=g)
    params, buffers, base = tr.init_runs(make, [0, 1])
    batches = tr.sample_batches(X, Y, 8, [0, 1], 15)
    out = tr.train_runs(base, params, F.cross_entropy, batches, 15, 0.01)
    for i in range(2):
        model, losses = plain_run(
            make, i, batches, i, 15, 0.01, F.cross_entropy
        )
        assert_run_matches(
            out, base, buffers, i, model, losses, RTOL64, ATOL64
        )


def test_transformer_block_with_shared_batches_matches_plain_loop():
    def make():
        return TinyBlock().double()

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (12, 4, 5), generator=g)  # one batch a step

    def batches(t):
        return ids[t], ids[t]

    params, buffers, base = tr.init_runs(make, [0, 1, 2])
    assert set(buffers) == {"mask"}
    out = tr.train_runs(
        base,
        params,
        seq_loss,
        batches,
        12,
        3e-3,
        buffers=buffers,
        shared=True,
    )
    for i in range(3):
        model, losses = plain_run(make, i, batches, None, 12, 3e-3, seq_loss)
        got = tr.run_model(base, out.params, i, buffers)
        assert torch.equal(got.mask, model.mask)
        assert_run_matches(
            out, base, buffers, i, model, losses, RTOL64, ATOL64
        )


def mlp64():
    return nn.Sequential(
        nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)
    ).double()


@pytest.mark.parametrize(
    "make, loss", [(norm_mlp64, mse), (mlp64, F.mse_loss)]
)
def test_runs_do_not_influence_each_other(make, loss):
    X, Y = regression_data(seed=3)
    params, buffers, base = tr.init_runs(make, [0, 1])
    batches = tr.sample_batches(X, Y, 8, [0, 1], 20)
    X2 = torch.randn_like(X)

    def other(t):  # run 0 sees different inputs; run 1 the same
        x, y = batches(t)
        return torch.stack([X2[batches.index[0, t]], x[1]]), y

    lrs = torch.tensor([0.01, 0.02], dtype=torch.float64)
    ref = tr.train_runs(base, params, loss, batches, 20, lrs, buffers=buffers)
    lrs_changed = torch.tensor([0.5, 0.02], dtype=torch.float64)
    changed = tr.train_runs(
        base, params, loss, other, 20, lrs_changed, buffers=buffers
    )
    for k in params:
        assert torch.equal(ref.params[k][1], changed.params[k][1])
        assert not torch.equal(ref.params[k][0], changed.params[k][0])
    assert torch.equal(ref.losses[:, 1], changed.losses[:, 1])


def test_a_diverging_run_is_frozen_and_leaves_the_others_alone():
    X, Y = regression_data(seed=4)
    params, buffers, base = tr.init_runs(norm_mlp64, [0, 1])
    batches = tr.sample_batches(X, Y, 8, [0, 1], 30)
    lrs = torch.tensor([1e6, 0.1], dtype=torch.float64)
    out = tr.train_runs(
        base,
        params,
        mse,
        batches,
        30,
        lrs,
        buffers=buffers,
        optimizer="sgd",
        max_loss=1e3,
    )
    assert out.alive.tolist() == [False, True]
    assert torch.isnan(out.losses[-1, 0]) and not torch.isnan(out.losses[0, 0])
    alone = tr.train_runs(
        base,
        {k: v[1:] for k, v in params.items()},
        mse,
        lambda t: [z[1:] for z in batches(t)],
        30,
        0.1,
        buffers={k: v[1:] for k, v in buffers.items()},
        optimizer="sgd",
    )
    for k in params:
        torch.testing.assert_close(
            out.params[k][1], alone.params[k][0], rtol=RTOL64, atol=ATOL64
        )


def test_training_is_deterministic_and_leaves_inputs_alone():
    X, Y = regression_data(seed=5)
    params, buffers, base = tr.init_runs(norm_mlp64, [0, 1])
    before = {k: v.clone() for k, v in params.items()}
    state = torch.get_rng_state()
    runs = [
        tr.train_runs(
            base,
            params,
            mse,
            tr.sample_batches(X, Y, 8, [0, 1], 10),
            10,
            0.01,
            buffers=buffers,
        )
        for _ in range(2)
    ]
    assert torch.equal(torch.get_rng_state(), state)
    for k in params:
        assert torch.equal(runs[0].params[k], runs[1].params[k])
        assert torch.equal(params[k], before[k])
    assert torch.equal(runs[0].losses, runs[1].losses)


def test_init_runs_builds_each_seed_and_keeps_the_global_rng():
    state = torch.get_rng_state()
    params, buffers, base = tr.init_runs(NormMLP, [4, 9, 4])
    assert torch.equal(torch.get_rng_state(), state)
    assert tr.n_runs(params) == 3 and tr.n_runs(buffers) == 3
    assert all(p.device.type == "meta" for p in base.parameters())
    torch.manual_seed(9)
    want = NormMLP()
    for k, v in want.state_dict().items():
        got = params[k] if k in params else buffers[k]
        assert torch.equal(got[1], v)
        assert torch.equal(got[0], got[2])  # same seed, same start
    assert not torch.equal(params["fc1.weight"][0], params["fc1.weight"][1])


def test_outputs_and_evaluation_match_the_single_models():
    X, Y = regression_data(seed=6)
    params, buffers, base = tr.init_runs(norm_mlp64, [0, 1, 2])
    out = tr.run_outputs(base, params, X, buffers)
    losses = tr.evaluate_runs(base, params, mse, X, Y, buffers)
    per_run = tr.run_outputs(
        base, params, X.expand(3, *X.shape), buffers, shared=False
    )
    assert out.shape == (3, 64, 3)
    torch.testing.assert_close(per_run, out, rtol=RTOL64, atol=ATOL64)
    for i in range(3):
        model = tr.run_model(base, params, i, buffers)
        with torch.no_grad():
            want = model(X)
        torch.testing.assert_close(out[i], want, rtol=RTOL64, atol=ATOL64)
        torch.testing.assert_close(
            losses[i], mse(want, Y), rtol=RTOL64, atol=ATOL64
        )


def test_sample_batches_draws_each_runs_own_stream():
    X = torch.arange(50.0)[:, None]
    Y = torch.arange(50)
    batches = tr.sample_batches(X, Y, 6, [3, 8, 3], 4)
    assert batches.index.shape == (3, 4, 6)
    g = torch.Generator().manual_seed(8)
    want = torch.randint(50, (4, 6), generator=g)
    x, y = batches(2)
    assert torch.equal(y[1], want[2]) and torch.equal(x[1, :, 0], want[2])
    assert torch.equal(y[0], y[2]) and not torch.equal(y[0], y[1])


def test_bad_arguments_raise_naming_the_argument():
    X, Y = regression_data()
    params, buffers, base = tr.init_runs(norm_mlp64, [0, 1])
    batches = tr.sample_batches(X, Y, 4, [0, 1], 5)

    def train(**kw):
        args = {
            "base_model": base,
            "params": params,
            "loss_fn": mse,
            "batches": batches,
            "steps": 5,
            "lr": 0.1,
            "buffers": buffers,
        }
        return tr.train_runs(**{**args, **kw})

    cases = [
        ("seeds", lambda: tr.init_runs(NormMLP, [])),
        ("seeds", lambda: tr.init_runs(NormMLP, [0.5])),
        ("make_model", lambda: tr.init_runs(3, [0])),
        ("make_model", lambda: tr.init_runs(lambda: 3, [0])),
        ("make_model", lambda: tr.init_runs(lambda: nn.BatchNorm1d(3), [0])),
        ("steps", lambda: train(steps=0)),
        ("lr", lambda: train(lr=-1.0)),
        ("lr", lambda: train(lr=torch.tensor([0.1, 0.2, 0.3]))),
        ("lr", lambda: train(lr=torch.tensor([0.1, math.nan]))),
        ("optimizer", lambda: train(optimizer="rmsprop")),
        ("momentum", lambda: train(momentum=0.9)),
        ("momentum", lambda: train(optimizer="sgd", momentum=1.0)),
        ("betas", lambda: train(betas=(0.9, 1.0))),
        ("eps", lambda: train(eps=0.0)),
        ("weight_decay", lambda: train(weight_decay=-1.0)),
        ("max_grad_norm", lambda: train(max_grad_norm=0.0)),
        ("max_loss", lambda: train(max_loss=-1.0)),
        ("schedule", lambda: train(schedule=0.5)),
        ("loss_fn", lambda: train(loss_fn=None)),
        (
            "loss_fn",
            lambda: train(loss_fn=lambda o, y: ((o - y) ** 2).mean(-1)),
        ),
        ("batches", lambda: train(batches=None)),
        ("batches", lambda: train(batches=lambda t: (X, Y))),
        ("batches", lambda: train(batches=lambda t: X)),
        ("buffers", lambda: train(buffers=None)),
        ("params", lambda: train(params={"fc1.weight": params["fc1.weight"]})),
        ("params", lambda: train(params={})),
        ("base_model", lambda: train(base_model="mlp")),
        ("batch_size", lambda: tr.sample_batches(X, Y, 0, [0], 5)),
        ("X and Y", lambda: tr.sample_batches(X, Y[:3], 2, [0], 5)),
        ("step", lambda: batches(5)),
        ("i", lambda: tr.run_model(base, params, 2, buffers)),
        (
            "inputs",
            lambda: tr.run_outputs(base, params, X, buffers, shared=False),
        ),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(
    "loss, soft",
    [
        (F.cross_entropy, False),
        (F.cross_entropy, True),
        (F.mse_loss, False),
        (mse, False),
    ],
)
def test_mlp_fast_path_equals_vmap(shared, loss, soft):
    # nn.Sequential of Linear and activations runs as batched matmuls, and
    # cross-entropy / MSE as one flat call; both must equal plain vmap
    params, buffers, base = tr.init_runs(mlp64, [0, 1, 2])
    g = torch.Generator().manual_seed(0)
    lead = () if shared else (3,)
    x = torch.randn(*lead, 6, 2, 5, generator=g, dtype=torch.float64)
    if loss is F.cross_entropy:  # (B, C) logits per run: flatten B and T
        x = x[..., 0, :]
        y = (
            torch.randn(*lead, 6, 3, generator=g).softmax(-1).double()
            if soft
            else torch.randint(0, 3, (*lead, 6), generator=g)
        )
    else:
        y = torch.randn(*lead, 6, 2, 3, generator=g, dtype=torch.float64)
    assert tr._is_plain_mlp(base)
    ps = {k: v.clone().requires_grad_() for k, v in params.items()}
    got, want = (
        tr._vmapped(base, loss, shared, fast)(ps, buffers, x, y)
        for fast in (True, False)
    )
    assert got.shape == (3,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    for a, b in zip(
        torch.autograd.grad(got.sum(), list(ps.values())),
        torch.autograd.grad(want.sum(), list(ps.values())),
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_token_cross_entropy_is_bit_equal_to_its_expression():
    # the fused backward does autograd's operations on the same numbers
    g = torch.Generator().manual_seed(1)
    out = torch.randn(3, 50, 7, generator=g).requires_grad_()
    y = torch.randint(0, 7, (3, 50), generator=g)
    w = torch.rand(3, generator=g)  # runs weighted unequally

    def plain():
        picked = out.gather(-1, y[..., None])[..., 0]
        return (out.logsumexp(-1) - picked).mean(1)

    def fused():
        return tr._TokenCrossEntropy.apply(out, y).mean(1)

    a, b = plain(), fused()
    assert torch.equal(a, b)
    ga, gb = (torch.autograd.grad((v * w).sum(), out)[0] for v in (a, b))
    assert torch.equal(ga, gb)
    assert not torch.equal(ga, torch.zeros_like(ga))
