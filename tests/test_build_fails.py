"""The build configuration must fail loudly: a notebook that raises, or that writes to stderr
(a warning), fails `jupyter-book build -W -n --keep-going` with the book's own _config.yml."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.book


def notebook(code: str) -> dict:
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# A broken page", "id": "m0"},
                      {"cell_type": "code", "metadata": {}, "source": code, "outputs": [], "execution_count": None, "id": "c0"}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.parametrize("code, message", [
    ("raise RuntimeError('deliberate failure')", "deliberate failure"),
    ("import warnings\nwarnings.warn('deliberate warning')", "stderr"),
])
def test_a_broken_notebook_fails_the_build(tmp_path, code, message):
    for name in ["_config.yml", "references.bib"]:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "images", tmp_path / "images")
    (tmp_path / "intro.md").write_text("# Intro\n\n```{bibliography}\n:all:\n```\n")
    (tmp_path / "broken.ipynb").write_text(json.dumps(notebook(code)))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: broken\n")
    jb = str(__import__("pathlib").Path(sys.executable).with_name("jupyter-book"))
    proc = subprocess.run([jb, "build", str(tmp_path), "-W", "-n", "--keep-going"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
