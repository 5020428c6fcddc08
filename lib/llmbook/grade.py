"""The labs' autograder: the functions a student writes, checked against
the library's own.

A student-facing entry point above the three layers: it imports from
``llmbook.core`` and ``llmbook.topics`` and no layer imports it
(``tests/test_layers.py``).

- :data:`EXERCISES`: exercise name -> the chapter (file in ``chapters/``)
  that derives it.
- :func:`check` ``(name, fn)``: runs the student's ``fn`` on fixed cases
  (edge cases named in words) and a few random ones (fixed seeds) against
  the reference, prints one verdict and returns True or False. It never
  raises on what ``fn`` does (an exception, ``NotImplementedError``, a
  wrong shape, dtype or type); only an unknown name raises ``ValueError``.
- :func:`reference` ``(name)``: the reference implementation, a library
  function, or a thin wrapper defined here when the student's signature is
  simpler than the library's (its docstring says so).
- :func:`stub_source` ``(name)``: the Python source of the stub the student
  starts from: signature, docstring with shapes and a worked example,
  ``raise NotImplementedError``.
- :func:`use` ``(name, fn)``: ``fn`` if it passes the check, else the
  reference (saying so): the labs' later cells run either way.

Warnings the student's function raises (numpy's overflow, say) are
caught and named in the verdict instead of reaching stderr.

Tolerances are per exercise (:func:`tolerance` says them in words):
floats within ``atol + rtol |expected|``; integers, booleans, shapes,
dtypes and dictionary keys exactly.
"""

from __future__ import annotations

import copy
import inspect
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from llmbook.core import accounting, hardware
from llmbook.topics import (
    attention,
    batchsize,
    circuits,
    lora,
    prune,
    quant,
    scaling,
    softprompt,
    zero,
)


@dataclass(frozen=True)
class _Case:
    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Exercise:
    name: str
    chapter: str
    params: str
    doc: str
    reference: Callable
    cases: Callable[[], list]
    rtol: float = 1e-5
    atol: float = 1e-6
    outputs: tuple = ()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------------------
# Thin wrappers: the student's signature is simpler than the library's
# ---------------------------------------------------------------------------


def _lora_layer(W0, b, A, B, alpha) -> lora.LoRALinear:
    m, ell = W0.shape
    base = nn.utils.skip_init(nn.Linear, ell, m, dtype=W0.dtype)
    layer = lora.LoRALinear(base, A.shape[1], alpha, init="zeros")
    with torch.no_grad():
        for p, v in ((base.weight, W0), (base.bias, b), (layer.A, A)):
            p.copy_(v)
        layer.B.copy_(B)
    return layer


def _lora_forward(x, W0, b, A, B, alpha):
    """Reference of the exercise ``lora_forward``: the forward pass of
    :class:`llmbook.topics.lora.LoRALinear` built around ``W0``, ``b`` with
    the factors ``A``, ``B`` and ``alpha``. The student writes the formula
    on plain tensors instead of a module."""
    with torch.no_grad():
        return _lora_layer(W0, b, A, B, alpha)(x)


def _lora_merge(W0, A, B, alpha):
    """Reference of the exercise ``lora_merge``:
    :meth:`llmbook.topics.lora.LoRALinear.merge`, returning the merged
    weight. The student writes it on plain tensors instead of a module."""
    layer = _lora_layer(W0, torch.zeros(W0.shape[0]), A, B, alpha)
    layer.merge()
    return layer.base.weight.detach().clone()


def _keep_channels(next_weight, keep_ratio):
    """Reference of the exercise ``keep_channels``:
    :func:`llmbook.topics.prune.channels_to_keep` on a two-conv backbone
    whose second conv has the weight ``next_weight``. The student's
    signature takes that weight alone instead of a model."""
    c_next, c, kh, kw = next_weight.shape
    first = nn.utils.skip_init(nn.Conv2d, 1, c, 1)
    second = nn.utils.skip_init(nn.Conv2d, c, c_next, (kh, kw))
    with torch.no_grad():
        second.weight.copy_(next_weight)
    model = nn.Module()
    model.backbone = nn.Sequential(
        first, nn.BatchNorm2d(c), second, nn.BatchNorm2d(c_next)
    )
    return prune.channels_to_keep(model, keep_ratio)[0]


# ---------------------------------------------------------------------------
# The exercises: docstrings of the stubs, and their cases
# ---------------------------------------------------------------------------

_EXERCISES: dict[str, _Exercise] = {}


def _add(**kw) -> None:
    ex = _Exercise(**kw)
    _EXERCISES[ex.name] = ex


# --- circuits (hw11-q3): the QK and OV steps of one head ------------------


def _pattern_cases():
    X5 = circuits.embed("abcab")
    prev_qk = circuits.previous_token_head(5.0)[0]
    rng = _rng(0)
    return [
        _Case(
            "causal: no weight on later keys, the diagonal (self) kept",
            (np.eye(3), 5 * np.ones((3, 3))),
        ),
        _Case(
            "softmax over the keys (each row sums to 1), asymmetric W_QK",
            (np.eye(3), np.array([[0, 1, 2], [3, 0, -1], [1, 2, 0.0]])),
        ),
        _Case(
            "large scores (~1000): subtract the row max before exp",
            (np.eye(3), 1000 * np.array([[1, 0, 0], [2, 1, 0], [0, 3, 1.0]])),
        ),
        _Case(
            "the hand-built previous-token head on 'abcab'",
            (X5, prev_qk),
        ),
        _Case(
            "random X (4, 3) and W_QK (3, 3), seed 0",
            (rng.normal(size=(4, 3)), rng.normal(size=(3, 3))),
        ),
    ]


_add(
    name="attention_pattern",
    chapter="circuits",
    params="X, W_QK",
    doc="""\
Causal attention pattern of one head: its QK circuit (hw11-q3).

``A[i, j] = softmax_j(x_i W_QK x_jᵀ)`` over the keys ``j <= i``, where
``x_i`` is row ``i`` of ``X``. Keys after the query (``j > i``) get weight
exactly 0; the diagonal (a position attending to itself) is kept.
Subtract each row's maximum before ``exp`` so large scores cannot
overflow.

Args:
    X: (seq_len, d_model) numpy array, one row per position.
    W_QK: (d_model, d_model) numpy array.

Returns:
    (seq_len, seq_len) float numpy array; each row sums to 1.

Example:
    >>> attention_pattern(np.eye(2), np.zeros((2, 2)))
    array([[1. , 0. ],
           [0.5, 0.5]])
""",
    reference=circuits.attention_pattern,
    cases=_pattern_cases,
    rtol=1e-6,
    atol=1e-9,
)


def _head_cases():
    X5 = circuits.embed("abcab")
    prev = circuits.previous_token_head(5.0)
    X1 = X5 + circuits.single_attention_head(X5, *prev)
    rng = _rng(1)
    shift = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0.0]])
    return [
        _Case(
            "asymmetric W_OV: row i is sum_j A[i, j] (W_OV x_j)",
            (np.eye(3), np.zeros((3, 3)), shift),
        ),
        _Case(
            "the previous-token head on 'abcab'",
            (X5, *prev),
        ),
        _Case(
            "the copying head on the residual after the previous-token head",
            (X1, *circuits.copying_head(5.0)),
        ),
        _Case(
            "random X (4, 3), W_QK and W_OV (3, 3), seed 1",
            (
                rng.normal(size=(4, 3)),
                rng.normal(size=(3, 3)),
                rng.normal(size=(3, 3)),
            ),
        ),
    ]


_add(
    name="single_attention_head",
    chapter="circuits",
    params="X, W_QK, W_OV",
    doc="""\
Output of one causal attention head: its OV circuit applied to the
attention-weighted inputs (hw11-q3).

Row ``i`` of the output is ``sum_j A[i, j] W_OV x_j`` with ``x_j`` row
``j`` of ``X`` (as a column) and ``A`` the causal pattern of
``attention_pattern(X, W_QK)``; with rows as positions that is
``A @ X @ W_OV.T``.

Args:
    X: (seq_len, d_model) numpy array, one row per position.
    W_QK, W_OV: (d_model, d_model) numpy arrays.

Returns:
    (seq_len, d_model) float numpy array.

Example:
    >>> W_OV = np.array([[0.0, 1.0], [0.0, 0.0]])
    >>> single_attention_head(np.eye(2), np.zeros((2, 2)), W_OV)
    array([[0. , 0. ],
           [0.5, 0. ]])
""",
    reference=circuits.single_attention_head,
    cases=_head_cases,
    rtol=1e-6,
    atol=1e-9,
)


# --- attention (dls-attention, cme295-flash-attention) --------------------


