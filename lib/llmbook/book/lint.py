"""The notebook checks: bootstrap cell first, one ``parameters`` cell second,
no outputs, no variable named like an ``llmbook`` module it imports (each
message says what to do about it); and the names each notebook glues, for
checking the chapters' references without running anything."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from llmbook.book.sync import (
    BOOTSTRAP_TAGS,
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
    tags = cells[0].get("metadata", {}).get("tags", [])
    missing = [t for t in BOOTSTRAP_TAGS if t not in tags]
    if missing:
        problems.append(
            f"bootstrap cell lacks the tags {missing}: run `make sync`"
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
        path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
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


# Where a glue name is built at run time, one part of it matches this.
NAME_PART = "[A-Za-z0-9_]+"
# A pasted value in a chapter: {n}`stem:name[:spec]` or the long form.
SHORT_REF = re.compile(r"\{n\}`([^`]*)`")
LONG_REF = re.compile(
    r"\{glue:text\}`/notebooks/([^`/]+)\.ipynb::([A-Za-z0-9_]+)(?::[^`]*)?`"
)


def glued_names(nb: dict) -> dict[str, list[str]]:
    """The names a notebook's code glues, found without running it.

    Reads every ``glue("name", value)``, ``glue({"name": value, ...})`` and
    ``glue_verdict("name", ...)`` call. A name held in a variable is
    resolved where a ``for`` loop runs it over literal tuples, or where it is
    a parameter of a function called with literal names (in any cell); an
    f-string name becomes a regular expression in which each ``{...}`` takes
    those values, or else matches ``NAME_PART``.

    Returns ``{"names": [...], "patterns": [...], "unresolved": [...]}``: the
    literal names, the regular expressions, and the source of every name
    argument that could not be resolved.

    Example: ``for k in ("a", "b"): glue(f"x_{k}", ...)`` gives the pattern
    ``x_(?:a|b)``; ``glue(f"x_{row.key}", ...)`` gives ``x_[A-Za-z0-9_]+``.
    """
    names: set[str] = set()
    patterns: set[str] = set()
    unresolved: list[str] = []
    trees = [ast.parse(cell_text(cell)) for cell in code_cells(nb)]
    for tree in trees:
        parents = {
            child: node
            for node in ast.walk(tree)
            for child in ast.iter_child_nodes(node)
        }
        for call in ast.walk(tree):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id in ("glue", "glue_verdict")
                and call.args
            ):
                continue
            arg = call.args[0]
            keys = arg.keys if isinstance(arg, ast.Dict) else [arg]
            for key in keys:
                found = _name_values(key, call, trees, parents)
                if found is None:
                    unresolved.append(
                        "**" if key is None else ast.unparse(key)
                    )
                    continue
                for value in found:
                    (patterns if isinstance(value, re.Pattern) else names).add(
                        value.pattern
                        if isinstance(value, re.Pattern)
                        else value
                    )
    return {
        "names": sorted(names),
        "patterns": sorted(patterns),
        "unresolved": unresolved,
    }


def _name_values(key, call, trees, parents) -> list | None:
    """Literal names (str) or patterns (re.Pattern) a glue key can take."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return [key.value]
    if isinstance(key, ast.JoinedStr):
        regex = "".join(
            _part_regex(part, call, trees, parents) for part in key.values
        )
        return [re.compile(regex)]
    if not isinstance(key, ast.Name):
        return None
    node = call
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.For):
            found = _loop_values(node, key.id)
            if found is not None:
                return found
        if isinstance(node, ast.FunctionDef):
            return _argument_values(node, key.id, trees)
    return None


def _part_regex(part, call, trees, parents) -> str:
    """A regular expression for one part of an f-string name."""
    if isinstance(part, ast.Constant):
        return re.escape(part.value)
    plain = part.conversion == -1 and part.format_spec is None
    if plain and isinstance(part.value, ast.Name):
        found = _name_values(part.value, call, trees, parents)
        if found and all(isinstance(v, str) for v in found):
            return "(?:" + "|".join(map(re.escape, found)) + ")"
    return NAME_PART


def _loop_values(loop: ast.For, var: str) -> list[str] | None:
    """``var``'s values in ``for var[, ...] in <literal tuples>``."""
    target = loop.target
    if isinstance(target, ast.Name) and target.id == var:
        index = None
    elif isinstance(target, ast.Tuple) and any(
        isinstance(t, ast.Name) and t.id == var for t in target.elts
    ):
        index = next(
            i
            for i, t in enumerate(target.elts)
            if isinstance(t, ast.Name) and t.id == var
        )
    else:
        return None
    if not isinstance(loop.iter, (ast.Tuple, ast.List)):
        return None
    values = []
    for item in loop.iter.elts:
        if index is not None:
            if not isinstance(item, (ast.Tuple, ast.List)):
                return None
            item = item.elts[index]
        if not isinstance(item, ast.Constant) or not isinstance(
            item.value, str
        ):
            return None
        values.append(item.value)
    return values


def _argument_values(func: ast.FunctionDef, var: str, trees) -> list | None:
    """The values a function's parameter ``var`` is called with, in any
    cell."""
    params = [a.arg for a in func.args.posonlyargs + func.args.args]
    if var not in params:
        return None
    index, values = params.index(var), []
    calls = [node for tree in trees for node in ast.walk(tree)]
    for call in calls:
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == func.name
        ):
            continue
        given = [k.value for k in call.keywords if k.arg == var]
        given += call.args[index : index + 1]
        if len(given) != 1:
            return None
        found = _name_values(given[0], call, trees, {})
        if found is None:
            return None
        values += found
    return values


def glue_references(text: str) -> list[tuple[str, str]]:
    """``(notebook stem, name)`` for every pasted value in a chapter's text:
    ``{n}`stem:name``` and ``{glue:text}`/notebooks/stem.ipynb::name:s```.

    Raises ``ValueError`` for a malformed ``{n}`` role.
    """
    from llmbook.book.sphinx_ext import SHORT_GLUE

    found = []
    for match in SHORT_REF.finditer(text):
        short = SHORT_GLUE.fullmatch(match.group(1))
        if short is None:
            raise ValueError(f"malformed role {match.group(0)}")
        found.append(short.group("stem", "name"))
    found += [m.groups() for m in LONG_REF.finditer(text)]
    return found
