"""The iso-FLOP experiment: small next-token MLP language models trained on
a teacher's language at a fixed compute budget, and the parabola whose
minimum is the compute-optimal size.

The lecture walkthrough "What training costs", section scale-chinchilla.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from llmbook.core import trainer
from llmbook.core.validate import positive, positive_int


def mlp_lm_params(vocab: int, context: int, embed: int, width: int) -> int:
    """Matmul parameters (weights and biases of the two linear layers; the
    embedding is a lookup and costs no FLOP) of :class:`MLPLanguageModel`.
    Section scale-chinchilla.
    """
    v, k = positive_int("vocab", vocab), positive_int("context", context)
    e, w = positive_int("embed", embed), positive_int("width", width)
    return (k * e + 1) * w + (w + 1) * v


class MLPLanguageModel(nn.Module):
    """Next-token MLP language model (Bengio et al. 2003 style): embed the
    ``context`` previous tokens, concatenate, one tanh hidden layer of
    ``width`` units, logits over ``vocab``. Section scale-chinchilla."""

    def __init__(self, vocab: int, context: int, embed: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(positive_int("vocab", vocab), embed)
        k = positive_int("context", context)
        self.hidden = nn.Linear(k * embed, width)
        self.out = nn.Linear(positive_int("width", width), vocab)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) for contexts ``ctx`` (B, context)."""
        return self.out(torch.tanh(self.hidden(self.embed(ctx).flatten(1))))

    def stacked_forward(
        self, params: dict, ctx: torch.Tensor, shared: bool = False
    ) -> torch.Tensor:
        """Logits ``(n, B, vocab)`` of n stacked copies of this model
        (``params``: name -> ``(n, *shape)``, as
        :func:`llmbook.core.trainer.init_runs` stacks them) on contexts
        ``ctx`` ``(n, B, context)``, or ``(B, context)`` seen by every
        copy when ``shared``. The stacked trainer uses it instead of
        ``torch.vmap`` (less overhead per step): the lookup indexes the n
        tables as one, whose backward (an accumulating ``index_put_``)
        adds the same numbers in the same order as the embedding's,
        faster; the layers are batched matmuls. Bit-equal to vmap,
        outputs and gradients (tests/test_isoflop.py). Section
        scale-chinchilla."""
        table = params["embed.weight"]  # (n, vocab, embed)
        n, v, e = table.shape
        if shared:
            ctx = ctx.expand(n, *ctx.shape)
        offset = torch.arange(n, device=ctx.device) * v
        idx = ctx + offset.reshape(n, *[1] * (ctx.dim() - 1))
        x = table.reshape(n * v, e)[idx].flatten(2)  # (n, B, context*embed)
        for name in ("hidden", "out"):
            w, b = params[f"{name}.weight"], params[f"{name}.bias"]
            # in place: the same values, no new (n, B, width) buffers
            x = torch.matmul(x, w.transpose(1, 2)).add_(b[:, None])
            if name == "hidden":
                x = x.tanh_()
        return x


def teacher_language(
    vocab: int,
    context: int,
    embed: int,
    width: int,
    sharpness: float = 3.0,
    seed: int = 0,
) -> dict:
    """A generated language for the iso-FLOP experiment: a random
    :class:`MLPLanguageModel` (the teacher, initialised after
    ``torch.manual_seed(seed)`` with its output weights times
    ``sharpness``) gives P(next | context) for every one of the
    vocab**context contexts. The global random state is left as it was.

    Returns "contexts" (vocab**context, context), "probs" and its row-wise
    "cdf" (for sampling), and "entropy", the loss of a perfect model in nats
    per token. Section scale-chinchilla.
    """
    vocab, context = (
        positive_int("vocab", vocab),
        positive_int("context", context),
    )
    sharpness = positive("sharpness", sharpness)
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        teacher = MLPLanguageModel(vocab, context, embed, width)
    contexts = torch.cartesian_prod(*[torch.arange(vocab)] * context)
    with torch.no_grad():
        teacher.out.weight.mul_(sharpness)
        probs = teacher(contexts).softmax(-1)
    cdf = probs.cumsum(-1)
    cdf[:, -1] = 1.0
    entropy = -(probs * probs.log()).sum(-1).mean().item()
    return {
        "contexts": contexts,
        "probs": probs,
        "cdf": cdf,
        "entropy": entropy,
    }


