"""Run the iso-FLOP notebook's whole sweep for five seeds and store the fits.

Usage: python tools/isoflop_seeds.py
Runs the sweep of notebooks/cost-isoflop (``llmbook.topics.isoflop
.seed_check``: the notebook's default parameters, every width at every
budget at every rate of the grid) once per seed, each seed its own teacher
language, initial weights and batches, and writes per seed the exponents
a and b with their 95 % intervals, a at the single rate and the best size
per budget to ``lib/llmbook/data/isoflop_seeds.json``. The notebook runs
seed 0 live, compares it with the stored row, and summarises the stored
seeds when its parameters match. About a minute per seed on a quiet
2-core laptop CPU (one thread, as the notebook).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmbook.topics import isoflop

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "lib" / "llmbook" / "data" / "isoflop_seeds.json"
SEEDS = [0, 1, 2, 3, 4]
SETTINGS = {  # the defaults of notebooks/cost-isoflop.ipynb
    "vocab": 32,
    "context": 3,
    "teacher_embed": 16,
    "teacher_width": 256,
    "teacher_sharpness": 3.0,
    "student_embed": 8,
    "widths": [8, 16, 32, 64, 128, 256],
    "budgets": [3e8, 1e9, 3e9, 1e10],
    "target_steps": 400,
    "batch_range": [32, 8192],
    "lr": 1e-2,
    "lr_grid": [3e-3, 1e-2, 3e-2, 1e-1],
    "fit_points": 5,
}


def main() -> dict:
    torch.set_num_threads(1)  # as the notebook
    start = time.perf_counter()
    result = isoflop.seed_check(SETTINGS, SEEDS)
    result["seconds"] = time.perf_counter() - start
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(isoflop.seed_table(result["rows"]).round(3).to_string())
    print(f"{result['seconds']:.0f} s, written to {OUT}")
    return result


if __name__ == "__main__":
    main()
