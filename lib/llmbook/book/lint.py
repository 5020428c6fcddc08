"""The notebook checks: bootstrap cell first, one ``parameters`` cell second,
no outputs."""

from __future__ import annotations

from llmbook.book.sync import (
    PARAMETERS_TAG,
    bootstrap_source,
    cell_text,
    code_cells,
)


def notebook_problems(nb: dict, repo_url: str) -> list[str]:
    """What is wrong with a notebook's layout: bootstrap first, parameters
    second, no outputs.
    """
    problems = []
    cells = code_cells(nb)
    if len(cells) < 2:
        return ["needs a bootstrap cell and a parameters cell"]
    if cell_text(cells[0]) != bootstrap_source(repo_url):
        problems.append(
            "first code cell is not the current bootstrap "
            "cell (run `python -m llmbook.book sync`)"
        )
    if PARAMETERS_TAG not in cells[1].get("metadata", {}).get("tags", []):
        problems.append("second code cell is not tagged 'parameters'")
    tagged = [
        c
        for c in cells
        if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])
    ]
    if len(tagged) != 1:
        problems.append(
            f"has {len(tagged)} cells tagged 'parameters', wants exactly 1"
        )
    if any(c.get("outputs") or c.get("execution_count") for c in cells):
        problems.append("is committed with outputs or execution counts")
    return problems
