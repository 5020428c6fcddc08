"""The built site on a 390 px phone (viewport 390 x 844), in headless
Chromium: no page scrolls sideways, inline maths and figures are never
clipped, every figure is a link to its own image (tap to open it full-screen
and zoom), and the smallest text of each figure, measured at 1280 px and at 390 px, is
written to ``_build/figure_text.json`` and is at least :data:`MIN_TEXT_PX`
(issue 20).

Reuses the ``server`` and ``browser`` fixtures of ``test_browser.py``.
"""

import json

import pytest

from conftest import BUILD, built_docnames
from llmbook.book.plotting import MIN_TEXT_PX
from test_browser import browser, server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.book, pytest.mark.browser]

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

OPEN_ALL = """() => {
    document.querySelectorAll('.toggle-hidden')
        .forEach(e => e.classList.remove('toggle-hidden'));
    document.querySelectorAll('details').forEach(d => { d.open = true; });
}"""

# The elements that stick out past the right edge of the viewport and are
# not inside a box that clips or scrolls them, outermost first: the first
# is the one that widens the page.
WIDEST = """() => {
    const W = document.documentElement.clientWidth;
    const name = el => el.tagName.toLowerCase()
        + (el.className && typeof el.className === 'string'
           ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
    // inside a box that clips or scrolls, or fixed to the viewport (the
    // theme's off-canvas sidebars): it cannot widen the page
    const clipped = el => {
        if (getComputedStyle(el).position === 'fixed') return true;
        for (let a = el.parentElement; a && a !== document.body;
             a = a.parentElement) {
            const style = getComputedStyle(a);
            if (style.overflowX !== 'visible' || style.position === 'fixed')
                return true;
        }
        return false;
    };
    const out = [];
    for (const el of document.body.querySelectorAll('*')) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.right <= W + 0.5 || clipped(el)) continue;
        const p = el.parentElement.getBoundingClientRect();
        if (p.right > W + 0.5 && el.parentElement !== document.body) continue;
        out.push(`${name(el)} (right edge ${Math.round(r.right)} px): `
                 + el.textContent.trim().slice(0, 60));
    }
    return out.slice(0, 3);
}"""

# Inline maths whose glyphs are wider than its box and that does not scroll:
# the theme sets overflow: hidden on span.math, which cuts it off unseen.
CLIPPED_MATH = """() => [...document.querySelectorAll('main span.math')]
    .filter(el => {
        const glyphs = el.querySelector('mjx-math');
        return glyphs && glyphs.getBoundingClientRect().width
                > el.getBoundingClientRect().width + 0.5
            && !['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
    })
    .map(el => el.textContent.slice(0, 60))"""

# Images cut off by a box that clips its overflow (a solution or admonition
# box with overflow: hidden): the part of the image outside that box, in px.
CLIPPED_IMAGES = """() => {
    const out = [];
    for (const img of document.querySelectorAll('article.bd-article img')) {
        const r = img.getBoundingClientRect();
        if (r.width === 0) continue;
        for (let a = img.parentElement; a && a !== document.body;
             a = a.parentElement) {
            if (getComputedStyle(a).overflowX === 'visible') continue;
            const b = a.getBoundingClientRect();
            const cut = Math.max(b.left - r.left, 0)
                + Math.max(r.right - b.right, 0);
            if (cut > 0.5)
                out.push(`${img.src.split('/').pop().slice(0, 16)}: `
                         + `${Math.round(cut)} px cut by `
                         + `${a.tagName.toLowerCase()}.${a.className}`);
            break;
        }
    }
    return out;
}"""

# Every image of the article with the link around it.
IMAGE_LINKS = """() => [...document.querySelectorAll('article.bd-article img')]
    .map(img => ({src: img.src, href: img.closest('a') ?
                  img.closest('a').href : null}))"""

# For every image of the article: its displayed width and the smallest font
# size of its SVG's text in CSS px as shown. The SVG is fetched, put in the
# page (off-screen) at the image's displayed size, and each text run's
# font size is scaled by its transform to the screen (viewBox included).
FIGURE_TEXT = """async () => {
    const out = [];
    for (const img of document.querySelectorAll('article.bd-article img')) {
        const width = img.getBoundingClientRect().width;
        const height = img.getBoundingClientRect().height;
        const entry = {image: img.src.split('/').pop(), width: width,
                       min_px: null, text_runs: 0};
        out.push(entry);
        if (!img.src.endsWith('.svg') || width === 0) continue;
        const source = await (await fetch(img.src)).text();
        const parsed = new DOMParser()
            .parseFromString(source, 'image/svg+xml');
        const svg = document.importNode(parsed.documentElement, true);
        svg.setAttribute('width', width);
        svg.setAttribute('height', height);
        const host = document.createElement('div');
        host.style.cssText = 'position:absolute;left:-30000px;top:0';
        host.appendChild(svg);
        document.body.appendChild(host);
        for (const t of svg.querySelectorAll('text, tspan')) {
            const own = [...t.childNodes]
                .filter(n => n.nodeType === 3)
                .map(n => n.textContent).join('').trim();
            if (!own) continue;
            const m = t.getScreenCTM();
            const scale = Math.sqrt(Math.abs(m.a * m.d - m.b * m.c));
            const px = parseFloat(getComputedStyle(t).fontSize) * scale;
            entry.text_runs += 1;
            if (entry.min_px === null || px < entry.min_px) {
                entry.min_px = px;
                entry.smallest = own.slice(0, 30);
            }
        }
        host.remove();
    }
    return out;
}"""


