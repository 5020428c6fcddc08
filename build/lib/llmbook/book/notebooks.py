"""Notebooks in one normal form, their code cells formatted by ruff.

``make sync`` writes every notebook in the normal form (:func:`dumps`):
nbformat's own layout (keys sorted, one space of indent), every cell's
``source`` a list of lines, code cells without outputs. ``make format`` also
runs ``ruff format`` (configured in ``pyproject.toml``) on each code cell,
except the bootstrap cell (``make sync`` writes it) and the ``parameters``
cell, whose aligned comments, one assumption per line, a formatter would
collapse. ``make lint`` lists what either would change (:func:`lint`).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from llmbook.book.sync import BOOTSTRAP_TAG, PARAMETERS_TAG

# Cells ``make format`` leaves as they are.
SKIP_TAGS = (BOOTSTRAP_TAG, PARAMETERS_TAG)
FIX = "run `make format`"


def _lines(text) -> list[str]:
    """A source as a list of lines, each keeping its newline."""
    if isinstance(text, list):
        text = "".join(text)
    return text.splitlines(keepends=True)


def _free_id(index: int, taken: set[str]) -> str:
    """A cell id not in ``taken``, ``c<index>`` with a letter if need be."""
    base = f"c{index:02d}"
    for suffix in ["", *"abcdefghijklmnopqrstuvwxyz"]:
        if base + suffix not in taken:
            return base + suffix
    raise ValueError(f"no free cell id near {base!r}")


def normal_form(nb: dict) -> dict:
    """A copy of ``nb`` (as ``json.load`` gives it) in the normal form.

    Every cell's ``source`` is a list of lines
    (``str.splitlines(keepends=True)``, the nbformat convention); code cells
    have ``outputs: []`` and ``execution_count: null``; cell ids are kept,
    and one is added where it is missing; what nbformat never stores
    (``trusted``, ``orig_nbformat``, ``signature``) is dropped.
    """
    if not isinstance(nb.get("cells"), list):
        raise ValueError("nb has no list of cells")
    out = copy.deepcopy(nb)
    for key in ("orig_nbformat", "orig_nbformat_minor", "signature"):
        out.get("metadata", {}).pop(key, None)
    taken = {c["id"] for c in out["cells"] if "id" in c}
    for i, cell in enumerate(out["cells"]):
        cell["source"] = _lines(cell.get("source", ""))
        cell.get("metadata", {}).pop("trusted", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        if "id" not in cell:
            cell["id"] = _free_id(i, taken)
            taken.add(cell["id"])
    return out


def dumps(nb: dict) -> str:
    """The normal form of ``nb`` as the text of its file: what
    ``nbformat.write`` writes (keys sorted, indent 1, UTF-8 kept), ending in
    a newline.
    """
    return (
        json.dumps(
            normal_form(nb), indent=1, sort_keys=True, ensure_ascii=False
        )
        + "\n"
    )


def ruff_formats(cell: dict) -> bool:
    """Whether ``make format`` formats this cell: a code cell tagged neither
    ``bootstrap`` nor ``parameters``.
    """
    tags = cell.get("metadata", {}).get("tags", [])
    return cell["cell_type"] == "code" and not set(tags) & set(SKIP_TAGS)


def ruff_format_cells(notebooks: list[dict], config: Path) -> list[dict]:
    """Copies of ``notebooks`` in normal form with their code cells run
    through ``ruff format`` (one ruff call for all of them).

    ``config`` is the ``pyproject.toml`` holding ``[tool.ruff]``. Only the
    cells :func:`ruff_formats` picks are handed to ruff; it formats each
    cell on its own, keeps IPython magics (``%``, ``!``) and a final ``;``.
    """
    normal = [normal_form(nb) for nb in notebooks]
    with tempfile.TemporaryDirectory() as tmp:
        picked = []
        for k, nb in enumerate(normal):
            cells = [c for c in nb["cells"] if ruff_formats(c)]
            picked.append(cells)
            # ruff skips a notebook that does not say it is Python
            meta = {"language_info": {"name": "python"}}
            part = {**nb, "metadata": meta, "cells": cells}
            (Path(tmp) / f"nb{k:03d}.ipynb").write_text(json.dumps(part))
        cmd = [sys.executable, "-m", "ruff", "format", "--quiet"]
        cmd += ["--no-cache", "--config", str(config), tmp]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"ruff format failed:\n{run.stderr}")
        for k, cells in enumerate(picked):
            path = Path(tmp) / f"nb{k:03d}.ipynb"
            done = json.loads(path.read_text())["cells"]
            for cell, new in zip(cells, done, strict=True):
                cell["source"] = _lines(new["source"])
    return normal


def _notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("*.ipynb"))


def _wanted(root: Path, paths: list[Path]) -> list[str]:
    """The text each notebook should hold: normal form, formatted cells."""
    nbs = [json.loads(p.read_text()) for p in paths]
    done = ruff_format_cells(nbs, root / "pyproject.toml")
    return [dumps(nb) for nb in done]


def write_normal_form(root: Path) -> list[str]:
    """Rewrite every notebook not in the normal form (cells unformatted);
    return the files changed. ``make sync`` runs it.
    """
    changed = []
    for path in _notebooks(root):
        text = path.read_text()
        new = dumps(json.loads(text))
        if new != text:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    return changed


def format_notebooks(root: Path) -> list[str]:
    """Rewrite every notebook in normal form with formatted code cells;
    return the files changed. ``make format`` runs it.
    """
    paths = _notebooks(root)
    changed = []
    for path, new in zip(paths, _wanted(root, paths), strict=True):
        if path.read_text() != new:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    return changed


def lint(root: Path) -> list[str]:
    """What ``make format`` would change in the notebooks, without writing:
    one line per notebook not in normal form and per code cell that ruff
    would reformat. Empty when all is well.
    """
    paths = _notebooks(root)
    problems = []
    for path, new in zip(paths, _wanted(root, paths), strict=True):
        text = path.read_text()
        if text == new:
            continue
        name = str(path.relative_to(root))
        if dumps(json.loads(text)) != text:
            problems.append(f"{name}: not in the normal form")
        before = json.loads(text)["cells"]
        after = json.loads(new)["cells"]
        for old, cell in zip(before, after, strict=True):
            if "".join(old.get("source", "")) != "".join(cell["source"]):
                problems.append(f"{name} cell {cell['id']}: not formatted")
    return problems
