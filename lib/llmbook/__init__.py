"""llmbook: the small library behind the executable textbook on LLM adaptation,
interpretability, scaling and compression. One module per topic:

- ``lora``: LoRA by hand (wrapper, merge, adapters, byte counts), NF4 and
    double quantization,
  stacked teacher-student fits (hw11-q1, genai-e4..e7, cme295-sft/lora/qlora)
- ``seqtasks``: the tiny transformer and generated sequence tasks the LoRA
    chapter adapts
- ``fermi``: memory, bandwidth, compute, money and energy estimates (hw11-q5)
- ``scaling``: the Chinchilla law and compute-optimal allocation (hw11-q5b,
    genai-e1..e3)
- ``costs``: FLOP and byte accounting of training, a tiny Llama, the
    roofline, iso-FLOP fits and muP (lecture walkthrough "What training
    costs")
- ``batchsize``: vectorised SGD/Adam sweeps and batch-size scaling (hw11-q4)
- ``circuits``, ``induction``: attention heads by hand and trained (hw11-q2,
    hw11-q3)
- ``softprompt``: soft prompts on a frozen small GPT, loss mask, search,
    meta-learning (hw11-q6)
- ``cnn``, ``prune``: the labs' small VGG on bundled MNIST; pruning by hand,
    MACs, latency (hw11-q7a)
- ``quant``: the book's quantization module: k-means, linear, integer-only
    inference (hw11-q7b); granularity, integer-only matmul, LLM.int8() and
    SmoothQuant helpers (dls-linear-quant, dls-granularity, scale-precision)
- ``attention``: attention as the lecture's equations, GQA/MQA, the KV
    cache, FlashAttention's tiles with HBM counts (dls-attention,
    cme295-flash-attention)
- ``moe``: mixture-of-experts routers, balancing losses, capacity, the
    gpt-oss count (scale-moe)
- ``formats``: float formats bit by bit, their range and precision, and
    mixed-precision training of a small MLP (cme295-formats, scale-precision)
- ``dist``: parallel training on ``torch.distributed`` (gloo, CPU
    processes): launcher, collectives, DDP, ZeRO, tensor, pipeline,
    context and expert parallelism (scale-parallelism, cme295-zero,
    cme295-model-parallel)
- ``zero``: ZeRO memory and communication formulas, a parallelism planner
- ``fmt``: number formatting for glued prose
- ``glue``: a ``myst_nb.glue`` shim that also works in Colab
- ``checks``: ``check_close`` for numerical checks after derivations
- ``plotting``: the book's one matplotlib style
- ``data``: the tables that ship with the package
- ``quiet``: the known noise of third-party imports, filtered by logger and
    message
- ``extras``: install an optional extra (as Colab needs) when it is missing
- ``book``: book infrastructure (bootstrap cell, question index)
"""

from . import quiet as _quiet

_quiet.install()

__version__ = "0.1.0"
