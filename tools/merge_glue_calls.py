"""Merge runs of consecutive ``glue(name, value)`` calls into one ``glue({...})``.

    python tools/merge_glue_calls.py [notebooks/*.ipynb]   (default: every notebook)

In each code cell, statements that follow each other in one block (a cell's top level, a
loop's or a function's body), with nothing but comments between them, and that are each
``glue("name", value)`` or ``glue({...})``, become one call:

    glue({"ts_loss_k1": fmt.sig(loss[1], 3), "ts_loss_k2": fmt.sig(loss[2], 3),
          "fig_loss": fig})

``glue`` of a dict glues its items in order exactly as the separate calls did; the values are
now all computed before the first is glued, so a run stops before a value that reads
``plt``, ``GLUED`` or ``glue`` (which the gluing of a figure changes), before a name
glued twice, and at a blank line (the author's grouping). Comments are kept: one on its own
line stays on its own line before the item it preceded, one after a call stays after its
item. Short items share a line; an item written over several lines keeps its line breaks,
shifted with its new column (and at least four columns deeper than the item). An item
that would not fit in 79 characters, or whose layout is not understood (a comment inside
the call, a multi-line string, ``;``), is left as it was, and so is its call. Every rewritten cell must parse and glue the same names and value
expressions in the same order, or it is left alone. Notebooks are written back as
``json.dumps(nb, indent=1, ensure_ascii=False) + "\\n"`` with each cell's source stored as
before (a list of lines or one string). Running it again changes nothing.
"""

from __future__ import annotations

import ast
import io
import json
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 79
PREFIX = "glue({"
# Names whose meaning the gluing of an earlier item can change.
HAZARDS = {"plt", "GLUED", "glue"}


@dataclass
class Item:
    text: str  # "key: value", continuation lines already shifted to ``column``
    leading: list[str] = field(default_factory=list)  # comments before it
    trailing: str | None = None  # a comment after it


def _char_col(lines: list[str], lineno: int, byte_col: int) -> int:
    return len(lines[lineno - 1].encode()[:byte_col].decode())


