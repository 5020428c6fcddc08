"""Memory and communication of data parallelism with ZeRO, and a planner.

The formulas of the ZeRO paper (Rajbhandari et al., 2020) for the model
states of mixed-precision Adam training, generalised to any bytes per
parameter, and a planner that combines ZeRO data parallelism with tensor
and pipeline parallelism. Derivations: sections ``cme295-zero`` and
"A planner for real models" of the parallelism chapter.
"""

from __future__ import annotations

from llmbook.core.validate import nonnegative, positive, positive_int
from llmbook.core.accounting import BYTES_PER_PARAM

STAGES = (0, 1, 2, 3)

# Bytes per parameter of mixed-precision Adam (the 16N rule of the
# training-cost chapter): working weights, gradients, and K for the fp32
# master copy and the two moments.
_MIXED = BYTES_PER_PARAM["mixed"]
PARAM_BYTES = _MIXED["weights"]
GRAD_BYTES = _MIXED["grads"]
OPTIM_BYTES = _MIXED["master"] + _MIXED["adam_m"] + _MIXED["adam_v"]


def _stage(stage) -> int:
    if stage not in STAGES:
        raise ValueError(f"stage must be 0, 1, 2 or 3, got {stage!r}")
    return int(stage)


def zero_bytes_per_gpu(
    n_params: float,
    n_dp: int,
    stage: int,
    param_bytes: float = PARAM_BYTES,
    grad_bytes: float = GRAD_BYTES,
    optim_bytes: float = OPTIM_BYTES,
) -> dict[str, float]:
    """Bytes of model states one data-parallel rank holds under ZeRO.

    Args:
        n_params: parameters ``Psi`` of the model (or of one model shard;
            the chapter's ``N``).
        n_dp: data-parallel degree ``n_d`` (ranks that share the states).
        stage: 0 (plain data parallelism), 1 (optimizer states
            partitioned), 2 (and gradients), 3 (and parameters).
        param_bytes, grad_bytes: bytes per parameter of the working
            weights and gradients (2 and 2 in mixed precision).
        optim_bytes: ``K``, bytes per parameter of optimizer state (12 for
            Adam in mixed precision: fp32 master weights, momentum,
            variance).

    Returns ``{"params", "grads", "optim", "total"}`` in bytes. With the
    defaults the totals are the paper's ``16 Psi``, ``4 Psi + K Psi / n_d``,
    ``2 Psi + 14 Psi / n_d`` and ``16 Psi / n_d``.
    """
    psi = positive("n_params", n_params)
    n = positive_int("n_dp", n_dp)
    stage = _stage(stage)
    p = positive("param_bytes", param_bytes) * psi
    g = positive("grad_bytes", grad_bytes) * psi
    k = positive("optim_bytes", optim_bytes) * psi
    out = {
        "params": p / n if stage >= 3 else p,
        "grads": g / n if stage >= 2 else g,
        "optim": k / n if stage >= 1 else k,
    }
    out["total"] = out["params"] + out["grads"] + out["optim"]
    return out


def zero_comm_volume(stage: int) -> float:
    """Elements each rank sends per step, in units of ``Psi``.

    Stages 0 to 2 move ``2 Psi`` (an all-reduce of the gradients, or a
    reduce-scatter of the gradients plus an all-gather of the updated
    parameters); stage 3 moves ``3 Psi`` (parameters all-gathered in the
    forward and again in the backward pass, gradients reduce-scattered).
    Each all-gather or reduce-scatter counts ``Psi`` (strictly
    ``(n_d - 1) / n_d Psi`` on a ring).
    """
    return 3.0 if _stage(stage) == 3 else 2.0


