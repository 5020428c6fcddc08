"""Soft prompting a frozen decoder-only language model (hw11-q6).

Derived in the chapter "Soft prompting a frozen language model". The module
holds:

- the homework's sequence layout and the loss mask with the shift by one made
    explicit;
- a word-problem generator with worked answers ("Question : ... Answer : a + k
    = c .
  Final answer : c \\n") from a small vocabulary, one task per (operation, k);
- a small GPT (plain PyTorch) that accepts input embeddings, pretrained with
    ``n_slots``
  placeholder positions in front, so that a soft prompt of the same length
  shifts nothing;
- :class:`SoftPrompt`, the K trainable vectors put at the input embedding, and
    the
  training, evaluation, hard-prompt search and meta-learning helpers of the
  experiments.

Positions in the homework are 1-indexed; tensors here are 0-indexed: input
position ``p`` (1-indexed) is index ``p - 1``, and the output at index ``t``
predicts the input at ``t + 1``.
"""

from __future__ import annotations

import math

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
    Targets occupy input indices ``prompt_len + question_len`` .. ``prompt_len
    + question_len + target_len - 1``, so the mask is that span moved one to
    the left: the last question position is in, the newline's is out. The rest
    of the sequence is padding. Bad lengths raise ``ValueError`` naming the
    argument.
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
    """A small GPT with learned absolute positions that takes tokens or input
    embeddings.

    ``forward(tokens=None, embeds=None, causal=True, return_resid=False)``:
        embeds (B, S, d) are
    used as they are (positions are still added); returns logits (B, S, V), and
    with ``return_resid`` also the residual stream before and after every block
    (list of (B, S, d)).
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
    """K trainable vectors put in front of the token embeddings (input layer
    only).

    ``forward(token_embeds)`` with token_embeds (B, T, d) returns (B, K + T,
    d). With a model pretrained on K placeholder slots, pass the embeddings of
    ``tokens[:, K:]``: the prompt takes the slots' positions and nothing else
    moves.
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


def answer_hits(
    model: TinyGPT, tokens: torch.Tensor, prompts: torch.Tensor | None = None
):
    """Per row (B,) bool: the generated final answer equals the true one
    (exact match).
    """
    truth = parse_final_answer(tokens[:, N_SLOTS + QUESTION_LEN :])
    got = parse_final_answer(greedy_complete(model, tokens, prompts))
    return torch.tensor([g is not None and g == t for g, t in zip(got, truth)])


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


# ---------------------------------------------------------------- training
# prompts and models


def train_prompts(
    model: TinyGPT,
    init: torch.Tensor,
    tokens: torch.Tensor,
    steps: int,
    lr: float,
    snapshots=(),
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Train T soft prompts at once, one per task, on the frozen ``model`` with
    Adam.

    Args:
        init: (T, K, d) initial prompts; tokens: (T, N, S) each task's training
            examples
            (full batch: every step sees all N). steps: Adam steps; lr: Adam
            learning rate.
        snapshots: step counts at which to keep a copy of the prompts (0 = the
            initial ones).

    The loss is the sum over tasks of each task's mean target loss, so each
    prompt follows its own task's gradient (Adam is elementwise). Only the
    prompts get gradients; the model's ``requires_grad`` flags are left as they
    are, its weights are never stepped. Returns (prompts (T, K, d), {step:
    prompts}).
    """
    T, N, S = tokens.shape
    if init.dim() != 3 or init.shape[0] != T:
        raise ValueError(
            f"init must have shape (T={T}, K, d), got {tuple(init.shape)}"
        )
    prompts = init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([prompts], lr=lr)
    flat, mask = tokens.reshape(T * N, S), target_mask(init.shape[1])
    kept = {0: prompts.detach().clone()} if 0 in snapshots else {}
    for step in range(1, _count("steps", steps, 0) + 1):
        rows = (
            prompts[:, None]
            .expand(T, N, *prompts.shape[1:])
            .reshape(T * N, *prompts.shape[1:])
        )
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
    (first-order).

    Each meta step draws tasks ``support, query = sample_tasks(generator)``
    (both (T, N, S)), adapts a copy of the initialisation to every task with
    ``inner_steps`` Adam steps (:func:`train_prompts`), then moves the
    initialisation: Reptile towards the mean adapted prompt, by ``meta_lr``
    (annealed linearly to 0); first-order MAML ("fomaml") against the mean
    gradient of the query loss at the adapted prompts, with Adam at
    ``meta_lr``.
    """
    if method not in ("reptile", "fomaml"):
        raise ValueError(
            f"method must be 'reptile' or 'fomaml', got {method!r}"
        )
    phi = init.detach().clone().requires_grad_(method == "fomaml")
    opt = torch.optim.Adam([phi], lr=meta_lr) if method == "fomaml" else None
    meta_steps = positive_int("meta_steps", meta_steps)
    for i in range(meta_steps):
        support, query = sample_tasks(generator)
        T, N, S = query.shape
        start = phi.detach()[None].expand(T, *phi.shape)
        adapted, _ = train_prompts(
            model, start, support, inner_steps, inner_lr
        )
        if method == "reptile":
            phi = phi + meta_lr * (1 - i / meta_steps) * (
                adapted.mean(0) - phi
            )
            continue
        adapted.requires_grad_(True)
        rows = (
            adapted[:, None]
            .expand(T, N, *phi.shape)
            .reshape(T * N, *phi.shape)
        )
        flat = query.reshape(T * N, S)
        loss = masked_next_token_loss(
            prompted_logits(model, rows, flat), flat, target_mask()
        )
        (grad,) = torch.autograd.grad(loss, adapted)
        opt.zero_grad()
        phi.grad = grad.sum(0)  # first order: d(adapted)/d(phi) taken as I
        opt.step()
    return phi.detach()


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
