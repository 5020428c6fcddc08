"""The one formatter and the notebooks' normal form (``make format``,
``make lint``): the fixer on a small notebook, and the check on the tree."""

import json
import shutil
import subprocess
import sys

import nbformat
import pytest

from conftest import ROOT
from llmbook.book import notebooks as nbs
from llmbook.book.sync import bootstrap_source

# aligned as make format aligns a parameters cell (two spaces after the
# longest code part), with the hand-aligned "=" signs kept
PARAMETERS = (
    "n_params = 7e9     # parameters (homework)\n"
    "tokens   = 1.4e12  # training tokens\n"
    "mfu      = 0.4     # model FLOP utilisation"
)
BAD = "def f(a,b):\n  return {'a':a,'b':b}\nx=f( 1,2 )"
GOOD = 'def f(a, b):\n    return {"a": a, "b": b}\n\n\nx = f(1, 2)'
MAGIC = "%matplotlib inline\nimport math\nplot( math.pi );"


def code(source, tags=(), cid=None):
    cell = {
        "cell_type": "code",
        "execution_count": 3,
        "metadata": {"tags": list(tags)},
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "x"}],
        "source": source,
    }
    if cid:
        cell["id"] = cid
    return cell


def notebook():
    """A notebook as an editor might leave it: string and list sources,
    outputs, a cell without an id, keys out of order."""
    return {
        "metadata": {"kernelspec": {"name": "python3"}},
        "nbformat_minor": 5,
        "nbformat": 4,
        "cells": [
            {
                "source": "# Title\ntext",
                "cell_type": "markdown",
                "metadata": {},
                "id": "c00",
            },
            code(
                bootstrap_source("https://x.invalid/r"), ["bootstrap"], "c01"
            ),
            code(PARAMETERS.splitlines(True), ["parameters"], "c02"),
            code(BAD, cid="c03"),
            code(MAGIC),
        ],
    }


