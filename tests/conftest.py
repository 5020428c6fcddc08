"""Shared fixtures: the repository root and one clean, warnings-as-errors book build per session.

``LLMBOOK_BUILD_DIR`` points the build tests at an existing build (its ``html/`` and
``.jupyter_cache/``), e.g. the partial build of ``make check CHAPTER=fermi``, and
``LLMBOOK_TOC`` at the table of contents it was built from: the HTML and problems-edition
tests then check the pages of that build only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTIAL = bool(os.environ.get("LLMBOOK_BUILD_DIR"))
BUILD = Path(os.environ.get("LLMBOOK_BUILD_DIR") or ROOT / "_build").resolve()
HTML = BUILD / "html"
TOC = Path(os.environ.get("LLMBOOK_TOC") or ROOT / "_toc.yml").resolve()
PROBLEMS = BUILD / "problems"  # the problems-only edition (`make problems`)
_build_report: dict = {}


def toc_docnames(toc_path: Path | None = None) -> list[str]:
    """Every document named in a table of contents (root included), without extension.

    The book's ``_toc.yml`` unless ``toc_path`` names another (a partial build's).
    """
    import yaml

    toc = yaml.safe_load((toc_path or ROOT / "_toc.yml").read_text())
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


def built_docnames() -> list[str]:
    """The documents the build under test holds: the whole toc, or with ``LLMBOOK_BUILD_DIR``
    the documents of ``LLMBOOK_TOC`` (default ``_toc.yml``) whose page that build has."""
    if not PARTIAL:
        return toc_docnames()
    return [
        doc for doc in toc_docnames(TOC) if (HTML / f"{doc}.html").is_file()
    ]


@pytest.fixture(scope="session")
def built_book() -> Path:
    """Build the whole book from an empty _build, executing every notebook; fail on any warning.

    Set LLMBOOK_REUSE_BUILD=1 to reuse an existing _build/html while iterating on tests, or
    LLMBOOK_BUILD_DIR to test another build (``make check`` points it at a partial one).
    """
    if PARTIAL:
        if not (HTML / "index.html").is_file():
            pytest.fail(
                f"LLMBOOK_BUILD_DIR={BUILD} holds no html/index.html: "
                "run `make check CHAPTER=<name>` (or unset it)"
            )
        _build_report["reused"] = True
        return HTML
    if (
        os.environ.get("LLMBOOK_REUSE_BUILD") == "1"
        and (HTML / "index.html").is_file()
    ):
        _build_report["reused"] = True
        return HTML
    set_aside(BUILD)
    jb = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "-W", "-n", "--keep-going"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    _build_report["seconds"] = time.perf_counter() - start
    record_clean_build(_build_report["seconds"])
    (ROOT / "_build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        pytest.fail(
            f"book build failed (exit {proc.returncode}); last lines:\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    return HTML


def set_aside(build: Path) -> None:
    """Empty ``build`` for a clean build without losing a jupyter cache.

    A ``_build`` that holds ``.jupyter_cache`` (hours of executed notebooks
    for an incremental workflow) is moved to ``<build>.previous``, replacing
    an older one; ``mv _build.previous _build`` gets it back. Anything else
    is deleted.
    """
    if (build / ".jupyter_cache").is_dir():
        previous = build.with_name(build.name + ".previous")
        shutil.rmtree(previous, ignore_errors=True)
        build.rename(previous)
        print(
            f"\nthe previous {build.name} (with its jupyter cache) is now {previous}"
        )
    else:
        shutil.rmtree(build, ignore_errors=True)


@pytest.fixture(scope="session")
def problems_html(built_book):
    """Build the problems edition after the full build (it reuses the executed notebooks).

    With LLMBOOK_REUSE_BUILD=1 an existing edition newer than the full build is reused.
    Used by tests/test_problems_edition.py and tests/test_pdf.py (one build per session).
    """
    from llmbook.book import sync

    html = PROBLEMS / "_build" / "html"
    if (
        not PARTIAL
        and os.environ.get("LLMBOOK_REUSE_BUILD") == "1"
        and (html / "index.html").is_file()
        and (html / "index.html").stat().st_mtime
        >= (built_book / "index.html").stat().st_mtime
    ):
        return html
    config = BUILD / "problems_config.yml"
    config.write_text(
        sync.problems_config(ROOT, cache=BUILD / ".jupyter_cache")
    )
    jb = Path(sys.executable).with_name("jupyter-book")
    toc = ["--toc", str(TOC)] if PARTIAL else []
    # A partial toc links to chapters left out: those warnings are the partial build's, so
    # there the chapter's own warnings are picked out of the log instead of using -W.
    strict = [] if PARTIAL else ["-W"]
    proc = subprocess.run(
        [
            str(jb),
            "build",
            str(ROOT),
            "--config",
            str(config),
            *toc,
            "--path-output",
            str(PROBLEMS),
            *strict,
            "-n",
            "--keep-going",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"problems edition failed to build:\n{(proc.stdout + proc.stderr)[-4000:]}"
        )
    if PARTIAL:
        import yaml

        from llmbook.book import partial

        full, toc = (
            yaml.safe_load(p.read_text()) for p in (ROOT / "_toc.yml", TOC)
        )
        own = partial.own_warnings(proc.stdout + proc.stderr, ROOT, full, toc)
        assert own == [], "warnings in the problems edition of the chapter"
    assert "Executing notebook" not in proc.stdout + proc.stderr, (
        "the problems edition re-ran notebooks"
    )
    return html


def record_clean_build(seconds: float) -> None:
    """Keep a clean build's wall time beside it, for ``tools/bench_speed.py``."""
    from llmbook.book.report import write_build_seconds

    write_build_seconds(BUILD, seconds)


def pytest_collection_modifyitems(items):
    """A test that needs the built book is a "book" test, marked or not, so
    that ``pytest -m "not book"`` never starts the full build."""
    for item in items:
        if "built_book" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.book)


def pytest_terminal_summary(terminalreporter):
    """Print the per-notebook execution-time table after any run that built the book."""
    if not _build_report:
        return
    from llmbook.book.report import execution_times, format_times

    terminalreporter.write_sep(
        "=", "notebook execution times (a report, not a check)"
    )
    terminalreporter.write_line(format_times(execution_times(BUILD)))
    if "seconds" in _build_report:
        terminalreporter.write_line(
            f"whole clean build: {_build_report['seconds']:.0f} s"
        )
    else:
        terminalreporter.write_line(f"(reused an existing build: {BUILD})")
