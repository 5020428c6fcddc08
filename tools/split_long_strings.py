"""Split over-long string literals of notebooks and library files at a space.

    python tools/split_long_strings.py notebooks/X.ipynb lib/llmbook/x.py

``make format`` (ruff) brings code within 79 columns (the width a code block
has on a page at 1280 px; tests/test_book_layout.py checks it) but cannot
split a string. This tool splits a line that is a single string literal,
optionally followed by a comma, into two adjacent literals that Python
concatenates; f-strings are split outside their braces. Run ``make format``
afterwards. It never rewrites comments or docstrings (wrapping them by
machine broke phrases and indents): it lists their over-long lines for you
to wrap by hand. A changed cell or file must still compile, or it is left
alone.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

from llmbook.book.notebooks import dumps

WIDTH = 79
LINE = re.compile(
    r'^(?P<ind>\s*)(?P<pre>[fFrRbB]{0,2})"(?P<body>(?:[^"\\]|\\.)*)"'
    r"(?P<end>,?)$"
)


def split_at(body: str, limit: int) -> int | None:
    """The space (outside f-string braces) that splits ``body`` most evenly,
    both halves within ``limit``; failing that, the last space within
    ``limit``."""
    depth, spaces = 0, []
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == " " and depth == 0 and 10 < i < limit:
            spaces.append(i)
    if not spaces:
        return None
    even = [i for i in spaces if len(body) - i - 1 <= limit]
    if even:
        return min(even, key=lambda i: abs(len(body) / 2 - i))
    return spaces[-1]


def split_line(line: str) -> list[str]:
    """``line`` split into string literals within WIDTH, or ``[line]``."""
    m = LINE.match(line)
    if len(line) <= WIDTH or not m or '"""' in line:
        return [line]
    ind, pre, body, end = m["ind"], m["pre"], m["body"], m["end"]
    cut = split_at(body, WIDTH - len(ind) - len(pre) - 2)
    if cut is None:
        return [line]
    head, tail = body[: cut + 1], body[cut + 1 :]

    def lit(text):
        plain = "f" in pre.lower() and "{" not in text
        p = pre.replace("f", "").replace("F", "") if plain else pre
        return f'{ind}{p}"{text}"'

    return [lit(head)] + split_line(lit(tail) + end)


def fix_source(src: str) -> str:
    """``src`` with its over-long one-literal lines split (if it compiles)."""
    new = "\n".join(
        out for line in src.split("\n") for out in split_line(line)
    )
    if new == src:
        return src
    try:
        ast.parse(new)
    except SyntaxError:
        return src
    return new


def left_long(name: str, src: str) -> list[str]:
    """The lines of ``src`` still over WIDTH, as ``name: line``."""
    return [f"{name}: {line}" for line in src.split("\n") if len(line) > WIDTH]


def main(paths):
    """Split the strings of each path; print what is left to wrap by hand."""
    left = []
    for path in map(Path, paths):
        text = path.read_text()
        if path.suffix == ".ipynb":
            nb = json.loads(text)
            for cell in nb["cells"]:
                if cell["cell_type"] == "code":
                    src = fix_source("".join(cell["source"]))
                    cell["source"] = src.splitlines(keepends=True)
                    left += left_long(f"{path} {cell.get('id')}", src)
            new = dumps(nb)
        else:
            new = fix_source(text)
            left += left_long(str(path), new)
        if new != text:
            path.write_text(new)
            print("split", path)
    if left:
        print("over 79 columns, to wrap by hand:", *left, sep="\n")


if __name__ == "__main__":
    main(sys.argv[1:])
