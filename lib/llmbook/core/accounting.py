"""FLOP and byte accounting: what a model's parameters, training state,
activations and KV cache cost, and how many FLOP training and inference take.

Torch-free (integers and floats only). ``training_flops`` is the 6 N D rule
(scale-6pd), ``inference_flop`` the 2 N per token of a forward pass;
``llama_forward_flops`` counts a Llama decoder term by term as the DSC 291
lecture does (dls-flops); ``BYTES_PER_PARAM`` holds the bytes per parameter of
each training recipe (16 for mixed-precision Adam, dls-mixed-precision).

Notation (glossary): ``b`` sequences, ``s`` tokens per sequence, ``h`` model
width, ``n_heads`` heads of width ``d`` (h = n_heads d), ``i`` SwiGLU width,
``v`` vocabulary, ``n_layers`` layers. Units: FLOP, bytes.
"""

from __future__ import annotations

from llmbook.core.validate import positive, positive_int


def model_bytes(n_params: float, bytes_per_param: float = 2.0) -> float:
    """Bytes to hold ``n_params`` weights at ``bytes_per_param`` each (2 for
    fp16/bf16).
    """
    return positive("n_params", n_params) * positive(
        "bytes_per_param", bytes_per_param
    )


def activation_bytes_per_token(
    n_layers: int, n_heads: int, d_head: int, bytes_per_value: float = 2.0
) -> float:
    """Bytes of the per-layer hidden state one token carries: n_layers *
    n_heads * d_head values.
    """
    width = positive("n_heads", n_heads) * positive("d_head", d_head)
    return (
        positive("n_layers", n_layers)
        * width
        * positive("bytes_per_value", bytes_per_value)
    )


def kv_cache_bytes_per_token(
    n_layers: int, n_kv_heads: int, d_head: int, bytes_per_value: float = 2
) -> float:
    """Bytes of keys and values one token of context leaves in the cache:
    ``2 (K and V) * n_layers * n_kv_heads * d_head * bytes_per_value``.

    ``n_kv_heads`` is the number of query heads ``H`` for multi-head attention
    (then ``n_kv_heads * d_head`` is the model width, as in GPT-3), ``H / g``
    for grouped-query attention with groups of ``g`` query heads, and 1 for
    multi-query attention. Every decoding step reads the whole cache of every
    sequence in flight. Sections hw11-q5g and dls-attention.
    """
    width = positive_int("n_kv_heads", n_kv_heads) * positive_int(
        "d_head", d_head
    )
    values = 2 * positive_int("n_layers", n_layers) * width
    return values * positive("bytes_per_value", bytes_per_value)


def inference_flop(
    n_params: float, n_tokens: float, flop_per_param_token: float = 2.0
) -> float:
    """Forward-pass FLOP for ``n_tokens``: about 2 per parameter per token
    (multiply and add).
    """
    per_token = positive("flop_per_param_token", flop_per_param_token)
    return (
        positive("n_params", n_params)
        * positive("n_tokens", n_tokens)
        * per_token
    )


def training_flops(N: float, D: float, c0: float = 6.0) -> float:
    """Training compute C = c0 N D in FLOP (c0 = 6: 2 forward + 4 backward
    per parameter, token).
    """
    return positive("c0", c0) * positive("N", N) * positive("D", D)


def matmul_flops(m: int, n: int, h: int, exact: bool = False) -> int:
    """FLOP of an (m x n) @ (n x h) product: ``2 m n h`` (n multiplies and n
    additions per output, the convention of ``torch.utils.flop_counter``), or
    with ``exact`` the ``m h (2n - 1)`` of a sum of n products (n - 1 adds).

    Section dls-flops.
    """
    m, n, h = (positive_int(k, x) for k, x in (("m", m), ("n", n), ("h", h)))
    return m * h * (2 * n - 1) if exact else 2 * m * n * h


