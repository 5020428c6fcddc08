"""The {n} role and the static check that every value a chapter pastes is
glued by the notebook it names (no notebook runs here)."""

import json
import re

import pytest

from conftest import ROOT
from llmbook.book import lint
from llmbook.book.sphinx_ext import short_glue_target


def notebook(*sources):
    return {
        "cells": [
            {"cell_type": "code", "source": s, "metadata": {}} for s in sources
        ]
    }


@pytest.mark.parametrize(
    "text, want",
    [
        (
            "lora-basics:ts_loss_k1",
            "/notebooks/lora-basics.ipynb::ts_loss_k1:s",
        ),
        ("cost_mup:x2:.2f", "/notebooks/cost_mup.ipynb::x2:.2f"),
        ("fermi:c_gpt6:,d", "/notebooks/fermi.ipynb::c_gpt6:,d"),
    ],
)
def test_short_glue_target(text, want):
    assert short_glue_target(text) == want


@pytest.mark.parametrize(
    "text",
    ["fermi", "fermi:", ":c_gpt6", "fermi::c", "a/b:c", "fermi:c d", ""],
)
def test_short_glue_target_rejects_other_forms(text):
    with pytest.raises(ValueError, match="notebook:name"):
        short_glue_target(text)


def test_glue_references_reads_both_forms():
    text = (
        "a {n}`lora-basics:ts_loss_k1` b {n}`fermi:x:.2f` and "
        "{glue:text}`/notebooks/cost-mup.ipynb::lr_star:s`; ``{glue} fig``"
    )
    assert lint.glue_references(text) == [
        ("lora-basics", "ts_loss_k1"),
        ("fermi", "x"),
        ("cost-mup", "lr_star"),
    ]
    with pytest.raises(ValueError, match="malformed"):
        lint.glue_references("{n}`fermi`")


def test_glued_names_literal_dict_loop_function_and_fstring():
    nb = notebook(
        'glue("a", 1)\nglue({"b": 2, f"c_{k}": 3})',
        'for name, f in (("iso_a", 1), ("iso_b", 2)):\n'
        '    glue(name, f)\n    glue(f"{name}_ci", f)',
        "def checked(key, x):\n    glue(key, x)",
        'checked("chk_zero", 0)\nchecked(key="chk_one", x=1)',
        "glue(f'{row.k:>3}_x', 1)",
        'glue_verdict("v_x", (0, 1), (2, 3))',
    )
    got = lint.glued_names(nb)
    assert got["names"] == [
        "a",
        "b",
        "chk_one",
        "chk_zero",
        "iso_a",
        "iso_b",
        "v_x",
    ]
    assert got["patterns"] == [
        "(?:iso_a|iso_b)_ci",
        "[A-Za-z0-9_]+_x",
        "c_[A-Za-z0-9_]+",
    ]
    assert got["unresolved"] == []


def test_glued_names_lists_what_it_cannot_resolve():
    nb = notebook(
        "for n in names:\n    glue(n, 1)",
        "glue(d['k'], 2)",
        "glue(values)",
        "def f(key):\n    glue(key, 1)\n\nf(other)",
    )
    assert lint.glued_names(nb)["unresolved"] == [
        "n",
        "d['k']",
        "values",
        "key",
    ]


def test_every_pasted_value_is_glued_by_the_notebook_it_names():
    glued = {
        p.stem: lint.glued_names(json.loads(p.read_text()))
        for p in (ROOT / "notebooks").glob("*.ipynb")
    }
    unresolved = {
        stem: g["unresolved"] for stem, g in glued.items() if g["unresolved"]
    }
    assert unresolved == {}, (
        "glue names the check cannot read; use a literal, an f-string or a loop over literals"
    )
    missing, count = [], 0
    for chapter in sorted((ROOT / "chapters").glob("*.md")):
        for stem, name in lint.glue_references(chapter.read_text()):
            count += 1
            g = glued.get(stem)
            if g is None:
                missing.append(
                    f"{chapter.name}: {{n}}`{stem}:{name}`: no notebooks/{stem}.ipynb"
                )
            elif name not in g["names"] and not any(
                re.fullmatch(p, name) for p in g["patterns"]
            ):
                missing.append(
                    f"{chapter.name}: {{n}}`{stem}:{name}`: {stem} does not glue {name!r}"
                )
    assert count > 1000
    assert missing == []


def test_glued_names_reads_glue_verdict():
    nb = notebook(
        'glue_verdict("v_a", (0, 1), (2, 3))',
        'for name in ("v_b", "v_c"):\n    glue_verdict(name, a, b)',
    )
    assert lint.glued_names(nb)["names"] == ["v_a", "v_b", "v_c"]


GLUE_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```\{(?P<kind>glue(?::\w*)?)\} (?P<key>\w+)\n"
    r"(?P<body>.*?)^(?P=indent)```$",
    re.MULTILINE | re.DOTALL,
)


def test_glue_blocks_reads_a_figure_and_its_caption():
    text = (
        "```{glue:figure} fig_a\n:doc: /notebooks/x.ipynb\n:name: fig-a\n\n"
        "What it shows.\n```\n\n  ```{glue} fig_b\n  :doc: /n.ipynb\n  ```\n"
    )
    found = [(m["kind"], m["key"]) for m in GLUE_BLOCK.finditer(text)]
    assert found == [("glue:figure", "fig_a"), ("glue", "fig_b")]


def test_every_chapter_figure_is_a_named_glue_figure_with_a_caption():
    # Issue 20: a pasted figure is numbered, can be referred to, and says
    # what it shows (the HTML test checks the built page).
    problems = []
    for path in sorted((ROOT / "chapters").glob("*.md")):
        for m in GLUE_BLOCK.finditer(path.read_text()):
            where = f"{path.name}: {m['key']}"
            options = [
                line.strip()
                for line in m["body"].splitlines()
                if line.strip().startswith(":")
            ]
            caption = [
                line
                for line in m["body"].splitlines()
                if line.strip() and not line.strip().startswith(":")
            ]
            if m["kind"] != "glue:figure":
                if m["key"].startswith("fig"):  # a figure, by its name
                    problems.append(f"{where}: use {{glue:figure}}")
            elif not any(o.startswith(":name:") for o in options):
                problems.append(f"{where}: no :name:")
            elif not caption:
                problems.append(f"{where}: no caption")
    assert problems == [], problems
