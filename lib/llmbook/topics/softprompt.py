"""Soft prompting a frozen decoder-only language model (hw11-q6).

Derived in the chapter "Soft prompting a frozen language model". The module
holds:

- the homework's sequence layout and the loss mask, with the shift by one
  made explicit;
- a word-problem generator with worked answers ("Question : ... Answer :
  a + k = c . Final answer : c \\n") from a small vocabulary, one task per
  (operation, k);
- a small GPT (plain PyTorch) that accepts input embeddings, pretrained with
  ``n_slots`` placeholder positions in front, so that a soft prompt of the
  same length shifts nothing;
- :class:`SoftPrompt`, the K trainable vectors put at the input embedding,
  and the training, evaluation, hard-prompt search and meta-learning helpers
  of the experiments, which train many runs (seeds, folds) at once.

Positions in the homework are 1-indexed; tensors here are 0-indexed: input
position ``p`` (1-indexed) is index ``p - 1``, and the output at index ``t``
predicts the input at ``t + 1``.
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.core.validate import positive_int

# ---------------------------------------------------------------- the
# homework's layout (q6a)

HOMEWORK_LAYOUT = {
    "prompt": (1, 5),
    "question": (6, 50),
    "reasoning": (51, 70),
    "answer": (71, 71),
    "newline": (72, 72),
    "padding": (73, 100),
}


def _count(name: str, value, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
    ):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def loss_mask(
    seq_len: int, prompt_len: int, question_len: int, target_len: int
) -> torch.Tensor:
    """Which output positions enter the loss, for the layout
    [prompt][question][target][padding].

    Args:
        seq_len: S, the length of the sequence (input positions 0 .. S-1).
        prompt_len: soft-prompt slots in front (>= 0).
        question_len: question tokens (>= 1; the first target is predicted from
            its last one).
        target_len: tokens to be learned: reasoning, answer and the closing
            newline (>= 1).

    Returns a bool tensor of shape (S,): ``mask[t]`` is True when the
    prediction made at output index t (of input token t + 1) is a target.
    Targets occupy input indices ``prompt_len + question_len`` up to
    ``prompt_len + question_len + target_len - 1``, so the mask is that span
    moved one to the left: the last question position is in, the newline's
    is out. The rest of the sequence is padding. Bad lengths raise
    ``ValueError`` naming the argument.
    """
    seq_len = _count("seq_len", seq_len, 2)
    prompt_len = _count("prompt_len", prompt_len, 0)
    question_len = _count("question_len", question_len, 1)
    target_len = _count("target_len", target_len, 1)
    if prompt_len + question_len + target_len > seq_len:
        raise ValueError(
            f"seq_len={seq_len} is shorter than "
            "prompt_len + question_len + target_len"
            f" = {prompt_len + question_len + target_len}"
        )
    first = prompt_len + question_len  # input index of the first target token
    t = torch.arange(seq_len)
    return (t >= first - 1) & (t <= first + target_len - 2)


def homework_mask() -> torch.Tensor:
    """The loss mask of the homework's 100-position layout (5 + 45 + 22 + 28
    padding).
    """
    lay = HOMEWORK_LAYOUT
    span = lambda name: lay[name][1] - lay[name][0] + 1  # noqa: E731
    return loss_mask(
        lay["padding"][1],
        span("prompt"),
        span("question"),
        span("reasoning") + span("answer") + span("newline"),
    )


def plot_loss_mask(
    ax, mask: torch.Tensor, prompt_len: int, question_len: int, target_len: int
) -> None:
    """Draw the layout as three rows of coloured cells: the input (prompt,
    question, targets, padding), the target row (the input shifted one to
    the left) and the loss mask (orange where an output is scored), with
    the spans named above the axes. ``mask`` is :func:`loss_mask`'s.
    """
    import numpy as np
    from matplotlib.colors import ListedColormap

    S = len(mask)
    ends = np.cumsum([prompt_len, question_len, target_len])
    kind = np.searchsorted(ends, np.arange(S), side="right")  # 0..3
    target_kind = np.append(kind[1:], 3)  # what output t predicts
    rows = np.stack([kind, target_kind, np.where(mask.numpy(), 2, 4)])
    colours = ["#CC79A7", "#56B4E9", "#E69F00", "#DDDDDD", "#FFFFFF"]
    ax.imshow(
        rows,
        aspect="auto",
        cmap=ListedColormap(colours),
        vmin=0,
        vmax=4,
        extent=(0.5, S + 0.5, 2.5, -0.5),
        interpolation="nearest",
    )
    ax.set_yticks([0, 1, 2], ["input", "target\n(input shifted)", "loss mask"])
    on = mask.nonzero().flatten() + 1  # 1-indexed outputs in the loss
    ax.set_xticks([1, prompt_len, int(on[0]), int(on[-1]), S])
    starts = np.concatenate([[0], ends]) + 1
    ax.set_xticks(starts[1:].tolist() + [int(ends[-1])], minor=True)
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(False)
    names = ["prompt", "question", "targets", "padding"]
    for a, b, name in zip(starts, np.append(ends, S), names):
        if b >= a:  # the prompt's label starts at its left edge
            x, ha = (
                ((a - 0.5), "left")
                if name == "prompt"
                else ((a + b) / 2, "center")
            )
            ax.text(x, -0.6, name, ha=ha, va="bottom", fontsize=10)
    ax.set_title(ax.get_title(), pad=18)  # above the spans' names


def masked_next_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor
):
    """Mean cross-entropy of predicting ``tokens[:, t+1]`` from ``logits[:,
    t]`` where ``mask[t]``.

    logits: (B, S, V); tokens: (B, S) long; mask: (S,) or (B, S) bool over
        output positions
    (the last output position has no target and must be False).
    """
    mask = mask.expand(tokens.shape) if mask.dim() == 1 else mask
    if mask[:, -1].any():
        raise ValueError(
            "mask must be False at the last position: it has no next token"
        )
    targets = tokens[:, 1:][mask[:, :-1]]
    return F.cross_entropy(logits[:, :-1][mask[:, :-1]].float(), targets)


# ---------------------------------------------------------------- vocabulary
# and tasks

SPECIAL = [
    "<pad>",
    "<slot>",
    "\n",
    "Question",
    "Answer",
    "Final",
    "answer",
    ":",
    ".",
    "?",
    "=",
    "+",
    "-",
    "has",
    "how",
    "many",
    "plus",
    "minus",
]
NAMES = ["Ann", "Bob", "Cy", "Dee"]
OBJECTS = ["apples", "pens", "cats", "cups"]
N_NUMBERS = 30  # number tokens "0" .. "29"
VOCAB_WORDS = SPECIAL + NAMES + OBJECTS + [str(i) for i in range(N_NUMBERS)]
TOK = {w: i for i, w in enumerate(VOCAB_WORDS)}
OPS = ("plus", "minus")
N_A = 20  # question numbers a per task
N_SLOTS = 4  # placeholder positions in front of every sequence
QUESTION_LEN, TARGET_LEN, SEQ_LEN = 12, 11, 30
END = N_SLOTS + QUESTION_LEN + TARGET_LEN  # tokens after END are padding


def task_examples(
    op: str,
    k: int,
    a: torch.Tensor,
    generator: torch.Generator,
    slots: list[str] | None = None,
) -> torch.Tensor:
    """Token sequences (N, SEQ_LEN) of task (op, k) for question numbers ``a``
    (N,).

    Layout: 4 slots | Question : NAME has a OBJ . how many ? Answer : | a + k =
        c . Final answer :
    c \\n | padding. "plus k": c = a + k, a in 0..19; "minus k": c = a - k, a
    in k..k+19. ``slots`` are the 4 slot words (default: the pretraining
    descriptor ``[op, k, <slot>, <slot>]``).
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if not 0 <= int(k) <= 9:
        raise ValueError(f"k must lie in 0..9, got {k!r}")
    k = int(k)
    a = torch.as_tensor(a, dtype=torch.long)
    c = a + k if op == "plus" else a - k
    if a.numel() and (
        c.min() < 0 or c.max() >= N_NUMBERS or a.max() >= N_NUMBERS
    ):
        raise ValueError(f"a out of range for task ({op}, {k}): {a.tolist()}")
    slots = slots or [op, str(k), "<slot>", "<slot>"]
    n = a.shape[0]
    name = torch.randint(0, len(NAMES), (n,), generator=generator)
    obj = torch.randint(0, len(OBJECTS), (n,), generator=generator)
    num = lambda x: TOK["0"] + x  # noqa: E731
    w = lambda word: torch.full((n,), TOK[word])  # noqa: E731
    cols = [w(s) for s in slots] + [
        w("Question"),
        w(":"),
        TOK[NAMES[0]] + name,
        w("has"),
        num(a),
        TOK[OBJECTS[0]] + obj,
        w("."),
        w("how"),
        w("many"),
        w("?"),
        w("Answer"),
        w(":"),
        num(a),
        w("+" if op == "plus" else "-"),
        w(str(k)),
        w("="),
        num(c),
        w("."),
        w("Final"),
        w("answer"),
        w(":"),
        num(c),
        w("\n"),
    ]
    cols += [w("<pad>")] * (SEQ_LEN - len(cols))
    return torch.stack(cols, dim=1)


