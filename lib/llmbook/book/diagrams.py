"""Schematic diagrams drawn by code: the pictures that teach a shape or a
schedule rather than plot a measurement.

One function per diagram returns a matplotlib ``Figure``; ``write_all``
writes them as SVG into ``images/diagrams/`` (``python tools/diagrams.py``),
byte for byte the same on every run. Each figure is at most
``MAX_WIDTH_IN`` inches wide and its smallest text is at least
``MIN_FONT_PT`` points, so that shown at the column width of a 390 px phone
(about 0.45 of its size) the text is still about 6 px. Numbers in the
pictures come from the library (``llmbook.topics.zero``), never typed in.
Coordinates are inches from the figure's lower left corner.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle
from matplotlib.text import Text

from llmbook.book.plotting import PALETTE
from llmbook.core.validate import positive_int
from llmbook.topics import zero

MAX_WIDTH_IN = 8.0
MIN_FONT_PT = 13.0
FONT = 14.0  # body text of the diagrams
SMALL = 13.0  # the smallest text, for labels under boxes
HASH_SALT = "llmbook-diagrams"

BLUE, ORANGE, GREEN, VERMILION, PURPLE, SKY = PALETTE[:6]
_GREY = "#9a9a9a"
_LIGHT = "#e6e6e6"
_INK = "#222222"


def _canvas(width: float, height: float):
    """A figure of ``width`` x ``height`` inches with one axes covering it,
    its data coordinates in inches and no axis drawn."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # a renderer, to measure the texts
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    return fig, ax


def _box(ax, x, y, w, h, color, gid=None, **kw):
    kw.setdefault("linewidth", 1.5)
    kw.setdefault("edgecolor", _INK)
    patch = Rectangle((x, y), w, h, facecolor=color, **kw)
    patch.set_gid(gid)
    ax.add_patch(patch)
    return patch


def _text(ax, x, y, s, size=FONT, **kw):
    kw.setdefault("ha", "center")
    kw.setdefault("va", "center")
    kw.setdefault("color", _INK)
    return ax.text(x, y, s, fontsize=size, **kw)


def _arrow(ax, start, end, color=_INK, rad=0.0, gid=None, width=2.0):
    arrow = FancyArrowPatch(
        start,
        end,
        arrowstyle="-|>",
        mutation_scale=16,
        connectionstyle=f"arc3,rad={rad}",
        color=color,
        linewidth=width,
        shrinkA=0,
        shrinkB=0,
    )
    arrow.set_gid(gid)
    ax.add_patch(arrow)
    return arrow


# --------------------------------------------------------------- LoRA
def lora_factors() -> Figure:
    """LoRA's factors to scale: the frozen ``W0`` (m x l) and the trained
    ``A`` (m x k) and ``B`` (k x l), in the chapter's notation
    ``h = W0 x + s A B x`` with ``s = alpha / k`` (chapter ``lora``)."""
    m, ell, k = 1.5, 1.9, 0.3  # inches: rows m, columns l, rank k
    fig, ax = _canvas(8.0, 3.3)
    top = 2.75  # all column vectors and matrices hang from this line
    x0 = 0.15

    def column(x, rows, name, gid, color=_LIGHT):
        _box(ax, x, top - rows, 0.3, rows, color, gid=gid)
        _text(ax, x + 0.15, top - rows / 2, name)
        return x + 0.3

    def sign(x, s, width):
        _text(ax, x + width / 2, top - m / 2, s, size=FONT + 4)
        return x + width

    def under(x, w, rows, lines):
        for n, (s, color) in enumerate(lines):
            _text(
                ax,
                x + w / 2,
                top - rows - 0.22 - 0.27 * n,
                s,
                SMALL,
                color=color,
            )

    x = column(x0, m, "h", "h")
    x = sign(x, "=", 0.4)
    _box(ax, x, top - m, ell, m, _GREY, gid="W0")
    _text(ax, x + ell / 2, top - m / 2, "W₀", FONT + 2)
    under(x, ell, m, [("m × ℓ", _INK), ("frozen", _INK)])
    x = column(x + ell + 0.1, ell, "x", "x1")
    x = sign(x, "+  s ·", 0.85)
    _box(ax, x, top - m, k, m, ORANGE, gid="A")
    _text(ax, x + k / 2, top - m / 2, "A", FONT + 2)
    under(x, k, m, [("m × k", _INK), ("trained", VERMILION)])
    x += k + 0.12
    _box(ax, x, top - k, ell, k, ORANGE, gid="B")
    _text(ax, x + ell / 2, top - k / 2, "B", FONT + 2)
    under(x, ell, k, [("k × ℓ", _INK), ("trained", VERMILION)])
    column(x + ell + 0.1, ell, "x", "x2")
    _text(
        ax,
        4.0,
        0.3,
        "s = α / k;   only A and B are trained, rank k ≪ m, ℓ",
        FONT,
    )
    return fig


