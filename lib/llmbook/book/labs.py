"""The student edition of the labs: one exercise notebook per chapter of
:data:`llmbook.grade.EXERCISES`, written to ``labs/<chapter>-lab.ipynb``.

``make sync`` (``python -m llmbook.book labs``) writes them; a test fails
while a committed lab differs from what :func:`render_lab` gives. A lab is

1. a title and one paragraph (what to implement, how to check, Colab);
2. the book's bootstrap cell (:func:`llmbook.book.sync.bootstrap_source`);
3. one import cell;
4. per exercise: a markdown cell saying what the function does, the stub
   (:func:`llmbook.grade.stub_source`, ``raise NotImplementedError``) and
   a check cell (``grade.check("name", name);``);
5. "Put it together": cells that call the student's functions through
   :func:`llmbook.grade.use`, which falls back to the reference (and says
   so) until a function passes, so "Run all" finishes at every stage.

The markdown of an exercise is the first paragraph of its docstring, then
the body (below its heading) of the markdown cell tagged
``lab-exercise:<name>`` in a solution notebook of ``notebooks/``, where the
chapter's notebook has one: the text lives in one place and the two
editions never drift. The "Put it together" cells are written here
(:data:`TOGETHER`); they use only ``grade``, torch, numpy and the library.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

EXERCISE_TAG = "lab-exercise:"
LAB_DIR = "labs"

# chapter -> (extra imports, the "Put it together" code, its lead-in)
TOGETHER: dict[str, tuple[str, str, str]] = {
    "circuits": (
        "from llmbook.topics import circuits",
        """\
attention_pattern = grade.use("attention_pattern", attention_pattern)
single_attention_head = grade.use(
    "single_attention_head", single_attention_head
)
X = circuits.embed("abcab")
prev = circuits.previous_token_head(5.0)
copying = circuits.copying_head(5.0)
print("previous-token head's pattern on 'abcab':")
print(attention_pattern(X, prev[0]).round(2))
X1 = X + single_attention_head(X, *prev)
out = single_attention_head(X1, *copying)[-1, circuits.TOK]
print("the induction head predicts", "abcd"[int(out.argmax())])
print("the answer is", circuits.induction_answer("abcab"))
""",
        "The chapter's two hand-set heads on the sequence `abcab`: the "
        "previous-token head attends one position back, and the copying "
        "head, reading its output, predicts the token that followed the "
        "earlier `b`.",
    ),
    "lecture-attention-moe": (
        "import torch.nn.functional as F",
        """\
self_attention = grade.use("self_attention", self_attention)
flash_attention_forward = grade.use(
    "flash_attention_forward", flash_attention_forward
)
g = torch.Generator().manual_seed(0)
Q, K, V = (torch.randn(2, 4, 16, 8, generator=g) for _ in range(3))
for causal in (False, True):
    mine = self_attention(Q, K, V, causal)
    sdpa = F.scaled_dot_product_attention(Q, K, V, is_causal=causal)
    gap = float((mine - sdpa).abs().max())
    print(f"causal={causal}: largest gap to PyTorch's SDPA {gap:.1e}")
q, k, v = Q[0, 0], K[0, 0], V[0, 0]
O, lse = flash_attention_forward(q, k, v, 4, 4, causal=True)
gap = float((O - self_attention(q, k, v, causal=True)).abs().max())
print(f"tiled (4 x 4) against plain attention: largest gap {gap:.1e}")
""",
        "Both functions against PyTorch's fused attention, with batch and "
        "head dimensions, with and without the causal mask.",
    ),
    "lora": (
        "from llmbook.topics import quant",
        """\
lora_forward = grade.use("lora_forward", lora_forward)
lora_merge = grade.use("lora_merge", lora_merge)
quantize_blockwise = grade.use("quantize_blockwise", quantize_blockwise)
g = torch.Generator().manual_seed(0)
W0, b = torch.randn(6, 5, generator=g), torch.randn(6, generator=g)
A, B = torch.randn(6, 2, generator=g), torch.randn(2, 5, generator=g)
x = torch.randn(3, 5, generator=g)
merged = x @ lora_merge(W0, A, B, 4.0).T + b
gap = float((merged - lora_forward(x, W0, b, A, B, 4.0)).abs().max())
print(f"merged weight against the adapter: largest gap {gap:.1e}")
w = torch.randn(64 * 256, generator=g)
for label, code in (("NF4", quant.nf4_code()), ("int4", quant.int4_code())):
    idx, absmax = quantize_blockwise(w, code)
    back = quant.dequantize_blockwise(idx, absmax, code)
    rms = float((back - w).pow(2).mean().sqrt())
    print(f"{label}, blocks of 64, Gaussian numbers: RMS error {rms:.4f}")