def a_range(op: str, k: int) -> torch.Tensor:
    """All question numbers a of task (op, k): 20 of them."""
    return torch.arange(N_A) + (k if op == "minus" else 0)


def pretraining_batch(
    n: int, generator: torch.Generator, tasks=None
) -> torch.Tensor:
    """A mixed batch (n, SEQ_LEN) over ``tasks`` (default all 20 (op, k)),
    names in the slots.
    """
    tasks = tasks or [(op, k) for op in OPS for k in range(10)]
    which = torch.randint(0, len(tasks), (n,), generator=generator)
    rows = []
    for i, (op, k) in enumerate(tasks):
        m = int((which == i).sum())
        if m:
            a = a_range(op, k)[
                torch.randint(0, N_A, (m,), generator=generator)
            ]
            rows.append(task_examples(op, k, a, generator))
    batch = torch.cat(rows)
    return batch[torch.randperm(n, generator=generator)]


def random_questions(
    task: tuple[str, int], n: int, generator: torch.Generator
) -> torch.Tensor:
    """n questions (n, SEQ_LEN) of ``task`` = (op, k) about n distinct
    numbers a in a random order (n <= 20), names and objects drawn too.
    """
    if not 0 < _count("n", n, 1) <= N_A:
        raise ValueError(f"n must lie in 1..{N_A}, got {n}")
    a = a_range(*task)[torch.randperm(N_A, generator=generator)[:n]]
    return task_examples(*task, a, generator)


