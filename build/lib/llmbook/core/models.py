"""The small models the book trains, in plain ``torch.nn``.

``TinyLlama`` is the book's configurable decoder-only transformer (RoPE,
RMSNorm, SwiGLU, untied head; any width, depth and vocabulary; optional
activation checkpointing). Three chapters keep a variant of their own
because their numbers depend on it: the soft-prompting chapter's GPT (learned
positions, LayerNorm; its pretrained weights ship as a checkpoint), the LoRA
chapter's
sequence-task model (``topics.seqtasks``) and the parallelism chapter's blocks
(``topics.dist``), whose layers are split across processes.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmbook.core.validate import positive_int


def rope(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """Rotary position embedding of ``x`` (b, n_heads, s, d), d even: each
    pair (x_2j, x_2j+1) at position p is rotated by p * base^(-2j/d).
    Section dls-flops.
    """
    s, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"x: the head width must be even, got {d}")
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * gain, over the last axis."""

    def __init__(self, h: int, eps: float = 1e-6):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(positive_int("h", h)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., h)."""
        rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * rms * self.gain


class LlamaBlock(nn.Module):
    """One pre-norm Llama decoder layer: causal multi-head attention with
    RoPE, then a SwiGLU MLP, each added back to the residual stream."""

    def __init__(self, h: int, n_heads: int, i: int):
        super().__init__()
        if h % n_heads:
            raise ValueError(f"h={h} must be a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm1, self.norm2 = RMSNorm(h), RMSNorm(h)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.out = nn.Linear(h, h, bias=False)
        self.gate_up = nn.Linear(h, 2 * i, bias=False)
        self.down = nn.Linear(i, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the residual stream ``x`` (b, s, h) to the next one."""
        b, s, h = x.shape
        d = h // self.n_heads
        q, k, v = self.qkv(self.norm1(x)).split(h, dim=-1)
        q, k, v = (
            t.view(b, s, self.n_heads, d).transpose(1, 2) for t in (q, k, v)
        )
        q, k = rope(q), rope(k)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        mask = torch.ones(s, s, dtype=torch.bool).triu(1)
        p = scores.masked_fill(mask, float("-inf")).softmax(-1)
        a = (p @ v).transpose(1, 2).reshape(b, s, h)
        x = x + self.out(a)
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(nn.functional.silu(gate) * up)


class TinyLlama(nn.Module):
    """A Llama-style decoder (embedding, ``n_layers`` :class:`LlamaBlock`,
    final RMSNorm, untied head) at any size; random weights, no download.
    With ``checkpoint_layers`` each block runs under
    ``torch.utils.checkpoint`` (the reentrant form, which keeps only the
    block's input for the backward pass and recomputes the rest).
    Section dls-flops."""

    def __init__(
        self,
        h: int,
        n_heads: int,
        i: int,
        v: int,
        n_layers: int,
        checkpoint_layers: bool = False,
    ):
        super().__init__()
        self.checkpoint_layers = bool(checkpoint_layers)
        self.embed = nn.Embedding(positive_int("v", v), positive_int("h", h))
        self.blocks = nn.ModuleList(
            LlamaBlock(h, n_heads, positive_int("i", i))
            for _ in range(positive_int("n_layers", n_layers))
        )
        self.norm = RMSNorm(h)
        self.head = nn.Linear(h, v, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (b, s, v) of the next token for ``tokens`` (b, s)."""
        x = self.embed(tokens)
        for block in self.blocks:
            if self.checkpoint_layers and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=True)
            else:
                x = block(x)
        return self.head(self.norm(x))