@pytest.fixture
def repo(tmp_path):
    """A tiny repository: our ruff configuration and one notebook."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "notebooks").mkdir()
    path = tmp_path / "notebooks" / "demo.ipynb"
    path.write_text(json.dumps(notebook()))
    return tmp_path


def sources(path):
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells]


def test_format_fixes_code_and_keeps_parameters_byte_identical(repo):
    path = repo / "notebooks" / "demo.ipynb"
    assert nbs.format_notebooks(repo) == ["notebooks/demo.ipynb"]
    src = sources(path)
    assert src[3] == GOOD
    assert src[2] == PARAMETERS
    assert src[1] == bootstrap_source("https://x.invalid/r")
    # the magic line and the final ";" (no echo in Jupyter) survive
    assert src[4] == "%matplotlib inline\nimport math\n\nplot(math.pi);"


def test_format_twice_is_format_once_and_lint_is_then_clean(repo):
    path = repo / "notebooks" / "demo.ipynb"
    nbs.format_notebooks(repo)
    once = path.read_bytes()
    assert nbs.format_notebooks(repo) == []
    assert path.read_bytes() == once
    assert nbs.lint(repo) == []


def test_normal_form_lists_lines_clears_outputs_and_keeps_ids():
    nb = nbs.normal_form(notebook())
    cells = nb["cells"]
    assert cells[0]["source"] == ["# Title\n", "text"]
    assert all(isinstance(c["source"], list) for c in cells)
    code_cells = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] for c in code_cells)
    assert all(c["execution_count"] is None for c in code_cells)
    assert [c["id"] for c in cells] == ["c00", "c01", "c02", "c03", "c04"]
    # the input is left alone
    assert notebook()["cells"][3]["execution_count"] == 3


def test_added_id_avoids_the_ones_taken():
    nb = notebook()
    nb["cells"][0]["id"] = "c04"
    assert nbs.normal_form(nb)["cells"][4]["id"] == "c04a"


def test_normal_form_rejects_a_notebook_without_cells():
    with pytest.raises(ValueError, match="cells"):
        nbs.normal_form({"metadata": {}})


def test_normal_form_is_idempotent_and_what_nbformat_writes():
    text = nbs.dumps(notebook())
    assert nbs.dumps(json.loads(text)) == text
    node = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    assert nbformat.writes(node) + "\n" == text


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "notebooks").glob("*.ipynb")),
    ids=lambda p: p.name,
)
def test_normal_form_of_each_book_notebook_is_what_nbformat_writes(path):
    text = nbs.dumps(json.loads(path.read_text()))
    node = nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    assert nbformat.writes(node) + "\n" == text


def test_lint_reports_a_string_source_and_an_unformatted_cell(repo):
    nbs.format_notebooks(repo)
    path = repo / "notebooks" / "demo.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"][0]["source"] = "# Title\ntext"
    nb["cells"][3]["source"] = BAD
    path.write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n")
    assert nbs.lint(repo) == [
        "notebooks/demo.ipynb: not in the normal form",
        "notebooks/demo.ipynb cell c03: not formatted",
    ]


def test_lint_does_not_write(repo):
    path = repo / "notebooks" / "demo.ipynb"
    before = path.read_bytes()
    assert nbs.lint(repo) != []
    assert path.read_bytes() == before


def test_library_tests_and_tools_are_formatted():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--check",
            "lib",
            "tests",
            "tools",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, f"{run.stdout}\n{nbs.FIX}"


def test_notebooks_are_in_normal_form_and_formatted():
    problems = nbs.lint(ROOT)
    assert problems == [], "\n".join(problems + [nbs.FIX])


def test_sync_writes_the_normal_form_but_formats_no_cell(repo):
    from llmbook.book.sync import sync

    shutil.copy(ROOT / "_config.yml", repo / "_config.yml")
    (repo / "data").mkdir()
    shutil.copy(ROOT / "data" / "questions.csv", repo / "data")
    (repo / "chapters").mkdir()
    path = repo / "notebooks" / "demo.ipynb"
    assert "notebooks/demo.ipynb" in sync(repo)
    text = path.read_text()
    assert nbs.dumps(json.loads(text)) == text
    assert sources(path)[2:4] == [PARAMETERS, BAD]
    assert nbs.lint(repo) == [
        "notebooks/demo.ipynb cell c03: not formatted",
        "notebooks/demo.ipynb cell c04: not formatted",
    ]


def test_parameters_comments_align_in_one_column():
    from llmbook.book.notebooks import ALIGN_MAX, align_parameters

    src = (
        "world_size = 2  # processes\n"
        "msg = [2**k for k in range(8)]  # sizes\n"
        "# a whole-line comment stays\n"
        'tag = "a#b"   # a hash inside a string is not a comment\n'
        + "x"
        * ALIGN_MAX
        + "_long = 1  # too long to set the column\n"
        "y = 1\n"
    )
    got = align_parameters(src).splitlines()
    assert got[0] == "world_size = 2" + " " * 18 + "# processes"
    assert got[1] == "msg = [2**k for k in range(8)]  # sizes"
    assert got[2] == "# a whole-line comment stays"
    assert got[3].startswith('tag = "a#b"' + " " * 21 + "# a hash")
    assert got[4].endswith("_long = 1  # too long to set the column")
    assert got[5] == "y = 1"
    assert align_parameters(src) == align_parameters(align_parameters(src))
    assert align_parameters("x = (  # open\n") == "x = (  # open\n"


def test_parameters_alignment_never_pushes_a_line_past_the_page():
    from llmbook.book.notebooks import LINE_LENGTH, align_parameters

    long_comment = "# " + "w" * 68
    src = f"abc_def_ghi = 1  # sets the column\nb = 2  {long_comment}\n"
    got = align_parameters(src).splitlines()
    assert got[0] == "abc_def_ghi = 1  # sets the column"
    assert got[1] == f"b = 2  {long_comment}"  # column 17 would pass 79
    assert all(len(line) <= LINE_LENGTH for line in got)