# ------------------------------------------------------ induction heads
INDUCTION_TOKENS = ("A", "B", "C", "A")


def induction_target(tokens) -> tuple[int, str]:
    """Where an induction head at the last position attends and what it
    copies: the position right after the latest earlier occurrence of the
    last token, and the token there ("... A B ... A -> B")."""
    last = tokens[-1]
    earlier = [i for i in range(len(tokens) - 1) if tokens[i] == last]
    if not earlier or earlier[-1] + 1 >= len(tokens) - 1:
        raise ValueError(f"tokens {tokens!r} hold no '... A B ... A'")
    j = earlier[-1] + 1
    return j, tokens[j]


def induction_circuit(tokens=INDUCTION_TOKENS) -> Figure:
    """The residual stream of a two-layer attention-only model with the
    two-head induction circuit (chapter ``circuits``): the layer-0
    previous-token head writes each token into the next position's stream;
    the layer-1 head's key reads that (K-composition), so the last position
    attends to the token after the earlier occurrence and copies it."""
    n = len(tokens)
    j, copied = induction_target(tokens)
    fig, ax = _canvas(8.0, 4.7)
    xs = [2.0 + i * (4.9 / (n - 1)) for i in range(n)]
    bottom, top = 0.55, 3.95
    for i, (x, tok) in enumerate(zip(xs, tokens)):
        _box(
            ax,
            x - 0.11,
            bottom,
            0.22,
            top - bottom,
            _LIGHT,
            gid=f"stream-{i}",
            linewidth=1.0,
            edgecolor=_GREY,
        )
        _text(ax, x, 0.3, tok, FONT + 4, weight="bold")
    _text(ax, 0.75, 0.3, "tokens", SMALL)
    _text(ax, 0.75, 4.15, "residual\nstream", SMALL)
    _arrow(ax, (xs[0] - 0.5, 4.15), (xs[0] - 0.16, 3.85), _GREY, width=1.5)
    # layer 0: the previous-token head
    _text(ax, 0.75, 1.45, "layer 0\nprevious-\ntoken head", SMALL, color=BLUE)
    for i in range(1, n):
        _arrow(
            ax,
            (xs[i - 1] + 0.13, 1.0),
            (xs[i] - 0.13, 1.45),
            BLUE,
            rad=0.3,
            gid=f"prev-{i - 1}-{i}",
        )
        _text(
            ax,
            xs[i],
            1.95,
            f"prev: {tokens[i - 1]}",
            SMALL,
            color=BLUE,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": BLUE},
        )
    # layer 1: the induction head, query at the last position
    _text(ax, 0.75, 3.05, "layer 1\ninduction\nhead", SMALL, color=VERMILION)
    _text(ax, xs[j], 2.55, "key reads\nprev (K-comp.)", SMALL, color=VERMILION)
    _text(ax, xs[-1], 2.45, f"query: {tokens[-1]}", SMALL, color=VERMILION)
    _arrow(
        ax,
        (xs[j] + 0.13, 3.05),
        (xs[-1] - 0.13, 3.05),
        VERMILION,
        rad=-0.35,
        gid=f"induction-{j}-{n - 1}",
    )
    _text(
        ax,
        (xs[j] + xs[-1]) / 2,
        3.72,
        f"attends here, copies {copied}",
        SMALL,
        color=VERMILION,
    )
    _text(
        ax,
        xs[-1],
        4.35,
        f"predicts {copied}",
        FONT,
        weight="bold",
        color=VERMILION,
        gid="prediction",
    )
    return fig


# --------------------------------------------------------------- ZeRO
ZERO_STATES = (
    ("params", "weights", BLUE),
    ("grads", "gradients", ORANGE),
    ("optim", "optimizer state", GREEN),
)
ZERO_STATE_BYTES = {
    "params": zero.PARAM_BYTES,
    "grads": zero.GRAD_BYTES,
    "optim": zero.OPTIM_BYTES,
}


