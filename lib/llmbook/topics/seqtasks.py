"""A tiny transformer and generated sequence tasks: the pretrained model the
LoRA chapter adapts.

A sequence is ``[task, x_1 … x_n, SEP, y_1 … y_n]`` with digits ``x_i`` and a
response ``y`` that the task token selects (copy, reverse, …). Pretraining
predicts every next token; supervised finetuning (chapter section cme295-sft)
scores only the response tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from llmbook.core.validate import positive_int

N_DIGITS = 10
SEP = 10
TASKS = ("copy", "reverse", "increment", "swap_pairs", "sort", "rotate")
VOCAB_SIZE = SEP + 1 + len(TASKS)


def task_token(task: str) -> int:
    """The vocabulary id of ``task``'s prompt token."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return SEP + 1 + TASKS.index(task)


def respond(task: str, x: torch.Tensor) -> torch.Tensor:
    """The response ``y`` (same shape as the digits ``x``, ``(batch, n)``)
    for ``task``.
    """
    task_token(task)
    if task == "copy":
        return x.clone()
    if task == "reverse":
        return x.flip(-1)
    if task == "increment":
        return (x + 1) % N_DIGITS
    if task == "swap_pairs":  # (x1, x2, x3, x4, …) -> (x2, x1, x4, x3, …)
        if x.shape[-1] % 2:
            raise ValueError(
                "x must have an even number of digits for swap_pairs"
            )
        return x.reshape(*x.shape[:-1], -1, 2).flip(-1).reshape(x.shape)
    if task == "sort":
        return x.sort(dim=-1).values
    return x.roll(-1, dims=-1)  # rotate left by one


def make_batch(
    task: str, batch: int, n: int, generator: torch.Generator
) -> torch.Tensor:
    """``batch`` random sequences ``[task, x, SEP, y]`` of length ``2n +
    2``, int64.
    """
    batch, n = positive_int("batch", batch), positive_int("n", n)
    x = torch.randint(0, N_DIGITS, (batch, n), generator=generator)
    head = torch.full((batch, 1), task_token(task))
    sep = torch.full((batch, 1), SEP)
    return torch.cat([head, x, sep, respond(task, x)], dim=1)


def response_mask(n: int) -> torch.Tensor:
    """Boolean mask over the ``2n + 1`` next-token targets: True where the
    target is a ``y``.
    """
    n = positive_int("n", n)
    return torch.arange(2 * n + 1) >= n + 1


class Block(nn.Module):
    """Pre-LayerNorm transformer block with linear layers ``attn.q/k/v/o``
    and ``mlp.fc1/fc2``.
    """

    def __init__(self, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = nn.ModuleDict(
            {k: nn.Linear(d_model, d_model, bias=False) for k in "qkvo"}
        )
        self.mlp = nn.ModuleDict(
            {
                "fc1": nn.Linear(d_model, d_mlp),
                "fc2": nn.Linear(d_mlp, d_model),
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (
            self.attn[n](h).view(b, t, self.n_heads, -1).transpose(1, 2)
            for n in "qkv"
        )
        scores = (
            q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        )  # (b, heads, t, t)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        x = x + self.attn["o"](att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp["fc2"](F.gelu(self.mlp["fc1"](self.ln2(x))))


class TinyLM(nn.Module):
    """A small decoder-only transformer with learned positions (the
    chapter's pretrained model).
    """

    def __init__(
        self,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        d_mlp: int = 256,
        n_ctx: int = 16,
        vocab: int = VOCAB_SIZE,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(
                f"d_model={d_model} must be divisible by n_heads={n_heads}"
            )
        self.embed, self.pos = (
            nn.Embedding(vocab, d_model),
            nn.Embedding(n_ctx, d_model),
        )
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_mlp) for _ in range(n_layers)
        )
        self.ln_f, self.unembed = (
            nn.LayerNorm(d_model),
            nn.Linear(d_model, vocab),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens (b, t)`` int64 -> logits ``(b, t, vocab)``."""
        x = self.embed(tokens) + self.pos(
            torch.arange(tokens.shape[1], device=tokens.device)
        )
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x))


def lm_loss(
    model: nn.Module, seq: torch.Tensor, masked: bool = True
) -> torch.Tensor:
    """Mean next-token cross-entropy (nats); ``masked`` scores only the
    response tokens.
    """
    return logits_loss(model(seq[:, :-1]), seq, masked)


def logits_loss(
    logits: torch.Tensor, seq: torch.Tensor, masked: bool = True
) -> torch.Tensor:
    """:func:`lm_loss` from the logits ``(b, 2n+1, vocab)`` of
    ``model(seq[:, :-1])`` (one forward pass can serve this and
    :func:`logits_exact_match`)."""
    losses = F.cross_entropy(
        logits.transpose(1, 2), seq[:, 1:], reduction="none"
    )  # (b, 2n+1)
    if not masked:
        return losses.mean()
    mask = response_mask((seq.shape[1] - 2) // 2).to(seq.device)
    return losses[:, mask].mean()


@torch.no_grad()
def exact_match(model: nn.Module, seq: torch.Tensor) -> float:
    """Fraction of sequences whose whole response the model gets right,
    greedily.

    With teacher forcing, every response position's argmax equals its target
    exactly when greedy decoding reproduces the whole response, so one forward
    pass decides it.
    """
    return logits_exact_match(model(seq[:, :-1]), seq)


@torch.no_grad()
def logits_exact_match(logits: torch.Tensor, seq: torch.Tensor) -> float:
    """:func:`exact_match` from the logits of ``model(seq[:, :-1])``."""
    n = (seq.shape[1] - 2) // 2
    pred = logits.argmax(-1)[:, response_mask(n)]
    return (pred == seq[:, n + 2 :]).all(dim=1).float().mean().item()


def train(
    model: nn.Module,
    tasks,
    steps: int,
    lr: float,
    batch: int,
    n: int,
    seed: int,
    masked: bool = True,
    weight_decay: float = 0.0,
) -> list[float]:
    """Train the parameters that require grad with AdamW on an even mixture of
    ``tasks``.

    Each step draws ``batch`` sequences per task from a generator seeded with
    ``seed``. Returns the training loss per step (nats). Used for pretraining,
    full finetuning and LoRA.
    """
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history = []
    for _ in range(positive_int("steps", steps)):
        seq = torch.cat([make_batch(t, batch, n, g) for t in tasks])
        loss = lm_loss(model, seq, masked)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history
