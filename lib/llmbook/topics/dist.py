"""Parallel training on PyTorch's own distributed engine, run on one CPU.

``launch`` starts ``world_size`` processes (gloo backend, the same code that
``torchrun`` starts on GPUs with NCCL), runs a worker function on each and
returns what every rank returned. The workers below are the experiments of
the parallelism chapter (``scale-parallelism``, ``cme295-zero``,
``cme295-model-parallel``): collectives and a hand-written ring all-reduce,
data parallelism, ZeRO-1/2/3, a Megatron MLP and a GPipe/1F1B pipeline with a
fixed cost per block. Workers live here, in an importable module, because the
spawned processes must import them.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from llmbook.core.validate import positive_int
from llmbook.core.measure import (
    tensor_bytes,
)  # local shards of DTensors counted

# ---------------------------------------------------------------- launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, fn, world_size, port, outdir, args):
    """What each spawned process runs: join the group, run ``fn``, save."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    tmp = Path(outdir) / f"rank{rank}.tmp"
    torch.save(result, tmp)
    tmp.rename(Path(outdir) / f"rank{rank}.pt")  # complete or absent
    # A gloo worker thread can abort the interpreter at exit after FSDP
    # runs (an upstream bug); a short pause before exiting avoids it.
    time.sleep(0.2)