def llama_layer_flops(
    b: int,
    s: int,
    h: int,
    n_heads: int,
    i: int,
    exact: bool = False,
    causal: bool = False,
) -> dict[str, int]:
    """Forward FLOP of one Llama decoder layer, term by term, as the DSC 291
    lecture's table lists them: a dict ``{term: FLOP}``.

    Matmul terms use :func:`matmul_flops`; elementwise terms the lecture's
    counts (RoPE 3 FLOP per rotated element, applied to Q and K; softmax 3 per
    score; swish 4 and the gate product 1 per SwiGLU element; RMSNorm 4 per
    element plus 2 per token, two norms per layer; one add per element for
    each of the two residual connections). Args: b sequences, s tokens each,
    width h = n_heads * d, SwiGLU width i. With ``causal`` the scores,
    softmax and ``P v`` count only the ``s (s + 1) / 2`` query-key pairs a
    causal mask keeps, as kernels that skip masked blocks (FlashAttention)
    do; without it the full ``s^2``, the convention of PaLM's MFU formula.
    Section dls-flops.
    """
    b, s, h = positive_int("b", b), positive_int("s", s), positive_int("h", h)
    n_heads, i = positive_int("n_heads", n_heads), positive_int("i", i)
    if h % n_heads:
        raise ValueError(f"h={h} must be a multiple of n_heads={n_heads}")
    d, t = h // n_heads, b * s  # head width, tokens

    def mm(m, n, k):
        return matmul_flops(m, n, k, exact)

    # query-key pairs per head and sequence: all s^2, or the causal half
    pairs = s * (s + 1) // 2 if causal else s * s
    if exact:  # each score: d products, d - 1 adds; each P v row likewise
        scores = b * n_heads * pairs * (2 * d - 1)
        pv = b * n_heads * d * (2 * pairs - s)
    else:
        scores = pv = b * n_heads * pairs * 2 * d
    return {
        "q, k, v projections": 3 * mm(t, h, h),
        "RoPE on q and k": 2 * 3 * t * h,
        "scores q k^T": scores,
        "softmax": 3 * b * n_heads * pairs,
        "P v": pv,
        "output projection": mm(t, h, h),
        "residual adds": 2 * t * h,
        "gate and up projections": 2 * mm(t, h, i),
        "swish": 4 * t * i,
        "gate product": t * i,
        "down projection": mm(t, i, h),
        "RMSNorm (two)": 2 * (4 * t * h + 2 * t),
    }


MATMUL_TERMS = (
    "q, k, v projections",
    "scores q k^T",
    "P v",
    "output projection",
    "gate and up projections",
    "down projection",
)


# The terms of :func:`llama_layer_flops` that belong to the attention block
# and to the SwiGLU MLP, in the lecture's order (the norms, the residual adds
# and the output head are neither). Section dls-flops.
ATTENTION_TERMS = (
    "q, k, v projections",
    "RoPE on q and k",
    "scores q k^T",
    "softmax",
    "P v",
    "output projection",
)
MLP_TERMS = (
    "gate and up projections",
    "swish",
    "gate product",
    "down projection",
)


def llama_forward_flops(
    b: int,
    s: int,
    h: int,
    n_heads: int,
    i: int,
    v: int,
    n_layers: int,
    exact: bool = False,
    causal: bool = False,
) -> dict[str, int]:
    """Forward FLOP of a whole Llama decoder: ``n_layers`` times
    :func:`llama_layer_flops` (``exact`` and ``causal`` as there), the final
    RMSNorm and the output head ``2 b s h v``. The embedding lookup is a
    gather: 0 FLOP. Section dls-flops.
    """
    n_layers = positive_int("n_layers", n_layers)
    v = positive_int("v", v)
    layer = llama_layer_flops(b, s, h, n_heads, i, exact, causal)
    out = {k: n_layers * x for k, x in layer.items()}
    t = b * s
    out["final RMSNorm"] = 4 * t * h + 2 * t
    out["output head"] = matmul_flops(t, h, v, exact)
    return out


def matmul_total(flops: dict[str, int]) -> int:
    """Sum of the matmul terms (:data:`MATMUL_TERMS` and the output head) of
    a dict from :func:`llama_forward_flops`: what
    ``torch.utils.flop_counter.FlopCounterMode`` counts. Section dls-flops.
    """
    keys = set(MATMUL_TERMS) | {"output head"}
    return int(sum(x for k, x in flops.items() if k in keys))


def lecture_total_flops(
    b: int, s: int, h: int, n_heads: int, i: int, v: int, n_layers: int
) -> int:
    """The DSC 291 lecture's closed form of the forward FLOP:
    ``L (6bsh^2 + 4bs^2h + 3bs^2n + 2bsh^2) + L 6bshi + 2bshv``
    (L layers, n heads): the matmuls and the softmax only. Section dls-flops.
    """
    b, s, h = positive_int("b", b), positive_int("s", s), positive_int("h", h)
    n, i = positive_int("n_heads", n_heads), positive_int("i", i)
    v, L = positive_int("v", v), positive_int("n_layers", n_layers)
    attn = 6 * b * s * h**2 + 4 * b * s**2 * h + 3 * b * s**2 * n
    mlp = 6 * b * s * h * i
    return L * (attn + 2 * b * s * h**2) + L * mlp + 2 * b * s * h * v


