"""Static checks of the book's sources: notebooks, question ids, repository URL, Problem Index."""

import json
import re
import sys

import pytest

from llmbook.book import lint, sync
from conftest import ROOT, toc_docnames

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPO_URL, REPO_BRANCH = sync.config_repository(ROOT)


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_layout(path):
    """Bootstrap and parameters cells, no outputs, no variable named like an imported module;
    each problem says what to do (llmbook.book.lint)."""
    problems = lint.notebook_problems(json.loads(path.read_text()), REPO_URL)
    assert problems == [], f"{path.name}:\n" + "\n".join(problems)


def test_every_notebook_has_the_identical_bootstrap_cell():
    stale = [
        p.name
        for p in NOTEBOOKS
        if sync.cell_text(sync.code_cells(json.loads(p.read_text()))[0])
        != sync.bootstrap_source(REPO_URL)
    ]
    assert stale == [], STALE_BOOTSTRAP


STALE_BOOTSTRAP = "bootstrap cell differs from llmbook.book.sync.bootstrap_source: run `make sync`"
STALE_INDEX = "chapters/problem-index.md is stale: run `make sync`"


def test_bootstrap_installs_only_when_missing_and_never_torch():
    src = sync.bootstrap_source(REPO_URL)
    assert src.index("import llmbook") < src.index("except ImportError")
    assert "torch" not in src.split("except ImportError")[1].replace(
        "never replaces", ""
    )
    assert REPO_URL in src
    assert "LLMBOOK_INSTALL_URL" in src, (
        "the install address must be overridable (the Colab simulation uses it)"
    )


def test_repository_url_is_set_once_and_agrees():
    assert REPO_URL.startswith("https://github.com/")
    config = (ROOT / "_config.yml").read_text()
    assert config.count("github.com") == 1
    assert "colab_url: https://colab.research.google.com" in config


def test_every_notebook_is_in_the_toc_under_a_chapter():
    names = toc_docnames()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in names, (
            f"add notebooks/{path.stem} to _toc.yml under its chapter's sections"
        )


def test_question_ids_are_unique_and_well_formed():
    ids = [q["id"] for q in sync.read_questions(ROOT)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", i) for i in ids)
    # every id listed in the shared checklist's tables is kept (ranges expanded)
    assert {
        "hw11-q5a",
        "hw11-q5l",
        "genai-e3",
        "hw11-q7a-ix",
        "hw11-q7b-vii",
        "cme295-qlora",
    } <= set(ids)


def test_labels_are_known_ids_and_defined_once():
    known = {q["id"] for q in sync.read_questions(ROOT)}
    for label, files in sync.chapter_labels(ROOT).items():
        assert len(files) == 1, (
            f"{label} defined in {files}: keep one, rename the others"
        )
        if re.fullmatch(r"(hw11|genai|dls|scale|cme295)-.*", label):
            assert label in known, (
                f"label {label} is not a question id: add it to data/questions.csv, then `make sync`"
            )


def test_every_id_of_a_chapter_in_the_toc_is_answered():
    toc = set(toc_docnames())
    labels = sync.chapter_labels(ROOT)
    missing = [
        q["id"]
        for q in sync.read_questions(ROOT)
        if f"chapters/{q['chapter']}" in toc and q["id"] not in labels
    ]
    assert missing == [], (
        "put `(<id>)=` above the heading that answers each, then `make sync`"
    )


def test_problem_index_is_up_to_date():
    up_to_date = (
        ROOT / "chapters" / "problem-index.md"
    ).read_text() == sync.render_problem_index(ROOT)
    assert up_to_date, STALE_INDEX


def test_stale_generated_files_say_run_make_sync(monkeypatch):
    monkeypatch.setattr(sync, "render_problem_index", lambda root: "stale")
    with pytest.raises(AssertionError, match="run `make sync`"):
        test_problem_index_is_up_to_date()
    monkeypatch.setattr(sync, "bootstrap_source", lambda url: "changed")
    with pytest.raises(AssertionError, match="run `make sync`"):
        test_every_notebook_has_the_identical_bootstrap_cell()


def test_chapter_prose_glues_numbers():
    """Crude guard against hand-typed results: a chapter with answers must paste computed values."""
    text = (ROOT / "chapters" / "fermi.md").read_text()
    assert text.count("{n}`") + text.count("{glue:text}") >= 40


# A code block on a page is 79 characters wide at 1280 px (the browser test measures it);
# keep every line of notebook code, and of the library code shown on a page, within that.
CODE_WIDTH = 79
TOO_WIDE = (
    f"code lines over {CODE_WIDTH} characters: run `make format`, then wrap by hand "
    "the long strings and comments it leaves"
)


def test_too_wide_says_run_make_format(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CODE_WIDTH", 20)
    for check in (
        test_notebook_code_fits_the_page,
        test_library_code_shown_on_pages_fits_the_page,
    ):
        with pytest.raises(AssertionError, match="run `make format`"):
            check()


def _pyobject_source(path, name):
    import ast

    tree = ast.parse(path.read_text())
    node, lines = tree, path.read_text().splitlines()
    for part in name.split("."):
        node = next(
            n
            for n in ast.iter_child_nodes(node)
            if isinstance(
                n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)
            )
            and n.name == part
        )
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return lines[start - 1 : node.end_lineno]


def test_notebook_code_fits_the_page():
    long = []
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                long += [
                    f"{path.name}: {line}"
                    for line in "".join(cell["source"]).splitlines()
                    if len(line) > CODE_WIDTH
                ]
    assert long == [], TOO_WIDE


def test_library_code_shown_on_pages_fits_the_page():
    include = re.compile(r"```\{literalinclude\} (\S+)\n((?::\w+:.*\n)*)")
    long, shown = [], 0
    for page in (ROOT / "chapters").glob("*.md"):
        for target, options in include.findall(page.read_text()):
            obj = re.search(r":pyobject: (\S+)", options)
            if obj is None:
                continue
            shown += 1
            source = (page.parent / target).resolve()
            long += [
                f"{page.name} {obj[1]}: {line}"
                for line in _pyobject_source(source, obj[1])
                if len(line) > CODE_WIDTH
            ]
    assert shown > 0
    assert long == [], TOO_WIDE