def _attention_cases():
    V = _t([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    return [
        _Case(
            "causal: the diagonal stays (query 0 attends to key 0 alone)",
            (torch.zeros(3, 2), torch.zeros(3, 2), V),
            {"causal": True},
        ),
        _Case(
            "scores divided by sqrt(d), d = 4",
            (_randn(2, 3, 4) * 3, _randn(3, 3, 4), _randn(4, 3, 2)),
        ),
        _Case(
            "softmax over the keys, not the queries (T_q = 2, T_k = 3)",
            (_randn(5, 2, 2), _randn(6, 3, 2), _randn(7, 3, 3)),
        ),
        _Case(
            "leading batch and head dimensions (2, 3, T, d), causal",
            (
                _randn(8, 2, 3, 4, 2),
                _randn(9, 2, 3, 4, 2),
                _randn(10, 2, 3, 4, 2),
            ),
            {"causal": True},
        ),
        _Case(
            "random (5, 3), causal, seed 11",
            (_randn(11, 5, 3), _randn(12, 5, 3), _randn(13, 5, 3)),
            {"causal": True},
        ),
    ]


_add(
    name="self_attention",
    chapter="lecture-attention-moe",
    params="Q, K, V, causal=False",
    doc="""\
Scaled dot-product attention ``softmax(Q Kᵀ / sqrt(d) - M) V``
(dls-attention).

With ``causal=True`` the mask ``M`` is ``+inf`` where key ``j`` comes
after query ``i`` (``j > i``) and 0 elsewhere, so those keys get weight 0;
a query always sees itself. The softmax runs over the keys (the last
axis of the scores).

Args:
    Q: (..., T_q, d) queries; K: (..., T_k, d) keys; V: (..., T_k, d_v)
        values; the leading dimensions (batch, heads) broadcast.
    causal: apply the causal mask.

Returns:
    (..., T_q, d_v) tensor.

Example:
    >>> V = torch.tensor([[1.0], [3.0]])
    >>> Z = torch.zeros(2, 1)
    >>> self_attention(Z, Z, V)
    tensor([[2.],
            [2.]])
    >>> self_attention(Z, Z, V, causal=True)
    tensor([[1.],
            [2.]])
""",
    reference=attention.self_attention,
    cases=_attention_cases,
)


def _flash_cases():
    rising = torch.arange(6.0)[:, None] * _t([[1.0, 0.5]])
    return [
        _Case(
            "one tile holds everything (blocks 8 >= N = 3)",
            (_randn(20, 3, 2), _randn(21, 3, 2), _randn(22, 3, 2), 8, 8),
        ),
        _Case(
            "tiles that do not divide N (N = 7, block_q 3, block_k 2)",
            (_randn(23, 7, 2), _randn(24, 7, 2), _randn(25, 7, 2), 3, 2),
        ),
        _Case(
            "the running max grows with every key tile (O rescaled)",
            (torch.ones(4, 2) * 2, rising, _randn(26, 6, 2), 2, 1),
        ),
        _Case(
            "causal, N = 6, block_q 2, block_k 4",
            (_randn(27, 6, 3), _randn(28, 6, 3), _randn(29, 6, 3), 2, 4),
            {"causal": True},
        ),
        _Case(
            "causal with 1 x 1 tiles (N = 4)",
            (_randn(30, 4, 2), _randn(31, 4, 2), _randn(32, 4, 2), 1, 1),
            {"causal": True},
        ),
        _Case(
            "N_q = 3 queries, N_k = 5 keys, blocks 2 and 2",
            (_randn(33, 3, 4), _randn(34, 5, 4), _randn(35, 5, 4), 2, 2),
        ),
    ]


_add(
    name="flash_attention_forward",
    chapter="lecture-attention-moe",
    params="Q, K, V, block_q, block_k, causal=False",
    doc="""\
FlashAttention's tiled forward pass with the online softmax
(cme295-flash-attention).

Outer loop over key/value tiles of ``block_k`` rows, inner loop over
query tiles of ``block_q`` rows (the last tile may be shorter). Each query
row keeps a running max ``m`` (start ``-inf``), a running sum ``l``
(start 0) and its output row ``O`` (start 0). For a tile's scores
``S = Q_i K_jᵀ / sqrt(d)`` (with ``-inf`` on keys after the query when
``causal``): ``m_new = max(m, rowmax S)``, ``P = exp(S - m_new)``,
``l_new = exp(m - m_new) l + rowsum P`` and
``O_new = (exp(m - m_new) l O + P V_j) / l_new``. Never form the whole
``N_q x N_k`` score matrix.

Args:
    Q: (N_q, d); K, V: (N_k, d), one head.
    block_q, block_k: rows per query tile and per key tile.
    causal: mask keys after the query.

Returns:
    ``(O, lse)``: O (N_q, d) the attention output, lse (N_q,) the
    log-sum-exp of each score row, ``m + log l``.

Example:
    >>> V = torch.tensor([[1.0], [2.0], [3.0]])
    >>> O, lse = flash_attention_forward(
    ...     torch.zeros(3, 1), torch.zeros(3, 1), V, 2, 2
    ... )
    >>> O.flatten(), lse
    (tensor([2., 2., 2.]), tensor([1.0986, 1.0986, 1.0986]))
""",
    reference=attention.flash_attention_forward,
    cases=_flash_cases,
    rtol=1e-4,
    atol=1e-5,
    outputs=("O", "lse"),
)


# --- LoRA (hw11-q1) -------------------------------------------------------


def _lora_args(seed: int, m: int, ell: int, k: int, lead=(2,), zero_a=False):
    x = _randn(seed, *lead, ell)
    W0, b = _randn(seed + 1, m, ell), _randn(seed + 2, m)
    A = torch.zeros(m, k) if zero_a else _randn(seed + 3, m, k)
    return x, W0, b, A, _randn(seed + 4, k, ell)


def _lora_forward_cases():
    return [
        _Case(
            "scaling alpha / k with alpha = 16, k = 4",
            (*_lora_args(40, 5, 6, 4), 16.0),
        ),
        _Case("rank k = 1, alpha = 1", (*_lora_args(45, 3, 4, 1), 1.0)),
        _Case(
            "non-square W0: m = 3 outputs, ell = 7 inputs, k = 2",
            (*_lora_args(50, 3, 7, 2), 4.0),
        ),
        _Case(
            "x with leading dimensions (2, 3, ell)",
            (*_lora_args(55, 4, 5, 2, lead=(2, 3)), 2.0),
        ),
        _Case(
            "A = 0 (PEFT's start): y = x W0ᵀ + b",
            (*_lora_args(60, 4, 4, 2, zero_a=True), 8.0),
        ),
        _Case(
            "random, m = 6, ell = 5, k = 3, alpha = 5, seed 65",
            (*_lora_args(65, 6, 5, 3), 5.0),
        ),
    ]


_add(
    name="lora_forward",
    chapter="lora",
    params="x, W0, b, A, B, alpha",
    doc="""\
Forward pass of a LoRA layer around a frozen linear layer (hw11-q1).

``y = x W0ᵀ + b + s (x Bᵀ) Aᵀ`` with the scaling ``s = alpha / k`` and
``k`` the rank (``A.shape[1]``). Multiply ``x`` by ``Bᵀ`` first, so the
``(m, ell)`` update ``A B`` is never formed.

Args:
    x: (..., ell) inputs.
    W0: (m, ell) frozen weight; b: (m,) its bias.
    A: (m, k); B: (k, ell), the trainable factors.
    alpha: the scaling numerator.

Returns:
    (..., m) tensor.

Example:
    >>> A, B = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0, 1.0]])
    >>> x = torch.tensor([[1.0, 2.0]])
    >>> lora_forward(x, torch.zeros(2, 2), torch.zeros(2), A, B, alpha=2.0)
    tensor([[6., 0.]])
""",
    reference=_lora_forward,
    cases=_lora_forward_cases,
)


def _merge_args(seed: int, m: int, ell: int, k: int):
    _, W0, _, A, B = _lora_args(seed, m, ell, k)
    return W0, A, B


def _lora_merge_cases():
    return [
        _Case(
            "scaling alpha / k with alpha = 16, k = 4",
            (*_merge_args(70, 5, 6, 4), 16.0),
        ),
        _Case(
            "non-square W0: m = 3 outputs, ell = 7 inputs, k = 2",
            (*_merge_args(75, 3, 7, 2), 4.0),
        ),
        _Case("rank k = 1, alpha = 3", (*_merge_args(80, 4, 4, 1), 3.0)),
        _Case(
            "random, m = 6, ell = 5, k = 3, alpha = 5, seed 85",
            (*_merge_args(85, 6, 5, 3), 5.0),
        ),
    ]


_add(
    name="lora_merge",
    chapter="lora",
    params="W0, A, B, alpha",
    doc="""\
The merged weight of a LoRA layer, for inference with no extra latency
(hw11-q1).

``W = W0 + s A B`` with ``s = alpha / k`` and ``k = A.shape[1]``. Return a
new tensor; leave ``W0`` unchanged.

Args:
    W0: (m, ell) frozen weight.
    A: (m, k); B: (k, ell).
    alpha: the scaling numerator.

Returns:
    (m, ell) tensor.

Example:
    >>> A, B = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0, 1.0]])
    >>> lora_merge(torch.eye(2), A, B, alpha=2.0)
    tensor([[3., 2.],
            [0., 1.]])
""",
    reference=_lora_merge,
    cases=_lora_merge_cases,
)


# --- soft prompting (hw11-q6a) --------------------------------------------


def _mask_cases():
    return [
        _Case(
            "the homework's layout: 100 positions, prompt 5, question 45, "
            "targets 22",
            (100, 5, 45, 22),
        ),
        _Case("no soft prompt (prompt_len = 0)", (10, 0, 3, 4)),
        _Case("a single target token", (6, 1, 2, 1)),
        _Case("targets reach the last position (no padding)", (7, 2, 2, 3)),
        _Case("a one-token question", (5, 0, 1, 2)),
        _Case("prompt 3, question 4, targets 5, padding 6", (18, 3, 4, 5)),
    ]


_add(
    name="loss_mask",
    chapter="soft-prompting",
    params="seq_len, prompt_len, question_len, target_len",
    doc="""\
Which output positions of a decoder enter the loss, for the layout
``[prompt][question][targets][padding]`` (hw11-q6a).

The output at index ``t`` predicts the input token at ``t + 1``. The
targets occupy input indices ``prompt_len + question_len`` to
``prompt_len + question_len + target_len - 1``, so the mask is that span
moved one to the left: the last question position is in, the last
target's own position is out; prompt and padding positions are out.

Args:
    seq_len: S, positions 0 .. S-1.
    prompt_len: soft-prompt slots in front (>= 0).
    question_len: question tokens (>= 1).
    target_len: tokens to learn (>= 1).

Returns:
    (S,) bool tensor.

Example:
    >>> loss_mask(8, 2, 2, 3)
    tensor([False, False, False,  True,  True,  True, False, False])
""",
    reference=softprompt.loss_mask,
    cases=_mask_cases,
)


# --- pruning (hw11-q7a) ---------------------------------------------------


def _magnitude_cases():
    return [
        _Case("sparsity 0 keeps every weight", (_t([0.3, -1.0, 2.0]), 0.0)),
        _Case(
            "magnitude, not value: negative weights count by |w|",
            (_t([-3.0, 0.1, -0.2, 2.0, 0.5, -1.0]), 0.5),
        ),
        _Case(
            "the count is round(sparsity * numel): 0.7 * 5 = 3.5 -> 4",
            (_t([0.1, -0.5, 0.3, 2.0, -0.9]), 0.7),
        ),
        _Case(
            "one threshold for the whole tensor, not one per row",
            (_t([[10.0, 20.0, 30.0], [0.1, 0.2, 0.3]]), 0.5),
        ),
        _Case(
            "a conv weight (2, 3, 2, 2) keeps its shape, sparsity 0.6",
            (_randn(90, 2, 3, 2, 2), 0.6),
        ),
        _Case("random (8, 5), sparsity 0.9, seed 91", (_randn(91, 8, 5), 0.9)),
    ]


_add(
    name="magnitude_mask",
    chapter="pruning-quantization",
    params="weight, sparsity",
    doc="""\
Fine-grained magnitude pruning: a 0/1 mask that removes the
smallest-magnitude weights (hw11-q7a).

Remove ``k = round(sparsity * numel)`` weights (Python's ``round``): the
threshold is the k-th smallest ``|w|`` over the whole tensor, and the
entries strictly above it are kept. ``k = 0`` keeps everything. (Assume no
ties among the magnitudes.)

Args:
    weight: any shape.
    sparsity: the fraction to remove, in [0, 1).

Returns:
    a tensor of ``weight``'s shape and dtype, 1.0 where kept, 0.0 where
    pruned.

Example:
    >>> magnitude_mask(torch.tensor([0.5, -2.0, 0.1, 1.0]), 0.5)
    tensor([0., 1., 0., 1.])
""",
    reference=prune.magnitude_mask,
    cases=_magnitude_cases,
    rtol=0.0,
    atol=0.0,
)


def _channel_cases():
    # next_weight[:, c] norms 1, 4, 2, 3; rows [c] would give other ones
    w = _t([[1.0, 0.0, 2.0, 3.0], [0.0, 4.0, 0.0, 0.0]]).reshape(2, 4, 1, 1)
    return [
        _Case(
            "importance of channel c is ||next_weight[:, c]||, not [c]",
            (w, 0.5),
        ),
        _Case(
            "indices come back sorted, not in order of importance",
            (_t([[5.0, 1.0, 2.0, 9.0, 0.5]]).reshape(1, 5, 1, 1), 0.4),
        ),
        _Case(
            "round(keep_ratio * C): 0.7 * 5 = 3.5 -> 4 channels",
            (_randn(100, 3, 5, 1, 1), 0.7),
        ),
        _Case(
            "at least one channel: 0.1 * 4 = 0.4 -> 1",
            (_randn(101, 2, 4, 1, 1), 0.1),
        ),
        _Case(
            "3 x 3 kernels: the norm runs over kernel positions too",
            (
                _randn(102, 2, 3, 3, 3) * _t([1, 3, 2]).reshape(1, 3, 1, 1),
                0.67,
            ),
        ),
        _Case(
            "keep_ratio 1 keeps all",
            (_randn(103, 4, 3, 1, 1), 1.0),
        ),
        _Case(
            "random (6, 8, 3, 3), keep 0.5, seed 104",
            (_randn(104, 6, 8, 3, 3), 0.5),
        ),
    ]


_add(
    name="keep_channels",
    chapter="pruning-quantization",
    params="next_weight, keep_ratio",
    doc="""\
Channel pruning: which output channels of a conv to keep (hw11-q7a).

Channel ``c`` of a conv is read by the next conv through
``next_weight[:, c]``; its importance is the Frobenius norm of that
slice (over the next conv's output channels and kernel positions). Keep
the ``max(1, round(keep_ratio * C))`` most important channels (Python's
``round``) and return their indices in increasing order.

Args:
    next_weight: (C_next, C, kh, kw), the NEXT conv's weight.
    keep_ratio: in (0, 1].

Returns:
    int64 tensor of the kept channel indices, sorted.

Example:
    >>> w = torch.tensor([[1.0, 3.0, 2.0]]).reshape(1, 3, 1, 1)
    >>> keep_channels(w, 0.67)
    tensor([1, 2])
""",
    reference=_keep_channels,
    cases=_channel_cases,
    rtol=0.0,
    atol=0.0,
)


# --- linear quantization (hw11-q7b, dls-linear-quant, dls-granularity) ----


def _scale_cases():
    return [
        _Case("8-bit signed on [-1, 1]", (-1.0, 1.0)),
        _Case(
            "q_max - q_min = 2^b - 1 steps: 4-bit on [-3, 4.5]",
            (-3.0, 4.5),
            {"bits": 4},
        ),
        _Case(
            "the range is widened to contain 0: [2, 6] -> [0, 6]",
            (2.0, 6.0),
        ),
        _Case(
            "unsigned 8-bit on [0, 1]: q in 0 .. 255",
            (0.0, 1.0),
            {"signed": False},
        ),
        _Case(
            "Z at a tie rounds half to even: 2-bit on [-1.5, 1.5], "
            "q_min - r_min/S = -0.5 -> 0",
            (-1.5, 1.5),
            {"bits": 2},
        ),
        _Case(
            "a negative range [-6, -2] -> [-6, 0], 3-bit",
            (-6.0, -2.0),
            {"bits": 3},
        ),
        _Case("an all-zero range [0, 0]: S = 1, Z = 0", (0.0, 0.0)),
        _Case("random range [-0.37, 1.92], 6-bit", (-0.37, 1.92), {"bits": 6}),
    ]


_add(
    name="scale_zero_point",
    chapter="pruning-quantization",
    params="r_min, r_max, bits=8, signed=True",
    doc="""\
Scale ``S`` and zero point ``Z`` of linear quantization, ``r = S (q -
Z)``, that map ``[r_min, r_max]`` onto the ``bits``-bit integers
(hw11-q7b-iv, v).

The integer range is ``q_min = -2^(bits-1)``, ``q_max = 2^(bits-1) - 1``
when ``signed``, else ``0`` and ``2^bits - 1``. First widen the range to
contain 0 (``r_min <= 0 <= r_max``). Then ``S = (r_max - r_min) /
(q_max - q_min)`` and ``Z = round(q_min - r_min / S)`` (Python's
``round``: ties to even), clamped to ``[q_min, q_max]``. An empty range
(``r_min = r_max = 0``) gives ``S = 1.0`` and ``Z = 0`` (``q_min`` when
unsigned).

Args:
    r_min, r_max: floats; bits: the width; signed: the integer range.

Returns:
    ``(S, Z)``: a Python float and a Python int.

Example:
    >>> scale_zero_point(-1.0, 2.0, bits=2)
    (1.0, -1)
""",
    reference=quant.scale_zero_point,
    cases=_scale_cases,
    rtol=1e-6,
    atol=0.0,
    outputs=("S", "Z"),
)


def _linear_quantize_cases():
    return [
        _Case(
            "ties at .5 round to even (torch.round), S = 1, Z = 0",
            (_t([0.5, 1.5, 2.5, -0.5, -1.5, -2.5]), 1.0, 0),
        ),
        _Case(
            "saturates at q_min = -128 and q_max = 127 (8-bit signed)",
            (_t([-200.0, -128.4, -127.6, 126.6, 127.4, 300.0]), 1.0, 0),
        ),
        _Case(
            "the zero point is added after rounding: S = 0.5, Z = 3",
            (_t([0.4, -1.6, 0.0, 2.2]), 0.5, 3),
        ),
        _Case(
            "unsigned 4-bit: 0 .. 15, stored as uint8",
            (_t([-1.0, 0.0, 7.5, 14.6, 20.0]), 1.0, 0),
            {"bits": 4, "signed": False},
        ),
        _Case(
            "per-row scales (3, 1) broadcast along each row",
            (
                _t([[1.0, -2.0], [1.0, -2.0], [1.0, -2.0]]),
                _t([[0.1], [0.5], [1.0]]),
                0,
            ),
        ),
        _Case(
            "random (4, 5), S = 0.02, Z = -7, seed 110",
            (_randn(110, 4, 5), 0.02, -7),
        ),
    ]


_add(
    name="linear_quantize",
    chapter="pruning-quantization",
    params="r, scale, zero_point, bits=8, signed=True",
    doc="""\
Linear quantization ``q = clamp(round(r / S) + Z, q_min, q_max)``
(hw11-q7b).

Round with ``torch.round`` (ties to even). The integer range is
``[-2^(bits-1), 2^(bits-1) - 1]`` when ``signed``, else
``[0, 2^bits - 1]``. Store the result in the smallest integer dtype that
holds it: ``torch.int8`` / ``torch.uint8`` for up to 8 bits (signed /
unsigned), ``torch.int16`` up to 16 signed bits, else ``torch.int32``.

Args:
    r: float tensor, any shape.
    scale: a float, or a tensor that broadcasts against ``r`` (per
        channel); zero_point: an int (or a broadcasting tensor).
    bits, signed: the integer range.

Returns:
    integer tensor of ``r``'s shape.

Example:
    >>> r = torch.tensor([0.5, 1.5, -3.0, 9.0])
    >>> linear_quantize(r, 1.0, 0, bits=3)
    tensor([ 0,  2, -3,  3], dtype=torch.int8)
""",
    reference=quant.linear_quantize,
    cases=_linear_quantize_cases,
    rtol=0.0,
    atol=0.0,
)


def _symmetric_cases():
    return [
        _Case(
            "8-bit per tensor: S = max|r| / 127, not / 128",
            (_t([[-2.54, 1.0], [0.3, 2.0]]),),
        ),
        _Case(
            "2-bit: only -1, 0, 1 are used (the code -2 never is)",
            (_t([[-1.0, -0.4, 0.2, 1.0, -0.7]]), 2),
        ),
        _Case(
            "per channel = per row (max over axis 1)",
            (_t([[1.0, -4.0, 2.0], [0.1, 0.05, -0.2]]), 4, "channel"),
        ),
        _Case(
            "an all-zero row keeps S = 1",
            (_t([[0.0, 0.0], [1.0, -0.5]]), 8, "channel"),
        ),
        _Case(
            "ties at .5 round to even, S = 1",
            (_t([[2.5, 1.5, -0.5, 127.0]]),),
        ),
        _Case(
            "groups of 2 entries along each row",
            (_t([[1.0, -0.5, 8.0, 3.0], [0.2, 0.1, -0.4, 0.3]]), 4, "group"),
            {"group_size": 2},
        ),
        _Case(
            "random (4, 6), 3-bit, per channel, seed 120",
            (_randn(120, 4, 6), 3, "channel"),
        ),
    ]


_add(
    name="symmetric_quantize",
    chapter="lecture-number-formats",
    params='r, bits=8, granularity="tensor", group_size=None',
    doc="""\
Symmetric linear quantization (zero point 0) at a chosen granularity
(dls-granularity).

``S = max|r| / q_max`` with ``q_max = 2^(bits-1) - 1``, the max taken over
the whole tensor (``"tensor"``), over each row (``"channel"``: the output
channel of a weight matrix) or over each run of ``group_size``
consecutive entries of a row (``"group"``). Where that max is 0, ``S =
1``. Then ``q = clamp(round(r / S), -q_max, q_max)`` with ``torch.round``;
``q_min = -2^(bits-1)`` is never used.

Args:
    r: (rows, cols) float tensor.
    bits: the width; granularity: ``"tensor"``, ``"channel"`` or
        ``"group"``; group_size: divides ``cols`` (``"group"`` only).

Returns:
    ``(q, S)``: q ``torch.int8`` of ``r``'s shape (bits <= 8); S float32
    of shape (1, 1) per tensor, (rows, 1) per channel, ``r``'s shape per
    group (each group's scale repeated over its entries).

Example:
    >>> r = torch.tensor([[-1.0, 0.5], [0.25, 0.1]])
    >>> q, S = symmetric_quantize(r, 2, "channel")
    >>> q, S
    (tensor([[-1,  0],
            [ 1,  0]], dtype=torch.int8), tensor([[1.0000],
            [0.2500]]))
""",
    reference=quant.symmetric_quantize,
    cases=_symmetric_cases,
    outputs=("q", "S"),
)


# --- k-means (hw11-q7b-ii) ------------------------------------------------


def _kmeans_cases():
    return [
        _Case("two clusters, 1 bit", (_t([0.0, 0.1, 0.9, 1.0]), 1)),
        _Case(
            "fewer weights than codes: k = numel (3 weights, 2 bits)",
            (_t([0.5, -1.0, 2.0]), 2),
        ),
        _Case(
            "repeated values leave clusters empty: they keep their centroid",
            (_t([0.0, 0.0, 0.0, 0.0, 1.0]), 2),
        ),
        _Case(
            "labels keep the weight's shape (2, 3, 2), 2 bits",
            (_randn(130, 2, 3, 2), 2),
        ),
        _Case(
            "exactly iters = 1 iteration, 3 bits",
            (_randn(131, 40), 3),
            {"iters": 1},
        ),
        _Case("random (8, 6), 2 bits, seed 132", (_randn(132, 8, 6), 2)),
    ]


_add(
    name="kmeans_codebook",
    chapter="pruning-quantization",
    params="weight, bits, iters=25",
    doc="""\
k-means (Lloyd) quantization of a weight tensor's entries into
``k = min(2^bits, numel)`` values (hw11-q7b-ii).

Start: the centroids are the flattened, sorted weights at the indices
``torch.linspace(0, numel - 1, k).round().long()``. Then ``iters`` times:
assign every weight to its nearest centroid (with the centroids sorted:
``torch.bucketize(w, mids)``, ``mids`` the midpoints of neighbouring
centroids, so a tie goes to the lower one), and move each centroid to
the mean of its weights; a centroid with no weights keeps its value.
Finally sort the centroids and assign once more.

Args:
    weight: float tensor, any shape.
    bits: codes of ``bits`` bits; iters: Lloyd iterations.

Returns:
    ``(codebook, labels)``: codebook (k,) float32 sorted; labels int64 of
    ``weight``'s shape; ``codebook[labels]`` is the quantized tensor.

Example:
    >>> kmeans_codebook(torch.tensor([0.0, 0.1, 0.9, 1.0]), 1)
    (tensor([0.0500, 0.9500]), tensor([0, 0, 1, 1]))
""",
    reference=quant.kmeans_codebook,
    cases=_kmeans_cases,
    outputs=("codebook", "labels"),
)


# --- integer-only linear layer (dls-linear-quant) -------------------------


def _i8(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int8)


def _int_randint(seed: int, low: int, high: int, *shape) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=_gen(seed)).to(torch.int8)


def _int_linear_cases():
    full = torch.full((2, 4), 127, dtype=torch.int8)
    return [
        _Case(
            "int8 products overflow int8: 127 * 127 summed in int32",
            (full, 0, full.T.contiguous(), 0),
        ),
        _Case(
            "the input's zero point z_x = -128 (the Z_X q_W term)",
            (
                _i8([[1, -2, 3], [4, 5, -6]]),
                0,
                _i8([[-128, 0], [5, 127], [-1, 2]]),
                -128,
            ),
        ),
        _Case(
            "a weight zero point z_w = 3 (the Z_W q_X term)",
            (
                _i8([[3, 7, -1], [0, 3, 10]]),
                3,
                _i8([[2, 1], [0, -1], [4, 4]]),
                0,
            ),
        ),
        _Case(
            "both zero points: z_w = -5, z_x = 10 (the Z_W Z_X k term)",
            (
                _int_randint(140, -128, 128, 3, 4),
                -5,
                _int_randint(141, -128, 128, 4, 2),
                10,
            ),
        ),
        _Case(
            "m = 2, k = 3, n = 5: row sums of q_W, column sums of q_X",
            (
                _int_randint(142, -20, 20, 2, 3),
                2,
                _int_randint(143, -20, 20, 3, 5),
                -3,
            ),
        ),
        _Case(
            "random (4, 16) @ (16, 3), z_w = 0, z_x = 17, seed 144",
            (
                _int_randint(144, -128, 128, 4, 16),
                0,
                _int_randint(145, -128, 128, 16, 3),
                17,
            ),
        ),
    ]


_add(
    name="int_linear_accumulate",
    chapter="lecture-number-formats",
    params="q_w, z_w, q_x, z_x",
    doc="""\
The int32 accumulator of an integer-only linear layer ``Y = W X``
(dls-linear-quant).

``acc = (q_W - Z_W)(q_X - Z_X)``, computed from the expansion
``q_W q_X - Z_W q_X - Z_X q_W + Z_W Z_X k``: the product ``q_W q_X`` of
the integers, minus ``Z_X`` times the row sums of ``q_W``, minus ``Z_W``
times the column sums of ``q_X``, plus the constant ``Z_W Z_X k``. Convert
to ``torch.int32`` before multiplying: int8 products overflow int8.

Args:
    q_w: (m, k) int8 weights; z_w: their zero point (int).
    q_x: (k, n) int8 inputs; z_x: their zero point (int).

Returns:
    (m, n) ``torch.int32`` tensor.

Example:
    >>> q_w = torch.tensor([[127, -128]], dtype=torch.int8)
    >>> q_x = torch.tensor([[127], [1]], dtype=torch.int8)
    >>> int_linear_accumulate(q_w, 0, q_x, 0)
    tensor([[16001]], dtype=torch.int32)
""",
    reference=quant.int_linear_accumulate,
    cases=_int_linear_cases,
    rtol=0.0,
    atol=0.0,
)


# --- NF4 block quantization (cme295-qlora) --------------------------------


def _nf4_cases():
    code = quant.nf4_code()

    def at(idx, c):  # values sitting on code entries idx, scaled by c
        return code[torch.tensor(idx)] * c

    return [
        _Case(
            "one absmax per block, not per tensor: two blocks of 4",
            (
                torch.cat([at([0, 7, 12, 15], 1.0), at([3, 15, 9, 7], 50.0)]),
                code,
                4,
            ),
        ),
        _Case(
            "absmax is max |x|: a block led by a negative value",
            (at([0, 5, 9, 11], 3.0), code, 4),
        ),
        _Case(
            "an all-zero block: every index points at the code's 0",
            (torch.cat([torch.zeros(4), at([1, 15, 6, 8], 2.0)]), code, 4),
        ),
        _Case(
            "x of shape (2, 8) is flattened row by row, blocks of 4",
            (_randn(150, 2, 8), code, 4),
        ),
        _Case(
            "the toy code [-1, 0, 1], blocks of 2",
            (_t([-2.0, 0.4, 3.0, 0.0, 0.1, -0.3]), _t([-1.0, 0.0, 1.0]), 2),
        ),
        _Case(
            "random (2, 64), NF4, blocks of 64, seed 151",
            (_randn(151, 2, 64), code, 64),
        ),
    ]


_add(
    name="quantize_blockwise",
    chapter="lora",
    params="x, code, block_size=64",
    doc="""\
Blockwise absmax quantization to a 4-bit code such as NF4 (QLoRA,
cme295-qlora).

Flatten ``x`` (row-major) into blocks of ``block_size`` entries. Each
block keeps one constant ``c = max |x|`` over the block; divide the block
by ``c`` (by the smallest positive float32 where ``c = 0``) and replace
each entry by the index of the nearest value of ``code``.

Args:
    x: float tensor whose number of entries is a multiple of
        ``block_size``.
    code: (n_codes,) sorted code values in [-1, 1] (NF4: 16 of them).
    block_size: entries per block.

Returns:
    ``(idx, absmax)``: idx (numel,) ``torch.uint8``; absmax (numel /
    block_size,) float32.

Example:
    >>> code = torch.tensor([-1.0, 0.0, 1.0])
    >>> quantize_blockwise(torch.tensor([-2.0, 0.4, 3.0, 0.0]), code, 2)
    (tensor([0, 1, 2, 1], dtype=torch.uint8), tensor([2., 3.]))
""",
    reference=quant.quantize_blockwise,
    cases=_nf4_cases,
    outputs=("idx", "absmax"),
)


# --- ZeRO (cme295-zero) ---------------------------------------------------


def _zero_cases():
    return [
        _Case(
            "stage 0: plain data parallelism, 16 bytes per parameter",
            (7.5e9, 64, 0),
        ),
        _Case("stage 1: optimizer states split n_dp ways", (7.5e9, 64, 1)),
        _Case("stage 2: gradients split too, parameters not", (7.5e9, 64, 2)),
        _Case("stage 3: everything split", (7.5e9, 64, 3)),
        _Case("one rank (n_dp = 1): nothing is split", (1e9, 1, 3)),
        _Case(
            "fp32 Adam: 4 + 4 + 8 bytes per parameter, stage 2, n_dp = 8",
            (1.3e9, 8, 2),
            {"param_bytes": 4, "grad_bytes": 4, "optim_bytes": 8},
        ),
    ]


_add(
    name="zero_bytes_per_gpu",
    chapter="lecture-parallelism",
    params="n_params, n_dp, stage, param_bytes=2, grad_bytes=2, "
    "optim_bytes=12",
    doc="""\
Bytes of model states one data-parallel rank holds under ZeRO
(cme295-zero).

Parameters, gradients and optimizer states take ``param_bytes``,
``grad_bytes`` and ``optim_bytes`` (``K``) per parameter. Stage 0 keeps
all of them on every rank; stage 1 splits the optimizer states ``n_dp``
ways, stage 2 also the gradients, stage 3 also the parameters.

Args:
    n_params: parameters Psi; n_dp: data-parallel ranks; stage: 0 to 3.
    param_bytes, grad_bytes, optim_bytes: bytes per parameter (mixed
        precision Adam: 2, 2, 12).

Returns:
    dict with the keys ``"params"``, ``"grads"``, ``"optim"`` and
    ``"total"`` (their sum), in bytes.

Example:
    >>> b = zero_bytes_per_gpu(1e9, 4, 2)
    >>> b["params"], b["grads"], b["optim"], b["total"]
    (2000000000.0, 500000000.0, 3000000000.0, 5500000000.0)
""",
    reference=zero.zero_bytes_per_gpu,
    cases=_zero_cases,
    rtol=1e-9,
    atol=0.0,
)


# --- batch size (hw11-q4): the quadratic model and Adam --------------------


def _excess_cases():
    rng = _rng(160)
    return [
        _Case(
            "one direction, one step: h/2 (q m2 + lr^2 s / B)",
            (np.array([0.1, 0.5]), 1, 1, *np.array([[2.0], [3.0], [4.0]])),
        ),
        _Case(
            "gradient noise divided by the batch size B = 64",
            (np.array([0.01, 0.05]), 64, 50, *np.array([[1.0], [1.0], [10]])),
        ),
        _Case(
            "no start error (m2 = 0): noise summed over T = 200 steps",
            (
                np.array([1e-3, 0.01, 0.1]),
                4,
                200,
                *np.array([[0.5], [0], [3]]),
            ),
        ),
        _Case(
            "lr h = 2 exactly (q = 1): inf, not 0 / 0",
            (np.array([1.0, 2.0]), 8, 10, *np.array([[1.0], [1.0], [1.0]])),
        ),
        _Case(
            "past the stability limit in one direction only: inf",
            (
                np.array([0.1, 0.3]),
                8,
                10,
                np.array([1.0, 8.0]),
                np.ones(2),
                np.ones(2),
            ),
        ),
        _Case(
            "four directions: a sum over k, the 1/2 kept",
            (
                np.array([0.01, 0.02, 0.05]),
                16,
                100,
                np.array([0.5, 1.0, 2.0, 4.0]),
                np.array([1.0, 2.0, 0.5, 3.0]),
                np.array([1.0, 2.0, 3.0, 4.0]),
            ),
        ),
        _Case(
            "random, 8 directions, 9 learning rates, seed 160",
            (
                np.geomspace(1e-3, 1.0, 9),
                32,
                300,
                rng.uniform(0.1, 2.0, 8),
                rng.uniform(0.0, 1.0, 8),
                rng.uniform(0.0, 5.0, 8),
            ),
        ),
    ]


_add(
    name="quadratic_excess_loss",
    chapter="batch-size",
    params="lrs, batch_size, steps, h, m2, s",
    doc="""\
Expected excess loss of SGD on a quadratic after ``steps`` steps, one
value per learning rate (hw11-q4a).

Along eigen-direction ``k`` of the Hessian (curvature ``h_k``) the mean
error starts at ``m2_k`` (squared) and is multiplied by
``q_k = (1 - lr h_k)^2`` at each step; gradient noise of variance
``s_k / B`` adds ``lr^2 s_k / B`` to the error's variance at each step,
which also shrinks by ``q_k``: after ``T`` steps the variance is
``lr^2 s_k / B (1 - q_k^T) / (1 - q_k)``. The excess loss is
``1/2 sum_k h_k (q_k^T m2_k + variance_k)``. Where some direction has
``q_k >= 1`` (``lr h_k`` not in (0, 2)) SGD does not converge: return
``inf`` for that learning rate.

Args:
    lrs: (n_lrs,) learning rates.
    batch_size: B; steps: T.
    h, m2, s: (n_directions,) curvatures, squared start errors and
        per-example gradient-noise variances.

Returns:
    (n_lrs,) float numpy array.

Example:
    >>> one = np.array([1.0])
    >>> quadratic_excess_loss(np.array([0.5, 3.0]), 2, 1, one, one, one)
    array([0.1875,    inf])
""",
    reference=batchsize.quadratic_excess_loss,
    cases=_excess_cases,
    rtol=1e-6,
    atol=1e-12,
)


def _log_law_cases():
    rng = _rng(170)
    return [
        _Case(
            "h = 1, B = 64, T = 1000: ln(4 T m2 B / s) / (2 T)",
            (1.0, 1.0, 2.0, 64, 1000),
        ),
        _Case(
            "batch sizes as an array, 2 to 2048: one lr* each",
            (1.0, 2.0, 5.0, np.array([2, 16, 256, 2048]), 500),
        ),
        _Case(
            "h = 3: h^2 inside the log, h once in 2 h T",
            (3.0, 0.5, 1.0, 8, 200),
        ),
        _Case(
            "random h, m2, s, three batch sizes, seed 170",
            (
                float(rng.uniform(0.2, 2.0)),
                float(rng.uniform(0.5, 2.0)),
                float(rng.uniform(1.0, 10.0)),
                np.array([4, 64, 1024]),
                300,
            ),
        ),
    ]


_add(
    name="log_law_lr",
    chapter="batch-size",
    params="h, m2, s, batch_size, steps",
    doc="""\
The small-step optimal learning rate of one direction of a quadratic:
the log law of the batch size (hw11-q4a).

With ``lr h << 1`` the excess loss of ``quadratic_excess_loss`` along one
direction is about ``h/2 [m2 exp(-2 lr h T) + lr s / (2 h B)]``; setting
its derivative in ``lr`` to zero gives
``lr* = ln(4 h^2 T m2 B / s) / (2 h T)``, which grows like ``ln B``.

Args:
    h: curvature; m2: squared start error; s: per-example gradient-noise
        variance (floats > 0).
    batch_size: B, a number or a numpy array of batch sizes.
    steps: T.

Returns:
    float, or a numpy array shaped like ``batch_size``.

Example:
    >>> lr = log_law_lr(1.0, 1.0, 4.0, np.array([1, 100]), 10)
    >>> lr.round(4)
    array([0.1151, 0.3454])
""",
    reference=batchsize.log_law_lr,
    cases=_log_law_cases,
    rtol=1e-9,
    atol=0.0,
)


def _adam_step(
    p, g, m, v, lr, t, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8
):
    """Reference of the exercise ``adam_step``: one step of
    :func:`llmbook.topics.batchsize.adam_update` (the sweeps' Adam, every
    run at once, in place) on one tensor. The student's signature takes
    one parameter tensor and returns new tensors instead."""
    shape = p.shape
    p2, m2, v2 = (x.detach().clone().reshape(1, -1) for x in (p, m, v))
    batchsize.adam_update(
        [p2],
        [g.reshape(1, -1)],
        {"m": [m2], "v": [v2]},
        torch.tensor(float(lr)),
        t,
        betas,
        weight_decay,
        eps,
    )
    return tuple(x.reshape(shape) for x in (p2, m2, v2))


def _adam_args(seed: int, *shape, moments=True):
    p, g = _randn(seed, *shape), _randn(seed + 1, *shape)
    if not moments:
        return p, g, torch.zeros(*shape), torch.zeros(*shape)
    m = 0.1 * _randn(seed + 2, *shape)
    return p, g, m, 0.01 * _randn(seed + 3, *shape).abs()


def _adam_cases():
    tiny = torch.full((2, 3), 1e-6) * _t([[1, -1, 1], [-1, 1, 1]])
    zeros = torch.zeros(2, 3)
    return [
        _Case(
            "t = 1 from zero moments: divide by 1 - beta^t (bias correction)",
            (*_adam_args(180, 3, 4, moments=False), 0.1, 1),
        ),
        _Case(
            "t = 5 with moments: the correction uses beta^5",
            (*_adam_args(185, 3, 4), 0.01, 5),
        ),
        _Case(
            "weight decay adds wd * p to the gradient (L2, not AdamW)",
            (*_adam_args(190, 4, 2), 0.05, 3),
            {"weight_decay": 0.1},
        ),
        _Case(
            "the homework's betas (0.5, 0.5) and weight decay 0.001",
            (*_adam_args(195, 2, 5), 0.1, 2),
            {"betas": (0.5, 0.5), "weight_decay": 0.001},
        ),
        _Case(
            "tiny gradients (1e-6): eps added after the square root",
            (_randn(200, 2, 3), tiny, zeros, zeros, 0.1, 1),
        ),
        _Case(
            "a 1-D bias vector (5,), t = 2",
            (*_adam_args(205, 5), 0.02, 2),
        ),
    ]


_add(
    name="adam_step",
    chapter="batch-size",
    params="p, g, m, v, lr, t, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8",
    doc="""\
One step of Adam with L2 weight decay, as ``torch.optim.Adam`` takes it
(hw11-q4c).

With ``(b1, b2) = betas``: ``g <- g + weight_decay * p`` (L2: the decay
enters the moments, unlike AdamW), ``m <- b1 m + (1 - b1) g``,
``v <- b2 v + (1 - b2) g^2``, the bias-corrected ``m_hat = m / (1 - b1^t)``
and ``v_hat = v / (1 - b2^t)``, then
``p <- p - lr m_hat / (sqrt(v_hat) + eps)``.

Args:
    p: parameter tensor (any shape); g: its gradient; m, v: the first and
        second moments (shaped like p, zeros before step 1).
    lr: learning rate; t: the step number, from 1.
    betas, weight_decay, eps: as ``torch.optim.Adam``'s.

Returns:
    ``(p, m, v)``: the new parameter and moments, new tensors (leave the
    inputs unchanged).

Example:
    >>> p, g = torch.tensor([1.0, -1.0]), torch.tensor([0.5, -2.0])
    >>> z = torch.zeros(2)
    >>> p1, m1, v1 = adam_step(p, g, z, z, lr=0.1, t=1)
    >>> p1  # step 1 moves every entry by about lr, against the gradient
    tensor([ 0.9000, -0.9000])
""",
    reference=_adam_step,
    cases=_adam_cases,
    outputs=("p", "m", "v"),
)


# --- Fermi estimation (hw11-q5) --------------------------------------------


def _training_days(n_params, n_tokens, flop_per_s, n_gpus, utilization=1.0):
    """Reference of the exercise ``training_days``:
    :func:`llmbook.core.accounting.training_flops` (6 N D) run by
    :func:`llmbook.core.hardware.wall_clock_seconds`, in days. The
    student's one function does both."""
    flop = accounting.training_flops(n_params, n_tokens)
    seconds = hardware.wall_clock_seconds(
        flop, flop_per_s, n_gpus, utilization
    )
    return seconds / hardware.SECONDS_PER_DAY


def _days_cases():
    return [
        _Case(
            "6 FLOP per parameter per token (2 forward + 4 backward)",
            (1e9, 2e10, 1e15, 1),
        ),
        _Case(
            "in days: 86 400 seconds each",
            (7e10, 1.4e12, 1e15, 64),
        ),
        _Case(
            "utilization 0.4 divides the peak rate",
            (7e9, 2e12, 989e12, 512, 0.4),
        ),
        _Case(
            "1024 GPUs share the work, utilization 0.5",
            (1.75e11, 3e11, 312e12, 1024, 0.5),
        ),
        _Case(
            "GPT-6: 1e14 parameters, 2e15 tokens, a million GPUs",
            (1e14, 2e15, 989e12, 1e6, 0.4),
        ),
    ]


_add(
    name="training_days",
    chapter="fermi",
    params="n_params, n_tokens, flop_per_s, n_gpus, utilization=1.0",
    doc="""\
Days to train a model of ``n_params`` parameters on ``n_tokens`` tokens
on ``n_gpus`` GPUs (hw11-q5h).

Training takes ``C = 6 N D`` FLOP (2 per parameter and token forward, 4
backward). Each GPU sustains ``utilization`` of its peak ``flop_per_s``,
and the GPUs work in perfect parallel.

Args:
    n_params: N; n_tokens: D; flop_per_s: peak FLOP/s of one GPU;
    n_gpus: number of GPUs; utilization: fraction of the peak reached.

Returns:
    float, days (of 86 400 s).

Example:
    >>> round(training_days(1e9, 1.44e10, 1e15, 1), 6)
    1.0
""",
    reference=_training_days,
    cases=_days_cases,
    rtol=1e-9,
    atol=0.0,
)


def _kv_cases():
    return [
        _Case(
            "K and V, one vector each per layer and KV head (GPT-3)",
            (96, 96, 128),
        ),
        _Case(
            "grouped-query attention: 8 KV heads (Llama 2 70B)",
            (80, 8, 128),
        ),
        _Case("multi-query attention: one KV head", (32, 1, 128)),
        _Case("an fp8 cache: 1 byte per value", (32, 8, 128, 1)),
        _Case("an fp32 cache: 4 bytes per value", (12, 12, 64, 4)),
    ]


_add(
    name="kv_cache_bytes_per_token",
    chapter="fermi",
    params="n_layers, n_kv_heads, d_head, bytes_per_value=2",
    doc="""\
Bytes one token of context leaves in the KV cache (hw11-q5g).

Every layer stores one key and one value vector of ``d_head`` numbers
per key/value head. ``n_kv_heads`` is the number of attention heads
for multi-head attention, fewer for grouped-query attention, 1 for
multi-query attention.

Args:
    n_layers, n_kv_heads, d_head: ints.
    bytes_per_value: 2 for fp16/bf16.

Returns:
    number of bytes (per token, per sequence in flight).

Example:
    >>> kv_cache_bytes_per_token(2, 4, 8)
    256.0
""",
    reference=accounting.kv_cache_bytes_per_token,
    cases=_kv_cases,
    rtol=1e-12,
    atol=0.0,
)


def _gpus_needed(n_params, bytes_per_param, gpu_memory_gb):
    """Reference of the exercise ``gpus_needed``:
    :func:`llmbook.core.hardware.devices_needed` for the weights'
    :func:`llmbook.core.accounting.model_bytes`, with the GPU's memory in
    decimal GB (1e9 bytes, as datasheets give it)."""
    weights = accounting.model_bytes(n_params, bytes_per_param)
    return hardware.devices_needed(weights, gpu_memory_gb * 1e9)


def _gpus_cases():
    return [
        _Case("round up: 120 GB on 80 GB GPUs needs 2, not 1", (6e10, 2, 80)),
        _Case("exactly full: 160 GB on 80 GB GPUs is 2, not 3", (8e10, 2, 80)),
        _Case(
            "GB = 1e9 bytes (not GiB): 164 GB on 80 GB GPUs is 3",
            (8.2e10, 2, 80),
        ),
        _Case("less than one GPU's worth still needs 1", (1e9, 2, 80)),
        _Case("fp32 weights, 4 bytes each, on 24 GB GPUs", (7e9, 4, 24)),
        _Case("GPT-6: 1e14 bf16 parameters on 141 GB GPUs", (1e14, 2, 141)),
    ]


_add(
    name="gpus_needed",
    chapter="fermi",
    params="n_params, bytes_per_param, gpu_memory_gb",
    doc="""\
The fewest GPUs whose memory holds a model's weights (hw11-q5e).

The weights take ``n_params * bytes_per_param`` bytes; each GPU holds
``gpu_memory_gb`` GB, decimal gigabytes of 1e9 bytes as datasheets give
them. A part of a GPU is a whole GPU.

Args:
    n_params: parameters; bytes_per_param: 2 for bf16;
    gpu_memory_gb: memory of one GPU in GB.

Returns:
    int.

Example:
    >>> gpus_needed(7e10, 2, 80)
    2
""",
    reference=_gpus_needed,
    cases=_gpus_cases,
    rtol=0.0,
    atol=0.0,
)


def _chinchilla_allocation(
    C, K_N=406.4, K_D=410.7, alpha=0.34, beta=0.28, c0=6.0
):
    """Reference of the exercise ``chinchilla_allocation``:
    :func:`llmbook.topics.scaling.optimal_allocation` for the fit with
    these constants. The student's signature takes the constants instead
    of a :class:`llmbook.topics.scaling.ChinchillaFit`."""
    fit = scaling.ChinchillaFit(K_N=K_N, K_D=K_D, alpha=alpha, beta=beta)
    return scaling.optimal_allocation(C, fit, c0)


def _chinchilla_cases():
    return [
        _Case(
            "alpha = beta, K_N = K_D: N = D = sqrt(C / c0)",
            (6e22, 400.0, 400.0, 0.3, 0.3),
        ),
        _Case(
            "K_N = 10 K_D: gamma from alpha K_N / (beta K_D), not its inverse",
            (1e20, 1000.0, 100.0, 0.3, 0.3),
        ),
        _Case(
            "Chinchilla's fit: N grows as C^(beta / (alpha + beta))",
            (1e24,),
        ),
        _Case(
            "c0 = 8 FLOP per parameter per token",
            (1e21,),
            {"c0": 8.0},
        ),
        _Case(
            "Besiroglu et al.'s refit of Chinchilla, C = 1e25",
            (1e25, 482.01, 2085.43, 0.3478, 0.3658),
        ),
    ]


_add(
    name="chinchilla_allocation",
    chapter="fermi",
    params="C, K_N=406.4, K_D=410.7, alpha=0.34, beta=0.28, c0=6.0",
    doc="""\
The compute-optimal model size and data for a budget of ``C`` FLOP
(hw11-q5b).

Minimise ``L = K_N / N^alpha + K_D / D^beta`` subject to
``c0 N D = C``. With ``gamma = (alpha K_N / (beta K_D))^(1 / (alpha +
beta))`` the optimum is ``N = gamma (C / c0)^(beta / (alpha + beta))``
and ``D = (C / c0)^(alpha / (alpha + beta)) / gamma``. The defaults are
Chinchilla's fit as the homework quotes it.

Args:
    C: compute budget in FLOP (a float).
    K_N, K_D, alpha, beta: the fit's constants.
    c0: FLOP per parameter per token.

Returns:
    ``(N_opt, D_opt)``: two floats, parameters and tokens.

Example:
    >>> N, D = chinchilla_allocation(6e22, 1.0, 1.0, 0.5, 0.5)
    >>> round(N / 1e9), round(D / 1e9)
    (100, 100)
""",
    reference=_chinchilla_allocation,
    cases=_chinchilla_cases,
    rtol=1e-9,
    atol=0.0,
    outputs=("N_opt", "D_opt"),
)


EXERCISES: dict[str, str] = {
    name: ex.chapter for name, ex in _EXERCISES.items()
}
"""Exercise name -> the chapter (file in ``chapters/``) that derives it."""


# ---------------------------------------------------------------------------
# The public functions
# ---------------------------------------------------------------------------


def _exercise(name) -> _Exercise:
    if name not in _EXERCISES:
        raise ValueError(
            f"name must be one of the exercises {sorted(_EXERCISES)}, "
            f"got {name!r}"
        )
    return _EXERCISES[name]


def reference(name: str) -> Callable:
    """The reference implementation of exercise ``name``: the library's
    function, or a wrapper defined here with the student's simpler
    signature. Raises ``ValueError`` listing the exercises for an unknown
    name."""
    return _exercise(name).reference


def tolerance(name: str) -> str:
    """How exercise ``name`` compares results, in words."""
    ex = _exercise(name)
    exact = "integers, booleans, shapes, dtypes and keys exactly"
    if ex.rtol == 0 and ex.atol == 0:
        return f"every value exactly; {exact}"
    return (
        f"floats within atol + rtol |expected| (atol = {ex.atol:g}, "
        f"rtol = {ex.rtol:g}); {exact}"
    )


def stub_source(name: str) -> str:
    """The Python source of the stub the student completes: ``def
    name(...):``, the docstring (what to compute, shapes, a worked
    example) and ``raise NotImplementedError``."""
    ex = _exercise(name)
    doc = textwrap.indent(ex.doc.rstrip("\n"), "    ")
    head = f"def {ex.name}({ex.params}):"
    if len(head) > 79:
        head = f"def {ex.name}(\n    {ex.params}\n):"
    return (
        f"{head}\n"
        f'    """{doc.lstrip()}\n    """\n'
        "    raise NotImplementedError\n"
    )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _values(x) -> str:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        arr = x.to(torch.float64).numpy() if x.is_floating_point() else x
        x = np.asarray(arr)
    return _short(
        np.array2string(
            np.asarray(x), precision=4, separator=", ", threshold=12
        ).replace("\n", " ")
    )


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.numel() <= 8:
            return f"{_values(value)} ({dtype})"
        return f"{dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return f"array {_values(value)}"
        return f"{value.dtype} array of shape {value.shape}"
    return _short(repr(value), 80)


def _inputs(ex: _Exercise, case: _Case) -> str:
    try:
        bound = inspect.signature(ex.reference).bind(*case.args, **case.kwargs)
        items = bound.arguments.items()
    except TypeError:
        items = [(f"arg{i}", a) for i, a in enumerate(case.args)]
        items += list(case.kwargs.items())
    return ", ".join(f"{k}={_describe(v)}" for k, v in items)


def _kind(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} ({x.dtype})"
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {x.shape}"
    return f"{type(x).__name__} {_short(repr(x), 60)}"


def _differ(what: str, bad, want, got, numel: int) -> str:
    where = np.argwhere(np.asarray(bad))
    idx = tuple(int(i) for i in where[0]) if len(where) else ()
    lines = [
        (
            f"{what}: {int(bad.sum())} of {numel} entries differ; first "
            f"at index {list(idx)}: expected {_values(want[idx])}, "
            f"got {_values(got[idx])}"
        )
    ]
    if numel <= 12:
        lines.append(f"  expected {_values(want)}")
        lines.append(f"  received {_values(got)}")
    else:
        lines.append(f"  expected starts {_values(want.flatten()[:6])}")
        lines.append(f"  received starts {_values(got.flatten()[:6])}")
    return "\n".join(lines)


def _compare_tensor(what, want, got, rtol, atol):
    if isinstance(got, np.ndarray):
        return (
            f"{what}: expected a torch.Tensor, got a numpy array "
            "(torch.from_numpy converts it)"
        )
    if not isinstance(got, torch.Tensor):
        return f"{what}: expected a torch.Tensor, got {_kind(got)}"
    if got.shape != want.shape:
        return (
            f"{what}: shape expected {tuple(want.shape)}, "
            f"got {tuple(got.shape)}"
        )
    if got.dtype != want.dtype:
        return f"{what}: dtype expected {want.dtype}, got {got.dtype}"
    g, w = got.detach().cpu(), want.detach().cpu()
    if w.is_floating_point():
        close = torch.isclose(g, w, rtol=rtol, atol=atol)
    else:
        close = g == w
    if bool(close.all()):
        return None
    return _differ(what, (~close).numpy(), w, g, w.numel())


def _compare_array(what, want, got, rtol, atol):
    if isinstance(got, torch.Tensor):
        return (
            f"{what}: expected a numpy array, got a torch.Tensor "
            "(.numpy() converts it)"
        )
    if not isinstance(got, np.ndarray):
        return f"{what}: expected a numpy array, got {_kind(got)}"
    if got.shape != want.shape:
        return f"{what}: shape expected {want.shape}, got {got.shape}"
    if got.dtype.kind != want.dtype.kind:
        return f"{what}: dtype expected {want.dtype}, got {got.dtype}"
    if want.dtype.kind == "f":
        close = np.isclose(got, want, rtol=rtol, atol=atol)
    else:
        close = got == want
    if close.all():
        return None
    return _differ(what, ~close, want, got, want.size)


def _number(x):
    if isinstance(x, torch.Tensor) and x.numel() == 1 and x.dim() == 0:
        return x.item()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _compare(what, want, got, rtol, atol, names=()):
    if isinstance(want, tuple):
        if not isinstance(got, (tuple, list)):
            return (
                f"{what}: expected a tuple of {len(want)} values "
                f"({', '.join(names)}), got {_kind(got)}"
            )
        if len(got) != len(want):
            return (
                f"{what}: expected {len(want)} values "
                f"({', '.join(names)}), got {len(got)}"
            )
        for i, (w, g) in enumerate(zip(want, got)):
            label = names[i] if i < len(names) else f"[{i}]"
            problem = _compare(f"output {label}", w, g, rtol, atol)
            if problem:
                return problem
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{what}: expected a dict, got {_kind(got)}"
        if set(got) != set(want):
            return (
                f"{what}: keys expected {sorted(want)}, "
                f"got {sorted(map(str, got))}"
            )
        for k in want:
            problem = _compare(f"{what}[{k!r}]", want[k], got[k], rtol, atol)
            if problem:
                return problem
        return None
    if isinstance(want, torch.Tensor):
        return _compare_tensor(what, want, got, rtol, atol)
    if isinstance(want, np.ndarray):
        return _compare_array(what, want, got, rtol, atol)
    g = _number(got)
    if isinstance(want, bool):
        if not isinstance(g, bool):
            return f"{what}: expected a bool, got {_kind(got)}"
    elif isinstance(want, int):
        if isinstance(g, bool) or not isinstance(g, int):
            return f"{what}: expected an int, got {_kind(got)}"
    elif isinstance(want, float):
        if isinstance(g, bool) or not isinstance(g, (int, float)):
            return f"{what}: expected a number, got {_kind(got)}"
        if abs(g - want) <= atol + rtol * abs(want):
            return None
        return f"{what}: expected {want!r}, got {g!r}"
    if g != want:
        return f"{what}: expected {want!r}, got {g!r}"
    return None


def _warned(caught) -> str:
    """The warnings a student's function raised, in words (or "")."""
    seen = list(
        dict.fromkeys(
            f"{w.category.__name__}: {_short(w.message, 120)}" for w in caught
        )
    )
    if not seen:
        return ""
    more = f" (and {len(seen) - 3} more)" if len(seen) > 3 else ""
    return "; ".join(seen[:3]) + more


def _run(ex: _Exercise, fn) -> tuple[bool, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok, message = _run_cases(ex, fn)
    said = _warned(caught)
    if said:
        message += f"\n  warnings from your function: {said}"
    return ok, message


def _same(a, b) -> bool:
    # equal values, element by element for arrays and tensors
    import numpy as np

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(
            np.array_equal(a, b, equal_nan=True)
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 (values that do not compare)
        return True


def _changed_in_place(original, by_reference, by_student) -> str:
    """The first positional input (``"1"``, ``"2"``, ...) the student's
    function changed although the reference leaves it as it was; ``""``
    when none. Catches an update in place (``m.mul_(beta)``) that also
    changes an input the caller still uses."""
    for i, (a, r, s) in enumerate(zip(original, by_reference, by_student), 1):
        if _same(a, r) and not _same(a, s):
            return str(i)
    return ""


def _run_cases(ex: _Exercise, fn) -> tuple[bool, str]:
    if not callable(fn):
        return False, f"expected a function, got {_kind(fn)}"
    cases = ex.cases()
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reference's own, if any
            kept = copy.deepcopy(case.args)
            want = ex.reference(*kept, **case.kwargs)
        args = copy.deepcopy(case.args)
        try:
            got = fn(*args, **copy.deepcopy(case.kwargs))
        except NotImplementedError:
            return False, (
                "not implemented yet (the function still raises "
                "NotImplementedError)"
            )
        except Exception as exc:  # noqa: BLE001 (the student's code failed)
            return False, (
                f"case '{case.label}' raised {type(exc).__name__}: "
                f"{_short(exc)}\n  inputs: {_inputs(ex, case)}"
            )
        changed = _changed_in_place(case.args, kept, args)
        if changed:
            names = list(inspect.signature(ex.reference).parameters)
            i = int(changed) - 1
            changed = names[i] if i < len(names) else changed
            return False, (
                f"case '{case.label}': your function changed its input "
                f"{changed} in place; leave the inputs as they are (work on "
                f"a copy)\n  inputs: {_inputs(ex, case)}"
            )
        problem = _compare("output", want, got, ex.rtol, ex.atol, ex.outputs)
        if problem:
            return False, (
                f"case '{case.label}' fails\n  inputs: {_inputs(ex, case)}\n"
                f"  {problem}\n  tolerance: {tolerance(ex.name)}"
            )
    return True, f"{len(cases)} cases pass"


def check(name: str, fn) -> bool:
    """Check the student's ``fn`` for exercise ``name`` against
    :func:`reference` on fixed cases and a few random ones (fixed seeds).

    Prints one verdict: ``✓ name: 6 cases pass``, or ``✗ name:`` followed
    by "not implemented yet", or the first failing case in words with its
    inputs and the expected and received values (or the exception it
    raised). Returns True or False; never raises, except ``ValueError``
    (listing the exercises) for an unknown ``name``.
    """
    ex = _exercise(name)
    try:
        ok, message = _run(ex, fn)
    except Exception as exc:  # noqa: BLE001 (anything odd met)
        ok, message = (
            False,
            (
                f"could not check the result: {type(exc).__name__}: "
                f"{_short(exc)}"
            ),
        )
    print(f"{'✓' if ok else '✗'} {name}: {message}")
    return ok


def use(name: str, fn) -> Callable:
    """The function the lab's later cells call for exercise ``name``:
    the student's ``fn`` if it passes :func:`check` (run quietly), else
    :func:`reference`, printing ``name: using the reference
    implementation until yours passes grade.check``, so a lab runs end to
    end unfinished.

    Example: ``attention_pattern = grade.use("attention_pattern",
    attention_pattern)`` before a cell that uses it (the labs in
    ``labs/``, written by ``llmbook.book.labs``). Raises ``ValueError``
    for an unknown ``name``.
    """
    ex = _exercise(name)
    try:
        ok = _run(ex, fn)[0]
    except Exception:  # noqa: BLE001 (anything odd met: not passed)
        ok = False
    if ok:
        return fn
    print(
        f"{name}: using the reference implementation until yours passes "
        "grade.check"
    )
    return ex.reference