def zero_partitions(n_dp: int = 4) -> Figure:
    """ZeRO's stages across ``n_dp`` GPUs (chapter
    ``lecture-parallelism``): per GPU a bar of the bytes per parameter of
    weights, gradients and optimizer state; a partitioned state keeps only
    this GPU's ``1/n_dp`` slice (filled) of its full extent (outlined), as
    in the ZeRO paper's figure 1. Bytes from ``zero.zero_bytes_per_gpu``."""
    total = sum(ZERO_STATE_BYTES.values())
    bar, pitch, x0 = 1.2, 1.35, 1.3
    scale = bar / total  # inches per byte per parameter
    fig, ax = _canvas(8.0, 4.6)
    names = {0: "data\nparallel", 1: "ZeRO-1", 2: "ZeRO-2", 3: "ZeRO-3"}
    for g in range(n_dp):
        _text(ax, x0 + g * pitch + bar / 2, 4.3, f"GPU {g + 1}", FONT)
    _text(ax, 7.35, 4.3, "bytes per\nparameter", SMALL)
    for row, stage in enumerate(zero.STAGES):
        y = 3.55 - row * 0.8
        _text(ax, 0.6, y + 0.2, names[stage], FONT)
        per_gpu = zero.zero_bytes_per_gpu(1.0, n_dp, stage)
        for g in range(n_dp):
            x = x0 + g * pitch
            for key, _, color in ZERO_STATES:
                full = ZERO_STATE_BYTES[key] * scale
                split = per_gpu[key] < ZERO_STATE_BYTES[key]
                gid = f"zero-s{stage}-g{g}-{key}"
                if split:
                    _box(
                        ax,
                        x,
                        y,
                        full,
                        0.4,
                        "white",
                        gid=gid + "-empty",
                        linewidth=1.0,
                        edgecolor=color,
                    )
                    w = per_gpu[key] * scale
                    _box(ax, x + g * w, y, w, 0.4, color, gid=gid, linewidth=0)
                else:
                    _box(ax, x, y, full, 0.4, color, gid=gid, linewidth=0)
                x += full
        value = f"{per_gpu['total']:g}"
        _text(ax, 7.35, y + 0.2, value, FONT, gid=f"zero-total-s{stage}")
    x = 0.2
    for key, label, color in ZERO_STATES:
        _box(ax, x, 0.25, 0.3, 0.3, color, linewidth=0)
        s = f"{label}: {ZERO_STATE_BYTES[key]:g} B"
        _text(ax, x + 0.4, 0.4, s, SMALL, ha="left")
        x += 0.7 + 0.105 * len(s)
    _text(ax, 4.0, 0.85, f"filled: what one GPU holds ({n_dp} GPUs)", SMALL)
    return fig


# ----------------------------------------------------- pipeline bubble
def gpipe_schedule(n_stages: int, n_micro: int) -> dict:
    """The GPipe schedule in unit slots (forward and backward one slot
    each): ``{(stage, slot): ("F" or "B", microbatch)}``, stages and
    microbatches from 0, and the step's length ``2 (n_micro + n_stages -
    1)``. All forwards, then all backwards, each stage waiting for the one
    before (forward) or after (backward)."""
    p = positive_int("n_stages", n_stages)
    m = positive_int("n_micro", n_micro)
    busy = {}
    for s in range(p):
        for j in range(m):
            busy[(s, s + j)] = ("F", j)
            busy[(s, (m + p - 1) + (p - 1 - s) + j)] = ("B", j)
    return {"busy": busy, "slots": 2 * (m + p - 1)}