def launch(fn, world_size: int, *args) -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` local processes.

    Each process joins a gloo process group (as ``torchrun`` would make it
    join an NCCL one on GPUs), runs with one intra-op thread
    (``OMP_NUM_THREADS=1``) and returns a picklable result.

    Args:
        fn: a function defined at module level in an importable module
            (spawned processes import it).
        world_size: the number of processes ``n_d`` (>= 1).
        *args: extra picklable arguments passed to ``fn``.

    Returns:
        ``[result of rank 0, ..., result of rank n_d - 1]``.

    A process that saved its result but then died while the interpreter
    shut down (a known gloo exit-time race) does not fail the launch; a
    process that failed before saving re-raises its error. Used throughout
    the parallelism chapter (``scale-parallelism`` and after).
    """
    world_size = positive_int("world_size", world_size)
    if not callable(fn):
        raise ValueError("fn must be a callable defined at module level")
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with tempfile.TemporaryDirectory() as outdir:
            port = _free_port()
            try:
                mp.spawn(
                    _entry,
                    args=(fn, world_size, port, outdir, args),
                    nprocs=world_size,
                    join=True,
                )
            except mp.ProcessExitedException:
                saved = [
                    (Path(outdir) / f"rank{r}.pt").exists()
                    for r in range(world_size)
                ]
                if not all(saved):
                    raise
            return [
                torch.load(Path(outdir) / f"rank{r}.pt", weights_only=False)
                for r in range(world_size)
            ]
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def _several(rank, world_size, jobs):
    return [fn(rank, world_size, *args) for fn, args in jobs]


def launch_many(jobs, world_size: int) -> list:
    """Run several workers one after the other in one set of processes.

    Starting processes costs seconds (each imports torch); experiments
    that need the same ``world_size`` share one start.

    Args:
        jobs: a list of ``(fn, args)``, each as :func:`launch` takes them.
        world_size: the number of processes.

    Returns one list per job: ``[result of rank 0, ..., rank N-1]``.
    """
    jobs = [(fn, tuple(args)) for fn, args in jobs]
    for fn, _ in jobs:
        if not callable(fn):
            raise ValueError("jobs must hold (callable, args) pairs")
    per_rank = launch(_several, world_size, jobs)
    return [[r[j] for r in per_rank] for j in range(len(jobs))]


# ------------------------------------------------------------ collectives


def ring_all_reduce(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum ``x`` over all ranks with a ring: reduce-scatter, then all-gather.

    Each of the ``n`` ranks splits ``x`` into ``n`` chunks. In ``n - 1``
    steps every rank sends one chunk to its right neighbour and adds the
    chunk arriving from its left (reduce-scatter: rank ``r`` ends owning the
    full sum of one chunk); in ``n - 1`` more steps the summed chunks travel
    round the ring (all-gather).

    Args:
        x: a 1-D tensor whose length ``n`` divides; the same shape on
            every rank.

    Returns:
        ``(sum over ranks, bytes this rank sent)``; the bytes are
        ``2 (n - 1) / n`` times the bytes of ``x``. Derivation: the
        parallelism chapter, ``scale-parallelism``, "Collectives".
    """
    n, r = dist.get_world_size(), dist.get_rank()
    if x.dim() != 1 or x.numel() % n:
        raise ValueError(
            f"x must be 1-D with a length divisible by {n}, got {x.shape}"
        )
    chunks = list(x.clone().chunk(n))
    right, left = (r + 1) % n, (r - 1) % n
    sent = 0
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            if phase == "reduce-scatter":
                i_send, i_recv = (r - s) % n, (r - s - 1) % n
            else:
                i_send, i_recv = (r - s + 1) % n, (r - s) % n
            buf = torch.empty_like(chunks[i_recv])
            req = dist.isend(chunks[i_send], right)
            dist.recv(buf, left)
            req.wait()
            sent += chunks[i_send].numel() * chunks[i_send].element_size()
            if phase == "reduce-scatter":
                chunks[i_recv] = chunks[i_recv] + buf
            else:
                chunks[i_recv] = buf
    return torch.cat(chunks), sent


def _time(fn, repeats: int) -> float:
    dist.barrier()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def collectives_worker(rank, world_size, sizes, repeats):
    """Check the collectives against their definitions and time them.

    Args (after ``rank, world_size``): ``sizes``, message lengths in
    float32 elements (each divisible by ``world_size``); ``repeats``, timed
    calls per size (the median is kept).

    Returns a dict: ``ok`` (every collective equals its definition),
    ``ring_bytes`` (bytes sent by the hand ring per size),
    ``t_all_reduce``, ``t_all_gather``, ``t_reduce_scatter`` (median seconds
    per size).
    """
    n = world_size
    g = torch.Generator().manual_seed(0)
    full = [torch.randn(sizes[0], generator=g) for _ in range(n)]
    mine = full[rank]
    want = torch.stack(full).sum(0)
    ok = {}
    x = mine.clone()
    dist.all_reduce(x)
    ok["all_reduce"] = torch.allclose(x, want, atol=1e-5)
    ring, _ = ring_all_reduce(mine)
    ok["ring_all_reduce"] = torch.allclose(ring, want, atol=1e-5)
    out = torch.empty(n * mine.numel())
    dist.all_gather_single(out, mine)
    ok["all_gather"] = torch.equal(out, torch.cat(full))
    part = torch.empty(mine.numel() // n)
    dist.reduce_scatter_single(part, mine)
    ok["reduce_scatter"] = torch.allclose(part, want.chunk(n)[rank], atol=1e-5)
    b = mine.clone()
    dist.broadcast(b, src=0)
    ok["broadcast"] = torch.equal(b, full[0])
    a2a = torch.empty_like(mine)
    dist.all_to_all_single(a2a, mine)
    ok["all_to_all"] = torch.equal(
        a2a, torch.cat([f.chunk(n)[rank] for f in full])
    )
    res = {"ok": ok, "ring_bytes": [], "t_all_reduce": []}
    res["t_all_gather"], res["t_reduce_scatter"] = [], []
    for s in sizes:
        v = torch.ones(s)
        res["ring_bytes"].append(ring_all_reduce(v)[1])
        res["t_all_reduce"].append(_time(lambda: dist.all_reduce(v), repeats))
        out = torch.empty(n * s)
        res["t_all_gather"].append(
            _time(lambda: dist.all_gather_single(out, v), repeats)
        )
        part = torch.empty(s // n)
        res["t_reduce_scatter"].append(
            _time(lambda: dist.reduce_scatter_single(part, v), repeats)
        )
    return res


# ------------------------------------------------- data parallelism, ZeRO


def make_mlp(width: int, depth: int, seed: int = 0) -> nn.Sequential:
    """``depth`` bias-free ``width x width`` linear layers with ReLU between.

    Every weight has the same size, so ZeRO's partitions divide it evenly.
    """
    width = positive_int("width", width)
    depth = positive_int("depth", depth)
    torch.manual_seed(seed)
    layers = []
    for i in range(depth):
        layers.append(nn.Linear(width, width, bias=False))
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_batch(batch: int, width: int, seed: int = 1):
    """A fixed regression batch ``(x, y)``, both ``(batch, width)``."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, width, generator=g),
        torch.randn(batch, width, generator=g),
    )


def _adam_state_bytes(optimizer) -> int:
    """Bytes of Adam's two moment buffers (the step counters left out)."""
    return tensor_bytes(
        s[k]
        for s in optimizer.state.values()
        for k in ("exp_avg", "exp_avg_sq")
        if k in s
    )


def ddp_worker(rank, world_size, width, depth, batch):
    """One DDP step on this rank's slice of the batch.

    Returns the gradients (a list of tensors), the number of gradient
    all-reduces and the bytes they carried (counted by a communication
    hook), and the bytes of parameters and gradients this rank holds.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_mlp(width, depth)
    ddp = DDP(model, bucket_cap_mb=1024)  # one bucket: one all-reduce
    calls = []

    def hook(state, bucket):
        calls.append(bucket.buffer().numel() * 4)
        return (
            dist.all_reduce(bucket.buffer() / world_size, async_op=True)
            .get_future()
            .then(lambda f: f.value()[0])
        )

    ddp.register_comm_hook(None, hook)
    x, y = make_batch(batch, width)
    xs, ys = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
    nn.functional.mse_loss(ddp(xs), ys).backward()
    params = list(model.parameters())
    return {
        "grads": [p.grad.clone() for p in params],
        "all_reduces": len(calls),
        "all_reduce_bytes": sum(calls),
        "param_bytes": tensor_bytes(params),
        "grad_bytes": tensor_bytes(p.grad for p in params),
    }


class CommCounter:
    """Count the collectives run inside ``with CommCounter() as c:``.

    ``c.counts[name]`` is the number of calls and ``c.payload[name]`` the
    bytes of the full message (the tensor reduced, the gathered output,
    the scattered input), for each c10d operation (``allreduce``,
    ``allgather_base``, ``reduce_scatter_base``, ``broadcast``, ...). It
    sees what ``torch.distributed.tensor.debug.CommDebugMode`` sees (the
    tests compare the counts) and adds the sizes.
    """

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.counts, self.payload = {}, {}

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.namespace in ("c10d", "_c10d_functional"):
                    counter._record(func, args)
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)

    def _record(self, func, args):
        name = func.__name__.split(".")[0].strip("_")
        if name == "wait_tensor" or name.startswith("wrap"):
            return
        if name == "all_gather_into_tensor":  # functional: (input, n, group)
            msg = [args[0]] * args[1]
        elif name in ("allgather_base", "allgather_into_tensor_coalesced"):
            msg = args[0]  # the gathered output
        elif name in (
            "reduce_scatter_base",
            "reduce_scatter_tensor_coalesced",
        ):
            msg = args[1]  # the full input
        else:
            msg = args[0]
        tensors = msg if isinstance(msg, (list, tuple)) else [msg]
        flat = []
        for t in tensors:
            flat.extend(t if isinstance(t, (list, tuple)) else [t])
        self.counts[name] = self.counts.get(name, 0) + 1
        self.payload[name] = self.payload.get(name, 0) + tensor_bytes(flat)


def zero_worker(rank, world_size, stages, width, depth, batch, steps):
    """Train the MLP with Adam under each ZeRO stage in ``stages`` (0 to 3).

    Stage 0 is DDP; 1 is DDP with ``ZeroRedundancyOptimizer``; 2 and 3 are
    FSDP2 ``fully_shard`` per layer with ``reshard_after_forward`` False
    (parameters stay gathered from forward to backward) and True.

    Returns ``{stage: dict}`` with the per-rank bytes of parameters (before
    forward, after forward, after the step), gradients and Adam moments;
    the collectives of the last step counted by ``CommDebugMode``; and the
    final full weights (gathered) to compare with a single process.
    """
    return {
        s: _zero_run(rank, world_size, s, width, depth, batch, steps)
        for s in stages
    }


def _zero_run(rank, world_size, stage, width, depth, batch, steps):
    model = make_mlp(width, depth)
    x, y = make_batch(batch, width)
    xs, ys = x.chunk(world_size)[rank], y.chunk(world_size)[rank]
    opt_kw = {"lr": 1e-2}
    if stage in (0, 1):
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel as DDP

        # one bucket: one all-reduce of all gradients
        net = DDP(model, bucket_cap_mb=1024)
        if stage == 0:
            opt = torch.optim.Adam(model.parameters(), **opt_kw)
            local_opt = opt
        else:
            opt = ZeroRedundancyOptimizer(
                model.parameters(), optimizer_class=torch.optim.Adam, **opt_kw
            )
            local_opt = opt.optim
    elif stage in (2, 3):
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, reshard_after_forward=(stage == 3))
        fully_shard(model, reshard_after_forward=(stage == 3))
        net = model
        opt = torch.optim.Adam(model.parameters(), **opt_kw)
        local_opt = opt
    else:
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage}")
    res = {}
    for step in range(steps):
        last = step == steps - 1
        with CommCounter() as mode:
            if last:
                res["param_bytes_before"] = tensor_bytes(model.parameters())
            loss = nn.functional.mse_loss(net(xs), ys)
            if last:
                res["param_bytes_after_forward"] = _held_param_bytes(model)
            loss.backward()
            if last:
                res["grad_bytes"] = tensor_bytes(
                    p.grad for p in model.parameters()
                )
            opt.step()
            opt.zero_grad()
        if last:
            res["comm"] = dict(mode.counts)
            res["comm_bytes"] = dict(mode.payload)
    res["param_bytes"] = tensor_bytes(model.parameters())
    res["optim_bytes"] = _adam_state_bytes(local_opt)
    weights = []
    for p in model.parameters():
        p = p.detach()
        weights.append(p.full_tensor() if hasattr(p, "full_tensor") else p)
    res["weights"] = weights
    return res


def _held_param_bytes(model) -> int:
    """Parameter bytes held now, counting FSDP2's gathered copies."""
    total = 0
    for m in model.modules():
        state = getattr(m, "_get_fsdp_state", None)
        group = state()._fsdp_param_group if state else None
        if group is None:
            continue
        for fp in group.fsdp_params:
            unsharded = getattr(fp, "_unsharded_param", None)
            held = (
                unsharded is not None
                and unsharded.untyped_storage().size() > 0
            )
            total += (
                tensor_bytes([unsharded])
                if held
                else tensor_bytes([fp.sharded_param])
            )
    if total == 0:
        total = tensor_bytes(model.parameters())
    return total


# ------------------------------------------------------ tensor parallelism


class MLP(nn.Module):
    """The transformer's feed-forward block: ``W2 relu(W1 x)``."""

    def __init__(self, d_model: int, d_ff: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def _count_forward_backward(block, tokens: int, d_model: int) -> dict:
    """Run a (parallelised) block forward and backward on the shared batch,
    counting the collectives of each pass."""
    x = make_batch(tokens, d_model)[0].requires_grad_(True)
    with CommCounter() as fwd:
        y = block(x)
    with CommCounter() as bwd:
        y.pow(2).sum().backward()
    return {
        "y": y.detach(),
        "x_grad": x.grad,
        "forward": dict(fwd.counts),
        "backward": dict(bwd.counts),
        "forward_bytes": dict(fwd.payload),
        "param_bytes": tensor_bytes(block.parameters()),
    }


def tensor_parallel_worker(rank, world_size, d_model, d_ff, tokens):
    """The Megatron MLP: ``up`` split by columns, ``down`` by rows.

    Uses DTensor's ``parallelize_module`` with ``ColwiseParallel`` and
    ``RowwiseParallel`` on a one-dimensional device mesh. Returns the
    output and the input gradient (to compare with the unsharded block),
    the collectives of the forward and of the backward pass, and the
    parameter bytes this rank holds.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (world_size,))
    block = MLP(d_model, d_ff)
    plan = {"up": ColwiseParallel(), "down": RowwiseParallel()}
    parallelize_module(block, mesh, plan)
    return _count_forward_backward(block, tokens, d_model)


class Attention(nn.Module):
    """Causal multi-head self-attention on ``(tokens, d_model)`` inputs.

    The number of heads is read from the width of the query projection's
    output, so the same code runs whole (all heads) or tensor-parallel
    (each rank the ``n_heads / n`` heads of its column slice).
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("n_heads must divide d_model")
        self.d_head = d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        heads = q.shape[-1] // self.d_head  # local heads

        def split(t):
            return t.view(-1, heads, self.d_head).transpose(0, 1)

        y = nn.functional.scaled_dot_product_attention(
            split(q), split(k), split(v), is_causal=True
        )
        return self.o(y.transpose(0, 1).reshape(x.shape[0], -1))


class Block(nn.Module):
    """A pre-norm transformer block: attention, then the MLP, each with a
    residual connection."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, d_ff, seed=seed + 1)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


def tensor_parallel_block_worker(
    rank, world_size, d_model, n_heads, d_ff, tokens
):
    """A transformer block with its attention heads and MLP split across
    ranks (queries, keys, values and ``up`` by columns; the output
    projection and ``down`` by rows). Returns the output, the input
    gradient and the collectives of each pass.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (world_size,))
    block = Block(d_model, n_heads, d_ff)
    col, row = ColwiseParallel(), RowwiseParallel()
    plan = {
        "attn.q": col,
        "attn.k": col,
        "attn.v": col,
        "attn.o": row,
        "mlp.up": col,
        "mlp.down": row,
    }
    parallelize_module(block, mesh, plan)
    return _count_forward_backward(block, tokens, d_model)


# ---------------------------------------------------- pipeline parallelism

EVENTS: list[tuple[str, float, float]] = []


def _in_shape_inference() -> bool:
    """True inside ``torch.distributed.pipelining``'s metadata pass."""
    import sys

    frame = sys._getframe(1)
    while frame is not None:
        if "metadata_inference" in frame.f_code.co_name:
            return True
        frame = frame.f_back
    return False


class _Sleep(torch.autograd.Function):
    """Identity whose forward and backward each take a fixed time."""

    @staticmethod
    def forward(ctx, x, t_fwd, t_bwd):
        # The pipeline first runs each stage once to learn the shapes it
        # sends; that pass is neither timed nor recorded.
        ctx.t_bwd = 0.0 if _in_shape_inference() else t_bwd
        if ctx.t_bwd == 0.0 and t_bwd:
            return x.clone()
        t0 = time.time()
        time.sleep(t_fwd)
        EVENTS.append(("F", t0, time.time()))
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        if ctx.t_bwd == 0.0 or _in_shape_inference():
            return g, None, None
        t0 = time.time()
        time.sleep(ctx.t_bwd)
        EVENTS.append(("B", t0, time.time()))
        return g, None, None


class TimedBlock(nn.Module):
    """A linear layer followed by a fixed-cost op (seconds per microbatch
    ``t_fwd`` forward, ``t_bwd`` backward) that stands in for a heavy
    transformer block."""

    def __init__(self, width: int, t_fwd: float, t_bwd: float):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.t_fwd, self.t_bwd = t_fwd, t_bwd

    def forward(self, x):
        return _Sleep.apply(torch.tanh(self.lin(x)), self.t_fwd, self.t_bwd)


def make_pipeline_model(width, n_blocks, t_fwd, t_bwd, seed=0):
    """``n_blocks`` ``TimedBlock``s in a ``nn.Sequential``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        *[TimedBlock(width, t_fwd, t_bwd) for _ in range(n_blocks)]
    )


def pipeline_worker(rank, world_size, runs, width, batch, t_fwd, t_bwd):
    """Run pipeline schedules with one block per rank.

    Args (after ``rank, world_size``): ``runs``, a list of
    ``(schedule, n_micro)`` with schedule ``"gpipe"`` or ``"1f1b"``;
    ``width``, ``batch``; ``t_fwd``, ``t_bwd``, seconds per microbatch of
    one block.

    Returns, per run, this stage's gradients, the loss (last stage), the
    events ``(kind, start, end)`` in seconds from the synchronised start,
    and the step's wall time.
    """
    from torch.distributed.pipelining import (
        PipelineStage,
        Schedule1F1B,
        ScheduleGPipe,
    )

    kinds = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
    out = []
    for name, n_micro in runs:
        full = make_pipeline_model(width, world_size, t_fwd, t_bwd)
        block = full[rank]
        stage = PipelineStage(block, rank, world_size, torch.device("cpu"))
        sched = kinds[name](
            stage, n_microbatches=n_micro, loss_fn=nn.functional.mse_loss
        )
        x, y = make_batch(batch, width)
        EVENTS.clear()
        dist.barrier()
        t0 = time.time()
        losses = []
        if rank == 0:
            sched.step(x)
        elif rank == world_size - 1:
            sched.step(target=y, losses=losses)
        else:
            sched.step()
        t1 = time.time()
        dist.barrier()
        out.append(
            {
                "schedule": name,
                "n_micro": n_micro,
                "grads": [p.grad.clone() for p in block.parameters()],
                "loss": (
                    float(torch.stack(losses).mean().detach())
                    if losses
                    else None
                ),
                "events": [(k, a - t0, b - t0) for k, a, b in EVENTS],
                "wall": t1 - t0,
            }
        )
    return out


def idle_fraction(stage_events) -> float:
    """Measured idle fraction of a pipeline step: ``1 - busy / span``,
    averaged over stages. ``stage_events``: one list per stage of
    ``(kind, start, end)`` events in seconds (``pipeline_worker``'s
    ``"events"``); the span runs from the first start to the last end over
    all stages. Section cme295-model-parallel.
    """
    import numpy as np

    starts = [e[1] for ev in stage_events for e in ev]
    ends = [e[2] for ev in stage_events for e in ev]
    span = max(ends) - min(starts)
    busy = [sum(b - a for _, a, b in ev) for ev in stage_events]
    return 1 - np.mean(busy) / span


def bubble_table(pipe: dict):
    """Measured idle fraction beside the formula, one row per run.

    ``pipe``: ``{(p, schedule, m): stage_events}`` (one event list per
    stage, as for :func:`idle_fraction`). Returns a DataFrame with the
    columns ``p``, ``schedule``, ``m``, ``idle measured`` and
    ``(p-1)/(m+p-1)`` (:func:`llmbook.topics.zero.pipeline_bubble`), in the
    order of ``pipe``. Section cme295-model-parallel.
    """
    import pandas as pd

    from llmbook.topics.zero import pipeline_bubble

    rows = []
    for (p, sched, m), ev in pipe.items():
        rows.append(
            {
                "p": p,
                "schedule": sched,
                "m": m,
                "idle measured": idle_fraction(ev),
                "(p-1)/(m+p-1)": pipeline_bubble(p, m),
            }
        )
    return pd.DataFrame(rows)


def plot_bubble(bub, stages, micro):
    """Figure: idle fraction against the number of microbatches (log axis),
    the formula as a line per pipeline depth in ``stages`` and the measured
    GPipe (o) and 1F1B (x) runs of ``bub`` (from :func:`bubble_table`) as
    markers; ticks at ``micro``. Returns the figure. Section
    cme295-model-parallel.
    """
    import numpy as np

    from llmbook.book.plotting import PALETTE, new_axes
    from llmbook.topics.zero import pipeline_bubble

    fig, ax = new_axes(
        "microbatches $n_\\mu$",
        "idle fraction of each stage",
        "Pipeline bubble: measured and formula",
        logx=True,
    )
    for j, p in enumerate(stages):
        mm = np.array(micro)
        ax.plot(
            mm,
            [pipeline_bubble(p, m) for m in mm],
            "-",
            color=PALETTE[j],
            label=f"formula, $n_p$ = {p}",
        )
        for sched, mk in (("gpipe", "o"), ("1f1b", "x")):
            sel = bub[(bub.p == p) & (bub.schedule == sched)]
            ax.plot(
                sel.m,
                sel["idle measured"],
                mk,
                color=PALETTE[j],
                label=f"{sched}, $n_p$ = {p}",
            )
    ax.set_xticks(micro, [str(m) for m in micro])
    ax.minorticks_off()
    ax.legend(fontsize=10, ncols=2)
    return fig


def plot_pipeline_timeline(pipe: dict, n_stages: int, n_micro: int):
    """Figure, two panels (GPipe above, 1F1B below): one row per stage, a bar
    per forward (F, first colour) and backward (B, second colour) of each
    microbatch, numbered in the order the stage ran them, in ms since the
    first event of either run. ``pipe``: ``{(p, schedule, m):
    stage_events}`` holding both schedules at ``(n_stages, n_micro)``.
    Returns the figure. Section cme295-model-parallel.
    """
    import matplotlib.pyplot as plt

    from llmbook.book.plotting import PALETTE, use_style

    fig, axes = plt.subplots(2, 1, figsize=(6.4, 4.8), sharex=True)
    use_style()
    t0 = min(
        e[1]
        for s in ("gpipe", "1f1b")
        for ev in pipe[(n_stages, s, n_micro)]
        for e in ev
    )
    for ax, sched in zip(axes, ("gpipe", "1f1b")):
        for st, ev in enumerate(pipe[(n_stages, sched, n_micro)]):
            count = {"F": 0, "B": 0}
            for kind, a, b in ev:
                colour = PALETTE[0] if kind == "F" else PALETTE[1]
                ax.barh(
                    st,
                    (b - a) * 1e3,
                    left=(a - t0) * 1e3,
                    color=colour,
                    edgecolor="white",
                    height=0.8,
                )
                ax.text(
                    (a + b) / 2 * 1e3 - t0 * 1e3,
                    st,
                    f"{kind}{count[kind]}",
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color="white",
                )
                count[kind] += 1
        ax.set_yticks(range(n_stages))
        ax.invert_yaxis()
        ax.set_ylabel("stage")
        label = {"gpipe": "GPipe", "1f1b": "1F1B"}[sched]
        ax.set_title(f"{label}: $n_p$ = {n_stages}, $n_\\mu$ = {n_micro}")
    axes[-1].set_xlabel("time since the step began (ms)")
    return fig


# ------------------------------------ sequence, context, expert parallelism


def make_qkv(tokens: int, dim: int, seed: int = 2):
    """Queries, keys and values, each ``(tokens, dim)``, fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(tokens, dim, generator=g) for _ in range(3))


def ring_attention_worker(rank, world_size, tokens, dim, causal):
    """Causal or full attention over a sequence split into contiguous shards.

    Rank ``r`` keeps the queries of shard ``r``; the key/value shards go
    round the ring (``n - 1`` send/recv steps), and each arriving block is
    folded into the output with the online softmax (running maximum and
    running sum), so no rank ever holds the whole sequence.

    Returns this rank's output rows and the bytes it sent.
    """
    n = world_size
    q, k, v = (t.chunk(n)[rank] for t in make_qkv(tokens, dim))
    scale = dim**-0.5
    m = torch.full((q.shape[0], 1), -float("inf"))
    s = torch.zeros(q.shape[0], 1)
    o = torch.zeros_like(q)
    kv = torch.stack([k, v])
    sent = 0
    for step in range(n):
        src = (rank - step) % n  # the shard whose keys we hold now
        if not causal or src <= rank:
            scores = (q @ kv[0].T) * scale
            if causal and src == rank:
                keep = torch.ones_like(scores, dtype=torch.bool).tril()
                scores = scores.masked_fill(~keep, -float("inf"))
            m_new = torch.maximum(m, scores.max(-1, keepdim=True).values)
            p = torch.exp(scores - m_new)
            corr = torch.exp(m - m_new)
            s = s * corr + p.sum(-1, keepdim=True)
            o = o * corr + p @ kv[1]
            m = m_new
        if step < n - 1:
            buf = torch.empty_like(kv)
            req = dist.isend(kv, (rank + 1) % n)
            dist.recv(buf, (rank - 1) % n)
            req.wait()
            sent += kv.numel() * kv.element_size()
            kv = buf
    return {"out": o / s, "bytes_sent": sent}


def moe_reference(x, gate, experts):
    """Top-1 mixture of experts on one process: token ``t`` goes to expert
    ``argmax(x_t gate)`` and its output is scaled by that softmax weight.

    Args: ``x`` ``(tokens, dim)``; ``gate`` ``(dim, n_experts)``;
    ``experts`` a list of ``(dim, dim)`` weight matrices.
    """
    probs = torch.softmax(x @ gate, -1)
    w, idx = probs.max(-1)
    out = torch.empty_like(x)
    for e, W in enumerate(experts):
        sel = idx == e
        out[sel] = torch.tanh(x[sel] @ W) * w[sel, None]
    return out


def make_moe(tokens: int, dim: int, n_experts: int, seed: int = 3):
    """Tokens ``(tokens, dim)``, a gate and ``n_experts`` expert matrices."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, dim, generator=g)
    gate = torch.randn(dim, n_experts, generator=g)
    experts = [
        torch.randn(dim, dim, generator=g) / dim**0.5 for _ in range(n_experts)
    ]
    return x, gate, experts


def expert_parallel_worker(rank, world_size, tokens, dim):
    """Expert parallelism: one expert per rank, tokens routed by all-to-all.

    Each rank routes its ``tokens / n`` tokens with the shared gate, sends
    each token to the rank holding its expert (one all-to-all for the
    counts, one for the tokens), applies its expert, and sends the results
    back (a second all-to-all). Returns this rank's output rows and the
    number of tokens it sent to each rank.
    """
    n = world_size
    x_all, gate, experts = make_moe(tokens, dim, n)
    x = x_all.chunk(n)[rank]
    probs = torch.softmax(x @ gate, -1)
    w, idx = probs.max(-1)
    order = torch.argsort(idx, stable=True)
    send_counts = torch.bincount(idx, minlength=n)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts)
    s_split, r_split = send_counts.tolist(), recv_counts.tolist()
    inbox = torch.empty(sum(r_split), dim)
    dist.all_to_all_single(inbox, x[order].contiguous(), r_split, s_split)
    done = torch.tanh(inbox @ experts[rank])  # this rank's expert
    back = torch.empty(x.shape[0], dim)
    dist.all_to_all_single(back, done, s_split, r_split)
    out = torch.empty_like(x)
    out[order] = back
    return {"out": out * w[:, None], "sent_to": s_split}
