"""The notebook checks: bootstrap cell first, one ``parameters`` cell second,
no outputs, no variable named like an ``llmbook`` module it imports. Each
message says what to do about it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
            "cell: run `make sync`"
        )
    if PARAMETERS_TAG not in cells[1].get("metadata", {}).get("tags", []):
        problems.append(
            "second code cell is not tagged 'parameters': add the tag "
            "to the cell that holds the assumptions and move it second"
        )
    tagged = [
        c
        for c in cells
        if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])
    ]
    if len(tagged) != 1:
        problems.append(
            f"has {len(tagged)} cells tagged 'parameters', wants "
            "exactly 1: keep the tag on the second code cell only"
        )
    if any(c.get("outputs") or c.get("execution_count") for c in cells):
        problems.append(
            "is committed with outputs or execution counts: run "
            "`jupyter nbconvert --clear-output --inplace` on it"
        )
    return problems + shadowed_modules(nb)


_PACKAGE = Path(__file__).resolve().parents[1]
_MAGIC = re.compile(r"^\s*[%!]")


def _is_llmbook_module(dotted: str) -> bool:
    """Whether ``dotted`` (``llmbook.topics.costs``) names a module or a
    package of ``llmbook`` (read from the files, nothing is imported).
    """
    parts = dotted.split(".")
    if parts[0] != "llmbook":
        return False
    path = _PACKAGE.joinpath(*parts[1:])
    return (
        path.with_suffix(".py").is_file()
        or (path / "__init__.py").is_file()
    )


def _bindings(stmts: list[ast.stmt]):
    """``(name, node)`` for every name bound at module level by ``stmts``
    (assignments, loop and ``with`` targets, ``def``, ``class``,
    imports), looking into ``if``/``for``/``while``/``with``/``try``
    bodies but not into functions or classes.
    """
    def targets(node):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                yield from targets(elt)
        elif isinstance(node, ast.Starred):
            yield from targets(node.value)

    for stmt in stmts:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                for name in targets(target):
                    yield name, stmt
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            for name in targets(stmt.target):
                yield name, stmt
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            for name in targets(stmt.target):
                yield name, stmt
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    for name in targets(item.optional_vars):
                        yield name, stmt
        elif isinstance(
            stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ):
            yield stmt.name, stmt
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                name = alias.asname or alias.name.split(".")[0]
                yield name, stmt
        for field in ("body", "orelse", "finalbody"):
            if not isinstance(
                stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ):
                yield from _bindings(getattr(stmt, field, []) or [])
        for handler in getattr(stmt, "handlers", []) or []:
            yield from _bindings(handler.body)


def _module_bound(stmt: ast.stmt, name: str) -> str | None:
    """The ``llmbook`` module an import statement binds to ``name``, if
    any.
    """
    if isinstance(stmt, ast.ImportFrom) and stmt.level == 0:
        for alias in stmt.names:
            dotted = f"{stmt.module}.{alias.name}"
            if (alias.asname or alias.name) == name and _is_llmbook_module(
                dotted
            ):
                return dotted
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            if alias.asname == name and _is_llmbook_module(alias.name):
                return alias.name
    return None


def shadowed_modules(nb: dict) -> list[str]:
    """Top-level names of a notebook that rebind an ``llmbook`` module it
    imports (``costs = pd.concat(...)`` after ``from llmbook.topics import
    costs``): each with its cell number (counted from 0 over all cells)
    and id, and the fix, "rename the variable".
    """
    cells = []
    for number, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(
            "pass" if _MAGIC.match(line) else line
            for line in cell_text(cell).splitlines()
        )
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        cells.append((number, cell.get("id"), list(_bindings(tree.body))))
    modules = {
        name: _module_bound(stmt, name)
        for _, _, found in cells
        for name, stmt in found
        if _module_bound(stmt, name)
    }
    problems = []
    for number, cell_id, found in cells:
        for name, stmt in found:
            if name not in modules:
                continue
            if _module_bound(stmt, name) != modules[name]:
                where = f"cell {number}"
                if cell_id:
                    where += f" (id {cell_id})"
                problems.append(
                    f"{where} line {stmt.lineno} assigns `{name}`, the name "
                    f"of the module {modules[name]} the notebook imports: "
                    "rename the variable"
                )
    return problems
