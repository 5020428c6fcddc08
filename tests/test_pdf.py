"""``make pdf`` (tools/make_pdf.py): the book and the problems-only edition
printed by Chromium and merged in toc order.

The whole book takes minutes to print; the test prints a few pages of each
existing build (the intro, one chapter, one notebook page) with the same code
and reads the PDFs back with pypdf.
"""

import importlib.util
import re
import unicodedata
import xml.etree.ElementTree as ET

import pytest
import yaml
from bs4 import BeautifulSoup

from conftest import ROOT, built_docnames
from test_browser import CHROMIUM

pytestmark = [pytest.mark.book, pytest.mark.browser]
spec = importlib.util.spec_from_file_location(
    "make_pdf", ROOT / "tools" / "make_pdf.py"
)
make_pdf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_pdf)
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def first_chapter_with_a_notebook():
    """The first chapter of the build (toc order) and its first notebook:
    chapters/lora and notebooks/lora-basics in the whole book."""
    built, tree = set(built_docnames()), make_pdf.toc_tree(TOC)
    for i, (doc, depth) in enumerate(tree[:-1]):
        child, child_depth = tree[i + 1]
        if doc.startswith("chapters/") and doc in built and child in built:
            if child_depth == depth + 1:
                return doc, child
    pytest.skip(
        "no chapter with a notebook in this build", allow_module_level=True
    )


CHAPTER, NOTEBOOK = first_chapter_with_a_notebook()
PICK = ["intro", CHAPTER, NOTEBOOK]
SVG = "http://www.w3.org/2000/svg"


def words(text: str) -> str:
    """Text as pypdf extracts it, or as a page shows it: ligatures (fi)
    spelt out, every run of white space one space."""
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " ", text).strip()


def plain_sentences(html_dir, doc, selector):
    """The first sentences without maths or inline code in ``selector``."""
    main = BeautifulSoup(
        (html_dir / f"{doc}.html").read_text(), "html.parser"
    ).find("main")
    found = []
    for para in main.select(f"{selector} p:not(.admonition-title)"):
        if para.select(".math, code"):
            continue
        text = words(para.get_text(""))
        first = text.split(". ")[0]
        if len(first) > 40:
            found.append(first[:60])
    return found


def read(path):
    from pypdf import PdfReader

    reader = PdfReader(path)
    text = words(" ".join(p.extract_text() or "" for p in reader.pages))
    return reader, text


def test_toc_tree_keeps_the_order_and_nesting():
    toc = {
        "root": "intro",
        "parts": [
            {
                "caption": "A",
                "chapters": [
                    {"file": "c/one", "sections": [{"file": "n/one-a"}]},
                    {"file": "c/two"},
                ],
            }
        ],
    }
    assert make_pdf.toc_tree(toc) == [
        ("intro", 0),
        ("c/one", 0),
        ("n/one-a", 1),
        ("c/two", 0),
    ]
    problems = make_pdf.edition_pages(TOC, "problems")
    assert ("intro", 0) in problems
    assert not [d for d, _ in problems if d.startswith("notebooks/")]
    assert len(make_pdf.edition_pages(TOC, "book")) == len(
        make_pdf.toc_tree(TOC)
    )
    with pytest.raises(ValueError, match="edition"):
        make_pdf.edition_pages(TOC, "teacher")


@pytest.fixture(scope="module")
def book_pdf(built_book, tmp_path_factory):
    if CHROMIUM is None:
        pytest.fail("Debian's chromium is not installed: run `make test`")
    pages = [p for p in make_pdf.toc_tree(TOC) if p[0] in PICK]
    out = tmp_path_factory.mktemp("pdf") / "book.pdf"
    done = make_pdf.make_pdf(built_book, pages, out)
    return out, done


@pytest.fixture(scope="module")
def problems_pdf(problems_html, tmp_path_factory):
    pages = [
        p for p in make_pdf.edition_pages(TOC, "problems") if p[0] in PICK
    ]
    out = tmp_path_factory.mktemp("pdf") / "problems.pdf"
    return out, make_pdf.make_pdf(problems_html, pages, out)


def test_book_pdf_has_every_page_bookmarked_in_toc_order(book_pdf):
    out, done = book_pdf
    reader, _ = read(out)
    assert done["docs"] == 3 and len(reader.pages) == done["pages"]
    # The chapter alone, its solutions open, runs to many A4 pages.
    assert len(reader.pages) >= 10
    outline = reader.outline
    titles = [item.title for item in outline if not isinstance(item, list)]
    assert len(titles) == 2, "intro and chapter at the top level"
    assert isinstance(outline[-1], list) and len(outline[-1]) == 1, (
        "the notebook page nested under its chapter"
    )
    starts = [
        reader.get_destination_page_number(item)
        for item in [outline[0], outline[1], outline[2][0]]
    ]
    assert starts == sorted(starts) and starts[0] == 0


def test_book_pdf_holds_solutions_and_figures(built_book, book_pdf):
    out, _ = book_pdf
    _, text = read(out)
    solutions = plain_sentences(built_book, CHAPTER, ".solution")
    assert solutions, "no plain sentence in the chapter's solutions"
    missing = [s for s in solutions if s not in text]
    assert missing == [], "solution text missing from the PDF"
    # The figures are SVG with their text as text (plotting sets
    # svg.fonttype): each figure's title (its longest text) is in the PDF.
    main = BeautifulSoup(
        (built_book / f"{CHAPTER}.html").read_text(), "html.parser"
    ).find("main")
    titles = []
    for img in main.select("img"):
        path = (built_book / CHAPTER).parent / img["src"].split("#")[0]
        if path.suffix == ".svg":
            texts = ET.parse(path.resolve()).iter(f"{{{SVG}}}text")
            titles.append(
                max((words("".join(t.itertext())) for t in texts), key=len)
            )
    assert len(titles) >= 3, "the chapter's figures are SVG"
    missing = [title for title in titles if title not in text]
    assert missing == [], "figures missing from the PDF"


def test_problems_pdf_has_exercises_and_no_solution(
    built_book, problems_html, problems_pdf
):
    out, done = problems_pdf
    _, text = read(out)
    assert done["docs"] == 2, "the notebook page is left out"
    exercises = plain_sentences(problems_html, CHAPTER, ".exercise")
    assert exercises and all(s in text for s in exercises)
    solutions = plain_sentences(built_book, CHAPTER, ".solution")
    assert solutions and not [s for s in solutions if s in text]
