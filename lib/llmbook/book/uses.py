"""``LIBRARY-USES.md``: for each public name of each ``llmbook`` module, the
notebooks that use it (``notebooks/`` by name, the student labs as
``labs/<name>``) and the chapters that show its source.

``make sync`` writes the file; a test fails while it is out of date. Found by
parsing, not by running: a notebook uses ``name`` of ``llmbook.topics.lora``
when its code imports the module (``from llmbook.topics import lora as L``,
``import llmbook.topics.lora``) and reads ``L.name``, or imports the name
itself (``from llmbook.topics.lora import name``). Calls made inside the
library are not followed. A chapter shows a name when it includes its source
with ``literalinclude`` and ``:pyobject:``.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

USES_FILE = "LIBRARY-USES.md"
INCLUDE_RE = re.compile(r"```\{literalinclude\} (\S+)\n((?::\w+:.*\n)*)")
MAGIC_RE = re.compile(r"^\s*[%!]")
INTRO = """\
Written by `make sync` (`llmbook.book.uses`); do not edit. For each public
function, class and constant of the library: the notebooks that use it
directly (found by parsing their code; the labs as `labs/<name>`) and the
chapters that show its source (`literalinclude` with `:pyobject:`).
Editing it can move the numbers of these notebooks' chapters. Calls made
inside the library are not followed; the tests (`tests/test_<module>.py`)
are not listed."""


def public_names(source: str) -> list[str]:
    """The public names a module's ``source`` defines at top level:
    functions and classes not starting with ``_``, and ``UPPER_CASE``
    constants.
    """
    names = []
    for node in ast.parse(source).body:
        if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        ):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = (
                node.targets if isinstance(node, ast.Assign) else [node.target]
            )
            names += [
                t.id
                for t in targets
                if isinstance(t, ast.Name) and t.id.isupper()
            ]
    return [n for n in names if not n.startswith("_")]


def library_modules(lib: Path) -> dict[str, list[str]]:
    """``{"llmbook.topics.lora": [public names], ...}`` for every module
    under ``lib/llmbook`` (packages' ``__init__`` and ``__main__`` left
    out).
    """
    modules = {}
    for path in sorted((lib / "llmbook").rglob("*.py")):
        if path.name.startswith("__"):
            continue
        dotted = ".".join(path.relative_to(lib).with_suffix("").parts)
        modules[dotted] = public_names(path.read_text())
    return modules


def _parse(code: str) -> ast.Module | None:
    """A cell's code as an AST, IPython magic lines blanked; None when it
    still does not parse."""
    lines = ["" if MAGIC_RE.match(line) else line for line in code.split("\n")]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def names_used(cells: list[str], modules: set[str]) -> set[tuple[str, str]]:
    """The ``(module, name)`` pairs that the code ``cells`` use, for modules
    in ``modules`` (dotted, e.g. ``"llmbook.topics.lora"``). An import in
    one cell counts for all; a cell that does not parse is left out.
    """
    trees = [t for t in map(_parse, cells) if t is not None]
    aliases: dict[str, str] = {}  # local name -> dotted module
    used = set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in modules:
                    aliases[a.asname or a.name] = full
                elif node.module in modules:
                    used.add((node.module, a.name))
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.Attribute):
            dotted = ast.unparse(node.value)
            module = aliases.get(dotted, dotted)
            if module in modules:
                used.add((module, node.attr))
    return used


def notebook_uses(nb: dict, modules: set[str]) -> set[tuple[str, str]]:
    """The ``(module, name)`` pairs the code cells of ``nb`` (a dict as
    ``json.load`` gives it) use."""
    cells = [
        "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"
    ]
    return names_used(cells, modules)


def shown_on_pages(root: Path) -> dict[tuple[str, str], set[str]]:
    """``{(module, name): {chapter file names}}`` for every top-level name
    whose source a chapter includes with ``:pyobject:``.
    """
    shown: dict[tuple[str, str], set[str]] = {}
    lib = root / "lib"
    for page in sorted((root / "chapters").glob("*.md")):
        for target, options in INCLUDE_RE.findall(page.read_text()):
            obj = re.search(r":pyobject: (\S+)", options)
            path = (page.parent / target).resolve()
            if obj is None or not path.is_relative_to(lib.resolve()):
                continue
            rel = path.relative_to(lib.resolve()).with_suffix("")
            key = (".".join(rel.parts), obj[1].split(".")[0])
            shown.setdefault(key, set()).add(page.name)
    return shown


def render_uses(root: Path) -> str:
    """The text of ``LIBRARY-USES.md`` for the repository at ``root``: the
    users are the notebooks of ``notebooks/`` and the labs of ``labs/``
    (listed as ``labs/<name>``)."""
    modules = library_modules(root / "lib")
    users: dict[tuple[str, str], set[str]] = {}
    for folder, prefix in (("notebooks", ""), ("labs", "labs/")):
        for path in sorted((root / folder).glob("*.ipynb")):
            nb = json.loads(path.read_text())
            for key in notebook_uses(nb, set(modules)):
                users.setdefault(key, set()).add(prefix + path.stem)
    shown = shown_on_pages(root)
    lines = ["# Who uses what in `llmbook`", "", *INTRO.splitlines()]
    for module, names in modules.items():
        lines += ["", f"## `{module}`", ""]
        if not names:
            lines.append("No public names.")
            continue
        lines += ["| name | notebooks | shown in |", "|---|---|---|"]
        for name in names:
            nbs = ", ".join(sorted(users.get((module, name), ()))) or "–"
            pages = ", ".join(sorted(shown.get((module, name), ()))) or "–"
            lines.append(f"| `{name}` | {nbs} | {pages} |")
    return "\n".join(lines) + "\n"


def write_uses(root: Path) -> list[str]:
    """Rewrite ``LIBRARY-USES.md`` if it is out of date; return the files
    changed (``make sync`` runs it).
    """
    path = root / USES_FILE
    text = render_uses(root)
    if path.exists() and path.read_text() == text:
        return []
    path.write_text(text)
    return [USES_FILE]
