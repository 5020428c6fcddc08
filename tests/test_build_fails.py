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
    return {
        "cells": [
            {
                "cell_type": "markdown",
                "metadata": {},
                "source": "# A broken page",
                "id": "m0",
            },
            {
                "cell_type": "code",
                "metadata": {},
                "source": code,
                "outputs": [],
                "execution_count": None,
                "id": "c0",
            },
        ],
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3",
                "language": "python",
                "name": "python3",
            }
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.mark.parametrize(
    "code, message",
    [
        ("raise RuntimeError('deliberate failure')", "deliberate failure"),
        ("import warnings\nwarnings.warn('deliberate warning')", "stderr"),
    ],
)
def test_a_broken_notebook_fails_the_build(tmp_path, code, message):
    for name in ["_config.yml", "references.bib"]:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "images", tmp_path / "images")
    (tmp_path / "intro.md").write_text(
        "# Intro\n\n```{bibliography}\n:all:\n```\n"
    )
    (tmp_path / "broken.ipynb").write_text(json.dumps(notebook(code)))
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: broken\n"
    )
    jb = str(
        __import__("pathlib").Path(sys.executable).with_name("jupyter-book")
    )
    proc = subprocess.run(
        [jb, "build", str(tmp_path), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_short_glue_role_pastes_and_a_wrong_reference_fails_the_build(
    tmp_path,
):
    """{n}`stem:name` pastes what notebooks/stem.ipynb glued; a wrong name or notebook is a
    warning naming the reference, so `-W` fails the build; in the problems-only edition the
    references inside a solution go with it."""
    for name in ["_config.yml", "references.bib"]:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "images", tmp_path / "images")
    (tmp_path / "notebooks").mkdir()
    code = "from llmbook.book.glue import glue\nglue({'short_x': '4.2 GB', 'short_y': 0.5})"
    (tmp_path / "notebooks" / "nb-a.ipynb").write_text(
        json.dumps(notebook(code))
    )
    good = (
        "# Good\n\nSize {n}`nb-a:short_x`, share {n}`nb-a:short_y:.0%`.\n\n"
        ":::{exercise}\n:label: ex-a\nAsk.\n:::\n\n"
        ":::{solution} ex-a\nAnswer {n}`nb-a:short_x` again.\n:::\n"
    )
    (tmp_path / "intro.md").write_text(good)
    (tmp_path / "wrong.md").write_text(
        "# Wrong\n\nA {n}`nb-a:short_z` and {n}`nb-b:short_x`.\n"
    )
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n"
        "  - file: notebooks/nb-a\n  - file: wrong\n"
    )
    jb = str(
        __import__("pathlib").Path(sys.executable).with_name("jupyter-book")
    )
    proc = subprocess.run(
        [jb, "build", str(tmp_path), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "wrong.md:3: WARNING: Glue reference 'short_z' not found in doc 'notebooks/nb-a'"
        in log
    )
    assert (
        "wrong.md:3: WARNING: {n}`nb-b:short_x`: no notebook notebooks/nb-b.ipynb in the book"
        in log
    )
    assert "intro.md" not in "".join(
        line for line in log.splitlines() if "WARNING" in line
    )
    html = (tmp_path / "_build" / "html" / "intro.html").read_text()
    assert (
        'Size <span class="pasted-text">4.2 GB</span>, share <span class="pasted-text">50%</span>'
        in html
    )
    assert html.count(">4.2 GB<") == 2

    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: notebooks/nb-a\n"
    )
    config = (
        (tmp_path / "_config.yml")
        .read_text()
        .replace("hide_solutions: false", "hide_solutions: true")
    )
    (tmp_path / "_config.yml").write_text(config)
    proc = subprocess.run(
        [
            jb,
            "build",
            str(tmp_path),
            "-W",
            "-n",
            "--keep-going",
            "--path-output",
            str(tmp_path / "problems"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    html = (
        tmp_path / "problems" / "_build" / "html" / "intro.html"
    ).read_text()
    assert html.count(">4.2 GB<") == 1, (
        "the solution's reference is dropped, the other kept"
    )
