"""Rewrite long ``{glue:text}`` roles in the chapters to the short ``{n}`` role.

    python tools/short_glue_refs.py [chapters/*.md]   (default: every chapter)

``{glue:text}`/notebooks/lora-basics.ipynb::ts_loss_k1:s``` becomes
``{n}`lora-basics:ts_loss_k1```, and a format spec other than ``s`` is kept
(``{n}`lora-basics:ts_loss_k1:.2f```). A role is rewritten only where the short form stands
for exactly the same target (``llmbook.book.sphinx_ext.short_glue_target``); anything else
is left alone. Running it again changes nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from llmbook.book.sphinx_ext import short_glue_target  # noqa: E402

LONG = re.compile(
    r"\{glue:text\}`(/notebooks/([^`/]+)\.ipynb::([^`:]+):([^`]*))`"
)


def _short(match: re.Match) -> str:
    target, stem, name, spec = match.groups()
    short = f"{stem}:{name}" + ("" if spec == "s" else f":{spec}")
    try:
        same = short_glue_target(short) == target
    except ValueError:
        same = False
    return f"{{n}}`{short}`" if same else match.group(0)


def shorten(text: str) -> str:
    """``text`` with every equivalent long ``{glue:text}`` role made short."""
    return LONG.sub(_short, text)


def main(paths: list[str]) -> int:
    files = [Path(p) for p in paths] or sorted(
        (ROOT / "chapters").glob("*.md")
    )
    for path in files:
        text = path.read_text()
        new = shorten(text)
        if new != text:
            path.write_text(new)
            done = text.count("{glue:text}") - new.count("{glue:text}")
            print(f"{path}: {done} roles shortened")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