def _open(browser, server, doc, viewport):
    page = browser.new_page(viewport=viewport)
    page.goto(f"{server}/{doc}.html", wait_until="load")
    if page.locator("main .math").count():
        page.wait_for_function(
            "document.querySelectorAll('main mjx-container').length > 0",
            timeout=120_000,
        )  # hang guard
        page.evaluate("MathJax.startup.promise")
    page.evaluate(OPEN_ALL)
    return page


@pytest.mark.parametrize("doc", built_docnames())
def test_phone_fits_and_figures_are_links(server, browser, doc):  # noqa: F811
    page = _open(browser, server, doc, PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    widest = page.evaluate(WIDEST) if width > PHONE["width"] else []
    clipped = page.evaluate(CLIPPED_MATH)
    cut = page.evaluate(CLIPPED_IMAGES)
    images = page.evaluate(IMAGE_LINKS)
    page.close()
    assert width <= PHONE["width"], (
        f"{doc} is {width} px wide at 390 px; widest: {widest}"
    )
    assert clipped == [], f"inline maths clipped at 390 px: {clipped}"
    assert cut == [], f"figures cut off at 390 px: {cut}"
    unlinked = [i["src"] for i in images if i["href"] != i["src"]]
    assert unlinked == [], (
        f"figures that are not a link to their image: {unlinked}"
    )


def figure_text(browser, server, docs):  # noqa: F811
    """Per figure: the page, the image, and its smallest text at each width.

    Returns a list of dicts with ``page``, ``image``, ``index`` (the image's
    place on the page) and, per width in :data:`MIN_TEXT_PX`, the displayed
    width ``width_<w>`` and smallest text ``min_px_<w>`` (CSS px; ``None``
    for a raster image or one without text).
    """
    rows = {}
    for doc in docs:
        for w, viewport in ((1280, DESKTOP), (390, PHONE)):
            page = _open(browser, server, doc, viewport)
            for i, entry in enumerate(page.evaluate(FIGURE_TEXT)):
                row = rows.setdefault(
                    (doc, i),
                    {"page": doc, "index": i, "image": entry["image"]},
                )
                row[f"width_{w}"] = round(entry["width"], 1)
                px = entry["min_px"]
                row[f"min_px_{w}"] = None if px is None else round(px, 2)
                row[f"smallest_{w}"] = entry.get("smallest")
            page.close()
    return list(rows.values())


def under_limit(rows) -> list[str]:
    """One line per figure whose smallest text is under :data:`MIN_TEXT_PX`
    at some width: the page, the figure's place and image, the text and its
    size in CSS px."""
    out = []
    for r in rows:
        for w, limit in MIN_TEXT_PX.items():
            px = r.get(f"min_px_{w}")
            if px is not None and px < limit:
                out.append(
                    f"{r['page']} figure #{r['index']} ({r['image'][:8]}): "
                    f"{r.get(f'smallest_{w}')!r} is {px:.2f} px at {w} px "
                    f"(at least {limit:g})"
                )
    return out


def summary(rows) -> str:
    """One line: how many figures, how many fall under each limit, the worst."""
    parts = [f"{len(rows)} figures"]
    for w, limit in MIN_TEXT_PX.items():
        sized = [r for r in rows if r.get(f"min_px_{w}") is not None]
        under = [r for r in sized if r[f"min_px_{w}"] < limit]
        worst = min(sized, key=lambda r: r[f"min_px_{w}"], default=None)
        text = f"at {w} px {len(under)} under {limit:g} px"
        if worst is not None:
            text += (
                f" (smallest {worst[f'min_px_{w}']:.1f} px, "
                f"{worst['page']} #{worst['index']})"
            )
        parts.append(text)
    return "figure text: " + "; ".join(parts)


def test_figure_text_sizes(server, browser, capsys):  # noqa: F811
    rows = figure_text(browser, server, built_docnames())
    (BUILD / "figure_text.json").write_text(json.dumps(rows, indent=1))
    line = summary(rows)
    with capsys.disabled():
        print("\n" + line)
    assert rows, "no figure on any page"
    assert all(r.get("min_px_1280") is not None for r in rows), (
        "a figure without measurable text (a raster image?)"
    )
    small = under_limit(rows)
    assert small == [], (
        "figure text too small to read (enlarge its fonts, stack its panels "
        "or narrow its figsize):\n" + "\n".join(small)
    )


def test_under_limit_names_the_page_figure_text_and_size():
    ok = {"page": "a", "index": 0, "image": "0123456789.svg"}
    ok |= {"min_px_1280": 9.0, "min_px_390": 6.0}  # exactly at the limits
    small = {"page": "chapters/b", "index": 3, "image": "9fb6784a29.svg"}
    small |= {"min_px_1280": 10.0, "min_px_390": 5.11, "smallest_390": "5"}
    raster = {"page": "c", "index": 1, "image": "x.png"}
    raster |= {"min_px_1280": None, "min_px_390": None}
    assert under_limit([ok, raster]) == []
    assert under_limit([ok, small]) == [
        "chapters/b figure #3 (9fb6784a): '5' is 5.11 px at 390 px "
        "(at least 6)"
    ]
