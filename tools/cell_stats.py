"""How long the notebooks' code cells are, and how many ``glue`` calls they make.

    python tools/cell_stats.py [--longest N] [notebooks/*.ipynb]   (default: every notebook)

Prints the number of code cells, the median number of lines per code cell (every line,
blank ones included, as a reader scrolls them), how many cells are over 30 lines, and the
number of ``glue(...)`` calls; with ``--longest N`` also the N longest cells. The house
aim: a median of at most 12 lines and at most 15 cells over 30 lines.
"""

from __future__ import annotations

import ast
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG = 30


def glue_calls(src: str) -> int:
    """The number of calls to ``glue`` in a cell's code (0 if it does not parse)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return 0
    return sum(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "glue"
        for n in ast.walk(tree)
    )


def code_cells(paths: list[Path]) -> list[tuple[str, int, str]]:
    """``(notebook name, index among its code cells, source)`` for every code cell."""
    found = []
    for path in paths:
        cells = [
            c
            for c in json.loads(path.read_text())["cells"]
            if c["cell_type"] == "code"
        ]
        for i, cell in enumerate(cells):
            src = cell["source"]
            found.append(
                (path.name, i, "".join(src) if isinstance(src, list) else src)
            )
    return found


def cell_stats(paths: list[Path]) -> dict:
    """``cells``, ``median_lines``, ``over_30`` and ``glue_calls`` over the notebooks."""
    cells = code_cells(paths)
    lines = [len(src.splitlines()) for _, _, src in cells]
    return {
        "cells": len(cells),
        "median_lines": statistics.median(lines) if lines else 0,
        "over_30": sum(n > LONG for n in lines),
        "glue_calls": sum(glue_calls(src) for _, _, src in cells),
    }


def main(argv: list[str]) -> int:
    longest = 0
    if argv[:1] == ["--longest"]:
        longest, argv = int(argv[1]), argv[2:]
    paths = [Path(p) for p in argv] or sorted(
        (ROOT / "notebooks").glob("*.ipynb")
    )
    stats = cell_stats(paths)
    print(
        f"{stats['cells']} code cells; median {stats['median_lines']} lines; "
        f"{stats['over_30']} over {LONG} lines; {stats['glue_calls']} glue calls"
    )
    ranked = sorted(code_cells(paths), key=lambda c: -len(c[2].splitlines()))
    for name, i, src in ranked[:longest]:
        print(f"{len(src.splitlines()):4d} lines  {name} code cell {i}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
