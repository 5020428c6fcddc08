"""Accessibility: axe-core's WCAG 2.0/2.1 A and AA rules find nothing on any
page of the built site, in light mode (every rule) and in dark mode (colour
contrast), at 1280x900. axe-core is the ``axe.min.js`` that the
``axe-playwright-python`` wheel bundles (pinned in requirements.txt); it is
injected into each page after MathJax has typeset it and the book's
``_static/a11y.js`` has run.

The checks at the end need the build but no browser (the theme's template
fragments are not published, every page loads ``a11y.js``) or neither (the
fixes of ``llmbook.book.a11y`` on hand-written input)."""

from pathlib import Path

import pytest

from llmbook.book import a11y
from conftest import ROOT, built_docnames
from test_browser import browser, server  # noqa: F401 (fixtures)

BROWSER = [pytest.mark.book, pytest.mark.browser]

WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# axe marks this WCAG 2.1 A rule experimental (off unless asked for).
EXPERIMENTAL = ["label-content-name-mismatch"]
# Every page of the toc and the pages Sphinx adds: the index, the search
# page and sphinx-proof's Proof Index.
PAGES = built_docnames() + ["genindex", "search", "prf-prf"]

# What fixed each rule once (see the "Accessibility" notes in
# lib/llmbook/book/a11y.py): where to look when it comes back.
FIXES = {
    "summary-name": "the sidebar's <summary> chevrons are named by "
    "_static/a11y.js (nameSummaries)",
    "label-content-name-mismatch": "_static/a11y.js gives the search and "
    "colour-mode buttons their visible text as name, and drops myst-nb's "
    "aria-label on 'Show code cell source'",
    "color-contrast": "_static/llmbook.css, section Accessibility: link "
    "colour in exercise and solution boxes",
    "aria-deprecated-role": "llmbook.book.a11y fixes sphinxcontrib-bibtex's "
    "bibliography roles after the build",
    "aria-required-children": "llmbook.book.a11y fixes sphinxcontrib-bibtex's "
    "bibliography roles after the build",
    "document-title": "a page without <title>: a template fragment that "
    "llmbook.book.a11y should delete after the build?",
    "html-has-lang": "a page without lang: a template fragment that "
    "llmbook.book.a11y should delete after the build?",
}


def _axe_source() -> str:
    import axe_playwright_python

    path = Path(axe_playwright_python.__file__).with_name("axe.min.js")
    return path.read_text(encoding="utf-8")


