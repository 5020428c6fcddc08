"""Book infrastructure: the Colab bootstrap cell, the problems-only edition's
config, the Problem Index, and ``sync``, which rewrites what is generated.

Run ``python -m llmbook.book sync`` after changing ``repository.url`` in
``_config.yml`` or adding a question label: it rewrites every notebook's
bootstrap cell and the Problem Index page. The tests fail while either is out
of date.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

BOOTSTRAP_TAG = "bootstrap"
# The bootstrap cell's tags: ``hide-input`` folds its set-up code on the page
# (myst-nb's "Show code cell source"), the same on every notebook.
BOOTSTRAP_TAGS = (BOOTSTRAP_TAG, "hide-input")
PARAMETERS_TAG = "parameters"
LABEL_RE = re.compile(r"^\(([A-Za-z0-9_.-]+)\)=\s*$", re.MULTILINE)


def repo_root(start: Path | None = None) -> Path:
    """The folder holding ``_config.yml``, searching upward from ``start``
    (default: cwd).
    """
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "_config.yml").is_file():
            return folder
    raise FileNotFoundError(
        "no _config.yml above the current folder: "
        "run this inside the book's repository"
    )


def config_repository(root: Path) -> tuple[str, str]:
    """``(url, branch)`` of ``repository:`` in ``_config.yml`` (read without
    a YAML dependency).
    """
    text = (root / "_config.yml").read_text()
    block = re.search(
        r"^repository:\s*\n((?:[ \t]+.*\n?)+)", text, re.MULTILINE
    )
    if not block:
        raise ValueError("_config.yml has no repository: block")
    fields = dict(
        re.findall(
            r"^\s+(\w+):\s*\"?([^\"\n#]*?)\"?\s*(?:#.*)?$",
            block.group(1),
            re.MULTILINE,
        )
    )
    return fields["url"], fields.get("branch", "main")


def bootstrap_source(repo_url: str) -> str:
    """The identical first code cell of every notebook: install ``llmbook``
    only if it is missing.

    The install address comes from ``repository.url`` in ``_config.yml``; the
    environment variable ``LLMBOOK_INSTALL_URL`` overrides it (the Colab
    simulation test points it at a local ``git+file://`` clone).
    """
    return (
        "# Set-up for Colab or a fresh "
        "environment: install the book's library\n"
        "# if it is missing. It uses the torch, numpy and pandas already\n"
        "# installed and never replaces them.\n"
        "try:\n"
        "    import llmbook\n"
        "except ImportError:\n"
        "    import os, subprocess, sys\n"
        "\n"
        f'    default = "git+{repo_url}"\n'
        '    url = os.environ.get("LLMBOOK_INSTALL_URL", default)\n'
        '    pip = [sys.executable, "-m", "pip", "install", "-q"]\n'
        '    subprocess.run(pip + [f"llmbook @ {url}"], check=True)\n'
        "    import llmbook"
    )


def problems_config(root: Path, cache: Path | None = None) -> str:
    """``_config.yml`` for the instructors' problems-only edition (``make
    problems``).

    The same book with ``hide_solutions: true`` (sphinx-exercise drops every
    solution; the book's Sphinx extension reduces notebook pages to their
    titles) and the notebooks' execution cache shared with the full build, so
    nothing runs twice. ``cache`` is that build's jupyter-cache folder
    (default ``_build/.jupyter_cache``; ``make check`` passes a partial
    build's).
    """
    text = (root / "_config.yml").read_text()
    if "hide_solutions: false" not in text:
        raise ValueError(
            "_config.yml must set `hide_solutions: false` under sphinx.config"
        )
    text = text.replace("hide_solutions: false", "hide_solutions: true")
    text = re.sub(
        r'^title: "(.*)"',
        r'title: "\1: problems"',
        text,
        count=1,
        flags=re.MULTILINE,
    )
    cache = Path(cache or root / "_build" / ".jupyter_cache").resolve()
    text = text.replace("execute:\n", f"execute:\n  cache: {cache}\n", 1)
    return text


def code_cells(nb: dict) -> list[dict]:
    """The code cells of a notebook (a dict as ``json.load`` gives it)."""
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def cell_text(cell: dict) -> str:
    """A cell's source as one string (notebooks store a string or a list)."""
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def read_questions(root: Path) -> list[dict]:
    """Rows of ``data/questions.csv``: id, source, chapter, asks."""
    with open(root / "data" / "questions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def chapter_labels(root: Path) -> dict[str, list[str]]:
    """Every MyST label ``(name)=`` in ``chapters/*.md``, mapped to the
    files that define it.
    """
    found: dict[str, list[str]] = {}
    for page in sorted((root / "chapters").glob("*.md")):
        for label in LABEL_RE.findall(page.read_text()):
            found.setdefault(label, []).append(page.name)
    return found


SOURCE_NAMES = {
    "hw11": "Berkeley EECS 182, Homework 11",
    "genai": "Saarland Generative AI, week 4 (a student's worked answers)",
    "dls": "UCSD Deep Learning Systems lecture",
    "scale": "Lecture 18, Scaling",
    "cme295": "Stanford CME 295 lecture",
}


def render_problem_index(root: Path) -> str:
    """The Problem Index page: one line per question id, linked where it is
    answered.
    """
    labels = chapter_labels(root)
    questions = read_questions(root)
    open_ids = [q["id"] for q in questions if q["id"] not in labels]
    lines = [
        "(problem-index)=",
        "# Problem index",
        "",
        "Every question and worked result of the "
        "homework, the student's assignment and the",
        "lectures, by its stable id; each id links to "
        "the section that answers it.",
    ]
    if open_ids:
        lines.append("Ids without a link belong to chapters in preparation.")
    lines.append("")
    current = None
    for q in questions:
        if q["source"] != current:
            current = q["source"]
            lines += ["", f"## {SOURCE_NAMES.get(current, current)}", ""]
        qid = q["id"]
        link = (
            f"{{ref}}`{qid} <{qid}>`"
            if qid in labels
            else f"`{qid}` (in preparation)"
        )
        lines.append(f"- {link}: {q['asks']}")
    return "\n".join(lines) + "\n"


def sync(root: Path) -> list[str]:
    """Rewrite the bootstrap cells, the notebooks' normal form, the Problem
    Index and ``LIBRARY-USES.md``; return the files changed.
    """
    # imported here: both modules import this one
    from llmbook.book.notebooks import dumps, write_normal_form
    from llmbook.book.uses import write_uses

    url, _ = config_repository(root)
    changed = []
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        first = code_cells(nb)[0]
        tags = first.setdefault("metadata", {}).setdefault("tags", [])
        missing = [t for t in BOOTSTRAP_TAGS if t not in tags]
        if cell_text(first) != bootstrap_source(url) or missing:
            first["source"] = bootstrap_source(url)
            tags += missing
            path.write_text(dumps(nb))
            changed.append(str(path.relative_to(root)))
    changed += write_normal_form(root)
    index = root / "chapters" / "problem-index.md"
    text = render_problem_index(root)
    if not index.exists() or index.read_text() != text:
        index.write_text(text)
        changed.append(str(index.relative_to(root)))
    changed += write_uses(root)
    return changed
