"""Pretrain the small GPT of the soft-prompting chapter and save it to lib/llmbook/data/.

Usage: python tools/train_softprompt_model.py [--steps N] [--out PATH]
Writes the state dict (float32) and a JSON with the settings and the loss of every step,
so ``tests/test_softprompt.py`` can re-run the first steps and check that they reproduce.
One thread, fixed seed: the run is deterministic on a given machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llmbook.topics import softprompt as sp

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "lib" / "llmbook" / "data" / "softprompt_gpt.pt"
SETTINGS = {"steps": 1000, "batch_size": 128, "lr": 3e-3, "seed": 0}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=SETTINGS["steps"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = dict(SETTINGS, steps=args.steps)
    start = time.perf_counter()
    log = lambda step, loss: print(
        f"step {step:5d}  loss {loss:.4f}", flush=True
    )  # noqa: E731
    model, losses = sp.pretrain(**settings, log=log)
    meta = {
        "settings": settings,
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    args.out.with_suffix(".json").write_text(json.dumps(meta))
    size = args.out.stat().st_size / 1e6
    print(f"saved {args.out} ({size:.2f} MB) after {meta['seconds']:.0f} s")
    return meta


if __name__ == "__main__":
    main()
