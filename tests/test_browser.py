"""Open every page of the built site in headless Chromium (Debian's package, driven by
Playwright): maths rendered by MathJax, images loaded, no console errors, and the Colab
button of each notebook page pointing at that notebook. Screenshots go to _build/screenshots/."""

import functools
import http.server
import shutil
import threading

import pytest

from llmbook.book import sync
from conftest import BUILD, ROOT, toc_docnames

pytestmark = [pytest.mark.book, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def server(built_book):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail(
            "Debian's chromium is not installed: run `make test`, which installs it"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        yield b
        b.close()


@pytest.mark.parametrize("doc", toc_docnames())
def test_page_renders_cleanly(server, browser, doc):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "requestfailed",
        lambda req: errors.append(f"request failed: {req.url}"),
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400
            else None
        ),
    )
    page.goto(f"{server}/{doc}.html", wait_until="load")

    if page.locator("main .math").count():
        page.wait_for_function(
            "document.querySelectorAll('main mjx-container').length > 0",
            timeout=120_000,
        )  # hang guard
        assert (
            page.locator("main mjx-container").count()
            >= page.locator("main .math").count()
        )
        assert page.locator("main mjx-merror").count() == 0, (
            "MathJax reported a TeX error"
        )

    # Nothing that needs horizontal scrolling at 1280 px: display maths and code blocks,
    # measured with every collapsible solution opened.
    page.evaluate("""() => {
        document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
        document.querySelectorAll('details').forEach(d => { d.open = true; });
    }""")
    clipped = page.evaluate("""() => {
        const wide = el => el.scrollWidth > el.clientWidth + 2;
        const out = [];
        for (const el of document.querySelectorAll('main mjx-container[display="true"], main div.math'))
            if (wide(el)) out.push('math: ' + el.textContent.slice(0, 60));
        for (const el of document.querySelectorAll('main div.cell_input pre, main div.highlight pre'))
            if (wide(el)) out.push('code: ' + el.textContent.trim().split('\\n')[0].slice(0, 60));
        return out;
    }""")
    assert clipped == [], f"needs horizontal scrolling at 1280 px: {clipped}"

    broken = page.evaluate(
        "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    assert broken == []

    if doc.startswith("notebooks/"):
        owner_repo = sync.config_repository(ROOT)[0].removeprefix(
            "https://github.com/"
        )
        hrefs = page.eval_on_selector_all(
            "a[href*='colab.research.google.com']",
            "els => els.map(e => e.href)",
        )
        assert (
            f"https://colab.research.google.com/github/{owner_repo}/blob/main/{doc}.ipynb"
            in hrefs
        )

    shots = BUILD / "screenshots"
    shots.mkdir(exist_ok=True)
    page.screenshot(
        path=str(shots / f"{doc.replace('/', '__')}.png"), full_page=True
    )
    page.close()
    assert errors == []
