"""tools/short_glue_refs.py, tools/merge_glue_calls.py and tools/cell_stats.py on small inputs."""

import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))

import cell_stats  # noqa: E402
import merge_glue_calls as merge  # noqa: E402
import short_glue_refs  # noqa: E402


def test_short_glue_refs_rewrites_only_equivalent_roles():
    text = (
        "a {glue:text}`/notebooks/lora-basics.ipynb::ts_loss_k1:s` b "
        "{glue:text}`/notebooks/fermi.ipynb::c_gpt6:.2f`, "
        "{glue:text}`/notebooks/sub/x.ipynb::k:s` {glue:text}`/notebooks/x.ipynb::a b:s` "
        "{glue:text}`local_key:s` {glue:text}`/notebooks/x.ipynb::k:a:b`\n"
    )
    want = (
        "a {n}`lora-basics:ts_loss_k1` b {n}`fermi:c_gpt6:.2f`, "
        "{glue:text}`/notebooks/sub/x.ipynb::k:s` {glue:text}`/notebooks/x.ipynb::a b:s` "
        "{glue:text}`local_key:s` {glue:text}`/notebooks/x.ipynb::k:a:b`\n"
    )
    assert short_glue_refs.shorten(text) == want
    assert short_glue_refs.shorten(want) == want


MERGED = [
    # consecutive calls, a trailing and an own-line comment, then other code
    (
        'x = 1\nglue("a", fmt.sig(x))\nglue("b", fmt.sig(2 * x))  # twice\n# the figure\n'
        'glue("fig_a", fig)\nprint(x)\n',
        'x = 1\nglue({"a": fmt.sig(x), "b": fmt.sig(2 * x),  # twice\n      # the figure\n'
        '      "fig_a": fig})\nprint(x)\n',
    ),
    # inside a loop, f-string names; a multi-line value keeps its breaks, indented past its key
    (
        'for k, r in t.iterrows():\n    glue(f"{k}_a", f(r[0]))\n    glue(f"{k}_b", f(r[1]))\n'
        'glue("c", "in" if lo <= x <= hi\n     else "out")\nglue("d", 2)',
        'for k, r in t.iterrows():\n    glue({f"{k}_a": f(r[0]), f"{k}_b": f(r[1])})\n'
        'glue({"c": "in" if lo <= x <= hi\n          else "out",\n      "d": 2})',
    ),
    # an existing dict call takes the calls after it; items fill lines up to 79 characters
    (
        'glue({"a": 1,\n      "b": 2})\nglue("c_long_name_number_one", fmt.sig(value_one, 3))\n'
        'glue("c_long_name_number_two", fmt.sig(value_two, 3))\n',
        'glue({"a": 1, "b": 2, "c_long_name_number_one": fmt.sig(value_one, 3),\n'
        '      "c_long_name_number_two": fmt.sig(value_two, 3)})\n',
    ),
]


@pytest.mark.parametrize("src, want", MERGED)
def test_merge_glue_calls_merges_runs(src, want):
    assert merge.merge_source(src) == want
    assert merge.merge_source(want) == want


@pytest.mark.parametrize(
    "src",
    [
        'glue("a", 1)\n\nglue("b", 2)\n',  # a blank line: the author's groups
        'glue("a", 1)\nx = 2\nglue("b", x)\n',  # code between
        'glue("fig_a", fig)\nglue("b", plt.gcf())\n',  # reads what gluing a figure changes
        'glue("a", 1)\nglue("b", GLUED["a"])\n',  # reads what gluing changes
        'glue("b", 1)\nglue("b", 2)\n',  # a name glued twice
        'glue("a", 1); glue("b", 2)\n',  # two on a line
        'glue("a",  # the a\n     1)\nglue("b", 2)\n',  # a comment inside a call
        'glue("a", """x\ny""")\nglue("b", 2)\n',  # a multi-line string
        'glue("a", 1, display=True)\nglue("b", 2)\n',  # a keyword
        'glue("a", 1)\nglue("b", "'
        + "x" * 66
        + '")\n',  # 79 characters, 81 merged
        'glue("a", 1)\n%time glue("b", 2)\n',  # not Python
    ],
)
def test_merge_glue_calls_leaves_unsafe_or_unclear_code_alone(src):
    assert merge.merge_source(src) == src


def test_merge_keeps_lines_short_and_the_notebook_form(tmp_path):
    cells = [
        {
            "cell_type": "code",
            "source": ['glue("a", 1)\n', 'glue("b", "é")'],
            "metadata": {},
            "outputs": [],
            "execution_count": None,
        },
        {
            "cell_type": "code",
            "source": 'glue("a", 1)\nglue("b", 2)\n',
            "metadata": {},
            "outputs": [],
            "execution_count": None,
        },
        {
            "cell_type": "markdown",
            "source": ['glue("a", 1)\n', 'glue("b", 2)'],
            "metadata": {},
        },
    ]
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    merge.main([str(path)])
    text = path.read_text()
    got = json.loads(text)["cells"]
    assert got[0]["source"] == ['glue({"a": 1, "b": "é"})']
    assert got[1]["source"] == 'glue({"a": 1, "b": 2})\n'
    assert got[2]["source"] == cells[2]["source"]
    assert (
        text
        == json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n"
    )
    merge.main([str(path)])
    assert path.read_text() == text


def test_merged_long_runs_stay_within_79_characters():
    src = "".join(
        f'glue("name_{i}", fmt.sig(values[{i}] * scale_factor, 3))\n'
        for i in range(6)
    )
    out = merge.merge_source(
        "for _ in x:\n    " + src.replace("\n", "\n    ").rstrip() + "\n"
    )
    assert out.count("glue(") == 1
    assert max(map(len, out.splitlines())) <= 79


def test_cell_stats(tmp_path):
    def nb(*sources):
        return json.dumps(
            {
                "cells": [{"cell_type": "code", "source": s} for s in sources]
                + [{"cell_type": "markdown", "source": "x\n" * 50}]
            }
        )

    (tmp_path / "a.ipynb").write_text(
        nb("x = 1\n" * 40, 'glue("a", 1)\nglue({"b": 2})')
    )
    (tmp_path / "b.ipynb").write_text(
        nb(["y = 2\n", "glue(f'c', x)\n", "\n", "z"], "%time x\n")
    )
    stats = cell_stats.cell_stats(sorted(tmp_path.glob("*.ipynb")))
    assert stats == {
        "cells": 4,
        "median_lines": 3,
        "over_30": 1,
        "glue_calls": 3,
    }
