"""Measuring what a real model does: FLOP counted by PyTorch, bytes of
tensors, bytes autograd saves, bytes of one mixed-precision training step,
and the resident memory of a call.

These run torch; their results cross-check the closed forms of
:mod:`llmbook.core.accounting`.
"""

from __future__ import annotations

import torch
from torch import nn

from llmbook.core.validate import positive


def counted_flops(
    model: nn.Module, tokens: torch.Tensor, backward: bool = True
) -> dict[str, int]:
    """FLOP that ``torch.utils.flop_counter.FlopCounterMode`` counts for one
    forward (and, with ``backward``, one backward of the summed logits) of
    ``model`` on ``tokens``: ``{"forward": .., "backward": ..}``. The counter
    sees matrix products only. Section dls-flops.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fwd:
        logits = model(tokens)
    out = {"forward": int(fwd.get_total_flops()), "backward": 0}
    if backward:
        with FlopCounterMode(display=False) as bwd:
            logits.float().sum().backward()
        out["backward"] = int(bwd.get_total_flops())
    return out


def formula_vs_counter(shapes):
    """The FLOP formula against PyTorch's counter, one row per shape.

    ``shapes``: tuples ``(b, s, h, n_heads, i, v, n_layers)``. For each, a
    :class:`~llmbook.core.models.TinyLlama` of that shape runs on ``b x s``
    random tokens (the global torch generator) under
    :func:`counted_flops`. Returns a DataFrame with the columns
    ``"b, s, h, n, i, v, L"`` (the shape), ``"formula (matmuls)"``
    (:func:`~llmbook.core.accounting.matmul_total` of
    :func:`~llmbook.core.accounting.llama_forward_flops`), ``"counted
    forward"``, ``"counted backward"`` and ``"backward / forward"``.
    Section dls-flops.
    """
    import pandas as pd

    from llmbook.core import accounting, models

    rows = []
    for b, s, h, n, i, v, layers in shapes:
        model = models.TinyLlama(h, n, i, v, layers)
        counted = counted_flops(model, torch.randint(v, (b, s)))
        f = accounting.llama_forward_flops(b, s, h, n, i, v, layers)
        rows.append(
            {
                "b, s, h, n, i, v, L": (b, s, h, n, i, v, layers),
                "formula (matmuls)": accounting.matmul_total(f),
                "counted forward": counted["forward"],
                "counted backward": counted["backward"],
            }
        )
    checks = pd.DataFrame(rows)
    checks["backward / forward"] = (
        checks["counted backward"] / checks["counted forward"]
    )
    return checks


def tensor_bytes(tensors) -> int:
    """Total bytes of the tensors in ``tensors`` (``None`` entries skipped):
    numel times element size; of a distributed tensor, the local shard this
    process holds. Sections dls-mixed-precision and cme295-zero."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        if hasattr(t, "to_local"):
            t = t.to_local()
        total += t.numel() * t.element_size()
    return total


def mixed_precision_step(
    model: nn.Module,
    tokens: torch.Tensor,
    lr: float = 1e-3,
    dtype: torch.dtype = torch.bfloat16,
) -> dict[str, int]:
    """Run one mixed-precision Adam step on ``model`` (its weights cast to
    ``dtype`` in place) and count the bytes of every persistent tensor.

    The recipe of the lecture: ``dtype`` weights run the forward and backward
    pass (next-token cross-entropy on ``tokens`` (b, s)) and get ``dtype``
    gradients; an fp32 master copy takes the step with ``torch.optim.Adam``
    (fp32 moments) and is cast back. Returns bytes of ``weights``, ``grads``,
    ``master``, ``adam_m``, ``adam_v``, ``adam_step`` (Adam's step counters:
    one 4-byte scalar per parameter tensor) and ``n_params``, all read off the
    tensors themselves. Section dls-mixed-precision.
    """
    model.to(dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(master, lr=positive("lr", lr))
    logits = model(tokens[:, :-1])
    loss = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
    )
    loss.backward()
    for m, p in zip(master, params):
        m.grad = p.grad.float()
    opt.step()
    with torch.no_grad():
        for m, p in zip(master, params):
            p.copy_(m)
            m.grad = None  # the fp32 gradient copy is transient
    state = [opt.state[m] for m in master]
    return {
        "weights": tensor_bytes(params),
        "grads": tensor_bytes(p.grad for p in params),
        "master": tensor_bytes(master),
        "adam_m": tensor_bytes(st["exp_avg"] for st in state),
        "adam_v": tensor_bytes(st["exp_avg_sq"] for st in state),
        "adam_step": tensor_bytes(st["step"] for st in state),
        "n_params": int(sum(p.numel() for p in params)),
        "n_tensors": len(params),
    }


def saved_activation_bytes(model: nn.Module, tokens: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for the backward pass during one
    forward of ``model`` on ``tokens``, counted with saved-tensor hooks;
    parameters (saved by reference, not copied) are left out and each
    storage is counted once. Section dls-mixed-precision.
    """
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(tokens)
    return int(sum(seen.values()))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


def peak_memory_increase(fn, *args) -> int:
    """Bytes by which ``fn(*args)`` raised the resident memory of this
    process at its high point (Linux): the peak-RSS counter is reset by
    writing 5 to ``/proc/self/clear_refs``, then the peak after the call is
    compared with the resident size before it. Memory the allocator already
    holds is reused and not counted, so call ``fn`` once before measuring
    to compare like with like."""
    if not callable(fn):
        raise ValueError("fn must be callable")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    fn(*args)
    return (_status_kb("VmHWM") - before) * 1024