""",
        "The merged weight gives the adapter's outputs; NF4 against "
        "uniform 4-bit absmax codes on Gaussian numbers.",
    ),
    "soft-prompting": (
        "from llmbook.topics import softprompt",
        """\
loss_mask = grade.use("loss_mask", loss_mask)
lay = softprompt.HOMEWORK_LAYOUT
span = {k: hi - lo + 1 for k, (lo, hi) in lay.items()}
target = span["reasoning"] + span["answer"] + span["newline"]
seq_len = lay["padding"][1]
mask = loss_mask(seq_len, span["prompt"], span["question"], target)
on = (mask.nonzero().flatten() + 1).tolist()  # 1-indexed
print(f"outputs {on[0]} to {on[-1]} enter the loss ({len(on)} of {seq_len})")
""",
        "The homework's layout (prompt, question, reasoning, answer, "
        "newline, padding): which outputs enter the loss.",
    ),
    "pruning-quantization": (
        "",
        """\
magnitude_mask = grade.use("magnitude_mask", magnitude_mask)
keep_channels = grade.use("keep_channels", keep_channels)
scale_zero_point = grade.use("scale_zero_point", scale_zero_point)
linear_quantize = grade.use("linear_quantize", linear_quantize)
kmeans_codebook = grade.use("kmeans_codebook", kmeans_codebook)
g = torch.Generator().manual_seed(0)
w = torch.randn(64, 32, 3, 3, generator=g)
mask = magnitude_mask(w, 0.7)
print(f"70 % sparsity keeps {int(mask.sum())} of {mask.numel()} weights")
kept = keep_channels(w, 0.5)
print(f"channel pruning keeps {len(kept)} of {w.shape[1]} channels")
r = torch.randn(1000, generator=g)
s, z = scale_zero_point(float(r.min()), float(r.max()))
q = linear_quantize(r, s, z)
err = float((s * (q.float() - z) - r).abs().max())
print(f"8 bits: S = {s:.4f}, Z = {z}, largest error {err:.4f}")
print(f"half a step, S/2 = {s / 2:.4f}")
codebook, labels = kmeans_codebook(w, 2)
rms = float((codebook[labels] - w).pow(2).mean().sqrt())
print(f"k-means, 2 bits: codebook {codebook.numpy().round(2)}, RMS {rms:.3f}")
""",
        "The five functions on random weights: how much each keeps, and "
        "how far the quantized values land from the real ones.",
    ),
    "lecture-number-formats": (
        "",
        """\
symmetric_quantize = grade.use("symmetric_quantize", symmetric_quantize)
int_linear_accumulate = grade.use(
    "int_linear_accumulate", int_linear_accumulate
)
g = torch.Generator().manual_seed(0)
W = torch.randn(8, 16, generator=g)
for kind, size in (("tensor", None), ("channel", None), ("group", 4)):
    q, S = symmetric_quantize(W, 4, kind, size)
    rms = float((q * S - W).pow(2).mean().sqrt())
    print(f"4 bits per {kind}: RMS error {rms:.3f}")
q_w = torch.randint(-128, 128, (4, 16), generator=g).to(torch.int8)
q_x = torch.randint(-128, 128, (16, 3), generator=g).to(torch.int8)
acc = int_linear_accumulate(q_w, 3, q_x, -5)
exact = (q_w.long() - 3) @ (q_x.long() + 5)
print("int32 accumulator = exact product:", torch.equal(acc.long(), exact))
""",
        "Granularity on one random matrix at 4 bits, and the integer "
        "accumulator against the exact product of the shifted integers.",
    ),
    "lecture-parallelism": (
        "",
        """\
zero_bytes_per_gpu = grade.use("zero_bytes_per_gpu", zero_bytes_per_gpu)
n_params, n_gpus = 7.5e9, 64  # the ZeRO paper's example
for stage in range(4):
    gb = zero_bytes_per_gpu(n_params, n_gpus, stage)["total"] / 1e9
    print(f"stage {stage}: {gb:.1f} GB of model states per GPU")
""",
        "The ZeRO paper's example, 7.5 billion parameters on 64 GPUs with "
        "mixed-precision Adam, at every stage.",
    ),
    "batch-size": (
        "",
        """\
