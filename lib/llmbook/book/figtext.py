"""Words for a figure: the alt text and the short caption a glued matplotlib
figure carries into the site (issue 20: figures that explain themselves).

``describe(fig)`` reads what the figure draws (panels; per panel its title,
the kind of plot, y label against x label, log scales, legend entries) and
says it in plain words, TeX written as readable text. ``set_alt(fig, text)``
lets an author say it better. ``llmbook.book.glue`` stores both in the
glued output's metadata; ``llmbook.book.sphinx_ext`` puts them on the page.

This module sets no style (``llmbook.book.plotting`` does, on import), so
gluing a figure never changes how a notebook's later figures look.
"""

from __future__ import annotations

import re

_ALT_ATTRIBUTE = "_llmbook_alt"

# TeX commands the book's labels use, as the characters they draw.
_TEX = {
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "Delta": "Δ",
    "epsilon": "ε",
    "varepsilon": "ε",
    "eta": "η",
    "theta": "θ",
    "kappa": "κ",
    "lambda": "λ",
    "mu": "μ",
    "nu": "ν",
    "pi": "π",
    "rho": "ρ",
    "sigma": "σ",
    "Sigma": "Σ",
    "tau": "τ",
    "phi": "φ",
    "chi": "χ",
    "psi": "ψ",
    "omega": "ω",
    "ell": "ℓ",
    "infty": "∞",
    "times": "×",
    "cdot": "·",
    "approx": "≈",
    "sim": "~",
    "propto": "∝",
    "leq": "≤",
    "le": "≤",
    "geq": "≥",
    "ge": "≥",
    "pm": "±",
    "to": "→",
    "rightarrow": "→",
    "sqrt": "√",
    "star": "*",
    "ast": "*",
    "prime": "′",
    "top": "ᵀ",
    "%": "%",
    ",": " ",
    ";": " ",
    ":": " ",
    "!": "",
    " ": " ",
}


def plain_text(text: str) -> str:
    """``text`` with its mathtext (``$...$``) written as readable characters.

    ``"$\\eta^*$ against $B$ (tokens)"`` becomes ``"η^* against B
    (tokens)"``: Greek letters and common symbols as Unicode, font commands
    (``\\mathrm{...}``) and braces dropped, no dollars. Used by
    :func:`describe` and :func:`short_caption`.
    """

    def math(match: re.Match) -> str:
        body = match.group(1)
        body = re.sub(
            r"\\(?:mathrm|mathbf|mathit|mathsf|mathtt|text|textrm|"
            r"operatorname|mathcal|boldsymbol|rm|bf|it)\b\s*",
            "",
            body,
        )
        body = re.sub(
            r"\\([A-Za-z]+|.)",
            lambda m: _TEX.get(m.group(1), m.group(1)),
            body,
        )
        return body.replace("{", "").replace("}", "")

    text = re.sub(r"\$([^$]*)\$", math, str(text))
    return re.sub(r"\s+", " ", text.replace("$", "")).strip()


