"""Silence the known, harmless noise of third-party imports, once, by logger
name and message.

The book fails on any line a notebook prints to stderr, so the few messages
that torchao, torch, transformers, PEFT, bitsandbytes and
``torch.ao.quantization`` print on import on a CPU-only machine are filtered
here, each by the logger it comes from and the start of its message. Everything
else still gets through: nothing is hidden wholesale. ``import llmbook`` calls
:func:`install`, so the bootstrap cell of every notebook does it.
"""

from __future__ import annotations

import logging
import os
import warnings

# (logger name, message start) of log records that say nothing a reader can act
# on.
KNOWN_LOG_NOISE: tuple[tuple[str, str], ...] = (
    (
        "torchao",
        "Failed to load ",
    ),  # CUDA-only kernels (mxfp8, cutlass) on a CPU machine
    ("torchao", "Skipping import of cpp extensions"),
    (
        "torch.utils._pytree",
        "<enum ",
    ),  # torchao registers enums the old way ("... is an Enum subclass")
    (
        "bitsandbytes",
        "The installed version of bitsandbytes "
        "was compiled without GPU support",
    ),
    (
        "bitsandbytes.cextension",
        "The installed version of bitsandbytes "
        "was compiled without GPU support",
    ),
    (
        "bitsandbytes.backends.cpu.ops",
        "Failed to load CPU gemm_4bit_forward",
    ),  # optional hub kernel on CPUs with AVX512-BF16; the built-in one runs
    (
        "torchao.kernel.intmm",
        "Warning: Detected no triton",
    ),  # PEFT wrapping a layer on a CPU machine
)

# (category, message regex) of Python warnings printed by imports or by
# deprecated APIs the labs use.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (
        UserWarning,
        r"Please use quant_min and quant_max "
        r"to specify the range for observers",
    ),
    (UserWarning, r"must run observer before calling calculate_qparams"),
    (FutureWarning, r"`torch\.ao\.quantization` is deprecated"),
    # PEFT's get_peft_model asks transformers 5 through a renamed property
    # (soft prompting)
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # tqdm.auto, imported by transformers/PEFT, when ipywidgets is absent (no
    # progress bars used)
    (Warning, r"IProgress not found"),
    (
        UserWarning,
        r"torch\.quantize_per_tensor, "
        r"torch\.quantize_per_channel and other quantized tensor",
    ),
)


class _MessageFilter(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (
            Exception
        ):  # pragma: no cover - a malformed record is not ours to judge
            return True
        return not message.startswith(self.starts)


_installed = False


def install() -> None:
    """Attach the message filters and set the offline Hugging Face switches
    (idempotent).
    """
    global _installed
    if _installed:
        return
    by_logger: dict[str, list[str]] = {}
    for name, start in KNOWN_LOG_NOISE:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        logging.getLogger(name).addFilter(_MessageFilter(tuple(starts)))
    for category, pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    # The book never downloads: no hub look-ups, no telemetry, no progress bars
    # on stderr.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    _installed = True