def pipeline_schedule(n_stages: int = 4, n_micro: int = 6) -> Figure:
    """A GPipe schedule of ``n_stages`` stages and ``n_micro`` microbatches
    on a time axis, idle slots shaded; the title's fraction is
    ``zero.pipeline_bubble`` (chapter ``lecture-parallelism``)."""
    sched = gpipe_schedule(n_stages, n_micro)
    slots = sched["slots"]
    fig, ax = _canvas(8.0, 3.9)
    x0, width, h = 1.05, 6.8, 0.5
    dx = width / slots
    bubble = zero.pipeline_bubble(n_stages, n_micro)
    ratio = f"{n_stages - 1}/{n_micro + n_stages - 1}"
    title = (
        f"{n_stages} stages, {n_micro} microbatches: idle (hatched) "
        f"{ratio} = {100 * bubble:.0f} % of the time"
    )
    _text(ax, 4.0, 3.6, title, FONT)
    for s in range(n_stages):
        y = 2.85 - s * 0.6
        _text(ax, 0.5, y + h / 2, f"stage {s + 1}", FONT)
        for t in range(slots):
            x = x0 + t * dx
            kind = sched["busy"].get((s, t))
            if kind is None:
                _box(
                    ax,
                    x,
                    y,
                    dx,
                    h,
                    _LIGHT,
                    gid=f"idle-{s}-{t}",
                    hatch="//",
                    edgecolor=_GREY,
                    linewidth=0.5,
                )
                continue
            color = SKY if kind[0] == "F" else ORANGE
            _box(
                ax,
                x,
                y,
                dx,
                h,
                color,
                gid=f"{kind[0]}-{s}-{kind[1]}",
                linewidth=1.0,
            )
            _text(ax, x + dx / 2, y + h / 2, f"{kind[0]}{kind[1] + 1}", SMALL)
    _arrow(ax, (x0, 0.25), (x0 + width, 0.25), gid="time")
    _text(ax, 0.5, 0.25, "time", FONT)
    x = 1.4
    for label, color, hatch in (
        ("forward", SKY, None),
        ("backward", ORANGE, None),
        ("idle: the bubble", _LIGHT, "//"),
    ):
        _box(
            ax,
            x,
            0.5,
            0.3,
            0.3,
            color,
            hatch=hatch,
            linewidth=1.0,
            edgecolor=_GREY if hatch else _INK,
        )
        _text(ax, x + 0.4, 0.65, label, SMALL, ha="left")
        x += 0.75 + 0.105 * len(label)
    return fig


# ------------------------------------------------------ FlashAttention
def flash_tiling(n_q_tiles: int = 4, n_kv_tiles: int = 3) -> Figure:
    """FlashAttention's tiling (Algorithm 1, as ``llmbook.topics.attention
    .flash_attention_forward`` runs it; chapter ``lecture-attention-moe``):
    the score matrix cut into query tiles (rows) x key/value tiles
    (columns), key/value tiles in the outer loop and query tiles in the
    inner one, the running max ``m``, sum ``l`` and output ``O`` kept per
    row, and what sits in SRAM against HBM."""
    fig, ax = _canvas(8.0, 4.7)
    t = 0.62  # tile side, inches
    gx, gy = 1.45, 0.45
    cur_i, cur_j = 1, 1
    for i in range(n_q_tiles):
        y = gy + (n_q_tiles - 1 - i) * t
        _text(ax, gx - 0.32, y + t / 2, f"Q{i + 1}", FONT, color=BLUE)
        for j in range(n_kv_tiles):
            done = j < cur_j or (j == cur_j and i < cur_i)
            color = SKY if (i, j) == (cur_i, cur_j) else "white"
            _box(
                ax,
                gx + j * t,
                y,
                t,
                t,
                color,
                gid=f"tile-{i}-{j}",
                linewidth=1.0,
                hatch="//" if done else None,
                edgecolor=_INK,
            )
        for c, (name, w) in enumerate((("m", 0.4), ("ℓ", 0.4), ("O", 0.5))):
            xc = gx + n_kv_tiles * t + 0.15 + (0.0, 0.4, 0.8)[c]
            _box(
                ax,
                xc,
                y,
                w,
                t,
                _LIGHT if i != cur_i else SKY,
                gid=f"row-{name}-{i}",
                linewidth=1.0,
            )
    for c, name in enumerate(("m", "ℓ", "O")):
        xc = gx + n_kv_tiles * t + 0.15 + (0.2, 0.6, 1.05)[c]
        _text(ax, xc, gy + n_q_tiles * t + 0.2, name, FONT)
    for j in range(n_kv_tiles):
        _text(
            ax,
            gx + j * t + t / 2,
            gy + n_q_tiles * t + 0.2,
            f"K{j + 1}V{j + 1}",
            SMALL,
            color=GREEN,
        )
    grid_top = gy + n_q_tiles * t
    _arrow(
        ax,
        (gx, grid_top + 0.55),
        (gx + n_kv_tiles * t, grid_top + 0.55),
        GREEN,
        gid="outer-loop",
    )
    _text(
        ax,
        gx + n_kv_tiles * t / 2,
        grid_top + 0.8,
        "outer loop: K, V tiles",
        SMALL,
        color=GREEN,
    )
    _arrow(ax, (0.3, grid_top), (0.3, gy), BLUE, gid="inner-loop")
    _text(
        ax,
        0.62,
        gy + n_q_tiles * t / 2,
        "inner loop: Q tiles",
        SMALL,
        color=BLUE,
        rotation=90,
    )
    _text(
        ax,
        gx + n_kv_tiles * t / 2,
        0.18,
        "S: hatched done, blue in SRAM",
        SMALL,
    )
    _text(ax, gx + n_kv_tiles * t + 0.8, grid_top + 0.6, "per row", SMALL)
    # memories
    sx = 4.85
    _box(ax, sx, 2.55, 3.05, 1.85, "#eef6fb", gid="sram", edgecolor=BLUE)
    _text(
        ax,
        sx + 1.525,
        4.15,
        "SRAM (on chip, small)",
        FONT,
        weight="bold",
        color=BLUE,
    )
    for n, s in enumerate(
        (
            "Kⱼ, Vⱼ for the outer step",
            "Qᵢ, Oᵢ, mᵢ, ℓᵢ for the inner step",
            "Sᵢⱼ: one tile only",
        )
    ):
        _text(ax, sx + 0.12, 3.75 - 0.4 * n, s, SMALL, ha="left")
    _box(ax, sx, 0.2, 3.05, 1.6, "#f4f4f4", gid="hbm", edgecolor=_GREY)
    _text(ax, sx + 1.525, 1.55, "HBM (off chip, large)", FONT, weight="bold")
    _text(ax, sx + 0.12, 1.1, "Q, K, V, O, m, ℓ", SMALL, ha="left")
    _text(
        ax,
        sx + 0.12,
        0.6,
        "all of S: never written",
        SMALL,
        ha="left",
        gid="hbm-no-s",
    )
    _arrow(ax, (sx + 0.9, 1.85), (sx + 0.9, 2.5), _INK, gid="read")
    _text(ax, sx + 0.55, 2.17, "read", SMALL)
    _arrow(ax, (sx + 2.15, 2.5), (sx + 2.15, 1.85), _INK, gid="write")
    _text(ax, sx + 2.7, 2.17, "write", SMALL)
    return fig


