"""Stored seed checks (``llmbook.book.stored``): the file counts only for
its own settings, the live seed is shown as computed and compared with its
stored row, and in the built book the live seeds equal their stored rows
(a stale file fails here, not on a reader's CPU)."""

import json

import pytest

from llmbook.book import stored
from llmbook.book.glue import read_glued
from conftest import BUILD


def _write(tmp_path, settings, rows):
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"settings": settings, "rows": rows}))
    return path


def test_load_stored_matches_settings_only(tmp_path):
    path = _write(tmp_path, {"a": [1, 2], "b": 0.5, "seeds": [0, 1]}, [])
    assert stored.load_stored(path, {"a": (1, 2), "b": 0.5}) is not None
    assert stored.load_stored(path, {"a": [1, 2], "b": 0.5, "seeds": [9]})
    assert stored.load_stored(path, {"a": [1, 3], "b": 0.5}) is None
    assert stored.load_stored(path, {"a": [1, 2]}) is None  # b missing
    assert stored.load_stored(tmp_path / "none.json", {}) is None


def test_row_differences_by_hand():
    row = {"seed": 0, "x": {"lr": [1e-2, 2e-2], "edge": [False, True]}}
    assert stored.row_differences(row, json.loads(json.dumps(row))) == []
    near = {"seed": 0, "x": {"lr": [1.0005e-2, 2e-2], "edge": [False, True]}}
    assert stored.row_differences(near, row) == []  # within rtol 1e-3
    far = {"seed": 0, "x": {"lr": [1.01e-2, 2e-2], "edge": [False, False]}}
    assert stored.row_differences(far, row) == [
        "x/lr[0]: 0.0101 here, 0.01 stored",
        "x/edge[1]: False here, True stored",
    ]
    assert (
        stored.row_differences({"a": float("nan")}, {"a": float("nan")}) == []
    )
    assert stored.row_differences({"a": 1}, {"b": 1})  # other keys
    assert stored.row_differences({"a": [1]}, {"a": [1, 2]})  # lengths
    assert stored.row_differences({"a": True}, {"a": 1})  # bool is no number


def test_rows_with_live(tmp_path):
    rows = [{"seed": 0, "v": 1.0}, {"seed": 1, "v": 2.0}]
    path = _write(tmp_path, {"k": 1, "seeds": [0, 1]}, rows)
    live = {"seed": 0, "v": 1.0}
    assert stored.rows_with_live(live, path, {"k": 1}) == (rows, True, [])
    moved = {"seed": 0, "v": 1.5}
    got, from_file, diffs = stored.rows_with_live(moved, path, {"k": 1})
    assert got == [moved, rows[1]] and from_file
    assert diffs == ["v: 1.5 here, 1.0 stored"]
    assert stored.rows_with_live(live, path, {"k": 2}) == ([live], False, [])
    other = {"seed": 5, "v": 1.0}
    assert stored.rows_with_live(other, path, {"k": 1}) == ([other], False, [])
    assert stored.agreement_text([], "t") == "equals its stored row"
    text = stored.agreement_text(["a", "b"], "python tools/x.py")
    assert "2 entries" in text and "python tools/x.py" in text


@pytest.mark.parametrize("notebook", ["cost-mup.ipynb", "cost-isoflop.ipynb"])
def test_built_live_seed_equals_its_stored_row(built_book, notebook):
    from llmbook.book import report

    glued = read_glued(report.executed_notebook(BUILD, notebook))
    assert glued["seeds_live"] == "equals its stored row", (
        f"{notebook}: the live seed {glued['seeds_live']}; the stored file "
        "is stale: run its tool (tools/*_seeds.py) on this machine and commit"
    )
