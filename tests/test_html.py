"""Checks of the rendered site: every page, no error output, every glue resolved, every id anchored.

With ``LLMBOOK_BUILD_DIR`` (``make check CHAPTER=...``) they check the pages of that partial
build only, and a test about a page the build left out is skipped.
"""

import json
import re

import pytest
from bs4 import BeautifulSoup

from llmbook.book import report, sync
from conftest import ROOT, built_docnames, toc_docnames

pytestmark = pytest.mark.book
PAGES = built_docnames()
NOTEBOOKS = sorted(
    p
    for p in (ROOT / "notebooks").glob("*.ipynb")
    if f"notebooks/{p.stem}" in PAGES
)


def needs(doc):
    """Skip a test about ``doc`` when the build under test left it out (a partial build)."""
    if doc not in PAGES:
        pytest.skip(f"{doc} is not in this partial build")


def soup(html_dir, doc):
    return BeautifulSoup((html_dir / f"{doc}.html").read_text(), "html.parser")


def test_every_toc_page_is_built(built_book):
    from conftest import TOC

    missing = [
        doc
        for doc in toc_docnames(TOC)
        if not (built_book / f"{doc}.html").is_file()
    ]
    assert missing == [], (
        "pages of the toc missing from the build: see the build log (_build.log)"
    )


@pytest.mark.parametrize("doc", PAGES)
def test_no_error_output_or_unresolved_glue(built_book, doc):
    page = soup(built_book, doc)
    main = page.find("main") or page
    text = main.get_text(" ")
    assert not main.select(
        ".output.traceback, .output.error, .output.stderr"
    ), "error or stderr output on the page"
    assert "Traceback (most recent call last)" not in text
    assert not re.search(r"\{glue(:\w+)?\}|\{n\}`", text), (
        "unresolved glue role"
    )
    assert "glue:text" not in str(main)
    for code in main.select("div.cell, pre, code"):
        code.decompose()
    assert "[[" not in main.get_text(" "), "unexpanded placeholder in prose"
    assert "??" not in text, "broken cross-reference"


def test_glued_values_appear_in_the_fermi_chapter(built_book):
    from llmbook.book.glue import read_glued

    needs("chapters/fermi")

    glued = read_glued(
        report.executed_notebook(built_book.parent, "fermi.ipynb")
    )
    pasted = [
        s.get_text()
        for s in soup(built_book, "chapters/fermi").select(".pasted-text")
    ]
    assert len(pasted) >= 40
    for key in ["c_gpt6", "d_gpt6", "h_gpt6", "g_lat_gpt6", "l_burgers"]:
        assert glued[key] in pasted, key
    assert len(soup(built_book, "chapters/fermi").select("main img")) >= 6, (
        "pasted figures missing"
    )


def test_every_question_id_of_a_built_chapter_is_an_anchor(built_book):
    toc = set(PAGES)
    for q in sync.read_questions(ROOT):
        doc = f"chapters/{q['chapter']}"
        if doc in toc:
            assert soup(built_book, doc).find(id=q["id"]) is not None, q["id"]


def test_problem_index_links_every_answered_id(built_book):
    links = {
        a["href"]
        for a in soup(built_book, "chapters/problem-index").select(
            "main a[href]"
        )
    }
    answered = sync.chapter_labels(ROOT)
    for qid, files in answered.items():
        if qid in {q["id"] for q in sync.read_questions(ROOT)}:
            page = files[0].removesuffix(".md")
            if f"chapters/{page}" not in PAGES:
                continue  # left out of a partial build
            assert f"{page}.html#{qid}" in links, qid


