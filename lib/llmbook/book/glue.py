"""A shim around ``myst_nb.glue`` so notebooks also run where myst-nb is
missing (Colab).

In the book build, ``glue`` stores a value in the notebook's outputs and the
prose pastes it with the ``{n}`` role (``llmbook.book.sphinx_ext``). Where
myst-nb is missing the value is printed as ``name = value``, so a reader of the
notebook sees every number the prose would quote. A matplotlib figure is
shown exactly once, in the cell that glues it, and then closed, so the inline
backend does not show it a second time. ``glue({...})`` glues several values
in one call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

try:  # pragma: no cover - which branch runs depends on the environment
    from myst_nb import glue as _myst_glue
except ImportError:  # pragma: no cover
    _myst_glue = None

GLUED: dict[str, Any] = {}


def _is_figure(value: Any) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Figure)


_MISSING = object()


def glue(
    name: str | dict[str, Any], value: Any = _MISSING, display: bool = False
) -> None:
    """Record ``value`` under ``name`` for the prose; return nothing (it is a
    side effect).

    ``glue({"a": x, "fig_b": fig})`` glues each item in order, exactly as
    ``glue("a", x)`` then ``glue("fig_b", fig)`` would: one call per cell.

    Args:
        name: the key the chapter pages paste (``{n}`notebook:name```), or a
            dict of keys and values (then ``value`` is left out).
        value: a string (pasted as it is), a number (pasted via its repr) or a
            matplotlib
            figure (shown once here, pasted as an image, then closed).
        display: also show a non-figure value as the cell's output (as
            ``myst_nb.glue`` does).

    Raises ``ValueError`` for an empty or non-string name (or dict key), a
    dict together with a ``value``, or a name without a ``value``; nothing is
    glued then.
    """
    if isinstance(name, dict):
        if value is not _MISSING:
            raise ValueError("pass either a dict or a name and a value")
        for key in name:
            _check_name(key)
        for key, item in name.items():
            _glue_one(key, item, display)
        return
    _check_name(name)
    if value is _MISSING:
        raise ValueError(f"no value given for {name!r}")
    _glue_one(name, value, display)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")


def _glue_one(name: str, value: Any, display: bool) -> None:
    GLUED[name] = value
    if _is_figure(value):
        import matplotlib.pyplot as plt

        if _myst_glue is not None:
            _display_glued_figure(name, value)
        else:
            try:
                from IPython.display import display as ipy_display

                ipy_display(value)
            except (
                ImportError
            ):  # pragma: no cover - plain Python without IPython
                pass
        plt.close(value)
        return
    if _myst_glue is not None:
        _myst_glue(name, value, display=display)
    else:
        print(f"{name} = {value}")


def figure_output_metadata(name: str, fig: Any) -> dict[str, Any]:
    """The extra output metadata of a glued figure: ``{"scrapbook": ...}``
    as ``myst_nb.glue`` writes it (``name``, ``mime_prefix`` ``""``: the
    figure is shown) and ``{"llmbook": {"alt": ..., "caption": ...}}``, the
    alt text (``llmbook.book.figtext.describe``) and the short caption
    (``short_caption``) that ``llmbook.book.sphinx_ext`` puts on the
    notebook page and on the chapter pages that paste the figure.
    """
    from llmbook.book.figtext import describe, short_caption

    return {
        "scrapbook": {"name": name, "mime_prefix": ""},
        "llmbook": {"alt": describe(fig), "caption": short_caption(fig)},
    }


def _display_glued_figure(name: str, fig: Any) -> None:
    # What ``myst_nb.glue(name, fig, display=True)`` does, with the alt
    # text and caption added to the output's metadata.
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    mimebundle, metadata = format_display_data(fig)
    metadata = {**metadata, **figure_output_metadata(name, fig)}
    ipy_display(mimebundle, raw=True, metadata=metadata)


def has_myst_nb() -> bool:
    """True when the real ``myst_nb.glue`` is in use."""
    return _myst_glue is not None


def read_glued(notebook: str | Path | dict) -> dict[str, str]:
    """Return ``{key: text/plain}`` for every value glued in an executed
    notebook.

    Accepts a path to an ``.ipynb`` file or an already loaded notebook dict.
    Strings come back without their quotes, as the book pastes them.
    """
    from ast import literal_eval

    nb = (
        notebook
        if isinstance(notebook, dict)
        else json.loads(Path(notebook).read_text())
    )
    found: dict[str, str] = {}
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            scrap = out.get("metadata", {}).get("scrapbook", {})
            key = scrap.get("name")
            if key is None:
                continue
            text = out.get("data", {}).get(
                scrap.get("mime_prefix", "") + "text/plain", ""
            )
            text = "".join(text) if isinstance(text, list) else text
            try:
                value = literal_eval(text)
                text = value if isinstance(value, str) else text
            except (SyntaxError, ValueError):
                pass
            found[key] = text
    return found