# ----------------------------------------------------------- writing
DIAGRAMS = {
    "lora-factors": lora_factors,
    "induction-circuit": induction_circuit,
    "zero-partitions": zero_partitions,
    "pipeline-bubble": pipeline_schedule,
    "flash-tiling": flash_tiling,
}


def texts(fig: Figure) -> list[Text]:
    """Every visible, non-empty text of ``fig``."""
    return [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip()
    ]


def smallest_font_pt(fig: Figure) -> float:
    """The smallest font size, in points, of any text in ``fig``."""
    return min(t.get_fontsize() for t in texts(fig))


def text_problems(fig: Figure) -> list[str]:
    """Texts that stick out of the figure or overlap another text."""
    renderer = fig.canvas.get_renderer()
    fbox = fig.bbox
    boxes = [(t, t.get_window_extent(renderer)) for t in texts(fig)]
    out = []
    for t, b in boxes:
        if (
            b.x0 < fbox.x0 - 0.5
            or b.y0 < fbox.y0 - 0.5
            or b.x1 > fbox.x1 + 0.5
            or b.y1 > fbox.y1 + 0.5
        ):
            out.append(f"{t.get_text()!r} outside the figure")
    for n, (t, b) in enumerate(boxes):
        for u, c in boxes[n + 1 :]:
            if b.overlaps(c):
                out.append(f"{t.get_text()!r} overlaps {u.get_text()!r}")
    return out


def save_svg(fig: Figure, path) -> Path:
    """Write ``fig`` as SVG, the same bytes on every run (fixed hash salt,
    no date, text kept as text)."""
    path = Path(path)
    with mpl.rc_context({"svg.hashsalt": HASH_SALT, "svg.fonttype": "none"}):
        fig.savefig(path, format="svg", metadata={"Date": None})
    return path


def write_all(folder) -> list[Path]:
    """Write every diagram to ``folder/<name>.svg``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        save_svg(make(), folder / f"{name}.svg")
        for name, make in DIAGRAMS.items()
    ]