def test_mathjax_is_served_locally(built_book):
    needs("chapters/fermi")
    assert (built_book / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert (
        "_static/mathjax/tex-mml-chtml.js"
        in (built_book / "chapters" / "fermi.html").read_text()
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_pages_offer_downloads_and_colab(built_book, path):
    html = (built_book / "notebooks" / f"{path.stem}.html").read_text()
    assert "colab.research.google.com" in html
    assert f"_sources/notebooks/{path.name}" in html


DOWNLOADS = [d for d in PAGES if (ROOT / f"{d}.ipynb").is_file()]
MARKDOWN = [d for d in PAGES if (ROOT / f"{d}.md").is_file()]


@pytest.mark.parametrize("doc", DOWNLOADS)
def test_the_ipynb_download_is_the_executed_notebook(built_book, doc):
    """Notebook and lab pages: the ".ipynb" of the download menu is the
    notebook with the outputs of the build's execution (sphinx_ext)."""
    import nbformat

    html = (built_book / f"{doc}.html").read_text()
    assert f"_sources/{doc}.ipynb" in html
    download = nbformat.read(
        built_book / "_sources" / f"{doc}.ipynb", as_version=4
    )
    executed = report.executed_notebook(
        built_book.parent, f"{doc.split('/')[-1]}.ipynb"
    )
    code = [c for c in download.cells if c.cell_type == "code"]
    assert [c.outputs for c in code] == [
        c.outputs for c in executed.cells if c.cell_type == "code"
    ]
    assert any(c.outputs for c in code), "the download has no outputs"
    source = nbformat.read(ROOT / f"{doc}.ipynb", as_version=4)
    assert [c.source for c in download.cells] == [
        c.source for c in source.cells
    ]


@pytest.mark.parametrize("doc", MARKDOWN)
def test_markdown_pages_offer_print_but_no_raw_source(built_book, doc):
    """A chapter's raw MyST (glue roles, not numbers) is not offered; its
    ".pdf" (print) entry is."""
    page = soup(built_book, doc)
    assert not page.select(f'a[href$="_sources/{doc}.md"]')
    assert page.select(".btn-download-pdf-button")


def test_every_notebook_was_executed(built_book):
    """How long each took is a report (printed after the run, and by tools/bench_speed.py),
    not a check: a busy machine is slower, and the build's timeout only guards against hangs."""
    times = dict(report.execution_times(built_book.parent))
    assert set(times) >= {p.name for p in NOTEBOOKS}, (
        "notebooks missing from the build's cache"
    )


# --- reader-quality checks (every page) -------------------------------------------------

INTERNAL_WORDS = [
    r"\bTODO\b",
    r"\bFIXME\b",
    r"\bXXX\b",
    r"\bseeds?/",
    r"\bseed (?:text|file|material|document|00\d)\b",
    r"\bthe seeds\b",
    r"\bissue #?\d+\b",
    r"\bresolv(?:e|es|ed) #?\d+\b",
    r"\bsession note\b",
]


@pytest.mark.parametrize("doc", PAGES)
def test_no_internal_words(built_book, doc):
    main = soup(built_book, doc).find("main")
    text = main.get_text(" ")
    found = [
        m.group(0)
        for pattern in INTERNAL_WORDS
        for m in re.finditer(pattern, text, re.IGNORECASE)
    ]
    assert found == [], f"internal words on a reader's page: {found}"


@pytest.mark.parametrize("doc", PAGES)
def test_no_image_is_shown_twice_on_a_page(built_book, doc):
    import hashlib

    page_dir = (built_book / doc).parent
    seen = {}
    for img in soup(built_book, doc).select("main img"):
        src = img.get("src", "")
        if src.startswith("data:"):
            key = hashlib.sha1(src.encode()).hexdigest()
        else:
            path = (page_dir / src.split("#")[0]).resolve()
            key = (
                hashlib.sha1(path.read_bytes()).hexdigest()
                if path.is_file()
                else src
            )
        seen.setdefault(key, []).append(src)
    repeated = [srcs for srcs in seen.values() if len(srcs) > 1]
    assert repeated == [], f"the same image appears more than once: {repeated}"


def _executed_notebooks(build_dir):
    for path in NOTEBOOKS:
        yield path.name, report.executed_notebook(build_dir, path.name)


def test_no_cell_echoes_a_bare_value(built_book):
    """A cell whose last line is a helper call must not print its return value (2952790016.0, 3.55e-15)."""
    bare = re.compile(
        r"^[\s(\[]*[-+]?(\d[\d_.,]*(e[-+]?\d+)?|inf|nan|True|False|None)([\s,]+[-+]?(\d[\d_.,]*(e[-+]?\d+)?))*[\s)\]]*$",
        re.IGNORECASE,
    )
    echoed = []
    for name, nb in _executed_notebooks(built_book.parent):
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "execute_result":
                    text = "".join(out.get("data", {}).get("text/plain", ""))
                    if set(out["data"]) == {"text/plain"} and bare.match(text):
                        echoed.append(f"{name} cell {i}: {text}")
    assert echoed == []


def _png_width(b64: str) -> int:
    import base64

    head = base64.b64decode(b64[:64])
    return int.from_bytes(head[16:20], "big")


def test_figures_are_vector_or_high_resolution(built_book):
    """SVG, or PNG with at least twice as many pixels as it is displayed wide (retina)."""
    blurry = []
    for name, nb in _executed_notebooks(built_book.parent):
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                png = next(
                    (v for k, v in data.items() if k.endswith("image/png")),
                    None,
                )
                if png is None or any(
                    k.endswith("image/svg+xml") for k in data
                ):
                    continue
                meta = out.get("metadata", {}).get("image/png", {})
                shown = meta.get("width")
                if not shown or _png_width("".join(png)) < 1.9 * shown:
                    blurry.append(f"{name} cell {i}")
    assert blurry == [], f"low-resolution PNG figures: {blurry}"


def _answered_ids():
    toc = set(PAGES)
    return [
        q
        for q in sync.read_questions(ROOT)
        if f"chapters/{q['chapter']}" in toc
    ]


@pytest.mark.parametrize("qid", [q["id"] for q in _answered_ids()])
def test_every_answer_is_preceded_by_its_question(built_book, qid):
    chapter = next(q["chapter"] for q in _answered_ids() if q["id"] == qid)
    section = soup(built_book, f"chapters/{chapter}").find(id=qid)
    assert section is not None, qid
    if (
        section.name != "section"
    ):  # a second id on a heading is written as an empty <span>
        section = section.find_parent("section")
    blocks = section.select(".exercise, .solution")
    assert blocks, (
        f"{qid}: no question block and no solution under its heading"
    )
    assert "exercise" in blocks[0]["class"], (
        f"{qid}: the answer comes before the question"
    )
    solutions = section.select(".solution")
    assert solutions, f"{qid}: no solution block"
    assert all("dropdown" in s["class"] for s in solutions), (
        f"{qid}: solutions must be collapsible"
    )


def test_problem_index_writes_maths_as_maths(built_book):
    main = soup(built_book, "chapters/problem-index").find("main")
    assert main.select(".math"), "no rendered maths on the Problem Index"
    for math in main.select(".math"):
        math.decompose()  # TeX source inside maths is fine; plain-text maths outside it is not
    text = main.get_text(" ")
    for plain in ["W_O^h", "m x l", "<=", "W_QK ="]:
        assert plain not in text, (
            f"plain-text maths {plain!r} on the Problem Index"
        )


def test_landing_page_promises_only_what_exists(built_book):
    main = soup(built_book, "intro").find("main")
    pending = " ".join(
        p.get_text(" ")
        for p in main.select("p")
        if "in preparation" in p.get_text().lower()
    )
    needs("intro")
    built = {
        doc.removeprefix("chapters/") for doc in toc_docnames()
    }  # the whole book's promise
    for topic, chapter in [
        ("LoRA", "lora"),
        ("soft prompt", "soft-prompting"),
        ("pruning", "pruning-quantization"),
        ("what training costs", "lecture-training-cost"),
        ("parallelism", "lecture-parallelism"),
        ("number formats", "lecture-number-formats"),
        ("mixture of experts", "lecture-attention-moe"),
    ]:
        if chapter in built:
            assert topic.lower() not in pending.lower(), (
                f"{topic} is built but listed as in preparation"
            )
        else:
            assert topic.lower() in pending.lower(), (
                f"the landing page promises {topic} without saying it is in preparation"
            )


def test_the_issues_button_lets_readers_report_errata(built_book):
    assert "/issues/new" in (built_book / "intro.html").read_text()


LABS = [
    p
    for p in sorted((ROOT / "labs").glob("*.ipynb"))
    if f"labs/{p.stem}" in PAGES
]


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name)
def test_lab_pages_run_unfinished_and_open_in_colab(built_book, path):
    """A lab executes in the build with its stubs untouched: every check
    says "not implemented yet", and its Colab button opens labs/."""
    html = (built_book / "labs" / f"{path.stem}.html").read_text()
    assert "colab.research.google.com/github/" in html
    assert f"/labs/{path.name}" in html
    text = BeautifulSoup(html, "html.parser").find("main").get_text(" ")
    stubs = sum(
        "".join(c["source"]).startswith("def ")
        for c in json.loads(path.read_text())["cells"]
    )
    assert stubs >= 1 and text.count("not implemented yet") == stubs
    assert "using the reference implementation" in text


# A figure's alt text says what it shows: a few words, never the file's
# name or the 64-hex-digit hash myst-nb names a cell output's image by.
_FILE_NAME_ALT = re.compile(r"[\w./-]*\.(svg|png|jpe?g|gif)|[0-9a-f]{64}\S*")


def _content_images(page):
    """The images of a page's content: not the theme's logos (under
    ``_static``, e.g. the Colab button's)."""
    return [
        img
        for img in page.select("main img")
        if "_static/" not in img.get("src", "")
    ]


@pytest.mark.parametrize("doc", PAGES)
def test_every_image_is_a_figure_with_caption_and_alt_text(built_book, doc):
    page = soup(built_book, doc)
    problems = []
    for img in _content_images(page):
        src = img.get("src", "")[-24:]
        figure = img.find_parent("figure")
        caption = figure.find("figcaption") if figure is not None else None
        if caption is None or not caption.get_text(strip=True):
            problems.append(f"{src}: not in a figure with a caption")
        alt = img.get("alt", "").strip()
        if _FILE_NAME_ALT.fullmatch(alt) or len(alt.split()) < 4:
            problems.append(f"{src}: alt text {alt[:40]!r}")
    assert problems == [], (
        f"figures that do not explain themselves: {problems}"
    )


@pytest.mark.parametrize(
    "doc", [d for d in PAGES if d.startswith("chapters/")]
)
def test_every_chapter_figure_is_numbered(built_book, doc):
    unnumbered = [
        figure.get_text(" ", strip=True)[:60]
        for figure in soup(built_book, doc).select("main figure")
        if figure.select_one("figcaption .caption-number") is None
    ]
    assert unnumbered == [], f"figures without a number: {unnumbered}"
