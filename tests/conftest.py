"""Shared fixtures: the repository root and one clean, warnings-as-errors book build per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
_build_report: dict = {}


def toc_docnames() -> list[str]:
    """Every document named in _toc.yml (root included), without extension."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return names


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Build the whole book from an empty _build, executing every notebook; fail on any warning.

    Set LLMBOOK_REUSE_BUILD=1 to reuse an existing _build/html while iterating on tests.
    """
    if os.environ.get("LLMBOOK_REUSE_BUILD") == "1" and (HTML / "index.html").is_file():
        _build_report["reused"] = True
        return HTML
    shutil.rmtree(BUILD, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    proc = subprocess.run([str(jb), "build", str(ROOT), "-W", "-n", "--keep-going"],
                          cwd=ROOT, capture_output=True, text=True)
    _build_report["seconds"] = time.perf_counter() - start
    (ROOT / "_build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        pytest.fail(f"book build failed (exit {proc.returncode}); last lines:\n{(proc.stdout + proc.stderr)[-6000:]}")
    return HTML


def pytest_terminal_summary(terminalreporter):
    """Print the per-notebook execution-time table after any run that built the book."""
    if not _build_report:
        return
    from llmbook.book.report import execution_times, format_times

    terminalreporter.write_sep("=", "notebook execution times (clean build)")
    terminalreporter.write_line(format_times(execution_times(BUILD)))
    if "seconds" in _build_report:
        terminalreporter.write_line(f"whole clean build: {_build_report['seconds']:.0f} s")
    else:
        terminalreporter.write_line("(reused an existing build: LLMBOOK_REUSE_BUILD=1)")
