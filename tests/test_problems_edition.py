"""The instructors' problems-only edition: every question, no solution text (``make problems``).

With ``LLMBOOK_BUILD_DIR`` and ``LLMBOOK_TOC`` (``make check CHAPTER=...``) the edition is
built from that partial toc, reusing that build's executed notebooks.
"""

import pytest
from bs4 import BeautifulSoup

from llmbook.book import sphinx_ext
from llmbook.book import sync
from conftest import ROOT, built_docnames

pytestmark = pytest.mark.book


def main_of(html_dir, doc):
    return BeautifulSoup(
        (html_dir / f"{doc}.html").read_text(), "html.parser"
    ).find("main")


def test_problems_config_only_flips_the_switch():
    text = sync.problems_config(ROOT)
    assert (
        "hide_solutions: true" in text and "hide_solutions: false" not in text
    )
    assert (
        text.count("\n") == (ROOT / "_config.yml").read_text().count("\n") + 1
    )  # plus the cache line
    assert f"cache: {ROOT / '_build' / '.jupyter_cache'}\n" in text
    elsewhere = ROOT / "_build" / "partial" / "_build" / ".jupyter_cache"
    assert f"cache: {elsewhere}\n" in sync.problems_config(
        ROOT, cache=elsewhere
    )


@pytest.mark.parametrize(
    "doc", [d for d in built_docnames() if d.startswith("chapters/")]
)
def test_questions_stay_and_solutions_go(built_book, problems_html, doc):
    full, problems = main_of(built_book, doc), main_of(problems_html, doc)
    assert len(problems.select(".exercise")) == len(full.select(".exercise"))
    assert problems.select(".solution") == []
    text = problems.get_text(" ")
    for sol in full.select(".solution"):
        for para in sol.select("p"):
            sentence = para.get_text(" ").strip()
            if len(sentence) > 80:
                assert sentence[:80] not in text, (
                    f"solution text leaked into the problems edition: {sentence[:80]}"
                )


@pytest.mark.parametrize(
    "doc", [d for d in built_docnames() if d.startswith("notebooks/")]
)
def test_notebook_pages_are_reduced_to_their_titles(problems_html, doc):
    main = main_of(problems_html, doc)
    assert sphinx_ext.PROBLEMS_NOTE in main.get_text(" ")
    assert main.select("div.cell") == [] and main.select("img") == []
    anchors = {
        a["href"][1:]
        for a in main.select('a[href^="#"]')
        if len(a["href"]) > 1
    }
    assert not anchors - {tag["id"] for tag in main.select("[id]")}, (
        "links to sections the stub no longer has"
    )
    assert not main.select('a[href*="colab"]') and not main.select(
        'a[href$=".ipynb"]'
    )


@pytest.mark.parametrize(
    "doc", [d for d in built_docnames() if d.startswith("chapters/")]
)
def test_key_takeaways_are_left_out(built_book, problems_html, doc):
    full, problems = main_of(built_book, doc), main_of(problems_html, doc)
    bullets = [
        li.get_text(" ").strip()
        for box in full.select(".admonition.tip")
        if sphinx_ext.TAKEAWAYS_TITLE in box.get_text()
        for li in box.select("li")
    ]
    if not bullets:
        return
    text = problems.get_text(" ")
    assert sphinx_ext.TAKEAWAYS_NOTE in text
    for bullet in bullets:
        assert bullet[:60] not in text, (
            f"a key takeaway leaked into the problems edition: {bullet[:60]}"
        )


@pytest.mark.parametrize(
    "doc", [d for d in built_docnames() if d.startswith("labs/")]
)
def test_the_labs_stay_whole(built_book, problems_html, doc):
    """The labs hold stubs, not answers: the problems edition keeps them
    as they are, with their Colab button (the one launch button left in
    that edition)."""
    full, problems = main_of(built_book, doc), main_of(problems_html, doc)
    assert len(problems.select("div.cell")) == len(full.select("div.cell"))
    assert "NotImplementedError" in problems.get_text(" ")
    assert sphinx_ext.PROBLEMS_NOTE not in problems.get_text(" ")
    colab = [
        a["href"]
        for a in problems.select('a[href*="colab.research.google.com"]')
    ]
    assert colab and all(h.endswith(f"/{doc}.ipynb") for h in colab), colab
    assert not problems.select('a[href$=".ipynb"]:not([href*="colab"])')
