"""Run the μP notebook's width sweep for five seeds and store the optima.

Usage: python tools/mup_seeds.py
Runs the sweep of notebooks/cost-mup (``llmbook.topics.mutransfer
.seed_check``: both parameterisations, every width, the notebook's default
parameters) once per seed, each seed its own teacher draw, initial weights
and batches, and writes per seed and parameterisation the refined best
learning rate of each width, the fitted exponent with its 95 % interval,
the drift and the spread of the narrowest width's rate to
``lib/llmbook/data/mup_seeds.json``. The notebook runs seed 0 live, asserts
that it equals the stored row, and uses the stored seeds when its
parameters match. About 30 s per seed on a quiet 2-core laptop CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmbook.topics import mutransfer

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "lib" / "llmbook" / "data" / "mup_seeds.json"
SEEDS = [0, 1, 2, 3, 4]
SETTINGS = {  # the defaults of notebooks/cost-mup.ipynb
    "widths": [64, 128, 256, 512, 1024, 2048],
    "base_width": 64,
    "lr_min": 2.5e-4,
    "lr_factor": 2.5,
    "n_lrs": 7,
    "steps": 200,
    "batch_size": 32,
    "n_train": 4096,
    "dim": 8,
    "noise": 0.5,
    "full_grid_max_width": 512,
    "lr_window": 1,
}


def main() -> dict:
    torch.set_num_threads(2)  # as the notebook (results do not depend on it)
    start = time.perf_counter()
    result = mutransfer.seed_check(SETTINGS, SEEDS)
    result["seconds"] = time.perf_counter() - start
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    table = mutransfer.seed_table(result["rows"])
    print(table.round(3).to_string())
    print(f"{result['seconds']:.0f} s, written to {OUT}")
    return result


if __name__ == "__main__":
    main()
