"""``LIBRARY-USES.md``: which notebooks use which library names."""

import json

from conftest import ROOT
from llmbook.book import uses

MODULES = {"llmbook.topics.lora", "llmbook.book.fmt", "llmbook.topics.zero"}


def test_public_names_are_top_level_functions_classes_and_constants():
    source = (
        "import math\nRATE = 2\n_HIDDEN = 1\nlower = 3\n"
        "def f():\n    def inner(): pass\nclass C:\n    def m(self): pass\n"
        "def _private(): pass\nLIMIT: int = 4\n"
    )
    assert uses.public_names(source) == ["RATE", "f", "C", "LIMIT"]


def test_names_used_follow_aliases_imports_and_full_paths():
    cells = [
        "%matplotlib inline\nfrom llmbook.topics import lora as L\n"
        "import sympy as sp\nimport llmbook.topics.zero",
        "from llmbook.book.fmt import sig, pct as percent\n"
        "r = L.lora_params(4) + llmbook.topics.zero.zero_bytes(1)\n"
        "sp.Symbol('x')",
        "this cell does not parse (",
        "L.LoRALinear",
    ]
    assert uses.names_used(cells, MODULES) == {
        ("llmbook.topics.lora", "lora_params"),
        ("llmbook.topics.lora", "LoRALinear"),
        ("llmbook.topics.zero", "zero_bytes"),
        ("llmbook.book.fmt", "sig"),
        ("llmbook.book.fmt", "pct"),
    }


def test_an_unimported_name_is_not_a_use():
    assert uses.names_used(["lora.lora_params(4)"], MODULES) == set()


def test_render_uses_on_a_tiny_repository(tmp_path):
    (tmp_path / "lib" / "llmbook" / "topics").mkdir(parents=True)
    (tmp_path / "lib" / "llmbook" / "topics" / "toy.py").write_text(
        "def used(): pass\ndef shown(): pass\ndef idle(): pass\n"
    )
    (tmp_path / "notebooks").mkdir()
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": "toy.idle()"},
            {
                "cell_type": "code",
                "source": ["from llmbook.topics import toy\n", "toy.used()"],
            },
        ]
    }
    (tmp_path / "notebooks" / "demo.ipynb").write_text(json.dumps(nb))
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "demo-lab.ipynb").write_text(json.dumps(nb))
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "toy.md").write_text(
        "```{literalinclude} ../lib/llmbook/topics/toy.py\n"
        ":pyobject: shown\n:language: python\n```\n"
    )
    text = uses.render_uses(tmp_path)
    assert "## `llmbook.topics.toy`" in text
    assert "| `used` | demo, labs/demo-lab | – |" in text
    assert "| `shown` | – | toy.md |" in text
    assert "| `idle` | – | – |" in text
    assert uses.write_uses(tmp_path) == [uses.USES_FILE]
    assert uses.write_uses(tmp_path) == []


def test_library_uses_is_up_to_date():
    path = ROOT / uses.USES_FILE
    assert path.exists() and path.read_text() == uses.render_uses(ROOT), (
        f"{uses.USES_FILE} is out of date: run `make sync`"
    )


def test_the_labs_are_listed_as_users_of_grade():
    from llmbook.book import labs

    text = (ROOT / uses.USES_FILE).read_text()
    section = text.split("## `llmbook.grade`")[1].split("\n## ")[0]
    row = next(
        line for line in section.splitlines() if line.startswith("| `use` |")
    )
    for chapter in labs.lab_chapters():
        assert f"labs/{chapter}-lab" in row, chapter
