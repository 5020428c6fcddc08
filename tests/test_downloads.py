"""The download menu (issue 20): a notebook page's ``.ipynb`` is the executed
notebook, and a chapter page offers no raw ``.md`` (its ``.pdf`` stays).
Unit tests of the two build hooks; tests/test_html.py checks the built site.
"""

from types import SimpleNamespace

import nbformat
from jupyter_cache.base import CacheBundleIn

from llmbook.book.sphinx_ext import (
    _no_markdown_download,
    _serve_executed,
    executed_downloads,
    executed_notebook,
)


def notebook(*outputs):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(6 * 7)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=text)
        for text in outputs
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), cell]
    return nb


def fake_build(tmp_path, docs):
    """Sources, their ``_sources`` copies and myst-nb's executed copies."""
    html = tmp_path / "_build" / "html"
    for doc, executed in docs.items():
        for path in [tmp_path / doc, html / "_sources" / doc]:
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook(), str(path))
        if executed is not None:
            path = tmp_path / "_build" / "jupyter_execute" / doc
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook(*executed), str(path))
    return html


def test_each_source_notebook_is_paired_with_its_download(tmp_path):
    html = fake_build(
        tmp_path, {"notebooks/a.ipynb": None, "labs/b-lab.ipynb": None}
    )
    (tmp_path / "intro.md").write_text("# Intro")
    docs = {"labs/b-lab", "notebooks/a", "intro"}
    assert executed_downloads(html, tmp_path, docs) == [
        (tmp_path / "labs/b-lab.ipynb", html / "_sources/labs/b-lab.ipynb"),
        (tmp_path / "notebooks/a.ipynb", html / "_sources/notebooks/a.ipynb"),
    ]


def test_the_outputs_come_from_the_cache_first(tmp_path):
    from jupyter_cache import get_cache

    source = tmp_path / "n.ipynb"
    nbformat.write(notebook(), str(source))
    cache = get_cache(str(tmp_path / "cache"))
    cache.cache_notebook_bundle(
        CacheBundleIn(notebook("42\n"), uri=str(source)), check_validity=False
    )
    stale = tmp_path / "executed.ipynb"
    nbformat.write(notebook("stale\n"), str(stale))
    merged = executed_notebook(source, tmp_path / "cache", stale)
    assert merged.cells[1].outputs[0].text == "42\n"
    # Not in the cache: myst-nb's copy if it has outputs, else nothing.
    assert executed_notebook(source, None, stale).cells[1].outputs[0].text == (
        "stale\n"
    )
    nbformat.write(notebook(), str(stale))
    assert executed_notebook(source, tmp_path / "nowhere", stale) is None


def fake_app(root, docs, hide_solutions=False):
    return SimpleNamespace(
        outdir=str(root / "_build" / "html"),
        srcdir=str(root),
        builder=SimpleNamespace(format="html"),
        env=SimpleNamespace(
            found_docs=set(docs),
            mystnb_config=SimpleNamespace(execution_cache_path=""),
        ),
        config=SimpleNamespace(hide_solutions=hide_solutions),
    )


def outputs(path):
    return nbformat.read(str(path), as_version=4).cells[1].outputs


def test_the_download_is_overwritten_by_the_executed_notebook(tmp_path):
    html = fake_build(
        tmp_path, {"notebooks/a.ipynb": ["42\n"], "notebooks/c.ipynb": None}
    )
    _serve_executed(fake_app(tmp_path, ["notebooks/a", "notebooks/c"]), None)
    assert outputs(html / "_sources/notebooks/a.ipynb")[0].text == "42\n"
    # A notebook that was not executed keeps its source.
    assert outputs(html / "_sources/notebooks/c.ipynb") == []


def test_the_problems_edition_and_a_failed_build_keep_the_sources(tmp_path):
    html = fake_build(tmp_path, {"notebooks/a.ipynb": ["42\n"]})
    _serve_executed(fake_app(tmp_path, ["notebooks/a"], True), None)
    _serve_executed(fake_app(tmp_path, ["notebooks/a"]), RuntimeError("x"))
    assert outputs(html / "_sources/notebooks/a.ipynb") == []


def download_menu(suffix):
    labels = ["download-source-button", "download-pdf-button"]
    return {
        "page_source_suffix": suffix,
        "header_buttons": [
            {"label": "repository-buttons", "buttons": []},
            {
                "label": "download-buttons",
                "buttons": [{"label": label} for label in labels],
            },
        ],
    }


def labels(context):
    group = context["header_buttons"][1]
    return [b["label"] for b in group["buttons"]]


def test_a_markdown_page_keeps_only_the_print_entry():
    context = download_menu(".md")
    _no_markdown_download(None, "chapters/x", "page.html", context, None)
    assert labels(context) == ["download-pdf-button"]


def test_a_notebook_page_keeps_its_ipynb():
    context = download_menu(".ipynb")
    _no_markdown_download(None, "notebooks/x", "page.html", context, None)
    assert labels(context) == [
        "download-source-button",
        "download-pdf-button",
    ]