def llama_params(h: int, i: int, v: int, n_layers: int) -> dict[str, int]:
    """Parameters of a Llama decoder without biases, untied embedding and
    head: per layer ``4h^2`` (attention) + ``3hi`` (SwiGLU) + ``2h`` (norms);
    plus ``vh`` embedding, ``vh`` head and ``h`` final norm. Section
    scale-6pd.
    """
    h, i = positive_int("h", h), positive_int("i", i)
    v, L = positive_int("v", v), positive_int("n_layers", n_layers)
    return {
        "attention": L * 4 * h * h,
        "mlp": L * 3 * h * i,
        "norms": L * 2 * h + h,
        "embedding": v * h,
        "head": v * h,
    }


# LLaMA-65B's shape (Touvron et al. 2023, Table 2; SwiGLU width 22016 and
# vocabulary 32000 from the released configuration).
LLAMA_65B: dict[str, int] = {"h": 8192, "i": 22016, "v": 32000, "n_layers": 80}


def llama_65b_params() -> int:
    """Parameters of LLaMA-65B counted from its shape :data:`LLAMA_65B` with
    :func:`llama_params`: 65.29 billion (the paper rounds down to 65.2).
    The one count every page of the book uses. Sections scale-6pd,
    scale-memory, cme295-zero and cme295-qlora.
    """
    return sum(llama_params(**LLAMA_65B).values())


# Bytes per parameter of each persistent training tensor, by recipe.
BYTES_PER_PARAM: dict[str, dict[str, int]] = {
    # fp16/bf16 weights and gradients, fp32 master copy, fp32 Adam moments
    "mixed": {"weights": 2, "grads": 2, "master": 4, "adam_m": 4, "adam_v": 4},
    # 16-bit weights and gradients, fp32 Adam moments, no fp32 master copy
    # (the QLoRA paper's "> 780 GB" for 16-bit finetuning of LLaMA-65B)
    "mixed_no_master": {
        "weights": 2,
        "grads": 2,
        "master": 0,
        "adam_m": 4,
        "adam_v": 4,
    },
    # everything in fp32 (and autocast's mixed precision: fp32 params)
    "fp32": {"weights": 4, "grads": 4, "master": 0, "adam_m": 4, "adam_v": 4},
    # pure bf16: weights, gradients and moments in bf16, no master copy
    "bf16": {"weights": 2, "grads": 2, "master": 0, "adam_m": 2, "adam_v": 2},
}


def training_state_bytes(n_params: float, recipe: str = "mixed") -> dict:
    """Bytes of weights, gradients, master copy and the two Adam moments for
    ``n_params`` parameters under ``recipe`` (a key of
    :data:`BYTES_PER_PARAM`); the dict also holds ``"total"``: 16 N for
    "mixed" (with an fp32 master copy), 12 N for "mixed_no_master", 16 N
    for "fp32", 8 N for "bf16". Sections dls-mixed-precision, scale-memory
    and cme295-qlora.
    """
    n = positive("n_params", n_params)
    if recipe not in BYTES_PER_PARAM:
        raise ValueError(
            f"recipe must be one of {sorted(BYTES_PER_PARAM)}, got {recipe!r}"
        )
    out = {k: n * x for k, x in BYTES_PER_PARAM[recipe].items()}
    out["total"] = sum(out.values())
    return out


def checkpoint_activation_bytes(
    n_layers: int, tokens: float, h: int, bytes_per_value: float = 2.0
) -> float:
    """Bytes of activations kept when checkpointing at layer boundaries: one
    (tokens x h) layer input per layer, ``n_layers * tokens * h *
    bytes_per_value``. Section dls-mixed-precision.
    """
    return (
        positive_int("n_layers", n_layers)
        * positive("tokens", tokens)
        * positive_int("h", h)
        * positive("bytes_per_value", bytes_per_value)
    )


def layer_activation_bytes(
    s: int, b: int, h: int, n_heads: int, store_scores: bool = True
) -> float:
    """Bytes of activations one transformer layer saves for its backward
    pass in 16-bit training without recomputation, by Korthikanti et al.
    (2022), eq. 1: ``s b h (34 + 5 n_heads s / h)``.

    The ``34 s b h`` are the inputs of the matmuls, norms and nonlinearity
    (2 bytes a value) and the dropout masks (1 byte) of a GPT layer; the
    ``5 n_heads s^2 b`` the softmax output, its dropout mask and output of
    the attention scores. ``store_scores=False`` drops that term, as a
    fused attention kernel (FlashAttention) that recomputes the scores does.
    Args: s tokens per sequence, b sequences, width h, n_heads heads.
    Section cme295-memory.
    """
    s, b = positive_int("s", s), positive_int("b", b)
    h, a = positive_int("h", h), positive_int("n_heads", n_heads)
    quad = 5 * a * s * s * b if store_scores else 0
    return 34 * s * b * h + quad