def measured_comm_volume(
    comm_bytes: dict, psi: int, bytes_per_value: int = 4
) -> float:
    """Bytes of one step's collectives in units of ``psi`` parameters, the
    unit of :func:`zero_comm_volume`: ``comm_bytes`` maps a collective's name
    (as ``CommCounter`` records it) to the bytes of its whole messages; an
    ``"allreduce"`` counts twice (reduce-scatter plus all-gather), every
    other collective once; ``bytes_per_value`` bytes per element (4: fp32).
    Section cme295-zero.
    """
    return sum(
        (2 if k == "allreduce" else 1) * v / (bytes_per_value * psi)
        for k, v in comm_bytes.items()
    )


def plan(
    n_params: float,
    n_gpus: int,
    stage: int,
    tp: int = 1,
    pp: int = 1,
    act_bytes: float = 0.0,
    **bytes_per_param,
) -> dict[str, float]:
    """Model-state memory per GPU for ZeRO data parallelism over TP x PP.

    Tensor and pipeline parallelism split the parameters ``tp * pp`` ways;
    the remaining ``n_dp = n_gpus / (tp * pp)`` copies of each shard are
    partitioned by ZeRO ``stage``.

    Args:
        n_params: parameters of the whole model.
        n_gpus: GPUs in all; ``tp * pp`` must divide it.
        stage: ZeRO stage, 0 to 3.
        tp, pp: tensor- and pipeline-parallel degrees.
        act_bytes: activations the whole model keeps for one microbatch
            (all layers; e.g. ``n_layers`` times
            :func:`llmbook.core.accounting.layer_activation_bytes`). Under
            1F1B the first stage holds ``n_layers / pp`` layers for the
            ``pp`` microbatches in flight, the whole model's worth, and
            sequence parallelism splits it ``tp`` ways: ``act_bytes / tp``
            per GPU (Korthikanti et al. 2022, section 4.1). 0: not counted.
        **bytes_per_param: ``param_bytes``, ``grad_bytes``,
            ``optim_bytes`` as in :func:`zero_bytes_per_gpu`.

    Returns the bytes per GPU (``params``, ``grads``, ``optim``,
    ``total``, activations included), ``act`` (activation bytes per GPU),
    ``n_dp``, and ``comm_bytes``: the gradient/parameter traffic of one
    step per GPU in bytes (``zero_comm_volume`` times the shard's
    parameters times ``grad_bytes``; tensor- and pipeline-parallel traffic
    not included).
    """
    n_gpus = positive_int("n_gpus", n_gpus)
    tp = positive_int("tp", tp)
    pp = positive_int("pp", pp)
    if n_gpus % (tp * pp):
        raise ValueError(f"tp * pp = {tp * pp} must divide n_gpus = {n_gpus}")
    n_dp = n_gpus // (tp * pp)
    shard = positive("n_params", n_params) / (tp * pp)
    out = zero_bytes_per_gpu(shard, n_dp, stage, **bytes_per_param)
    out["act"] = nonnegative("act_bytes", act_bytes) / tp
    out["total"] += out["act"]
    out["n_dp"] = n_dp
    grad_b = bytes_per_param.get("grad_bytes", GRAD_BYTES)
    out["comm_bytes"] = (
        zero_comm_volume(stage) * shard * grad_b if n_dp > 1 else 0.0
    )
    return out


