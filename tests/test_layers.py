"""The library's layers: pure arithmetic imports without torch, and the
three layers depend on each other only downwards."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "llmbook"
TORCH_FREE = [
    "llmbook.core.hardware",
    "llmbook.core.accounting",
    "llmbook.core.stats",
    "llmbook.topics.fermi",
    "llmbook.topics.scaling",
    "llmbook.topics.zero",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_arithmetic_modules_import_without_torch(module):
    code = (
        f"import sys, {module}\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert proc.returncode == 0, (
        f"{module} imports torch (directly or through another module): "
        "move the torch import into the function that needs it, or the "
        f"code into a torch module.\n{proc.stderr[-2000:]}"
    )


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from llmbook import grade` imports the module llmbook.grade
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("llmbook.")}


def test_core_does_not_import_topics():
    """Foundations are shared: they never reach up into a chapter's module."""
    bad = {
        f"{p.name}: {m}"
        for p in (LIB / "core").glob("*.py")
        for m in _imports(p)
        if m.startswith("llmbook.topics")
    }
    assert not bad, f"core modules import topic modules: {sorted(bad)}"


# Student-facing entry points above the three layers: they import from the
# layers, and no layer imports them.
ENTRY_POINTS = ["grade.py"]
# The one book module allowed to read an entry point: the labs' generator
# writes the student notebooks from grade's exercises (run by `make sync`,
# imported by no other module of the library).
READS_ENTRY_POINTS = {"book/labs.py"}


def test_every_module_sits_in_a_layer():
    loose = sorted(
        p.name
        for p in LIB.glob("*.py")
        if p.name != "__init__.py" and p.name not in ENTRY_POINTS
    )
    assert loose == [], (
        f"modules outside core/, topics/ and book/: {loose}; "
        "CONTRIBUTING's 'Where things live' says where each belongs"
    )


def test_no_layer_imports_an_entry_point():
    """``llmbook.grade`` sits above the layers: the dependency runs one
    way, so the library never needs the autograder."""
    entry = {f"llmbook.{name[:-3]}" for name in ENTRY_POINTS}
    bad = sorted(
        f"{p.relative_to(LIB)}: {m}"
        for layer in ("core", "topics", "book")
        for p in (LIB / layer).glob("*.py")
        for m in _imports(p)
        if m in entry or any(m.startswith(e + ".") for e in entry)
        if str(p.relative_to(LIB)) not in READS_ENTRY_POINTS
    )
    assert not bad, f"layer modules import an entry point: {bad}"


def test_only_the_labs_generator_reads_an_entry_point():
    """No module of the library imports ``llmbook.book.labs`` (so none
    reaches ``grade`` through it), and the exception is still needed."""
    users = sorted(
        str(p.relative_to(LIB))
        for p in LIB.rglob("*.py")
        if "llmbook.book.labs" in _imports(p)
    )
    assert users == ["book/__main__.py"], users
    assert "llmbook.grade" in _imports(LIB / "book" / "labs.py")
