"""tools/split_long_strings.py splits long strings, never comments."""

import importlib.util
import json

from conftest import ROOT

spec = importlib.util.spec_from_file_location(
    "split_long_strings", ROOT / "tools" / "split_long_strings.py"
)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

WORDS = " ".join(["word"] * 25)


def test_a_long_string_line_is_split_within_79_columns():
    src = f'x = (\n    "{WORDS}"\n)'
    new = tool.fix_source(src)
    assert new != src
    assert all(len(line) <= 79 for line in new.split("\n"))
    scope = {}
    exec(new, scope)
    assert scope["x"] == WORDS


def test_comments_and_docstrings_are_left_as_they_are(tmp_path, capsys):
    src = f'# {WORDS}\ndef f():\n    """{WORDS}"""\n    return 1  # {WORDS}\n'
    assert tool.fix_source(src) == src
    path = tmp_path / "m.py"
    path.write_text(src)
    tool.main([str(path)])
    assert path.read_text() == src
    assert capsys.readouterr().out.count("to wrap by hand") == 1


def test_a_notebook_comes_back_in_normal_form(tmp_path):
    cell = {
        "cell_type": "code",
        "id": "a",
        "metadata": {},
        "source": f'print(\n    "{WORDS}"\n)',
    }
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps({"cells": [cell], "metadata": {}}))
    tool.main([str(path)])
    new = json.loads(path.read_text())["cells"][0]
    assert isinstance(new["source"], list) and len(new["source"]) == 4
    assert new["outputs"] == []
