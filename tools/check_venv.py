"""Stop when the environment's ``llmbook`` is not this checkout's ``lib/llmbook``.

    .venv/bin/python tools/check_venv.py      # `make install` runs it after installing

A ``.venv`` copied or linked from another checkout has ``llmbook`` installed (editable)
from there: tests and notebooks would silently use that copy, not your edits.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def venv_problem(found: str | None, checkout: Path, python: str) -> str | None:
    """What is wrong when ``found`` (``llmbook.__file__``, ``None`` if not importable) is
    not inside ``checkout/lib/llmbook``, with what to run; ``None`` when it is."""
    expected = (Path(checkout) / "lib" / "llmbook").resolve()
    fix = (
        "run `make clean-venv install` for a .venv of this checkout's own, or "
        "`export PYTHONPATH=$PWD/lib` to use this environment with your library; "
        f"if the environment is yours alone, `{python} -m pip install -e {checkout}`"
    )
    if found is None:
        return f"llmbook is not importable by {python}: {fix}"
    if Path(found).resolve().parent != expected:
        return (
            f"{python} imports llmbook from {Path(found).resolve().parent}, not from "
            f"this checkout's {expected}: your edits would be ignored; {fix}"
        )
    return None


def main() -> int:
    spec = importlib.util.find_spec("llmbook")
    found = spec.origin if spec else None
    problem = venv_problem(found, ROOT, sys.executable)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
