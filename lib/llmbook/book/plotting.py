"""One plotting style for the whole book: readable fonts, a colour-blind-safe
palette,
labelled axes with units, log scales where values span decades."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

# Okabe & Ito (2008), "Color Universal Design": distinguishable with the common
# colour-vision deficiencies.
PALETTE = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
]

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "legend.frameon": False,
    "lines.linewidth": 2.0,
    "image.cmap": "viridis",
}


def use_style(image_format: str = "svg") -> None:
    """Apply the book's matplotlib style to every later figure in this session.

    Inside a Jupyter kernel, figures are also rendered as ``image_format``:
    ``"svg"`` (the default: sharp at any zoom and in print) or ``"retina"``
    (PNG at twice the resolution, for figures with too many points for SVG).
    """
    if image_format not in ("svg", "retina"):
        raise ValueError(
            f"image_format must be 'svg' or 'retina', got {image_format!r}"
        )
    mpl.rcParams.update(STYLE)
    mpl.rcParams["svg.fonttype"] = (
        "none"  # text stays text in the SVG: smaller, searchable
    )
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # pragma: no cover - plain Python
        return
    if get_ipython() is not None:
        set_matplotlib_formats(image_format)


def spans_decades(values, decades: float = 2.0) -> bool:
    """True when the positive ``values`` span at least ``decades`` powers of
    ten (use a log axis).
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and np.log10(v.max() / v.min()) >= decades


# Issue 20: the smallest text of a figure, in CSS px, in the page's column
# at each width (tests/test_phone.py measures the built pages).
MIN_TEXT_PX = {390: 6.0, 1280: 9.0}
# The figure column in CSS px at each viewport width (a chapter's column).
COLUMN_PX = {390: 374.0, 1280: 621.0}


def smallest_text_px(fig, column_px: float = COLUMN_PX[390]):
    """The smallest text of ``fig`` as a reader sees it: ``(px, text)``,
    the font size in CSS px when the page shows the figure in a column
    ``column_px`` wide (:data:`COLUMN_PX`), and that text.

    The figure is saved as the book's SVG is (text kept as text, tight
    bounding box, as Jupyter's inline backend does); the image is scaled to
    the column but never past its natural size (1 pt = 4/3 px), and every
    text run counts, the superscripts of a log axis's ticks (70 % of the
    tick label) included. ``tests/test_phone.py`` measures the same in the
    built pages; the figures' own tests use it against
    :data:`MIN_TEXT_PX`. Raises ``ValueError`` for a figure without text.
    """
    import io
    import re

    buffer = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    width = float(re.search(r'viewBox="0 0 ([\d.]+)', svg).group(1))
    runs = [
        (float(size), text.strip())
        for size, text in re.findall(
            r"font-size: ([\d.]+)px[^>]*>([^<]*)<", svg
        )
        if text.strip()
    ]
    if not runs:
        raise ValueError("fig has no text to measure")
    size, text = min(runs)
    shown = min(float(column_px), width * 4 / 3)
    return size * shown / width, text


def legible(fig) -> bool:
    """True when the smallest text of ``fig`` (:func:`smallest_text_px`)
    reaches :data:`MIN_TEXT_PX` both on a 390 px phone and at 1280 px."""
    return all(
        smallest_text_px(fig, COLUMN_PX[w])[0] >= MIN_TEXT_PX[w]
        for w in MIN_TEXT_PX
    )


def new_axes(
    xlabel: str,
    ylabel: str,
    title: str,
    *,
    logx: bool = False,
    logy: bool = False,
    figsize: tuple[float, float] | None = None,
):
    """Return ``(fig, ax)`` with labelled axes and a title; the labels must
    carry units.

    Raises ``ValueError`` for an empty label, so an unlabelled figure cannot
    slip in.
    """
    for arg, text in (
        ("xlabel", xlabel),
        ("ylabel", ylabel),
        ("title", title),
    ):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{arg} must be a non-empty string")
    use_style()
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    return fig, ax


def heatmap(
    ax,
    matrix,
    *,
    xlabels=None,
    ylabels=None,
    title: str = "",
    signed: bool | None = None,
    annotate: bool = True,
    fmt: str = "{:.2f}",
    vmin: float | None = None,
    vmax: float | None = None,
    text_size: float = 8,
):
    """Draw a matrix on ``ax``; signed data get a diverging map centred at 0,
    others viridis.

    Pass the same ``vmin``/``vmax`` to every panel that is meant to be
    compared, so they share one colour scale (for signed data the scale is
    symmetric, ``±max(|vmin|, |vmax|)``). Returns the image so a colour bar can
    be added. Annotates cells (``text_size`` pt) when the matrix is small.
    """
    M = np.asarray(matrix, dtype=float)
    if M.ndim != 2:
        raise ValueError(f"matrix must be 2-dimensional, got shape {M.shape}")
    signed = bool(np.nanmin(M) < 0) if signed is None else signed
    if signed:
        given = [abs(v) for v in (vmin, vmax) if v is not None]
        bound = max(given) if given else (float(np.nanmax(np.abs(M))) or 1.0)
        im = ax.imshow(M, cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        im = ax.imshow(M, cmap="viridis", vmin=vmin, vmax=vmax)
    lo, hi = im.get_clim()
    ax.grid(False)
    if xlabels is not None:
        ax.set_xticks(range(M.shape[1]), xlabels)
    if ylabels is not None:
        ax.set_yticks(range(M.shape[0]), ylabels)
    if title:
        ax.set_title(title, fontsize=10)
    if annotate and M.size <= 100:
        for (i, j), v in np.ndenumerate(M):
            if np.isfinite(v):
                t = (v - lo) / ((hi - lo) or 1.0)
                light = abs(2 * t - 1) > 0.6 if signed else t < 0.5
                ax.text(
                    j,
                    i,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=text_size,
                    color="white" if light else "black",
                )
    return im


def heatmap_grid(
    panels: dict,
    *,
    ncols: int,
    xlabel: str,
    ylabel: str,
    vmax: float | None = None,
    figsize: tuple[float, float] | None = None,
    text_size: float = 8,
):
    """Matrices side by side on one colour scale: one :func:`heatmap` panel
    per entry of ``panels`` (title -> 2-D matrix), ``ncols`` to a row, the
    x label under every panel and the y label on the first of each row.

    ``vmax`` (default: the largest ``|value|`` of the first panel) bounds the
    shared scale ``[-vmax, vmax]``; ``text_size`` is the cells' numbers
    (pt). Returns the figure. Used for the reconstructions of the 4 x 4
    example in formats-linear.
    """
    import math

    if not panels:
        raise ValueError("panels must hold at least one matrix")
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    if vmax is None:
        vmax = float(
            np.nanmax(np.abs(np.asarray(next(iter(panels.values())))))
        )
    use_style()
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    axes = axes.ravel()
    for ax, (title, m) in zip(axes, panels.items()):
        heatmap(ax, m, title=title, vmin=-vmax, vmax=vmax, text_size=text_size)
    for ax in axes:
        ax.set_xlabel(xlabel)
    for ax in axes[::ncols]:
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig


# Importing the plotting module sets the book style (and SVG output in a
# kernel).
use_style()


# Alt text and short caption of a figure (no style set there): re-exported
# so an author finds them beside the figures they describe.
from llmbook.book.figtext import describe, set_alt, short_caption  # noqa: E402
