"""Benchmark: one learning-rate sweep trained vectorised (all runs as one batched tensor
computation) against a Python loop of ordinary torch.optim.SGD runs. Prints the speedup.

    .venv/bin/python tools/bench_sweep.py [--runs 32] [--steps 200] [--batch 64] [--threads 1]
"""

import argparse

import torch

from llmbook.topics import batchsize as bs

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument(
    "--runs", type=int, default=32, help="learning rates in the sweep"
)
parser.add_argument("--steps", type=int, default=200, help="SGD steps per run")
parser.add_argument("--batch", type=int, default=64, help="batch size")
parser.add_argument(
    "--threads",
    type=int,
    default=1,
    help="torch threads (small batched ops: 1)",
)
args = parser.parse_args()
torch.set_num_threads(args.threads)
problem = bs.linear_problem()
for model in ("linear", "mlp"):
    if model == "mlp":
        problem = bs.mlp_problem()
    r = bs.benchmark(
        problem, model, bs.lr_grid(0.01, args.runs), args.batch, args.steps
    )
    print(
        f"{model:6s}: {args.runs} runs x {args.steps} steps, batch {args.batch}: "
        f"vectorised {r['vectorised_s']:.2f} s, loop {r['loop_s']:.2f} s, speedup {r['speedup']:.0f}x"
    )