def train_isoflop_runs(
    language: dict,
    embed: int,
    width: int,
    budget: float,
    lrs,
    seeds=(0,),
    target_steps: int = 400,
    batch_range: tuple[int, int] = (32, 8192),
) -> list[dict]:
    """Train students :class:`MLPLanguageModel` of hidden ``width`` on
    ``budget`` FLOP of the ``language`` of :func:`teacher_language`, one run
    per (seed, learning rate), all at once with :mod:`llmbook.core.trainer`.

    Every run sees D = C / (6 N) tokens drawn fresh in about
    ``target_steps`` Adam steps (the batch is D / target_steps, clipped to
    ``batch_range``), with a cosine decay of its peak rate to 0 over its
    steps. The seed fixes the initial weights and the data stream, so the
    runs of one seed differ only by learning rate (common random numbers).
    Returns one row per run: C, width, N, D (tokens actually seen), batch,
    steps, lr, seed and "loss", the exact expected cross-entropy over the
    whole language (nats per token; ``nan`` for a run that diverged).
    Section scale-chinchilla.
    """
    contexts, probs, cdf = (language[k] for k in ("contexts", "probs", "cdf"))
    vocab, context = probs.shape[1], contexts.shape[1]
    budget = positive("budget", budget)
    lrs = [positive("lrs", r) for r in lrs]
    seeds = [int(s) for s in seeds]
    if not lrs or not seeds:
        raise ValueError("lrs and seeds must not be empty")
    lo, hi = (positive_int("batch_range", b) for b in batch_range)
    n = mlp_lm_params(vocab, context, embed, width)
    d = budget / (6 * n)
    b = int(
        np.clip(round(d / positive_int("target_steps", target_steps)), lo, hi)
    )
    steps = max(1, round(d / b))
    grid = [(r, s) for s in seeds for r in lrs]
    params, buffers, base = trainer.init_runs(
        lambda: MLPLanguageModel(vocab, context, embed, width),
        [s for _, s in grid],
    )
    which = torch.tensor([seeds.index(s) for _, s in grid])

    def batches(step):  # each seed's batch of this step, pure in step
        idx, nxt = [], []
        for s in seeds:
            g = torch.Generator().manual_seed(1_000_003 * s + step)
            i = torch.randint(len(contexts), (b,), generator=g)
            u = torch.rand(b, 1, generator=g)
            idx.append(i)
            nxt.append(torch.searchsorted(cdf[i], u)[:, 0])
        idx, nxt = torch.stack(idx)[which], torch.stack(nxt)[which]
        return contexts[idx], nxt

    out = trainer.train_runs(
        base,
        params,
        nn.functional.cross_entropy,
        batches,
        steps,
        lr=torch.tensor([r for r, _ in grid]),
        buffers=buffers,
        schedule=lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)),
        max_loss=1e3,
    )
    logits = trainer.run_outputs(base, out.params, contexts, buffers)
    ce = -(probs * logits.log_softmax(-1)).sum(-1).mean(-1)
    return [
        {
            "C": budget,
            "width": width,
            "N": n,
            "D": steps * b,
            "batch": b,
            "steps": steps,
            "lr": r,
            "seed": s,
            "loss": ce[j].item() if out.alive[j] else float("nan"),
        }
        for j, (r, s) in enumerate(grid)
    ]


def train_isoflop_student(
    language: dict,
    embed: int,
    width: int,
    budget: float,
    target_steps: int = 400,
    batch_range: tuple[int, int] = (32, 8192),
    lr: float = 1e-2,
    seed: int = 0,
) -> dict:
    """One run of :func:`train_isoflop_runs` (rate ``lr``, seed ``seed``):
    its row. Section scale-chinchilla.
    """
    (row,) = train_isoflop_runs(
        language,
        embed,
        width,
        budget,
        [lr],
        [seed],
        target_steps,
        batch_range,
    )
    return row


def best_rates(runs, by=("C", "width")):
    """Pick, for every group ``by`` of a runs table (columns lr, seed,
    loss, as :func:`train_isoflop_runs` returns), the learning rate with the
    lowest median loss over the seeds; return those rows of the table,
    one per (group, seed), with a column "lr_on_edge" that is True where
    the chosen rate is the smallest or largest rate tried in its group.
    Section scale-chinchilla.
    """
    df = pd.DataFrame(runs)
    by = list(by)
    med = df.groupby(by + ["lr"])["loss"].median().fillna(np.inf)
    best = med.groupby(level=by).idxmin().apply(lambda t: t[-1])
    best = best.rename("best_lr").reset_index()
    lrs = df.groupby(by)["lr"].agg(["min", "max"]).reset_index()
    best = best.merge(lrs, on=by)
    best["lr_on_edge"] = (best["best_lr"] == best["min"]) | (
        best["best_lr"] == best["max"]
    )
    out = df.merge(best[by + ["best_lr", "lr_on_edge"]], on=by)
    out = out[out["lr"] == out["best_lr"]].drop(columns="best_lr")
    return out.reset_index(drop=True)


