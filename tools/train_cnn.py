"""Train the pruning and quantization labs' CNN once and save it to lib/llmbook/data/cnn_mnist.pt.

Usage: ``python tools/train_cnn.py [--epochs N] [--out PATH]``. Deterministic for a fixed seed and
thread count (both saved in the checkpoint's metadata); about 2 minutes on a 2-core laptop.
``tests/test_prune.py`` re-runs a fast version (fewer images, one epoch) and checks the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from llmbook.core import cnn


def train_reference(
    epochs: int = 4,
    n_train: int | None = None,
    seed: int = 0,
    threads: int = 2,
):
    """Train :class:`llmbook.core.cnn.VGG` on the 14 x 14 MNIST subset; return (model, metadata)."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = cnn.mnist_subset(seed=seed)
    if n_train is not None:
        x_tr, y_tr = x_tr[:n_train], y_tr[:n_train]
    model = cnn.VGG()
    losses = cnn.train(model, x_tr, y_tr, epochs=epochs, seed=seed)
    meta = {
        "plan": list(cnn.CHANNEL_PLAN),
        "epochs": epochs,
        "seed": seed,
        "threads": threads,
        "n_train": len(y_tr),
        "image_size": int(x_tr.shape[-1]),
        "first_loss": losses[0],
        "final_loss": sum(losses[-10:]) / 10,
        "test_accuracy": cnn.accuracy(model, x_te, y_te),
    }
    return model, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=cnn.CHECKPOINT)
    args = parser.parse_args()
    model, meta = train_reference(args.epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "meta": meta}, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {meta}")


if __name__ == "__main__":
    main()