quadratic_excess_loss = grade.use(
    "quadratic_excess_loss", quadratic_excess_loss
)
log_law_lr = grade.use("log_law_lr", log_law_lr)
adam_step = grade.use("adam_step", adam_step)
h = np.full(16, 0.125)  # the curvatures of 16 directions
m2, s = np.ones(16), 2 * 25 * h  # start errors; label noise sigma = 5
lrs, steps = np.geomspace(1e-3, 15.0, 2001), 100
for B in (2, 16, 128, 1024):
    exact = lrs[np.argmin(quadratic_excess_loss(lrs, B, steps, h, m2, s))]
    law = log_law_lr(h[0], m2[0], s[0], B, steps)
    print(f"B = {B:4d}: best lr {exact:.3f}, log law {law:.3f}")
p0, stretch = torch.tensor([3.0, -2.0]), torch.tensor([1.0, 100.0])
p, m, v = p0, torch.zeros(2), torch.zeros(2)
lr, n_steps = 0.05, 20
for t in range(1, n_steps + 1):
    p, m, v = adam_step(p, stretch * p, m, v, lr, t)  # grad of a bowl
moved = (p0 - p).abs().numpy().round(2)
print(f"curvatures {stretch.tolist()}: Adam moved each coordinate by {moved}")
print(f"in {n_steps} steps of lr {lr}: about n_steps * lr = {n_steps * lr}")
""",
        "The best learning rate of the quadratic model against the log law "
        "as the batch grows, and Adam on a bowl far steeper along one axis "
        "than the other: its steps have about the same size along both.",
    ),
    "fermi": (
        "",
        """\
