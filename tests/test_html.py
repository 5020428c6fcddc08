"""Checks of the rendered site: every page, no error output, every glue resolved, every id anchored."""

import re

import pytest
from bs4 import BeautifulSoup

from llmbook import book
from conftest import ROOT, toc_docnames

pytestmark = pytest.mark.book
PAGES = toc_docnames()


def soup(html_dir, doc):
    return BeautifulSoup((html_dir / f"{doc}.html").read_text(), "html.parser")


def test_every_toc_page_is_built(built_book):
    missing = [doc for doc in PAGES if not (built_book / f"{doc}.html").is_file()]
    assert missing == []


@pytest.mark.parametrize("doc", PAGES)
def test_no_error_output_or_unresolved_glue(built_book, doc):
    page = soup(built_book, doc)
    main = page.find("main") or page
    text = main.get_text(" ")
    assert not main.select(".output.traceback, .output.error, .output.stderr"), "error or stderr output on the page"
    assert "Traceback (most recent call last)" not in text
    assert not re.search(r"\{glue(:\w+)?\}", text), "unresolved glue role"
    assert "glue:text" not in str(main)
    for code in main.select("div.cell, pre, code"):
        code.decompose()
    assert "[[" not in main.get_text(" "), "unexpanded placeholder in prose"
    assert "??" not in text, "broken cross-reference"


def test_glued_values_appear_in_the_fermi_chapter(built_book):
    from llmbook.glue import read_glued

    glued = read_glued(book.executed_notebook(built_book.parent, "fermi.ipynb"))
    pasted = [s.get_text() for s in soup(built_book, "chapters/fermi").select(".pasted-text")]
    assert len(pasted) >= 40
    for key in ["c_gpt6", "d_gpt6", "h_gpt6", "g_lat_gpt6", "l_burgers"]:
        assert glued[key] in pasted, key
    assert len(soup(built_book, "chapters/fermi").select("main img")) >= 6, "pasted figures missing"


def test_every_question_id_of_a_built_chapter_is_an_anchor(built_book):
    toc = set(PAGES)
    for q in book.read_questions(ROOT):
        doc = f"chapters/{q['chapter']}"
        if doc in toc:
            assert soup(built_book, doc).find(id=q["id"]) is not None, q["id"]


def test_problem_index_links_every_answered_id(built_book):
    links = {a["href"] for a in soup(built_book, "chapters/problem-index").select("main a[href]")}
    answered = book.chapter_labels(ROOT)
    for qid, files in answered.items():
        if qid in {q["id"] for q in book.read_questions(ROOT)}:
            page = files[0].removesuffix(".md")
            assert f"{page}.html#{qid}" in links, qid


def test_mathjax_is_served_locally(built_book):
    assert (built_book / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
    assert "_static/mathjax/tex-mml-chtml.js" in (built_book / "chapters" / "fermi.html").read_text()


def test_notebook_pages_offer_downloads_and_colab(built_book):
    html = (built_book / "notebooks" / "fermi.html").read_text()
    assert "colab.research.google.com" in html
    assert "_sources/notebooks/fermi.ipynb" in html


def test_execution_times_within_bars(built_book):
    times = dict(book.execution_times(built_book.parent))
    assert set(times) == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    slow = {name: t for name, t in times.items() if t >= 180}
    assert slow == {}, f"notebooks over 3 minutes: {slow}"
    assert times["fermi.ipynb"] < 30, "the Fermi notebook must execute in under 30 s"