def _glue_items(stmt: ast.stmt) -> list[tuple[ast.expr, ast.expr]] | None:
    """The (key, value) pairs of a ``glue`` statement, or None if it is not one."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    if (
        not (isinstance(call.func, ast.Name) and call.func.id == "glue")
        or call.keywords
    ):
        return None
    args = call.args
    if any(isinstance(a, ast.Starred) for a in args):
        return None
    if len(args) == 2:
        return [(args[0], args[1])]
    if (
        len(args) == 1
        and isinstance(args[0], ast.Dict)
        and None not in args[0].keys
    ):
        return list(zip(args[0].keys, args[0].values))
    return None


class _Cell:
    def __init__(self, src: str):
        self.src = src
        self.lines = src.splitlines(keepends=True)
        self.tree = ast.parse(src)
        self.comments: dict[int, tuple[int, str]] = {}
        self.in_string: set[int] = set()  # rows inside a multi-line string
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                self.comments[tok.start[0]] = (tok.start[1], tok.string)
            elif tok.start[0] != tok.end[0]:
                self.in_string.update(range(tok.start[0] + 1, tok.end[0] + 1))

    def line(self, n: int) -> str:
        return self.lines[n - 1].rstrip("\r\n")

    def start(self, node) -> tuple[int, int]:
        return node.lineno, _char_col(self.lines, node.lineno, node.col_offset)

    def end(self, node) -> tuple[int, int]:
        return node.end_lineno, _char_col(
            self.lines, node.end_lineno, node.end_col_offset
        )

    def segment(self, node) -> str:
        return ast.get_source_segment(self.src, node)

    def statement(self, stmt: ast.stmt, column: int) -> list[Item] | None:
        """The items of a glue statement laid out from ``column``, or None."""
        pairs = _glue_items(stmt)
        if pairs is None:
            return None
        first, last = self.start(stmt), self.end(stmt)
        if self.line(first[0])[: first[1]].strip():
            return None  # something before it on its line
        rest = self.line(last[0])[last[1] :]
        comment = self.comments.get(last[0])
        if rest.strip() and not (comment and rest.strip() == comment[1]):
            return None  # `;` or another statement after it
        spans = []
        for key, value in pairs:
            if key.lineno != key.end_lineno or self.in_string & set(
                range(value.lineno + 1, value.end_lineno + 1)
            ):
                return None
            spans.append((self.start(key), self.end(value)))
        # a comment inside the call but outside every item is not understood,
        # unless it has a line of its own (in a dict) or follows an item
        for row, (col, text) in self.comments.items():
            if first[0] <= row <= last[0] and (row, col) < last:
                inside = any(a <= (row, col) < b for a, b in spans)
                own_line = not self.line(row)[:col].strip()
                after = any(
                    b[0] == row
                    and b[1] <= col
                    and self.line(row)[b[1] : col].strip() in {"", ","}
                    for _, b in spans
                )
                if not (inside or after or own_line and len(pairs) > 1):
                    return None
        items: list[Item] = []
        pending: list[str] = []
        row = first[0]
        for (key, value), (a, b) in zip(pairs, spans):
            for row in range(row, a[0]):
                if (
                    row in self.comments
                    and not self.line(row)[: self.comments[row][0]].strip()
                ):
                    pending.append(self.comments[row][1])
            key_text = self.segment(key)
            value_text = self.segment(value)
            shift = column + len(key_text) + 2 - self.start(value)[1]
            first_line, *more = value_text.split("\n")
            # continuation lines stay deeper than the item's start
            deepest = min(
                (len(t) - len(t.lstrip()) for t in more if t.strip()),
                default=None,
            )
            if deepest is not None and deepest + shift < column + 4:
                shift = column + 4 - deepest
            moved = []
            for text in more:
                if shift < 0 and text[:-shift].strip():
                    return None
                moved.append(
                    " " * shift + text if shift >= 0 else text[-shift:]
                )
            item = Item(
                "\n".join([f"{key_text}: {first_line}", *moved]), pending
            )
            row = b[0] + 1
            pending = []
            if b[0] in self.comments and self.comments[b[0]][0] >= b[1]:
                between = self.line(b[0])[
                    b[1] : self.comments[b[0]][0]
                ].strip()
                if between in {"", ","} and b[0] != last[0]:
                    item.trailing = self.comments[b[0]][1]
            items.append(item)
        if comment and rest.strip():
            if items[-1].trailing is not None:
                return None
            items[-1].trailing = comment[1]
        return items


def render(items: list[Item], indent: str) -> list[str] | None:
    """The lines of ``glue({...})`` at ``indent``, or None if a line would be too long."""
    hang = " " * (len(indent) + len(PREFIX))
    out = [indent + c for c in items[0].leading]
    line = indent + PREFIX
    has_item = False

    def flush():
        nonlocal line, has_item
        out.append(line)
        line, has_item = hang, False

    for i, item in enumerate(items):
        end = "})" if i == len(items) - 1 else ","
        if i and item.leading:
            if has_item:
                flush()
            out.extend(hang + c for c in item.leading)
        parts = item.text.split("\n")
        parts[-1] += end + (f"  {item.trailing}" if item.trailing else "")
        if has_item and (
            len(parts) > 1 or len(line) + 1 + len(parts[0]) > WIDTH
        ):
            flush()
        line += (" " if has_item else "") + parts[0]
        has_item = True
        if len(parts) > 1:
            out.append(line)
            out.extend(parts[1:-1])
            line = parts[-1]
        if len(parts) > 1 or item.trailing or i == len(items) - 1:
            flush()
    if any(len(x) > WIDTH for x in out):
        return None
    return out


def _bodies(tree: ast.AST):
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.stmt)
            ):
                yield body


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _runs(cell: _Cell):
    """Runs of at least two mergeable glue statements: lists of (stmt, items)."""
    for body in _bodies(cell.tree):
        run: list = []
        for stmt in body + [None]:
            items = None
            if stmt is not None:
                column = _char_col(
                    cell.lines, stmt.lineno, stmt.col_offset
                ) + len(PREFIX)
                items = cell.statement(stmt, column)
            if run and items is not None:
                prev = run[-1][0]
                gap = range(prev.end_lineno + 1, stmt.lineno)
                keys = {
                    k.value
                    for s, _ in run
                    for k, _ in _glue_items(s)
                    if isinstance(k, ast.Constant)
                }
                new = [
                    k.value
                    for k, _ in _glue_items(stmt)
                    if isinstance(k, ast.Constant)
                ]
                blank = any(not cell.line(r).strip() for r in gap)
                hazard = any(_names(a) & HAZARDS for a in stmt.value.args)
                if (
                    blank
                    or hazard
                    or keys & set(new)
                    or len(new) != len(set(new))
                ):
                    if len(run) > 1:
                        yield run
                    run = []
            if items is None:
                if len(run) > 1:
                    yield run
                run = []
                continue
            if run:  # comments between the calls go with the next item
                gap = range(run[-1][0].end_lineno + 1, stmt.lineno)
                items[0].leading[:0] = [
                    cell.comments[r][1] for r in gap if r in cell.comments
                ]
            run.append((stmt, items))


def merge_source(src: str) -> str:
    """``src`` with each run of consecutive glue calls merged into one call."""
    try:
        cell = _Cell(src)
    except (SyntaxError, tokenize.TokenError):
        return src
    edits = []
    for run in _runs(cell):
        # an item that does not fit splits the run
        pieces, piece = [], []
        for stmt, items in run:
            indent = " " * _char_col(cell.lines, stmt.lineno, stmt.col_offset)
            if render(items, indent) is None and len(items) == 1:
                pieces.append(piece)
                piece = []
                continue
            piece.append((stmt, items))
        pieces.append(piece)
        for piece in pieces:
            if len(piece) < 2:
                continue
            indent = " " * _char_col(
                cell.lines, piece[0][0].lineno, piece[0][0].col_offset
            )
            items = [item for _, its in piece for item in its]
            lines = render(items, indent)
            if lines is not None:
                edits.append(
                    (piece[0][0].lineno, piece[-1][0].end_lineno, lines)
                )
    if not edits:
        return src
    lines = list(cell.lines)
    for first, last, new in sorted(edits, reverse=True):
        ending = "\n" if lines[last - 1].endswith("\n") else ""
        lines[first - 1 : last] = [x + "\n" for x in new[:-1]] + [
            new[-1] + ending
        ]
    out = "".join(lines)
    return out if _same_glue(src, out) else src


def _glued(src: str) -> list[tuple[str, str]]:
    """Every glued (key, value) in source order, and every comment."""
    found = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Expr):
            for key, value in _glue_items(node) or []:
                found.append(
                    (
                        key.lineno,
                        key.col_offset,
                        ast.unparse(key),
                        ast.unparse(value),
                    )
                )
    comments = [
        t.string
        for t in tokenize.generate_tokens(io.StringIO(src).readline)
        if t.type == tokenize.COMMENT
    ]
    return [f[2:] for f in sorted(found)] + comments


def _same_glue(before: str, after: str) -> bool:
    try:
        return _glued(before) == _glued(after)
    except SyntaxError:
        return False


def merge_notebook(text: str) -> str:
    """A notebook file's text with every code cell merged (see ``merge_source``)."""
    nb = json.loads(text)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = cell["source"]
        joined = "".join(src) if isinstance(src, list) else src
        merged = merge_source(joined)
        if merged != joined:
            cell["source"] = (
                merged.splitlines(keepends=True)
                if isinstance(src, list)
                else merged
            )
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(paths: list[str]) -> int:
    files = [Path(p) for p in paths] or sorted(
        (ROOT / "notebooks").glob("*.ipynb")
    )
    for path in files:
        text = path.read_text()
        new = merge_notebook(text)
        if new != text:
            path.write_text(new)
            print(f"merged glue calls in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
