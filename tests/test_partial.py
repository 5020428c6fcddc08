"""The partial build of `make check CHAPTER=...`: its toc, and which warnings are the
chapter's own (a fake book in a temporary folder, a fake log)."""

import json

import pytest

from llmbook.book import partial

TOC = {
    "format": "jb-book",
    "root": "intro",
    "parts": [
        {
            "caption": "Homework",
            "chapters": [
                {"file": "chapters/a", "sections": [{"file": "notebooks/a1"}]},
                {"file": "chapters/b", "sections": [{"file": "notebooks/b1"}]},
            ],
        },
        {"caption": "Reference", "chapters": [{"file": "chapters/index"}]},
    ],
}


@pytest.fixture
def book(tmp_path):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "chapters" / "a.md").write_text("(a-sec)=\n# A\n")
    (tmp_path / "chapters" / "b.md").write_text(
        "(b-sec)=\n# B\n:label: prop-b\n"
    )
    (tmp_path / "chapters" / "index.md").write_text("# Index\n")
    for name, src in [
        ("a1", "from llmbook.topics import fermi, dist as D\n"),
        ("b1", "import llmbook.topics.lora as lora\nglue('b_key', 1)"),
    ]:
        cells = [{"cell_type": "code", "source": [src], "metadata": {}}]
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text(
            json.dumps({"cells": cells})
        )
    return tmp_path


def test_partial_toc_keeps_the_chapter_its_notebooks_and_the_reference():
    toc = partial.partial_toc(TOC, ["a"])
    assert partial.toc_docs(toc) == [
        "intro",
        "chapters/a",
        "notebooks/a1",
        "chapters/index",
    ]
    assert partial.own_docs(toc) == ["chapters/a", "notebooks/a1"]
    assert partial.partial_toc(TOC, ["chapters/a.md"]) == toc


@pytest.mark.parametrize("chapters", [[], ["c"], ["a", "index2"]])
def test_partial_toc_rejects_unknown_chapters(chapters):
    with pytest.raises(ValueError, match="chapters"):
        partial.partial_toc(TOC, chapters)


def test_only_the_chapters_own_warnings_are_kept(book):
    a, nb, index = (
        book / "chapters" / "a.md",
        book / "notebooks" / "a1.ipynb",
        book / "chapters" / "index.md",
    )
    keep = [
        f"{a}:3: WARNING: undefined label: 'nowhere'",
        f"{a}:4: WARNING: unknown document: '../notebooks/zz'",
        f"{nb}:5: WARNING: stderr was found in the cell outputs of cell 2 [mystnb.stderr]",
        f"{a}:6: ERROR: Unknown directive type: 'exercize'",
        "WARNING: a warning of the whole build",
        f"{a}:docstring of x:1: WARNING: a form not understood",
    ]
    drop = [
        f"{index}:2: WARNING: undefined label: 'nowhere'",  # not the chapter's file
        f"{a}:3: WARNING: undefined label: 'b-sec'",  # defined in chapter b
        f"{a}:3: WARNING: prf:ref reference target not found: prop-b",
        f"{a}:4: WARNING: unknown document: 'b'",  # chapter b, left out
        f"{a}:4: WARNING: unknown document: '/notebooks/b1'",
        f"{a}:5: WARNING: Glue reference 'b_key' not found in doc 'notebooks/b1' [mystnb.glue_ref]",
        "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.",
        "build succeeded, 3 warnings.",
    ]
    log = "\n".join(f"\x1b[91m{line}\x1b[39;49;00m" for line in keep + drop)
    assert (
        partial.own_warnings(log, book, TOC, partial.partial_toc(TOC, ["a"]))
        == keep
    )


def test_topic_modules_reads_the_imports_of_the_notebooks(book):
    paths = [book / "notebooks" / f"{n}.ipynb" for n in ("a1", "b1")]
    assert partial.topic_modules(paths) == ["dist", "fermi", "lora"]
    assert partial.topic_modules([]) == []


def test_source_file_finds_md_or_ipynb(book):
    assert partial.source_file(book, "notebooks/a1").suffix == ".ipynb"
    with pytest.raises(FileNotFoundError):
        partial.source_file(book, "chapters/zz")