def run_axe(page, values, rules=None) -> list[dict]:
    """The violations axe-core finds on ``page``: one dict per rule with its
    id, help text and the CSS selector of each failing node. ``values`` are
    axe tags; ``rules`` restricts the run to those rule ids."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=_axe_source())
    options = {
        "runOnly": {"type": "tag", "values": values},
        "rules": {r: {"enabled": True} for r in EXPERIMENTAL},
    }
    if rules:
        options = {"runOnly": {"type": "rule", "values": rules}}
    return page.evaluate(
        """async options => {
            const result = await axe.run(document, options);
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(' ')),
            }));
        }""",
        options,
    )


def describe(violations: list[dict], mode: str) -> str:
    """One line per failing node: rule, selector, and the fix to look at."""
    lines = []
    for v in violations:
        fix = FIXES.get(v["id"], v["help"])
        for target in v["targets"]:
            lines.append(f"[{mode}] {v['id']} at {target}: {fix}")
    return "\n".join(lines)


def _open(browser, server, doc):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server}/{doc}.html", wait_until="load")
    # Wait until MathJax has typeset the page (it adds its own markup).
    page.evaluate(
        """async () => {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise)
                await MathJax.startup.promise;
        }"""
    )
    return page


@pytest.mark.parametrize("doc", PAGES)
@pytest.mark.book
@pytest.mark.browser
def test_axe_wcag_aa(server, browser, doc):  # noqa: F811
    page = _open(browser, server, doc)
    try:
        light = run_axe(page, WCAG)
        # MathJax leaves no equation in the tab order (_config.yml).
        tab_stops = page.locator('mjx-container[tabindex="0"]').count()
        # Each solution's button says which exercise it opens.
        names = page.eval_on_selector_all(
            ".solution button.toggle-button",
            "bs => bs.map(b => b.getAttribute('aria-label'))",
        )
        page.evaluate(
            """async () => {
                document.documentElement.dataset.theme = 'dark';
                document.documentElement.dataset.mode = 'dark';
                // Let the theme's colour transitions start, then finish.
                for (let i = 0; i < 2; i++)
                    await new Promise(r => requestAnimationFrame(r));
                await new Promise(r => setTimeout(r, 300));
                await Promise.all(
                    document.getAnimations().map(a => a.finished));
            }"""
        )
        dark = run_axe(page, WCAG, rules=["color-contrast"])
    finally:
        page.close()
    report = describe(light, "light") + "\n" + describe(dark, "dark")
    assert light == [] and dark == [], (
        f"axe-core (WCAG 2.1 A/AA) on {doc}.html:\n{report.strip()}"
    )
    assert tab_stops == 0, f"{tab_stops} equations are tab stops"
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert repeated == [], f"solution buttons that share a name: {repeated}"


@pytest.mark.book
@pytest.mark.browser
def test_a11y_deep_link_opens_solution(server, browser):  # noqa: F811
    """A link to an id inside a collapsed solution opens that solution and
    shows the target (``openHashTarget`` in ``_static/a11y.js``)."""
    from bs4 import BeautifulSoup

    from conftest import HTML

    html = (HTML / "chapters" / "fermi.html").read_text(encoding="utf-8")
    soup = BeautifulSoup(html, "html.parser")
    inside = soup.select_one(".solution.dropdown [id]:not(section)")
    assert inside is not None, "fermi.html has no id inside a solution"
    target = inside["id"]

    def land(block_js):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        if block_js:
            page.route("**/a11y.js*", lambda route: route.abort())
        try:
            page.goto(
                f"{server}/chapters/fermi.html#{target}", wait_until="load"
            )
            page.wait_for_timeout(300)
            return page.evaluate(
                """id => {
                    const el = document.getElementById(id);
                    const r = el.getBoundingClientRect();
                    return {
                        hidden: !!el.closest('.toggle-hidden'),
                        visible: r.height > 0 && r.top < innerHeight
                            && r.bottom > 0,
                    };
                }""",
                target,
            )
        finally:
            page.close()

    # Without the script the target stays in a closed solution: the check
    # below can fail.
    assert land(block_js=True)["hidden"] is True
    state = land(block_js=False)
    assert state["hidden"] is False and state["visible"], (target, state)


def test_no_template_fragments_are_published(built_book):
    """The theme's ``_static/*webpack-macros.html`` fragments (no title, no
    lang, links that 404) are deleted after the build."""
    assert sorted(built_book.glob("**/" + a11y.TEMPLATE_FRAGMENTS)) == []


def test_every_page_loads_a11y_js(built_book):
    missing = [
        doc
        for doc in PAGES
        if "_static/a11y.js"
        not in (built_book / f"{doc}.html").read_text(encoding="utf-8")
    ]
    assert missing == []


def test_bibliography_entries_are_list_items(built_book):
    html = (built_book / "chapters" / "sources.html").read_text("utf-8")
    assert "doc-biblioentry" not in html
    assert html.count('role="listitem"') >= html.count('class="citation"')


def test_fix_bibliography_roles_by_hand():
    html = (
        '<div role="list" class="citation-list">\n'
        '<div class="citation" id="id40" role="doc-biblioentry">\n'
        '<span class="label">[A]</span><p>A paper.</p></div>\n'
        '<p role="doc-biblioentry">left alone</p></div>'
    )
    assert a11y.fix_bibliography_roles(html) == html.replace(
        'id="id40" role="doc-biblioentry"', 'id="id40" role="listitem"'
    )


def test_delete_template_fragments(tmp_path):
    static = tmp_path / "_static"
    static.mkdir()
    for name in ["webpack-macros.html", "sbt-webpack-macros.html", "a.js"]:
        (static / name).write_text("x")
    gone = a11y.delete_template_fragments(tmp_path)
    assert [p.name for p in gone] == [
        "sbt-webpack-macros.html",
        "webpack-macros.html",
    ]
    assert [p.name for p in static.iterdir()] == ["a.js"]


def test_a11y_js_is_in_the_book_static_folder():
    """Jupyter Book loads every ``_static/*.js`` on every page."""
    js = (ROOT / "_static" / "a11y.js").read_text(encoding="utf-8")
    for fix in ["nameSummaries", "matchNamesToText", "openHashTarget"]:
        assert f"function {fix}" in js
