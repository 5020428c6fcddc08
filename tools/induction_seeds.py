"""Run the induction chapter's seed check and store it in lib/llmbook/data/.

Usage: python tools/induction_seeds.py
Trains the two-layer attention-only model of notebooks/induction-trained
once per seed (all seeds at once, ``llmbook.topics.induction.seed_check``)
with the notebook's default parameters, and writes the scores of every seed
with those settings to ``induction_seeds.json``. The notebook reads the file
when its parameters match and reruns the check otherwise. One thread (the
tensors are tiny), fixed seeds: about two minutes on a quiet laptop CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmbook.topics import induction as ind

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "lib" / "llmbook" / "data" / "induction_seeds.json"
SETTINGS = {  # the defaults of notebooks/induction-trained.ipynb
    "seeds": [0, 1, 2, 3, 4],
    "n_heads": 4,
    "d_model": 64,
    "d_head": 16,
    "n_ctx": 32,
    "d_vocab": 24,
    "steps": 1200,
    "batch_size": 64,
    "lr": 1e-2,
    "min_len": 6,
    "max_len": 16,
    "probe_seed": 123,
    "min_score": 0.4,
}


def main() -> dict:
    torch.set_num_threads(1)  # tiny tensors: one thread is faster
    start = time.perf_counter()
    result = ind.seed_check(SETTINGS)
    result["seconds"] = time.perf_counter() - start
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["rows"]:
        print(row)
    print(f"{result['seconds']:.0f} s, written to {OUT}")
    return result


if __name__ == "__main__":
    main()
