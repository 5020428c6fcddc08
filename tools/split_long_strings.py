"""Split over-long string-literal lines of notebooks and library files at a space.

    python tools/split_long_strings.py notebooks/*.ipynb lib/llmbook/*.py

A helper for keeping code within 79 columns (the width a code block has on a page
at 1280 px; tests/test_book_layout.py checks it). Only a line that is a single
string literal, optionally followed by a comma, is split, into two adjacent
literals that Python concatenates; f-strings are split outside their braces.
Comment-only lines and one-line docstrings are wrapped.
Every changed cell or file must still compile, or it is left alone.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import textwrap
from pathlib import Path

WIDTH = 79
LINE = re.compile(r'^(?P<ind>\s*)(?P<pre>[fFrRbB]{0,2})"(?P<body>(?:[^"\\]|\\.)*)"(?P<end>,?)$')


def split_at(body: str, limit: int) -> int | None:
    """The space (outside f-string braces) that splits ``body`` most evenly, both halves
    within ``limit``; failing that, the last space within ``limit``."""
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


def wrap_text_line(line: str) -> list[str] | None:
    """A comment-only line or a one-line docstring, wrapped at WIDTH (None: neither)."""
    stripped = line.lstrip()
    ind = line[: len(line) - len(stripped)]
    if stripped.startswith("# "):
        return textwrap.wrap(stripped[2:], WIDTH, initial_indent=ind + "# ",
                             subsequent_indent=ind + "# ")
    if stripped.startswith('"""') and stripped.endswith('"""') and len(stripped) > 6:
        lines = textwrap.wrap(stripped[3:-3], WIDTH - 3, initial_indent=ind + '"""',
                              subsequent_indent=ind)
        return lines + [ind + '"""']
    return None


def split_line(line: str) -> list[str]:
    if len(line) > WIDTH and (wrapped := wrap_text_line(line)):
        return wrapped
    m = LINE.match(line)
    if len(line) <= WIDTH or not m or '"""' in line:
        return [line]
    ind, pre, body, end = m["ind"], m["pre"], m["body"], m["end"]
    room = WIDTH - len(ind) - len(pre) - 2
    cut = split_at(body, room)
    if cut is None:
        return [line]
    head, tail = body[: cut + 1], body[cut + 1 :]

    def lit(text):
        p = pre if ("f" not in pre.lower() or "{" in text) else pre.replace("f", "").replace("F", "")
        return f'{ind}{p}"{text}"'

    return [lit(head)] + split_line(lit(tail) + end)


def comment_blocks(lines: list[str]) -> list[str]:
    """Re-wrap each run of comment-only lines (same indent) that has an over-long line."""
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)# ", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        ind, j = m[1], i
        while j < len(lines) and re.match(rf"^{ind}# \S", lines[j]):
            j += 1
        block = lines[i:j] or [lines[i]]
        j = max(j, i + 1)
        if any(len(line) > WIDTH for line in block):
            text = " ".join(line.strip()[2:] for line in block)
            out.extend(textwrap.wrap(text, WIDTH, initial_indent=ind + "# ", subsequent_indent=ind + "# ",
                                     break_on_hyphens=False, break_long_words=False))
        else:
            out.extend(block)
        i = j
    return out


def fix_source(src: str) -> str:
    out = []
    for line in comment_blocks(src.split("\n")):
        out.extend(split_line(line))
    new = "\n".join(out)
    if new == src:
        return src
    try:
        ast.parse(new)
    except SyntaxError:
        return src
    return new


def wrap_docstrings(src: str) -> str:
    """Wrap the over-long lines inside multi-line docstrings, keeping their indentation."""
    lines = src.split("\n")
    spans = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                spans.append((body[0].lineno, body[0].end_lineno))
    inside = {i for a, b in spans for i in range(a - 1, b)}
    item = re.compile(r"(\w+(, \w+)*|\*\*?\w+|``[^`]+``): |- ")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        opening = line.lstrip().startswith('"""') and line.count('"""') == 1
        if i not in inside or len(line) <= WIDTH or ('"""' in line and not opening):
            out.append(line)
            i += 1
            continue
        stripped = line.lstrip()
        ind = line[: len(line) - len(stripped)]
        more = "    " if item.match(stripped) else ""
        # the paragraph goes on while the next lines have the same indent and start no item
        j, words = i + 1, [stripped]
        while j < len(lines) and j in inside and lines[j].strip() and not lines[j].rstrip().endswith('"""') \
                and lines[j].startswith(ind) and not lines[j][len(ind):].startswith(" ") \
                and not item.match(lines[j].lstrip()) and not more:
            words.append(lines[j].strip())
            j += 1
        out.extend(textwrap.wrap(" ".join(words), WIDTH, initial_indent=ind, subsequent_indent=ind + more,
                                 break_on_hyphens=False, break_long_words=False))
        i = j
    return "\n".join(out)


def main(paths):
    for path in map(Path, paths):
        if path.suffix == ".ipynb":
            nb = json.loads(path.read_text())
            changed = False
            for cell in nb["cells"]:
                if cell["cell_type"] != "code":
                    continue
                src = "".join(cell["source"])
                new = fix_source(src)
                if new != src:
                    cell["source"] = new if isinstance(cell["source"], str) else new.splitlines(keepends=True)
                    changed = True
            if changed:
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
                print("split", path)
        else:
            src = path.read_text()
            new = wrap_docstrings(fix_source(src))
            if new != src:
                path.write_text(new)
                print("split", path)


if __name__ == "__main__":
    main(sys.argv[1:])
