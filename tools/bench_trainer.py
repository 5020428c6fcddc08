"""Benchmark: 8 seeds of one model trained at once with
``llmbook.core.trainer`` against one seed and against a loop over 8 seeds.

The model is the number-formats chapter's MLP (``formats.mlp_*``: 196
inputs, the 14 x 14 bundled MNIST images, 64 hidden ReLU units, 10 classes),
trained with Adam at batch 128, as ``notebooks/formats-mixed-precision``
trains it (300 steps there). Each seed has its own initialisation and its
own batches. Prints the median wall time of a few repeats of

    (a) one seed, a plain torch.optim loop,
    (b) 8 seeds vectorised (one stacked run of the trainer),
    (c) 8 seeds as a plain Python loop over seeds,

and the ratios (b)/(a) and (c)/(a), then the same ratios for other widths
and batch sizes (fewer steps). A benchmark, not a test: it never fails on
time. The first calls of the run pay one-off start-up costs, so a short
warm-up of both paths runs before any timing.

    .venv/bin/python tools/bench_trainer.py [--seeds 8] [--steps 300]
        [--batch 128] [--hidden 64] [--threads N] [--repeats 3]
        [--scan-steps 100]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.core import trainer
from llmbook.core import cnn


def make(n_in, hidden, n_out):
    return lambda: nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out)
    )


def plain(make_model, seeds, x, y, batch, steps, lr):
    """One ordinary torch.optim.Adam loop per seed, one after the other."""
    batches = trainer.sample_batches(x, y, batch, seeds, steps)
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        model = make_model()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for t in range(steps):
            idx = batches.index[i, t]  # run i's batch alone
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def stacked(make_model, seeds, x, y, batch, steps, lr):
    """All seeds at once with the vectorised trainer."""
    params, buffers, base = trainer.init_runs(make_model, seeds)
    batches = trainer.sample_batches(x, y, batch, seeds, steps)
    trainer.train_runs(
        base, params, F.cross_entropy, batches, steps, lr, buffers=buffers
    )


def compare(x, y, hidden, batch, steps, args):
    """Median times of (a), (b) and (c) for one width and batch size; the
    three are interleaved in every repeat so that a busy machine slows
    them alike."""
    model = make(x.shape[1], hidden, int(y.max()) + 1)
    seeds = list(range(args.seeds))
    jobs = [(plain, seeds[:1]), (stacked, seeds), (plain, seeds)]
    times = [[], [], []]
    for _ in range(args.repeats):
        for (fn, runs), got in zip(jobs, times):
            start = time.perf_counter()
            fn(model, runs, x, y, batch, steps, args.lr)
            got.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads (default: all cores, as the notebooks run)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scan-steps",
        type=int,
        default=100,
        help="steps for the other sizes (0: skip them)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y, _, _ = cnn.mnist_subset(seed=0)
    x = x.flatten(1)
    n = args.seeds
    print(
        f"torch {torch.__version__}, torch.set_num_threads"
        f"({torch.get_num_threads()}), median of {args.repeats} repeats"
    )
    print(
        f"model: formats chapter MLP {x.shape[1]}-{args.hidden}-10 (ReLU), "
        f"Adam, batch {args.batch}, {args.steps} steps, own init and "
        "batches per seed"
    )
    warm = make(x.shape[1], 8, 10)  # first calls pay one-off start-up
    plain(warm, [0], x, y, 8, 20, args.lr)
    stacked(warm, [0, 1], x, y, 8, 20, args.lr)
    a, b, c = compare(x, y, args.hidden, args.batch, args.steps, args)
    print(f"(a) 1 seed, plain loop:        {a:6.2f} s")
    print(f"(b) {n} seeds, vectorised:       {b:6.2f} s")
    print(f"(c) {n} seeds, loop over seeds:  {c:6.2f} s")
    print(f"{n} seeds vectorised / 1 seed: {b / a:.1f}x (target <= 2x)")
    print(f"{n} seeds looped / 1 seed:     {c / a:.1f}x")
    if not args.scan_steps:
        return
    print(f"other sizes ({args.scan_steps} steps each), {n} seeds / 1 seed:")
    for hidden, batch in ((8, 32), (16, 32), (64, 32), (256, 128)):
        a, b, c = compare(x, y, hidden, batch, args.scan_steps, args)
        print(
            f"  hidden {hidden:4d}, batch {batch:4d}: vectorised "
            f"{b / a:4.1f}x, loop {c / a:4.1f}x  (1 seed {a:.2f} s)"
        )


if __name__ == "__main__":
    main()
