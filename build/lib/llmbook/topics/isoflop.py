"""The iso-FLOP experiment: small next-token MLP language models trained on
a teacher's language at a fixed compute budget, and the parabola whose
minimum is the compute-optimal size.

The lecture walkthrough "What training costs", section scale-chinchilla.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from llmbook.core.validate import positive, positive_int


def mlp_lm_params(vocab: int, context: int, embed: int, width: int) -> int:
    """Matmul parameters (weights and biases of the two linear layers; the
    embedding is a lookup and costs no FLOP) of :class:`MLPLanguageModel`.
    Section scale-chinchilla.
    """
    v, k = positive_int("vocab", vocab), positive_int("context", context)
    e, w = positive_int("embed", embed), positive_int("width", width)
    return (k * e + 1) * w + (w + 1) * v


class MLPLanguageModel(nn.Module):
    """Next-token MLP language model (Bengio et al. 2003 style): embed the
    ``context`` previous tokens, concatenate, one tanh hidden layer of
    ``width`` units, logits over ``vocab``. Section scale-chinchilla."""

    def __init__(self, vocab: int, context: int, embed: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(positive_int("vocab", vocab), embed)
        k = positive_int("context", context)
        self.hidden = nn.Linear(k * embed, width)
        self.out = nn.Linear(positive_int("width", width), vocab)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) for contexts ``ctx`` (B, context)."""
        return self.out(torch.tanh(self.hidden(self.embed(ctx).flatten(1))))


def teacher_language(
    vocab: int,
    context: int,
    embed: int,
    width: int,
    sharpness: float = 3.0,
    seed: int = 0,
) -> dict:
    """A generated language for the iso-FLOP experiment: a random
    :class:`MLPLanguageModel` (the teacher, initialised after
    ``torch.manual_seed(seed)`` with its output weights times
    ``sharpness``) gives P(next | context) for every one of the
    vocab**context contexts. The global random state is left as it was.

    Returns "contexts" (vocab**context, context), "probs" and its row-wise
    "cdf" (for sampling), and "entropy", the loss of a perfect model in nats
    per token. Section scale-chinchilla.
    """
    vocab, context = (
        positive_int("vocab", vocab),
        positive_int("context", context),
    )
    sharpness = positive("sharpness", sharpness)
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        teacher = MLPLanguageModel(vocab, context, embed, width)
    contexts = torch.cartesian_prod(*[torch.arange(vocab)] * context)
    with torch.no_grad():
        teacher.out.weight.mul_(sharpness)
        probs = teacher(contexts).softmax(-1)
    cdf = probs.cumsum(-1)
    cdf[:, -1] = 1.0
    entropy = -(probs * probs.log()).sum(-1).mean().item()
    return {
        "contexts": contexts,
        "probs": probs,
        "cdf": cdf,
        "entropy": entropy,
    }


def train_isoflop_student(
    language: dict,
    embed: int,
    width: int,
    budget: float,
    target_steps: int = 400,
    batch_range: tuple[int, int] = (32, 8192),
    lr: float = 1e-2,
    seed: int = 0,
) -> dict:
    """Train one student :class:`MLPLanguageModel` of hidden ``width`` on
    ``budget`` FLOP of the ``language`` of :func:`teacher_language`: D =
    C / (6 N) tokens drawn fresh, about ``target_steps`` Adam steps (the
    batch is D / target_steps, clipped to ``batch_range``) with a cosine
    learning-rate decay. Returns the run's row: C, width, N, D (tokens
    actually seen), batch, steps and "loss", the exact expected
    cross-entropy over the whole language (nats per token). Section
    scale-chinchilla.
    """
    contexts, probs, cdf = (language[k] for k in ("contexts", "probs", "cdf"))
    vocab, context = probs.shape[1], contexts.shape[1]
    budget = positive("budget", budget)
    lo, hi = (positive_int("batch_range", b) for b in batch_range)
    torch.manual_seed(int(seed))
    model = MLPLanguageModel(vocab, context, embed, width)
    n = mlp_lm_params(vocab, context, embed, width)
    d = budget / (6 * n)
    b = int(
        np.clip(round(d / positive_int("target_steps", target_steps)), lo, hi)
    )
    steps = max(1, round(d / b))
    opt = torch.optim.Adam(model.parameters(), lr=positive("lr", lr))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(int(seed) + 1)
    for _ in range(steps):
        idx = torch.randint(len(contexts), (b,), generator=g)
        nxt = torch.searchsorted(cdf[idx], torch.rand(b, 1, generator=g))
        loss = nn.functional.cross_entropy(model(contexts[idx]), nxt[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():  # exact expected loss over the whole language
        ce = -(probs * model(contexts).log_softmax(-1)).sum(-1).mean()
    return {
        "C": budget,
        "width": width,
        "N": n,
        "D": steps * b,
        "batch": b,
        "steps": steps,
        "loss": ce.item(),
    }


def fit_isoflop_parabola(log_n, loss) -> tuple[float, float]:
    """Fit loss = a (log N)^2 + b log N + c to one iso-FLOP curve; return the
    vertex ``(log N_opt, loss at the vertex)``. Raises ``ValueError`` when the
    parabola opens downwards (no minimum). Section scale-chinchilla.
    """
    x = np.asarray(log_n, dtype=float)
    y = np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError("log_n and loss must be 1-D of equal length >= 3")
    a, b, c = np.polyfit(x, y, 2)
    if a <= 0:
        raise ValueError("loss: the fitted parabola has no minimum")
    x0 = -b / (2 * a)
    return float(x0), float(c - b * b / (4 * a))