training_days = grade.use("training_days", training_days)
kv_cache_bytes_per_token = grade.use(
    "kv_cache_bytes_per_token", kv_cache_bytes_per_token
)
gpus_needed = grade.use("gpus_needed", gpus_needed)
chinchilla_allocation = grade.use(
    "chinchilla_allocation", chinchilla_allocation
)
C = 1e25  # FLOP
n_opt, d_opt = chinchilla_allocation(C)
print(f"C = {C:.0e} FLOP: N = {n_opt:.2e} parameters, D = {d_opt:.2e} tokens")
flop_per_s, n_gpus, u = 989e12, 1024, 0.4  # an H100's dense bf16 peak
days = training_days(n_opt, d_opt, flop_per_s, n_gpus, u)
tflops = flop_per_s / 1e12
print(f"{n_gpus} GPUs of {tflops:.0f} TFLOP/s at {u:.0%} utilization:")
print(f"training takes {days:.0f} days")
gpu_gb = 80
print(f"{gpu_gb} GB GPUs for its bf16 weights:", gpus_needed(n_opt, 2, gpu_gb))
n_layers, n_kv_heads, d_head, seq_len = 80, 8, 128, 4096  # Llama 2 70B
kv = kv_cache_bytes_per_token(n_layers, n_kv_heads, d_head)
print(f"KV cache, {n_layers} layers, {n_kv_heads} KV heads of {d_head}:")
per_seq = kv * seq_len / 1e9
print(f"{kv / 1e6:.2f} MB per token, {per_seq:.2f} GB per {seq_len} tokens")
""",
        "A compute budget split the Chinchilla way, the days it takes on a "
        "cluster, the GPUs its weights need, and the KV cache of a "
        "Llama-2-70B-like model per token and per sequence.",
    ),
}


def lab_path(root: Path, chapter: str) -> Path:
    """Where the lab of ``chapter`` lives: ``labs/<chapter>-lab.ipynb``."""
    return root / LAB_DIR / f"{chapter}-lab.ipynb"


def chapter_title(root: Path, chapter: str) -> str:
    """The first ``# `` heading of ``chapters/<chapter>.md``."""
    text = (root / "chapters" / f"{chapter}.md").read_text()
    match = re.search(r"^# (.+)$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"chapters/{chapter}.md has no '# ' title")
    return match.group(1).strip()


def _rst_to_md(text: str) -> str:
    return text.replace("``", "`")


def doc_summary(doc: str) -> str:
    """The first paragraph of a docstring, on one line, in Markdown."""
    first = doc.strip().split("\n\n")[0]
    return _rst_to_md(" ".join(first.split()))


def tagged_context(root: Path) -> dict[str, str]:
    """Exercise name -> the body (the text below its heading) of the
    markdown cell tagged ``lab-exercise:<name>`` in ``notebooks/``.
    Raises ``ValueError`` for a tag naming no exercise or used twice, or
    on a code cell."""
    from llmbook import grade

    found: dict[str, str] = {}
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for tag in cell.get("metadata", {}).get("tags", []):
                if not tag.startswith(EXERCISE_TAG):
                    continue
                name = tag[len(EXERCISE_TAG) :]
                where = f"{path.name}: tag {tag!r}"
                if name not in grade.EXERCISES:
                    raise ValueError(f"{where} names no exercise")
                if name in found:
                    raise ValueError(f"{where} is used twice")
                if cell["cell_type"] != "markdown":
                    raise ValueError(f"{where} is on a code cell")
                text = "".join(cell["source"]).strip()
                lines = text.splitlines()
                if lines and lines[0].startswith("#"):
                    lines = lines[1:]
                found[name] = "\n".join(lines).strip()
    return found


def _cell(kind: str, source: str, index: int, tags=()) -> dict:
    cell = {
        "cell_type": kind,
        "id": f"lab{index:02d}",
        "metadata": {"tags": list(tags)} if tags else {},
        "source": source.rstrip("\n"),
    }
    if kind == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    return cell


def _intro(title: str, names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    listed = ", ".join(quoted[:-1]) + " and " * (len(quoted) > 1) + quoted[-1]
    n = len(names)
    return (
        f"# Lab: {title}\n\n"
        f"You implement {n} function{'s' if n > 1 else ''} of the chapter "
        f"*{title}*: {listed}. Each stub below has its signature, a "
        "docstring with the shapes and a worked example, and `raise "
        "NotImplementedError`: write the body, then run the check cell "
        "under it. `grade.check` compares your function with the book's "
        "on fixed cases, named in words, and a few random ones, and "
        "prints the first case that fails with its inputs, the expected "
        'and the received values. Until a function passes, "Put it '
        'together" at the end uses the reference implementation and says '
        'so, so "Run all" works at every stage. The notebook runs as it '
        "is in Colab: its first cell installs the book's library."
    )


def render_lab(root: Path, chapter: str) -> str:
    """The text of the lab notebook of ``chapter`` (a chapter of
    :data:`llmbook.grade.EXERCISES`), in the book's normal form with its
    code cells formatted by ruff."""
    from llmbook import grade
    from llmbook.book.notebooks import dumps, ruff_format_cells
    from llmbook.book.sync import (
        BOOTSTRAP_TAGS,
        bootstrap_source,
        config_repository,
    )

    names = [n for n, c in grade.EXERCISES.items() if c == chapter]
    if not names:
        raise ValueError(f"chapter must have an exercise, got {chapter!r}")
    imports, together, lead = TOGETHER[chapter]
    context = tagged_context(root)
    title = chapter_title(root, chapter)
    url, _ = config_repository(root)
    cells = [
        ("markdown", _intro(title, names), ()),
        ("code", bootstrap_source(url), BOOTSTRAP_TAGS),
        (
            "code",
            "import numpy as np\nimport torch\n"
            + (f"{imports}\n" if imports else "")
            + "\nfrom llmbook import grade",
            (),
        ),
    ]
    for k, name in enumerate(names, 1):
        stub = ast.parse(grade.stub_source(name)).body[0]
        doc = ast.get_docstring(stub)
        text = f"## {k}. `{name}`\n\n{doc_summary(doc)}"
        if context.get(name):
            text += f"\n\n{context[name]}"
        cells += [
            ("markdown", text, ()),
            ("code", grade.stub_source(name), ()),
            ("code", f'grade.check("{name}", {name});', ()),
        ]
    cells += [
        ("markdown", f"## Put it together\n\n{lead}", ()),
        ("code", together, ()),
    ]
    nb = {
        "cells": [_cell(k, s, i, t) for i, (k, s, t) in enumerate(cells)],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    done = ruff_format_cells([nb], root / "pyproject.toml")[0]
    return dumps(done)


def lab_chapters() -> list[str]:
    """The chapters with a lab, in the order of
    :data:`llmbook.grade.EXERCISES`."""
    from llmbook import grade

    return list(dict.fromkeys(grade.EXERCISES.values()))


def write_labs(root: Path) -> list[str]:
    """Write every lab that differs from :func:`render_lab`; return the
    files changed. ``make sync`` runs it."""
    changed = []
    for chapter in lab_chapters():
        path = lab_path(root, chapter)
        text = render_lab(root, chapter)
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            changed.append(str(path.relative_to(root)))
    return changed