def fit_isoflop_parabola(log_n, loss) -> tuple[float, float]:
    """Fit loss = a (log N)^2 + b log N + c to one iso-FLOP curve; return the
    vertex ``(log N_opt, loss at the vertex)``. Raises ``ValueError`` when the
    parabola opens downwards (no minimum). Section scale-chinchilla.
    """
    x = np.asarray(log_n, dtype=float)
    y = np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError("log_n and loss must be 1-D of equal length >= 3")
    a, b, c = np.polyfit(x, y, 2)
    if a <= 0:
        raise ValueError("loss: the fitted parabola has no minimum")
    x0 = -b / (2 * a)
    return float(x0), float(c - b * b / (4 * a))


def isoflop_optima(runs, fit_points: int = 5) -> pd.DataFrame:
    """Vertex of each budget's iso-FLOP curve: for every C of the ``runs``
    table (columns C, N, loss; one row per size), a parabola in log N
    through the ``fit_points`` sizes around the lowest loss
    (:func:`fit_isoflop_parabola`). Returns one row per budget: C, N_opt,
    loss_opt, D_opt = C / (6 N_opt), "on_edge" (the lowest loss is at the
    smallest or largest size) and "fit" (the rows fitted). Section
    scale-chinchilla.
    """
    k_pts = positive_int("fit_points", fit_points)
    rows = []
    for c, part in pd.DataFrame(runs).sort_values("N").groupby("C"):
        k = int(part["loss"].to_numpy().argmin())
        lo = int(np.clip(k - k_pts // 2, 0, len(part) - k_pts))
        sel = part.iloc[lo : lo + k_pts]
        x0, l0 = fit_isoflop_parabola(np.log(sel["N"]), sel["loss"])
        rows.append(
            {
                "C": c,
                "N_opt": float(np.exp(x0)),
                "loss_opt": l0,
                "D_opt": c / (6 * np.exp(x0)),
                "on_edge": k in (0, len(part) - 1),
                "fit": sel,
            }
        )
    return pd.DataFrame(rows)


def slope_text(fit: dict) -> str:
    """A fitted exponent with its interval as prose, ``'0.47 [0.41, 0.53]'``:
    ``fit`` as :func:`llmbook.core.stats.loglog_slope` returns it (``slope``,
    ``lo``, ``hi``), two significant figures. Section scale-chinchilla.
    """
    from llmbook.topics.batchsize import with_interval

    return with_interval(fit["slope"], fit["lo"], fit["hi"])


def plot_isoflop(runs, optima, entropy: float):
    """Figure: loss against N per budget (markers), each budget's fitted
    parabola over the sizes it used (line) and its vertex (star); sizes
    outside a fit are drawn hollow; the legend under the axes keeps the
    figure at the book's 6.4 in (readable on a phone, issue 20). Section
    scale-chinchilla."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "parameters N (weights and biases)",
        "loss (nats per token)",
        "Iso-FLOP curves, learning rate tuned per size",
        logx=True,
        figsize=(6.4, 4),
    )
    runs = pd.DataFrame(runs)
    for _, row in optima.iterrows():
        part = runs[runs["C"] == row["C"]]
        sel = row["fit"]
        used = part["N"].isin(sel["N"])
        (pts,) = ax.plot(
            part["N"][used],
            part["loss"][used],
            "o",
            label=f"C = {row['C']:.0e}",
        )
        ax.plot(
            part["N"][~used],
            part["loss"][~used],
            "o",
            mfc="none",
            color=pts.get_color(),
        )
        xs = np.linspace(np.log(sel["N"]).min(), np.log(sel["N"]).max(), 50)
        coef = np.polyfit(np.log(sel["N"]), sel["loss"], 2)
        ax.plot(np.exp(xs), np.polyval(coef, xs), color=pts.get_color())
        ax.plot(row["N_opt"], row["loss_opt"], "k*", ms=10)
    ax.axhline(entropy, color="grey", ls=":", label="entropy of language")
    ax.legend(
        title="budget (FLOP)",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncols=3,
    )
    return fig


def plot_isoflop_laws(optima, fits: dict):
    """Figure, two panels: N_opt and D_opt against C (markers) with the
    fitted power laws ``fits = {"N_opt": loglog_slope(...), "D_opt":
    ...}`` (lines), each panel on its own axis range. Section
    scale-chinchilla."""
    from llmbook.book.plotting import use_style
    import matplotlib.pyplot as plt

    use_style()
    # stacked at the book's 6.4 in: readable on a phone (issue 20)
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 6.4))
    cs = np.geomspace(optima["C"].min(), optima["C"].max(), 50)
    for ax, col, name in zip(
        axes, ("N_opt", "D_opt"), ("parameters", "tokens")
    ):
        f = fits[col]
        (pts,) = ax.plot(optima["C"], optima[col], "o", label=col)
        ax.plot(
            cs,
            f["coef"] * cs ** f["slope"],
            color=pts.get_color(),
            label=f"fit, exponent {f['slope']:.2f}",
        )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="compute C (FLOP)",
            ylabel=f"compute-optimal {name}",
            title=col,
        )
        ax.legend()
    fig.tight_layout()
    return fig


# ---- Over seeds: each seed its own teacher, initial weights and batches --

SEEDS_TOOL = "python tools/isoflop_seeds.py"
SEED_KEYS = (
    "vocab",
    "context",
    "teacher_embed",
    "teacher_width",
    "teacher_sharpness",
    "student_embed",
    "widths",
    "budgets",
    "target_steps",
    "batch_range",
    "lr",
    "lr_grid",
    "fit_points",
)


def seed_settings(settings: dict) -> dict:
    """The entries of a parameters dict that the iso-FLOP sweep depends
    on (:data:`SEED_KEYS`), as JSON would store them. Section
    scale-chinchilla."""
    missing = [k for k in SEED_KEYS if k not in settings]
    if missing:
        raise ValueError(f"settings lack {missing}")
    ints = ("widths", "batch_range")
    out = {}
    for k in SEED_KEYS:
        v = settings[k]
        if isinstance(v, (list, tuple, range)):
            v = [int(x) if k in ints else float(x) for x in v]
        out[k] = v
    return out


def seed_sweep(settings: dict, seed: int) -> pd.DataFrame:
    """The notebook's whole sweep for one seed: the teacher language drawn
    with ``seed``, every width at every budget at every rate of
    ``lr_grid``, students initialised and fed with ``seed``. Returns the
    runs table of :func:`train_isoflop_runs`. Section scale-chinchilla."""
    s = seed_settings(settings)
    lang = teacher_language(
        s["vocab"],
        s["context"],
        s["teacher_embed"],
        s["teacher_width"],
        s["teacher_sharpness"],
        seed,
    )
    rows = [
        row
        for c in s["budgets"]
        for w in s["widths"]
        for row in train_isoflop_runs(
            lang,
            s["student_embed"],
            w,
            c,
            s["lr_grid"],
            [seed],
            s["target_steps"],
            tuple(s["batch_range"]),
        )
    ]
    return pd.DataFrame(rows)


def seed_row(seed: int, runs, settings: dict) -> dict:
    """One seed's summary of a sweep (:func:`seed_sweep`): the exponents
    a (N_opt ~ C^a) and b (D_opt ~ C^b) with their 95 % intervals, with
    the rate tuned per size and budget, the exponent a at the one rate
    ``lr``, the best size per budget and how many best sizes lie on the
    edge of the widths. Section scale-chinchilla."""
    from llmbook.core.stats import loglog_slope

    s = seed_settings(settings)
    runs = pd.DataFrame(runs)
    tuned = best_rates(runs)
    opt = isoflop_optima(tuned, s["fit_points"])
    fixed = runs[np.isclose(runs["lr"], s["lr"])]
    opt_fixed = isoflop_optima(fixed, s["fit_points"])
    fa = loglog_slope(opt["C"], opt["N_opt"])
    fb = loglog_slope(opt["C"], opt["D_opt"])
    ff = loglog_slope(opt_fixed["C"], opt_fixed["N_opt"])
    return {
        "seed": int(seed),
        "a": fa["slope"],
        "a_lo": fa["lo"],
        "a_hi": fa["hi"],
        "b": fb["slope"],
        "b_lo": fb["lo"],
        "b_hi": fb["hi"],
        "a_fixed": ff["slope"],
        "a_fixed_lo": ff["lo"],
        "a_fixed_hi": ff["hi"],
        "N_opt": [float(x) for x in opt["N_opt"]],
        "n_edge": int(opt["on_edge"].sum()),
    }


def seed_check(settings: dict, seeds) -> dict:
    """:func:`seed_row` of :func:`seed_sweep` for every seed of ``seeds``.
    Returns ``{"settings": seed settings plus "seeds", "rows": [...]}``,
    what ``tools/isoflop_seeds.py`` stores. Section scale-chinchilla."""
    seeds = [int(s) for s in seeds]
    rows = [seed_row(s, seed_sweep(settings, s), settings) for s in seeds]
    return {
        "settings": {**seed_settings(settings), "seeds": seeds},
        "rows": rows,
    }


def seed_table(rows) -> pd.DataFrame:
    """The stored or live seed rows as a table indexed by seed: a and b
    with their intervals and a at the one rate (the N_opt lists left out).
    Section scale-chinchilla."""
    df = pd.DataFrame(rows).set_index("seed").sort_index()
    return df.drop(columns=["N_opt"])
