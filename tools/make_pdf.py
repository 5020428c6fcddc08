"""Print the built site to PDF: ``_build/pdf/book.pdf`` and ``problems.pdf``.

``make pdf`` runs it after ``make book`` and ``make problems``. Each page of
the table of contents is opened in Debian's Chromium (driven by Playwright,
as the browser test does; no browser is downloaded), MathJax is awaited,
every collapsible solution is opened, and the page is printed to A4 with its
background (the ``@media print`` rules of ``_static/llmbook.css`` hide the
sidebars and buttons). The pages are merged in toc order with pypdf, one
bookmark per page, nested as the toc nests them.

The problems-only edition leaves out the notebook pages: there they are
titles with a note, and the instructors print the questions.

    python tools/make_pdf.py                  # both PDFs
    python tools/make_pdf.py --only book      # one of them
    python tools/make_pdf.py --pages intro chapters/fermi --out part.pdf
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
EDITIONS = {
    "book": BUILD / "html",
    "problems": BUILD / "problems" / "_build" / "html",
}
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Every solution open, as a printed book shows it: sphinx-togglebutton's
# hidden blocks and <details> dropdowns alike. A code cell the page hides
# (the set-up cell, tagged hide-input) stays hidden.
OPEN_ALL = """() => {
    document.querySelectorAll('.toggle-hidden')
        .forEach(e => e.classList.remove('toggle-hidden'));
    document.querySelectorAll('button.toggle-button')
        .forEach(b => b.classList.remove('toggle-button-hidden'));
    document.querySelectorAll('details:not(div.cell details.hide)')
        .forEach(d => { d.open = true; });
}"""
# MathJax typesets on load and again for what opens; wait for both, then for
# every image and font.
SETTLED = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
        if (MathJax.typesetPromise) await MathJax.typesetPromise();
    }
    await Promise.all([...document.images].map(i => i.complete ? null :
        new Promise(r => { i.onload = i.onerror = r; })));
    await document.fonts.ready;
    return true;
}"""
MARGIN = {"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"}


def toc_tree(toc: dict) -> list[tuple[str, int]]:
    """Every document of a table of contents, in order, with its depth.

    Args:
        toc: ``_toc.yml`` as loaded (``root``, ``parts`` of ``chapters``,
            each with optional ``sections``).

    Returns ``(docname, depth)`` pairs: the root and each chapter at depth 0,
    a chapter's sections at 1, theirs at 2. The bookmarks of the merged PDF
    nest the same way.
    """
    found = [(toc["root"], 0)]

    def walk(entries, depth):
        for entry in entries or []:
            if "file" in entry:
                found.append((entry["file"], depth))
            walk(entry.get("sections"), depth + 1)

    for part in toc.get("parts", []):
        walk(part.get("chapters"), 0)
    walk(toc.get("chapters"), 0)
    return found


def edition_pages(toc: dict, edition: str) -> list[tuple[str, int]]:
    """The pages one edition prints: all of them for ``book``; for
    ``problems`` all but the notebook pages (reduced to titles there)."""
    if edition not in EDITIONS:
        raise ValueError(
            f"edition must be one of {sorted(EDITIONS)}, got {edition!r}"
        )
    pages = toc_tree(toc)
    if edition == "problems":
        pages = [(d, n) for d, n in pages if not d.startswith("notebooks/")]
    return pages


@contextmanager
def serve(folder: Path):
    """Serve ``folder`` on a free local port; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit(
            "Debian's chromium is not installed: `make chromium` installs it"
        )
    return found


def print_page(page, url: str) -> tuple[bytes, str]:
    """One page as PDF bytes (A4, backgrounds, solutions open) and its
    title (the page's first heading)."""
    for _ in range(2):  # a loaded machine may time out once: one retry
        page.goto(url, wait_until="load")
        if page.locator("main").count():
            break
    else:
        raise RuntimeError(f"{url} shows no page (no <main>)")
    page.evaluate(OPEN_ALL)
    page.evaluate(SETTLED)
    page.emulate_media(media="print")
    title = page.evaluate(
        "() => ((document.querySelector('main h1') || {}).textContent"
        " || document.title).replace(/#$/, '').trim()"
    )
    pdf = page.pdf(
        format="A4",
        print_background=True,
        margin=MARGIN,
        display_header_footer=False,
    )
    return pdf, title or url


def make_pdf(html: Path, pages: list[tuple[str, int]], out: Path) -> dict:
    """Print ``pages`` of the site in ``html`` and merge them into ``out``.

    Returns ``{"pages": n_pdf_pages, "seconds": wall time, "docs": n}``.
    """
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader, PdfWriter

    missing = [d for d, _ in pages if not (html / f"{d}.html").is_file()]
    if missing:
        sys.exit(
            f"{html} lacks {missing[:3]}...: run `make book` and "
            "`make problems` first"
        )
    start = time.perf_counter()
    writer = PdfWriter()
    parents: dict[int, object] = {}
    with serve(html) as base, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS
        )
        for doc, depth in pages:
            # A fresh tab per page: a long book does not pile up memory.
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            pdf, title = print_page(page, f"{base}/{doc}.html")
            page.close()
            first = len(writer.pages)
            writer.append(PdfReader(io.BytesIO(pdf)), import_outline=False)
            parent = parents.get(depth - 1) if depth else None
            parents[depth] = writer.add_outline_item(
                title=title, page_number=first, parent=parent
            )
            print(f"  {doc}: {len(writer.pages) - first} pages", flush=True)
        browser.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.page_mode = "/UseOutlines"
    with open(out, "wb") as f:
        writer.write(f)
    return {
        "pages": len(writer.pages),
        "seconds": time.perf_counter() - start,
        "docs": len(pages),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(EDITIONS))
    parser.add_argument("--pages", nargs="+", help="docnames (default all)")
    parser.add_argument("--out", type=Path, help="with --pages or --only")
    args = parser.parse_args(argv)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for edition in [args.only] if args.only else sorted(EDITIONS):
        pages = edition_pages(toc, edition)
        if args.pages:
            pages = [(d, n) for d, n in pages if d in args.pages]
        out = args.out or BUILD / "pdf" / f"{edition}.pdf"
        print(f"{edition}: {len(pages)} pages of {EDITIONS[edition]}")
        done = make_pdf(EDITIONS[edition], pages, out)
        print(
            f"wrote {out}: {done['pages']} PDF pages from {done['docs']} "
            f"web pages in {done['seconds']:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