def meta_batch(
    tasks: list,
    n_tasks: int,
    n_support: int,
    n_query: int,
    generators: list,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One meta-training batch per run: run r draws ``n_tasks`` of
    ``tasks`` and ``n_support + n_query`` distinct questions of each with
    ``generators[r]``. Returns support (R, n_tasks, n_support, S) and query
    (R, n_tasks, n_query, S); support and query never share a number.
    """
    n = n_support + n_query
    runs = []
    for g in generators:
        picks = torch.randperm(len(tasks), generator=g)[:n_tasks].tolist()
        runs.append(
            torch.stack([random_questions(tasks[i], n, g) for i in picks])
        )
    both = torch.stack(runs)
    return both[:, :, :n_support], both[:, :, n_support:]


def vocab_prompts(embed: torch.Tensor, generators: list) -> torch.Tensor:
    """One prompt per generator, (R, N_SLOTS, d): the embeddings (rows of
    ``embed``) of N_SLOTS vocabulary words drawn at random, as PEFT's
    ``SAMPLE_VOCAB`` initialisation does.
    """
    V = embed.shape[0]
    picks = [torch.randint(0, V, (N_SLOTS,), generator=g) for g in generators]
    return torch.stack([embed[i] for i in picks]).detach().clone()


def target_mask(prompt_len: int = N_SLOTS) -> torch.Tensor:
    """The loss mask of the book's layout: outputs that predict reasoning,
    answer and newline.
    """
    return loss_mask(SEQ_LEN, prompt_len, QUESTION_LEN, TARGET_LEN)


# ---------------------------------------------------------------- the model


class Block(nn.Module):
    """Pre-LayerNorm transformer block; ``causal=False`` makes it
    bidirectional (an encoder).
    """

    def __init__(self, d_model: int, n_heads: int, d_mlp: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.out = (
            nn.Linear(d_model, 3 * d_model),
            nn.Linear(d_model, d_model),
        )
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_mlp), nn.GELU(), nn.Linear(d_mlp, d_model)
        )

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        B, S, d = x.shape
        q, k, v = (
            self.qkv(self.ln1(x))
            .view(B, S, 3, self.n_heads, d // self.n_heads)
            .unbind(2)
        )
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh, S, dh)
        scores = (
            q @ k.transpose(-1, -2) / math.sqrt(d // self.n_heads)
        )  # (B, nh, S, S)
        if causal:
            future = torch.ones(S, S, dtype=torch.bool, device=x.device).triu(
                1
            )
            scores = scores.masked_fill(future, float("-inf"))
        z = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, S, d)
        x = x + self.out(z)
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A small GPT with learned absolute positions that takes tokens or
    input embeddings.

    ``forward(tokens=None, embeds=None, causal=True, return_resid=False)``:
    ``embeds`` (B, S, d) are used as they are (positions are still added);
    returns logits (B, S, V), and with ``return_resid`` also the residual
    stream before and after every block (a list of (B, S, d)).
    """

    def __init__(
        self,
        n_vocab: int = len(VOCAB_WORDS),
        n_ctx: int = SEQ_LEN,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        d_mlp: int = 256,
        seed: int = 0,
    ):
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.pos = (
            nn.Embedding(n_vocab, d_model),
            nn.Embedding(n_ctx, d_model),
        )
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_mlp) for _ in range(n_layers)
        )
        self.ln_f, self.unembed = (
            nn.LayerNorm(d_model),
            nn.Linear(d_model, n_vocab, bias=False),
        )

    def forward(
        self,
        tokens=None,
        embeds=None,
        causal: bool = True,
        return_resid: bool = False,
    ):
        x = self.embed(tokens) if embeds is None else embeds
        x = x + self.pos.weight[: x.shape[1]]
        resid = [x]
        for block in self.blocks:
            x = block(x, causal)
            resid.append(x)
        logits = self.unembed(self.ln_f(x))
        return (logits, resid) if return_resid else logits


