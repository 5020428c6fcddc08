"""Accessibility fixes to the built site, registered by
``llmbook.book.sphinx_ext``: what axe-core (WCAG 2.1 A/AA) found in the
theme's and the extensions' output, fixed where it is written.

The rest of the fixes live beside the pages: ``_static/a11y.js`` names the
sidebar's chevrons, the search, colour-mode and solution buttons and opens a
solution that a link points into; ``_static/llmbook.css`` (section
"Accessibility") sets link contrast in exercise and solution boxes and
padding in notebook tables; ``_config.yml`` takes MathJax's equations out of
the tab order. ``tests/test_a11y.py`` runs axe-core on every page.
"""

from __future__ import annotations

import re
from pathlib import Path

# docutils writes each bibliography entry with ARIA's deprecated role
# ``doc-biblioentry`` inside a ``role="list"``: a list whose children are not
# list items (axe: aria-deprecated-role, aria-required-children).
_BIBLIOENTRY = re.compile(
    r'(<div class="citation"[^>]*?) role="doc-biblioentry"'
)

# Theme template fragments that Sphinx copies into _static/ as if they were
# pages: no <title>, no lang, and links that 404 (axe: document-title,
# html-has-lang).
TEMPLATE_FRAGMENTS = "*webpack-macros.html"


def fix_bibliography_roles(html: str) -> str:
    """``html`` with each ``<div class="citation" role="doc-biblioentry">``
    given ``role="listitem"`` instead: the items of the ``role="list"`` that
    docutils writes around a bibliography (``chapters/sources.md``).
    Everything else is returned unchanged."""
    return _BIBLIOENTRY.sub(r'\1 role="listitem"', html)


def _bibliography_roles(app, pagename, templatename, context, doctree):
    if "body" in context and "doc-biblioentry" in context["body"]:
        context["body"] = fix_bibliography_roles(context["body"])


def delete_template_fragments(outdir: Path) -> list[Path]:
    """Delete the theme's ``_static/*webpack-macros.html`` template fragments
    from a built site at ``outdir``; return the files deleted."""
    gone = sorted((Path(outdir) / "_static").glob(TEMPLATE_FRAGMENTS))
    for path in gone:
        path.unlink()
    return gone


def _delete_fragments(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        delete_template_fragments(Path(app.outdir))


def setup(app) -> None:
    """Connect the fixes to a Sphinx ``app`` (from ``sphinx_ext.setup``)."""
    app.connect("html-page-context", _bibliography_roles)
    app.connect("build-finished", _delete_fragments)
