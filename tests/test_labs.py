"""The student edition of the labs (``labs/``, written by
``llmbook.book.labs``): up to date, every exercise once, and "Run all"
finishing both with the stubs untouched and with every stub replaced by
the reference, with nothing on stderr."""

import json
import os

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from conftest import ROOT, toc_docnames
from llmbook import grade
from llmbook.book import labs, sphinx_ext, sync

CHAPTERS = labs.lab_chapters()
STALE = "labs/ differs from llmbook.book.labs: run `make sync`"


def _lab(chapter):
    return json.loads(labs.lab_path(ROOT, chapter).read_text())


def _source(cell):
    return "".join(cell["source"])


def test_there_is_a_lab_per_chapter_with_exercises():
    assert len(CHAPTERS) >= 5 and len(grade.EXERCISES) >= 12
    on_disk = sorted(p.name for p in (ROOT / "labs").iterdir())
    assert on_disk == sorted(f"{c}-lab.ipynb" for c in CHAPTERS), (
        "labs/ holds only the generated labs"
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_committed_lab_is_what_the_generator_writes(chapter):
    text = labs.lab_path(ROOT, chapter).read_text()
    assert text == labs.render_lab(ROOT, chapter), STALE


def test_every_exercise_is_in_exactly_one_lab():
    seen = {}
    for chapter in CHAPTERS:
        for cell in _lab(chapter)["cells"]:
            src = _source(cell)
            for name in grade.EXERCISES:
                if cell["cell_type"] == "code" and src.startswith(
                    f"def {name}("
                ):
                    assert src == grade.stub_source(name).rstrip("\n")
                    seen.setdefault(name, []).append(chapter)
    assert seen == {n: [c] for n, c in grade.EXERCISES.items()}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_lab_has_the_books_bootstrap_cell_and_fits_the_page(chapter):
    nb = _lab(chapter)
    url, _ = sync.config_repository(ROOT)
    first = sync.code_cells(nb)[0]
    assert sync.cell_text(first) == sync.bootstrap_source(url)
    assert sync.BOOTSTRAP_TAG in first["metadata"]["tags"]
    long = [
        line
        for cell in sync.code_cells(nb)
        for line in _source(cell).splitlines()
        if len(line) > 79
    ]
    assert long == []
    assert nb["cells"][0]["source"][0] == (
        f"# Lab: {labs.chapter_title(ROOT, chapter)}\n"
    )


def test_tagged_solution_cells_give_the_labs_context():
    context = labs.tagged_context(ROOT)
    assert len(context) >= 2
    for name, text in context.items():
        lab = _lab(grade.EXERCISES[name])
        markdown = [
            _source(c) for c in lab["cells"] if c["cell_type"] == "markdown"
        ]
        assert any(
            m.startswith(f"## ") and f"`{name}`" in m and text in m
            for m in markdown
        ), name


def _tagged_root(tmp_path, tag, kind="markdown"):
    (tmp_path / "notebooks").mkdir(parents=True)
    cell = {"cell_type": kind, "metadata": {"tags": [tag]}, "source": []}
    cell["source"] = ["## Heading\n", "Body line one\n", "and two."]
    nb = {"cells": [cell, cell]}
    (tmp_path / "notebooks" / "x.ipynb").write_text(json.dumps(nb))
    return tmp_path


def test_a_bad_tag_is_named(tmp_path):
    with pytest.raises(ValueError, match="names no exercise"):
        labs.tagged_context(_tagged_root(tmp_path / "a", "lab-exercise:no"))
    with pytest.raises(ValueError, match="used twice"):
        labs.tagged_context(
            _tagged_root(tmp_path / "b", "lab-exercise:loss_mask")
        )
    with pytest.raises(ValueError, match="on a code cell"):
        labs.tagged_context(
            _tagged_root(tmp_path / "c", "lab-exercise:loss_mask", "code")
        )


def test_doc_summary_and_chapter_title_by_hand():
    doc = "First ``x``\nline.\n\nSecond paragraph."
    assert labs.doc_summary(doc) == "First `x` line."
    assert labs.chapter_title(ROOT, "lora").startswith("LoRA")
    with pytest.raises(ValueError, match="chapter must have an exercise"):
        labs.render_lab(ROOT, "glossary")


def test_the_labs_are_a_part_of_the_toc_and_their_chapters_link_them():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    part = next(p for p in toc["parts"] if p["caption"] == "Labs")
    listed = [c["file"] for c in part["chapters"]]
    assert listed == [f"labs/{c}-lab" for c in CHAPTERS]
    assert set(listed) <= set(toc_docnames())
    for chapter in CHAPTERS:
        text = (ROOT / "chapters" / f"{chapter}.md").read_text()
        assert f"{{doc}}`../labs/{chapter}-lab`" in text, chapter


def test_the_problems_edition_keeps_the_colab_button_on_labs_only():
    from types import SimpleNamespace

    book = {
        "colab_url": "https://colab.research.google.com",
        "notebook_interface": "classic",
        "binderhub_url": "https://mybinder.org",
    }
    colab = {k: book[k] for k in ("colab_url", "notebook_interface")}
    assert sphinx_ext.lab_launch_buttons(book) == colab
    assert sphinx_ext.lab_launch_buttons({"binderhub_url": "x"}) == {}
    assert sphinx_ext.lab_launch_buttons(None) == {}
    config = SimpleNamespace(
        hide_solutions=True,
        html_theme_options={"launch_buttons": book, "use_download_button": 1},
    )
    app = SimpleNamespace(config=config)
    sphinx_ext._no_buttons_in_problems_edition(app, config)
    assert config.html_theme_options["launch_buttons"] == {}
    assert config.html_theme_options["use_download_button"] is False
    seen = {}
    for page in ("labs/fermi-lab", "chapters/fermi", "notebooks/fermi"):
        sphinx_ext._launch_buttons_on_labs_only(app, page, "", {}, None)
        seen[page] = config.html_theme_options["launch_buttons"]
    assert seen == {
        "labs/fermi-lab": colab,
        "chapters/fermi": {},
        "notebooks/fermi": {},
    }
    config.hide_solutions = False  # the full edition: left alone
    sphinx_ext._launch_buttons_on_labs_only(app, "chapters/fermi", "", {}, 0)
    assert config.html_theme_options["launch_buttons"] == {}


# --- "Run all": untouched, then every stub replaced by the reference ------


def _with_references(nb):
    """The lab's cells after its import cell again, each stub replaced by
    ``name = grade.reference("name")``."""
    cells = []
    for cell in nb.cells[3:]:
        if cell.cell_type != "code":
            continue
        cell = nbformat.from_dict(dict(cell))
        for name in grade.EXERCISES:
            if cell.source.startswith(f"def {name}("):
                cell.source = f'{name} = grade.reference("{name}")'
        cell.id = "ref-" + cell.id
        cells.append(cell)
    return cells


def _stream(cells, name):
    return "".join(
        o.get("text", "")
        for c in cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and o.name == name
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_run_all_finishes_unfinished_and_finished(
    chapter, tmp_path, monkeypatch
):
    nb = nbformat.read(labs.lab_path(ROOT, chapter), as_version=4)
    untouched = len(nb.cells)
    nb.cells += _with_references(nb)
    env_path = os.pathsep.join(
        [str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]
    )
    monkeypatch.setenv("PYTHONPATH", env_path)  # the kernel: this checkout
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    before, after = nb.cells[:untouched], nb.cells[untouched:]
    names = [n for n, c in grade.EXERCISES.items() if c == chapter]
    out = _stream(before, "stdout")
    for name in names:
        assert out.count(f"✗ {name}: not implemented yet") == 1, out
        assert (
            f"{name}: using the reference implementation until yours "
            "passes grade.check" in out
        ), out
    assert out.count("not implemented yet") == len(names), out
    done = _stream(after, "stdout")
    for name in names:
        assert f"✓ {name}: " in done, done
    assert "✗" not in done and "using the reference" not in done, done
    assert _stream(nb.cells, "stderr") == ""
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