def set_alt(fig, text: str) -> None:
    """Give ``fig`` the alt text ``text``, in place of what :func:`describe`
    would compute (a figure whose point its axes do not say).

    Raises ``ValueError`` for an empty ``text``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    setattr(fig, _ALT_ATTRIBUTE, text.strip())


def _panels(fig) -> list:
    # Colour bars are axes too; they belong to the panel they annotate. A
    # twin axes (``ax.twinx()``) shares its panel's place: it is described
    # with that panel, as its right (or top) axis.
    axes = [
        ax
        for ax in fig.axes
        if ax.get_label() != "<colorbar>"
        and ax.get_visible()
        and not _blank(ax)
    ]
    panels, places = [], []
    for ax in axes:
        place = tuple(round(v, 6) for v in ax.get_position().bounds)
        if place not in places:
            places.append(place)
            panels.append(ax)
    return panels


def _blank(ax) -> bool:
    # an axes switched off with nothing drawn in it (the spare cell of a
    # grid of panels): not a panel
    return not ax.axison and not (
        ax.images or ax.lines or ax.collections or ax.patches or ax.texts
    )


def _categories(ax, container) -> list[str]:
    # the named categories along a bar chart's bars (strings given as x, or
    # tick labels set as text), in order; [] for a numeric axis
    from matplotlib.ticker import FixedFormatter, FuncFormatter

    horizontal = getattr(container, "orientation", None) == "horizontal"
    axis = ax.yaxis if horizontal else ax.xaxis
    mapping = getattr(axis.get_units(), "_mapping", None)
    if mapping:
        return [plain_text(str(k)) for k in mapping]
    formatter = axis.get_major_formatter()
    if isinstance(formatter, (FixedFormatter, FuncFormatter)):  # set as text
        locs = axis.get_ticklocs()
        names = [plain_text(str(formatter(v, i))) for i, v in enumerate(locs)]
        return [t for t in names if t]
    return []


def _twins(ax) -> list:
    place = tuple(round(v, 6) for v in ax.get_position().bounds)
    return [
        other
        for other in ax.figure.axes
        if other is not ax
        and other.get_label() != "<colorbar>"
        and other.get_visible()
        and tuple(round(v, 6) for v in other.get_position().bounds) == place
    ]


def _kind(ax) -> str:
    from matplotlib.collections import PathCollection, PolyCollection
    from matplotlib.container import BarContainer, ErrorbarContainer
    from matplotlib.patches import StepPatch

    kinds = []
    if ax.images:
        shape = ax.images[0].get_array().shape
        kinds.append(
            f"{shape[0]} by {shape[1]} image" if len(shape) >= 2 else "image"
        )
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    if bars:
        names = _categories(ax, bars[0])
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        kinds.append(f"bar chart ({shown})" if names else "bar chart")
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    if steps:
        kinds.append("histogram" if len(steps) == 1 else "step histograms")
    drawn = [
        line
        for line in ax.get_lines()
        if len(line.get_xdata()) > 2 and line.get_linestyle() != "None"
    ]
    if drawn:
        # no count: reference lines and error bars are lines too
        kinds.append("line plot" if len(drawn) == 1 else "lines")
    marked = any(
        line.get_linestyle() == "None" for line in ax.get_lines()
    ) or any(isinstance(c, PathCollection) for c in ax.collections)
    if marked or any(isinstance(c, ErrorbarContainer) for c in ax.containers):
        kinds.append("markers")
    if any(isinstance(c, PolyCollection) for c in ax.collections):
        kinds.append("shaded bands")
    if not kinds and ax.texts:
        kinds.append("text")
    return " with ".join(kinds[:2]) if kinds else "empty panel"


def _panel(ax) -> str:
    parts = []
    title = plain_text(ax.get_title())
    kind = _kind(ax)
    y, x = plain_text(ax.get_ylabel()), plain_text(ax.get_xlabel())
    words = (
        f"{kind} of {y} against {x}"
        if x and y
        else f"{kind} of {y}"
        if y
        else f"{kind} against {x}"
        if x
        else kind
    )
    if title:
        words = f"{title}: {words}"
    logs = [
        name
        for name, scale in (("x", ax.get_xscale()), ("y", ax.get_yscale()))
        if scale != "linear"
    ]
    if logs:
        words += f", {' and '.join(logs)} on a log scale"
    for twin in _twins(ax):
        y2 = plain_text(twin.get_ylabel())
        if y2:
            log = " on a log scale" if twin.get_yscale() != "linear" else ""
            words += f"; on the right axis, {_kind(twin)} of {y2}{log}"
    parts.append(words)
    legends = [a.get_legend() for a in (ax, *_twins(ax))]
    legends += [
        legend for legend in ax.figure.legends if len(_panels(ax.figure)) == 1
    ]
    entries = []
    for legend in legends:
        if legend is None:
            continue
        entries += [plain_text(t.get_text()) for t in legend.get_texts()]
    entries = [e for e in entries if e]
    if entries:
        shown = "; ".join(entries[:6])
        more = len(entries) - 6
        if more > 0:
            shown += f"; and {more} more"
        parts.append(f"Legend: {shown}")
    return ". ".join(parts)


def _suptitle(fig) -> str:
    suptitle = getattr(fig, "_suptitle", None)
    return plain_text(suptitle.get_text()) if suptitle is not None else ""


def describe(fig) -> str:
    """The alt text of a matplotlib figure: what it shows, in plain words.

    Args:
        fig: a ``matplotlib.figure.Figure``.

    Returns the text :func:`set_alt` gave ``fig`` if any; else one sentence
    per panel: its title, the kind of plot (line plot, markers, bar chart,
    image, shaded bands), the y label against the x label, which axes are
    logarithmic and the legend's entries, after the suptitle and the number
    of panels when there are several. Mathtext is written as plain
    characters (:func:`plain_text`). ``llmbook.book.glue`` stores it with
    every glued figure (the ``alt`` of its image on the notebook page and
    on every chapter page that pastes it).
    """
    given = getattr(fig, _ALT_ATTRIBUTE, None)
    if given:
        return given
    panels = _panels(fig)
    head = _suptitle(fig)
    if not panels:
        return f"Figure: {head}." if head else "An empty figure."
    if len(panels) == 1:
        text = _panel(panels[0])
        if text.split()[0].isalpha() and text[0].isascii():
            # "loss ..." -> "Loss ..."; η stays η, backbone.17 stays
            text = text[0].upper() + text[1:]
        text += "."
        return f"{head}. {text}" if head else text
    sentences = [f"{head}. " if head else ""]
    sentences.append(f"Figure of {len(panels)} panels.")
    for i, ax in enumerate(panels, start=1):
        sentences.append(f" Panel {i}, {_panel(ax)}.")
    return "".join(sentences).strip()


def short_caption(fig) -> str:
    """A short caption for ``fig``: its suptitle, else its panels' titles
    (joined by ``"; "``), else ``"<y label> against <x label>"`` of the
    first panel; mathtext as plain characters. The caption of a glued
    figure on its notebook page (``llmbook.book.sphinx_ext``).
    """
    head = _suptitle(fig)
    if head:
        return head
    panels = _panels(fig)
    titles = [plain_text(ax.get_title()) for ax in panels]
    titles = [t for t in titles if t]
    if titles:
        return "; ".join(titles)
    for ax in panels:
        y, x = plain_text(ax.get_ylabel()), plain_text(ax.get_xlabel())
        if x and y:
            return f"{y} against {x}"
    return describe(fig)