def pretrain(
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 3e-3,
    seed: int = 0,
    log=None,
    stop_after: int | None = None,
    **model_kwargs,
) -> tuple[TinyGPT, list[float]]:
    """Pretrain a :class:`TinyGPT` on all 20 tasks, names in the slots; returns
    (model, losses).

    The loss covers every non-slot, non-padding next token (question included),
    AdamW with a one-cycle schedule; deterministic for a given ``seed`` and
    thread count. ``log(step, loss)`` is called every 100 steps when given;
    ``stop_after`` ends the run early (same schedule), for the test that the
    first steps reproduce. Made by ``tools/train_softprompt_model.py``.
    """
    steps, batch_size = (
        positive_int("steps", steps),
        positive_int("batch_size", batch_size),
    )
    model = TinyGPT(seed=seed, **model_kwargs)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=steps, pct_start=0.1
    )
    mask = loss_mask(SEQ_LEN, N_SLOTS, 1, QUESTION_LEN - 1 + TARGET_LEN)
    losses = []
    for _ in range(steps if stop_after is None else min(steps, stop_after)):
        tokens = pretraining_batch(batch_size, gen)
        loss = masked_next_token_loss(model(tokens), tokens, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log is not None and len(losses) % 100 == 0:
            log(len(losses), losses[-1])
    return model.eval(), losses


def load_pretrained() -> TinyGPT:
    """The book's pretrained, frozen :class:`TinyGPT`
    (``data/softprompt_gpt.pt``, made by ``tools/train_softprompt_model.py``),
    in eval mode with every gradient switched off.
    """
    from llmbook.book.data import data_path

    model = TinyGPT()
    model.load_state_dict(
        torch.load(data_path("softprompt_gpt.pt"), weights_only=True)
    )
    return freeze(model.eval())


# ---------------------------------------------------------------- the soft
# prompt


class SoftPrompt(nn.Module):
    """K trainable vectors put in front of the token embeddings (at the
    input layer only).

    ``forward(token_embeds)`` with token_embeds (B, T, d) returns
    (B, K + T, d). With a model pretrained on K placeholder slots, pass the
    embeddings of ``tokens[:, K:]``: the prompt takes the slots' positions
    and nothing else moves.
    """

    def __init__(self, init: torch.Tensor):
        super().__init__()
        if init.dim() != 2:
            raise ValueError(
                f"init must have shape (K, d), got {tuple(init.shape)}"
            )
        self.prompt = nn.Parameter(init.detach().clone())

    def forward(self, token_embeds: torch.Tensor) -> torch.Tensor:
        B = token_embeds.shape[0]
        return torch.cat([self.prompt.expand(B, -1, -1), token_embeds], dim=1)


def freeze(model: nn.Module) -> nn.Module:
    """Switch off gradients for every parameter of ``model`` (it stays
    frozen) and return it.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def trainable_count(*modules: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` over ``modules`` (each
    tensor counted once).
    """
    seen = {
        id(p): p for m in modules for p in m.parameters() if p.requires_grad
    }
    return sum(p.numel() for p in seen.values())


def prompted_logits(
    model: TinyGPT,
    prompts: torch.Tensor,
    tokens: torch.Tensor,
    causal=True,
    return_resid=False,
):
    """Logits (B, S, V) with the slots of ``tokens`` (B, S) replaced by soft
    prompts.

    prompts: (K, d) shared by the batch or (B, K, d), one per row (rows of
        different tasks).
    """
    K = prompts.shape[-2]
    rest = model.embed(tokens[:, K:])
    p = (
        prompts.expand(tokens.shape[0], -1, -1)
        if prompts.dim() == 2
        else prompts
    )
    return model(
        embeds=torch.cat([p, rest], dim=1),
        causal=causal,
        return_resid=return_resid,
    )


@torch.no_grad()
def prompt_spread(
    model: TinyGPT, prompt: torch.Tensor, tokens: torch.Tensor, causal=True
):
    """How much the residual stream differs across a batch that shares one
    soft prompt: for each layer (embeddings, then every block) and
    position, the largest over coordinates of (max - min over the batch).
    Returns a numpy array (n_layers + 1, S); zero at a position means every
    row of the batch computed the same vector there.
    """
    _, resid = prompted_logits(
        model, prompt, tokens, causal=causal, return_resid=True
    )
    spread = [(r.amax(0) - r.amin(0)).amax(-1) for r in resid]
    return torch.stack(spread).numpy()


@torch.no_grad()
def prefix_reuse_error(model: TinyGPT, prompt: torch.Tensor, tokens):
    """Largest difference, over layers, between the prompt positions
    computed inside the batch ``tokens`` and computed alone (the prompt as
    a K-position sequence): what reusing a cached prefix would change.
    """
    K = prompt.shape[0]
    _, full = prompted_logits(model, prompt, tokens, return_resid=True)
    _, alone = prompted_logits(
        model, prompt, tokens[:1, :K], return_resid=True
    )
    return max(
        float((f[:, :K] - a[:, :K]).abs().max()) for f, a in zip(full, alone)
    )


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def greedy_complete(
    model: TinyGPT,
    tokens: torch.Tensor,
    prompts: torch.Tensor | None = None,
    n_new: int = TARGET_LEN,
) -> torch.Tensor:
    """Greedy continuation (B, n_new) of the questions in ``tokens`` (B, S)
    after "Answer :".

    The prefix is the slots plus the question; with ``prompts`` ((K, d) or (B,
    K, d)) the slots are the soft prompt, otherwise the slot tokens of
    ``tokens`` are used as a hard prompt.
    """
    seq = tokens[:, : N_SLOTS + QUESTION_LEN].clone()
    for _ in range(n_new):
        logits = (
            model(seq)
            if prompts is None
            else prompted_logits(model, prompts, seq)
        )
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq[:, N_SLOTS + QUESTION_LEN :]


def parse_final_answer(generated: torch.Tensor) -> list[int | None]:
    """The number between "Final answer :" and the next newline of each row,
    or None.
    """
    key = [TOK["Final"], TOK["answer"], TOK[":"]]
    found = []
    for row in generated.tolist():
        value = None
        for j in range(len(row) - 4):
            if row[j : j + 3] == key and row[j + 4] == TOK["\n"]:
                word = VOCAB_WORDS[row[j + 3]]
                value = int(word) if word.isdigit() else None
                break
        found.append(value)
    return found


@torch.no_grad()
def answer_hits(
    model: TinyGPT, tokens: torch.Tensor, prompts: torch.Tensor | None = None
):
    """Per row (B,) bool: the final answer that greedy decoding writes
    equals the true one (exact match).

    One teacher-forced forward pass first: a row whose every true answer
    token is the model's argmax after the true prefix is a hit without
    decoding, since greedy decoding would write exactly the true answer.
    The other rows are decoded from their first wrong token on: up to it
    greedy decoding writes the true tokens (the same argument), there the
    teacher-forced guess. Each further pass runs the whole candidate
    answers (at first the teacher-forced guesses) and keeps every argmax
    up to the first that differs from its candidate: each follows a
    prefix greedy decoding also writes (fixed-point, or Jacobi, decoding;
    at least one token per pass, mostly the rest of the answer in one or
    two). So the result is greedy decoding's (:func:`greedy_complete`;
    the test compares the two) at a fraction of its cost.
    """
    start = N_SLOTS + QUESTION_LEN
    x = tokens[:, :END]
    logits = (
        model(x) if prompts is None else prompted_logits(model, prompts, x)
    )
    guess = logits[:, start - 1 : END - 1].argmax(-1)
    right = guess == x[:, start:END]
    hits = right.all(1)
    rest = (~hits).nonzero().flatten()
    # greedy decoding of the missed rows in whole-sequence passes: with
    # its first c tokens known, a row's next argmax is greedy's, and so is
    # every later one up to the first that differs from the candidate
    known = (~right[rest]).int().argmax(1) + 1  # true tokens + first guess
    cand = x[rest].clone()
    cand[:, start:] = guess[rest]
    j = torch.arange(TARGET_LEN)
    todo = (known < TARGET_LEN).nonzero().flatten()
    while len(todo):
        seq, c = cand[todo], known[todo, None]
        p = prompts
        if prompts is not None and prompts.dim() == 3:
            p = prompts[rest[todo]]
        logits = model(seq) if p is None else prompted_logits(model, p, seq)
        pred = logits[:, start - 1 : END - 1].argmax(-1)
        differ = (pred != seq[:, start:]) & (j >= c)
        d = torch.where(differ.any(1), differ.int().argmax(1), TARGET_LEN)
        cand[todo, start:] = torch.where(j >= c, pred, seq[:, start:])
        known[todo] = (d + 1).clamp(max=TARGET_LEN)
        todo = todo[known[todo] < TARGET_LEN]
    generated = cand[:, start:]
    if len(rest):
        truth = parse_final_answer(tokens[rest, start:])
        got = parse_final_answer(generated)
        hits[rest] = torch.tensor(
            [g is not None and g == t for g, t in zip(got, truth)]
        )
    return hits


def hits_per_run(
    model: TinyGPT, prompts: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """:func:`answer_hits` of R runs at once: run r's prompt ``prompts[r]``
    (R, K, d) on its own rows ``tokens[r]`` (R, M, S); returns (R, M)
    bool. A hard prompt is passed as its tokens' embeddings.
    """
    R, M = tokens.shape[:2]
    if prompts.dim() != 3 or prompts.shape[0] != R:
        raise ValueError(
            f"prompts must be (R={R}, K, d), got {tuple(prompts.shape)}"
        )
    rows = prompts.repeat_interleave(M, dim=0)
    return answer_hits(model, tokens.flatten(0, 1), rows).view(R, M)


def question_numbers(tokens: torch.Tensor) -> torch.Tensor:
    """The number a each row (..., S) asks about ("... has a OBJ ..."):
    rows with the same a differ only by name and object.
    """
    return tokens[..., N_SLOTS + 4] - TOK["0"]


def answer_accuracy(
    model: TinyGPT, tokens: torch.Tensor, prompts: torch.Tensor | None = None
):
    """Fraction of rows whose generated final answer equals the true one
    (exact match).
    """
    return float(answer_hits(model, tokens, prompts).float().mean())


def accuracy_by_group(
    model: TinyGPT, groups: dict, prompts: dict | None = None
) -> dict:
    """Accuracy of each group of rows ``{name: tokens (N, S)}``, decoded in one
    batch.

    ``prompts`` maps a group to its soft prompt (K, d); groups without one use
    their slot tokens as a hard prompt (all groups must then be of one kind:
    all soft or all hard).
    """
    names = list(groups)
    tokens = torch.cat([groups[n] for n in names])
    rows = None
    if prompts:
        rows = torch.cat(
            [prompts[n].expand(groups[n].shape[0], -1, -1) for n in names]
        )
    hits = (
        answer_hits(model, tokens, rows)
        .float()
        .split([groups[n].shape[0] for n in names])
    )
    return {n: float(h.mean()) for n, h in zip(names, hits)}


def fold_split(
    numbers: torch.Tensor, n_train: int, fold: int, n_folds: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out question numbers of fold ``fold`` of
    ``n_folds``: ``numbers`` (shuffled once) rolled by ``fold * (len //
    n_folds)``, the first ``n_train`` for training, the rest held out.

    With 20 numbers and 5 folds the folds shift by 4: training sets of 4
    are disjoint, and held-out sets of 4 (``n_train = 16``) cover every
    number exactly once, so the folds pooled score every number on a
    prompt that never saw it (cross-validation).
    """
    n = len(numbers)
    n_train = _count("n_train", n_train, 0)
    n_folds = _count("n_folds", n_folds, 1)
    if n_train >= n:
        raise ValueError(f"n_train must leave numbers out: {n_train} >= {n}")
    if not 0 <= _count("fold", fold, 0) < n_folds:
        raise ValueError(f"fold must lie in [0, {n_folds}), got {fold}")
    rolled = numbers.roll(-fold * (n // n_folds))
    return rolled[:n_train], rolled[n_train:]


def accuracy_summary(hits, groups=None, level: float = 0.95) -> dict:
    """Accuracy over R runs (seeds, folds) with its spread and intervals.

    Args:
        hits: (R, N) bool or 0/1: run r's result on its N evaluation rows
            (R = 1 for a method without randomness, such as the frozen
            model: then the t interval is the point itself).
        groups: None, or (N,) or (R, N) ints naming the distinct question
            of each row; rows of one question (they differ only by names
            and objects, which the model barely reads) are averaged and
            count as one trial, so the binomial interval is not narrowed
            by near-copies.
        level: confidence level of both intervals.

    Returns a dict: ``runs`` (per-run accuracies), ``median``, ``min``,
    ``max`` over runs; ``p`` the pooled accuracy with ``binom_lo``,
    ``binom_hi`` its Clopper-Pearson interval over ``trials`` pooled
    questions (the pooled successes rounded to a whole number where groups
    are averaged); ``t_lo``, ``t_hi`` the t interval of the mean over runs;
    and ``lo``, ``hi``, the wider of the two, which the book's verdicts use
    (seed-to-seed spread and the finite test set both count).
    """
    from llmbook.core.stats import binomial_interval, t_interval

    h = torch.as_tensor(hits, dtype=torch.float64)
    if h.dim() != 2 or h.shape[1] < 1:
        raise ValueError(f"hits must be (R, N >= 1), got {tuple(h.shape)}")
    if groups is None:
        per_q = [h[r] for r in range(h.shape[0])]
    else:
        g = torch.as_tensor(groups).expand(h.shape)
        per_q = [
            torch.stack([h[r][g[r] == q].mean() for q in g[r].unique()])
            for r in range(h.shape[0])
        ]
    runs = [float(q.mean()) for q in per_q]
    trials = sum(len(q) for q in per_q)
    wins = int(round(float(sum(q.sum() for q in per_q))))
    b = binomial_interval(wins, trials, level)
    t = t_interval(runs, level) if len(runs) > 1 else {"lo": runs[0]}
    t_lo, t_hi = max(t["lo"], 0.0), min(t.get("hi", runs[0]), 1.0)
    return {
        "runs": runs,
        "median": statistics.median(runs),
        "min": min(runs),
        "max": max(runs),
        "p": wins / trials,
        "trials": trials,
        "binom_lo": b["lo"],
        "binom_hi": b["hi"],
        "t_lo": t_lo,
        "t_hi": t_hi,
        "lo": min(b["lo"], t_lo),
        "hi": max(b["hi"], t_hi),
    }


def summary_table(summaries: dict):
    """A table (pandas DataFrame) of :func:`accuracy_summary` results, one
    row per key: median, smallest and largest over runs, the pooled
    accuracy with its binomial 95 % interval, and the questions pooled.
    """
    import pandas as pd

    cols = {
        "median": "median",
        "min": "min",
        "max": "max",
        "p": "pooled",
        "binom_lo": "95 % lo",
        "binom_hi": "95 % hi",
        "trials": "questions",
    }
    rows = {
        " ".join(map(str, k)) if isinstance(k, tuple) else str(k): {
            name: s[key] for key, name in cols.items()
        }
        for k, s in summaries.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def plot_forgetting(ax, labels, before, after) -> None:
    """Accuracy per task before and after fine-tuning, as paired bars.

    labels: T task names; before: (T,) accuracies of the frozen model;
    after: (R, T), one row per fine-tuned run: the bar is the median over
    runs, the whisker its range. The legend sits above the axes.
    """
    import numpy as np

    after = np.asarray(after, dtype=float)
    x = np.arange(len(labels))
    mid = np.median(after, axis=0)
    ax.bar(x - 0.2, before, 0.4, label="frozen model (a soft prompt: same)")
    ax.bar(
        x + 0.2,
        mid,
        0.4,
        yerr=[mid - after.min(0), after.max(0) - mid],
        capsize=2,
        label=f"after full fine-tuning on task A (median, range of {len(after)} runs)",
    )
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.05)
    ax.legend(
        loc="lower left", bbox_to_anchor=(0, 1.02), ncol=2, frameon=False
    )
    ax.set_title(ax.get_title(), pad=36)  # above the legend, not under it


def plot_curves(ax, steps, curves: dict) -> None:
    """Accuracy against adaptation steps, one line per start.

    steps: the step counts (0 allowed: the axis is log(1 + steps));
    curves: {name: (R, len(steps)) accuracies of R runs}: the line is the
    median over runs, the band its range. The legend sits right of the
    axes, clear of the data.
    """
    import numpy as np

    x = np.asarray(steps) + 1
    for (name, acc), marker in zip(curves.items(), "osD^v<>p"):
        acc = np.asarray(acc, dtype=float)
        line = ax.plot(x, np.median(acc, 0), marker + "-", label=name, ms=4)
        ax.fill_between(
            x, acc.min(0), acc.max(0), alpha=0.15, color=line[0].get_color()
        )
    ax.set_xscale("log")
    ax.set_xticks(x, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_ylim(-0.03, 1.03)
    ax.legend(
        title="start",
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        frameon=False,
    )


# ---------------------------------------------------------------- training
# prompts and models


def train_prompts(
    model: TinyGPT,
    init: torch.Tensor,
    tokens,
    steps: int,
    lr: float,
    snapshots=(),
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Train T soft prompts at once, one per task, on the frozen ``model``
    with Adam.

    Args:
        init: (T, K, d) initial prompts.
        tokens: (T, N, S) each task's training examples (full batch: every
            step sees all N), or a function ``tokens(step) -> (T, N, S)``
            giving step ``step``'s batch (a stream of fresh examples).
        steps: Adam steps; lr: Adam learning rate.
        snapshots: step counts at which to keep a copy of the prompts
            (0 = the initial ones).

    The loss is the sum over tasks of each task's mean target loss, so each
    prompt follows its own task's gradient (Adam is elementwise). Only the
    prompts get gradients; the model's ``requires_grad`` flags are left as
    they are, its weights are never stepped. The padding after the answer
    is cut off (a causal model's earlier outputs do not see it). Returns
    (prompts (T, K, d), {step: prompts}).
    """
    batch = tokens if callable(tokens) else (lambda step: tokens)
    T = init.shape[0] if init.dim() == 3 else None
    first = batch(0)
    if init.dim() != 3 or first.dim() != 3 or first.shape[0] != T:
        raise ValueError(
            f"init must have shape (T, K, d) with T = tokens.shape[0], got "
            f"{tuple(init.shape)} and tokens {tuple(first.shape)}"
        )
    K = init.shape[1]
    end = K + QUESTION_LEN + TARGET_LEN
    mask = loss_mask(end, K, QUESTION_LEN, TARGET_LEN)
    prompts = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([prompts], lr=lr)
    kept = {0: prompts.detach().clone()} if 0 in snapshots else {}
    for step in range(1, _count("steps", steps, 0) + 1):
        x = first if step == 1 else batch(step - 1)
        N = x.shape[1]
        flat = x.reshape(T * N, -1)[:, :end]
        rows = prompts.repeat_interleave(N, dim=0)
        loss = T * masked_next_token_loss(
            prompted_logits(model, rows, flat), flat, mask
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in snapshots:
            kept[step] = prompts.detach().clone()
    return prompts.detach(), kept


def finetune_full(
    model: TinyGPT, tokens: torch.Tensor, steps: int, lr: float
) -> TinyGPT:
    """A copy of ``model`` with every weight trained by AdamW on ``tokens`` (N,
    S) (full batch).

    The slots keep the tokens they have in ``tokens``; the loss is the target
    loss of q6a.
    """
    import copy

    tuned = copy.deepcopy(model).train()
    for p in tuned.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
    mask = target_mask()
    for _ in range(positive_int("steps", steps)):
        loss = masked_next_token_loss(tuned(tokens), tokens, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return freeze(tuned.eval())


def finetune_runs(
    model: TinyGPT, tokens: torch.Tensor, steps: int, lr: float
) -> list[TinyGPT]:
    """R fully fine-tuned copies of ``model`` at once, run r trained on
    ``tokens[r]`` (R, N, S) (full batch) with Adam (no weight decay), as
    :func:`finetune_full` trains one (the test checks it), on the stacked
    weights of :mod:`llmbook.core.trainer`. Returns R frozen models.
    """
    import copy

    from llmbook.core import trainer

    if tokens.dim() != 3:
        raise ValueError(
            f"tokens must be (R, N, S), got {tuple(tokens.shape)}"
        )
    mask = loss_mask(END, N_SLOTS, QUESTION_LEN, TARGET_LEN)[:-1]

    def loss_fn(logits, x):  # one run: logits (N, END, V), x (N, END)
        ce = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            x[:, 1:].reshape(-1),
            reduction="none",
        )
        return (ce.view(x.shape[0], -1) * mask).sum() / (
            x.shape[0] * mask.sum()
        )

    params, buffers, base = trainer.init_runs(
        lambda: copy.deepcopy(model), seeds=[0] * tokens.shape[0]
    )
    x = tokens[:, :, :END]
    out = trainer.train_runs(
        base, params, loss_fn, lambda step: (x, x), steps, lr, buffers=buffers
    )
    return [
        freeze(trainer.run_model(base, out.params, r, buffers).eval())
        for r in range(tokens.shape[0])
    ]


@torch.no_grad()
def prompt_losses(
    model: TinyGPT, slot_tokens: torch.Tensor, tokens: torch.Tensor
) -> torch.Tensor:
    """Target loss of each hard prompt: slot_tokens (C, K) long, tokens (N,
    S) -> losses (C,).
    """
    C, K = slot_tokens.shape
    N = tokens.shape[0]
    batch = tokens.repeat(C, 1)
    batch[:, :K] = slot_tokens.repeat_interleave(N, dim=0)
    logp = model(batch)[:, :-1].log_softmax(-1)
    nll = -logp.gather(-1, batch[:, 1:, None])[..., 0]  # (C*N, S-1)
    mask = target_mask(K)[:-1]
    return nll[:, mask].mean(-1).view(C, N).mean(-1)


def beam_search_hard_prompt(
    model: TinyGPT, tokens: torch.Tensor, beam: int = 4, fill: str = "<slot>"
) -> tuple[list[str], float, int]:
    """The K-token hard prompt of lowest target loss on ``tokens`` (N, S),
    found slot by slot.

    Left to right, every vocabulary word is tried in the next slot of each of
    the ``beam`` best partial prompts (later slots hold ``fill``). Returns
    (words, loss, prompts scored). With ``beam >= V ** (K - 1)`` this is the
    exhaustive search.
    """
    V, K = len(VOCAB_WORDS), N_SLOTS
    beams = torch.full((1, K), TOK[fill])
    scored = 0
    for slot in range(K):
        cand = beams.repeat_interleave(V, dim=0)
        cand[:, slot] = torch.arange(V).repeat(beams.shape[0])
        losses = torch.cat(
            [prompt_losses(model, c, tokens) for c in cand.split(256)]
        )
        scored += cand.shape[0]
        order = losses.argsort()[: positive_int("beam", beam)]
        beams, best = cand[order], losses[order]
    return [VOCAB_WORDS[i] for i in beams[0].tolist()], float(best[0]), scored


def reptile(
    model: TinyGPT,
    init: torch.Tensor,
    sample_tasks,
    meta_steps: int,
    inner_steps: int,
    inner_lr: float,
    meta_lr: float,
    generator: torch.Generator,
    method: str = "reptile",
) -> torch.Tensor:
    """Meta-learn a prompt initialisation (K, d) over a family of tasks
    (first-order), or R of them at once, (R, K, d), one per run.

    Each meta step draws tasks ``support, query = sample_tasks(generator)``,
    both (T, N, S), or (R, T, N, S) with R runs, adapts a copy of each
    initialisation to each of its tasks with ``inner_steps`` Adam steps
    (:func:`train_prompts`), then moves the initialisation: Reptile
    towards the mean adapted prompt, by ``meta_lr`` (annealed linearly to
    0); first-order MAML ("fomaml") against the mean gradient of the query
    loss at the adapted prompts, with Adam at ``meta_lr``. Runs never mix:
    each follows its own tasks, as if trained alone.
    """
    if method not in ("reptile", "fomaml"):
        raise ValueError(
            f"method must be 'reptile' or 'fomaml', got {method!r}"
        )
    single = init.dim() == 2
    phi = (init[None] if single else init).detach().clone()
    phi.requires_grad_(method == "fomaml")
    opt = torch.optim.Adam([phi], lr=meta_lr) if method == "fomaml" else None
    meta_steps = positive_int("meta_steps", meta_steps)
    R, K, d = phi.shape
    for i in range(meta_steps):
        support, query = sample_tasks(generator)
        if single:
            support, query = support[None], query[None]
        T, N, S = query.shape[1:]
        start = phi.detach().repeat_interleave(T, dim=0)  # (R T, K, d)
        adapted, _ = train_prompts(
            model, start, support.flatten(0, 1), inner_steps, inner_lr
        )
        if method == "reptile":
            mean = adapted.view(R, T, K, d).mean(1)
            phi = phi + meta_lr * (1 - i / meta_steps) * (mean - phi)
            continue
        adapted.requires_grad_(True)
        flat = query.reshape(R * T * N, S)[:, :END]
        rows = adapted.repeat_interleave(N, dim=0)
        mask = loss_mask(END, N_SLOTS, QUESTION_LEN, TARGET_LEN)
        loss = R * masked_next_token_loss(
            prompted_logits(model, rows, flat), flat, mask
        )  # the sum of each run's mean query loss
        (grad,) = torch.autograd.grad(loss, adapted)
        opt.zero_grad()
        phi.grad = grad.view(R, T, K, d).sum(1)  # first order: d(P)/d(phi) = I
        opt.step()
    return phi.detach()[0] if single else phi.detach()


# ---------------------------------------------------------------- cross-check
# with PEFT


def tiny_gpt2(
    n_vocab: int = 50,
    n_ctx: int = 32,
    d_model: int = 32,
    n_layers: int = 2,
    n_heads: int = 2,
    seed: int = 0,
):
    """A randomly initialised transformers ``GPT2LMHeadModel``, built
    offline (no download).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=n_vocab,
        n_positions=n_ctx,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(cfg).eval()


def peft_prompt_tuning(hf_model, n_virtual: int):
    """PEFT's prompt tuning of ``hf_model``: ``n_virtual`` vectors sampled
    from the vocabulary.
    """
    from peft import (
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
        get_peft_model,
    )

    cfg = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=n_virtual,
        prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,
    )
    return get_peft_model(hf_model, cfg)


def hf_soft_prompt_logits(
    hf_model, soft: SoftPrompt, input_ids: torch.Tensor
) -> torch.Tensor:
    """Logits (B, K + T, V) of a transformers causal LM with ``soft`` in
    front of ``input_ids``.
    """
    embeds = hf_model.get_input_embeddings()(input_ids)
    return hf_model(inputs_embeds=soft(embeds)).logits


@torch.no_grad()
def peft_cross_check(
    n_vocab: int, d_model: int, n_virtual: int, seed: int, generator
):
    """PEFT's prompt tuning against the hand-written soft prompt on a tiny
    offline ``GPT2Config`` model: the same vectors, as PEFT samples them
    from the vocabulary, in front of three random token sequences.
    Returns (our logits, PEFT's logits, PEFT's trainable count, its total).
    """
    hf = tiny_gpt2(n_vocab=n_vocab, d_model=d_model, seed=seed)
    peft_model = peft_prompt_tuning(hf, n_virtual)
    vectors = peft_model.prompt_encoder["default"].embedding.weight
    ids = torch.randint(0, n_vocab, (3, 9), generator=generator)
    theirs = peft_model(input_ids=ids).logits
    ours = hf_soft_prompt_logits(hf, SoftPrompt(vectors.detach()), ids)
    return (ours, theirs, *peft_model.get_nb_trainable_parameters())
