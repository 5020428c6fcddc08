"""Build one chapter (and its nested notebooks) alone; with --check, also run its tests.

    python tools/build_chapter.py fermi [lora ...]      # build, show the chapter's warnings
    python tools/build_chapter.py --check fermi         # what `make check CHAPTER=fermi` runs

Writes a table of contents with the landing page, the named chapters with their notebooks
and the reference pages (``_build/partial/_toc.yml``) and builds it into
``_build/partial/_build/`` with ``-n`` like the full build. It shows only the warnings of
the chapters' own files (links to chapters left out and the kernel's TCP notice are the
partial build's, not yours) and fails if there is one. ``--check`` then runs the unit tests
of the ``llmbook.topics`` modules the notebooks import, the layout and lint tests, and the
HTML and problems-edition tests on the pages of the partial build, and prints the time.
The full check is still ``make test``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from llmbook.book import partial

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "partial"


def build(chapters: list[str]) -> tuple[bool, dict]:
    """Build the partial book; print its own warnings; return (ok, toc)."""
    full = yaml.safe_load((ROOT / "_toc.yml").read_text())
    try:
        toc = partial.partial_toc(full, chapters)
    except ValueError as err:
        sys.exit(str(err))
    OUT.mkdir(parents=True, exist_ok=True)
    toc_path = OUT / "_toc.yml"
    toc_path.write_text(yaml.safe_dump(toc, sort_keys=False))
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [
        str(jb),
        "build",
        str(ROOT),
        "--toc",
        str(toc_path),
        "--path-output",
        str(OUT),
        "-n",
        "--keep-going",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (OUT / "build.log").write_text(log)
    own = partial.own_warnings(log, ROOT, full, toc)
    for line in own:
        print(line)
    files = [
        str(partial.source_file(ROOT, d).relative_to(ROOT))
        for d in partial.own_docs(toc)
    ]
    print(
        f"{len(own)} warning{'s' * (len(own) != 1)} in {', '.join(files)} "
        f"({time.perf_counter() - start:.0f} s; log in {OUT.relative_to(ROOT)}/build.log)"
    )
    if proc.returncode != 0:
        print("\n".join(log.splitlines()[-30:]))
        print(
            f"jupyter-book stopped (exit {proc.returncode}): see the lines above"
        )
    return proc.returncode == 0 and not own, toc


def test_files(toc: dict) -> list[str]:
    """The tests of a partial build: its topic modules' unit tests and the book checks."""
    notebooks = [
        partial.source_file(ROOT, d)
        for d in partial.own_docs(toc)
        if d.startswith("notebooks/")
    ]
    units = [
        f"tests/test_{m}.py"
        for m in partial.topic_modules(notebooks)
        if (ROOT / "tests" / f"test_{m}.py").is_file()
    ]
    return units + [
        "tests/test_book_layout.py",
        "tests/test_lint.py",
        "tests/test_notebook_lint.py",
        "tests/test_partial.py",
        "tests/test_html.py",
        "tests/test_problems_edition.py",
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "chapters", nargs="+", help="chapter names: fermi or chapters/fermi"
    )
    parser.add_argument(
        "--check", action="store_true", help="then run the chapter's tests"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    ok, toc = build(args.chapters)
    if args.check:
        tests = test_files(toc)
        print("running", " ".join(tests))
        env = {
            **os.environ,
            "LLMBOOK_BUILD_DIR": str(OUT / "_build"),
            "LLMBOOK_TOC": str(OUT / "_toc.yml"),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *tests], cwd=ROOT, env=env
        )
        ok = ok and proc.returncode == 0
    took = time.perf_counter() - start
    print(
        f"{'passed' if ok else 'FAILED'} in {took // 60:.0f} min {took % 60:.0f} s "
        f"({', '.join(args.chapters)})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
