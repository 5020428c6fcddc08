"""`make install` stops when the environment's llmbook is another checkout's (tools/check_venv.py)."""

import importlib.util
import os
import subprocess
import sys

from conftest import ROOT

TOOL = ROOT / "tools" / "check_venv.py"


def load():
    spec = importlib.util.spec_from_file_location("check_venv", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_this_checkouts_library_passes_and_another_is_named_with_the_fix(
    tmp_path,
):
    tool = load()
    mine = ROOT / "lib" / "llmbook" / "__init__.py"
    assert tool.venv_problem(str(mine), ROOT, "py") is None
    other = tmp_path / "lib" / "llmbook" / "__init__.py"
    problem = tool.venv_problem(str(other), ROOT, "py")
    assert (
        str(other.parent) in problem and "make clean-venv install" in problem
    )
    assert (
        "PYTHONPATH=$PWD/lib" in problem
        and f"py -m pip install -e {ROOT}" in problem
    )
    assert "make clean-venv install" in tool.venv_problem(None, ROOT, "py")


def test_the_script_fails_on_a_foreign_llmbook(tmp_path):
    fake = tmp_path / "llmbook"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    run = lambda path: subprocess.run(
        [sys.executable, str(TOOL)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(path)},
    )
    foreign = run(tmp_path)
    assert foreign.returncode == 1 and str(fake) in foreign.stderr
    assert run(ROOT / "lib").returncode == 0