def smallest_fit(
    n_params: float,
    gpu_bytes: float,
    stage: int,
    max_tp: int = 8,
    max_gpus: int = 4096,
    max_mp: int | None = None,
    act_bytes: float = 0.0,
    **bytes_per_param,
) -> dict | None:
    """The fewest GPUs whose model states fit in ``gpu_bytes`` each.

    Searches GPU counts that are powers of two, tensor-parallel degrees up
    to ``max_tp`` (one node) and any pipeline degree, preferring, for the
    same GPU count, the least model parallelism (``tp * pp``) and then the
    smaller ``tp``. ``max_mp`` caps ``tp * pp`` (1: pure data
    parallelism). ``act_bytes`` as in :func:`plan`. Returns the
    :func:`plan` of that configuration plus
    ``n_gpus``, ``tp``, ``pp``, or ``None`` when nothing up to ``max_gpus``
    fits.
    """
    positive("gpu_bytes", gpu_bytes)
    positive_int("max_tp", max_tp)
    positive_int("max_gpus", max_gpus)
    if max_mp is not None:
        positive_int("max_mp", max_mp)
    n_gpus = 1
    while n_gpus <= max_gpus:
        best = None
        for mp_deg in range(1, n_gpus + 1):
            if n_gpus % mp_deg or (max_mp is not None and mp_deg > max_mp):
                continue
            for tp in range(1, min(max_tp, mp_deg) + 1):
                if mp_deg % tp:
                    continue
                pp = mp_deg // tp
                p = plan(
                    n_params,
                    n_gpus,
                    stage,
                    tp,
                    pp,
                    act_bytes,
                    **bytes_per_param,
                )
                if p["total"] <= gpu_bytes:
                    best = {**p, "n_gpus": n_gpus, "tp": tp, "pp": pp}
                    break
            if best:
                return best
        n_gpus *= 2
    return None


def pipeline_bubble(n_stages: int, n_micro: int, n_virtual: int = 1) -> float:
    """Idle fraction of a GPipe or 1F1B pipeline, ``(p - 1) / (m + p - 1)``.

    With ``p`` stages, ``m`` microbatches and equal time per stage, a step
    lasts ``m + p - 1`` slots of which each stage is busy ``m``. With
    ``n_virtual = v`` the interleaved 1F1B schedule of Narayanan et al.
    (2021): each device holds ``v`` chunks of ``1/v`` of its layers, so a
    fill or drain slot lasts ``1/v`` as long and the idle fraction is
    ``(p - 1) / (v m + p - 1)`` (the bubble time divided by ``v``).
    """
    p = positive_int("n_stages", n_stages)
    m = positive_int("n_micro", n_micro)
    v = positive_int("n_virtual", n_virtual)
    return (p - 1) / (v * m + p - 1)


def ring_all_reduce_bytes(message_bytes: float, n: int) -> float:
    """Bytes each of ``n`` ranks sends in a ring all-reduce:
    ``2 (n - 1) / n`` times the message (reduce-scatter then all-gather).
    """
    s = positive("message_bytes", message_bytes)
    n = positive_int("n", n)
    return 2 * (n - 1) / n * s


def tensor_parallel_bytes(
    tokens: float, h: int, n: int, bytes_per_value: float = 2.0
) -> float:
    """Bytes each of ``n`` tensor-parallel ranks sends for one MLP block's
    forward pass in the Megatron layout: one ring all-reduce of the whole
    ``tokens x h`` activation, which every rank of the group holds,
    ``2 (n - 1) / n * tokens * h * bytes_per_value``. The backward pass sends
    as much again. Section cme295-model-parallel.
    """
    message = (
        positive("tokens", tokens)
        * positive_int("h", h)
        * positive("bytes_per_value", bytes_per_value)
    )
    return ring_all_reduce_bytes(message, n)


def expert_parallel_bytes(
    tokens: float,
    h: int,
    n: int,
    top_k: int = 1,
    bytes_per_value: float = 2.0,
) -> float:
    """Expected bytes each of ``n`` expert-parallel ranks sends for one
    mixture-of-experts layer's forward pass, with the ``tokens`` split
    evenly over the ranks and routing uniform over ranks.

    Each rank dispatches its ``tokens / n`` tokens ``top_k`` times (one
    ``h``-vector per chosen expert), of which ``(n - 1) / n`` leave the rank,
    and the results come back by a second all-to-all of the same size:
    ``2 top_k (tokens / n) h bytes_per_value (n - 1) / n``. Uneven routing
    raises the busiest rank's share. Section cme295-model-parallel.
    """
    n = positive_int("n", n)
    k = positive_int("top_k", top_k)
    per_rank = positive("tokens", tokens) / n
    vec = positive_int("h", h) * positive("bytes_per_value", bytes_per_value)
    return 2 * k * per_rank * vec * (n - 1) / n
