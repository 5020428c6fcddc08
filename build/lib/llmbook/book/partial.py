"""A partial build: one chapter with its notebooks and the reference pages
(``make check CHAPTER=fermi``), and which of its warnings are the chapter's.

A partial build warns about every link to a chapter it left out (``unknown
document``, ``undefined label``) and the kernel warns that it runs over
TCP; neither is the chapter's fault. What is left is shown, and fails.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

REFERENCE = "Reference"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WARNING = re.compile(
    r"^(?:(?P<file>[^\s:][^:]*?)(?::(?P<line>\d*))?: )?"
    r"(?P<level>WARNING|ERROR|CRITICAL): (?P<message>.*)$"
)
_NOISE = re.compile(r"^\[IPKernelApp\] WARNING \| Kernel is running over TCP")
_MISSING_DOC = re.compile(r"unknown document: '([^']+)'")
_MISSING_LABEL = re.compile(
    r"undefined label: '([^']+)'|reference target not found: (\S+)"
)
_MISSING_GLUE = re.compile(r"Glue reference '[^']+' not found in doc '([^']+)")
_TOPICS = re.compile(
    r"^\s*from llmbook\.(?:topics|core) import ([\w ,]+)$", re.M
)
_TOPIC = re.compile(r"^\s*import llmbook\.(?:topics|core)\.(\w+)", re.M)


def _docs(entries) -> list[str]:
    found = []
    for entry in entries or []:
        if "file" in entry:
            found.append(entry["file"])
        found += _docs(entry.get("sections"))
        found += _docs(entry.get("chapters"))
    return found


def toc_docs(toc: dict) -> list[str]:
    """Every document of a table of contents (a dict as ``_toc.yml``
    loads), root first, in order, without extension.
    """
    return [toc["root"]] + _docs(toc.get("parts")) + _docs(toc.get("chapters"))


def _chapter_name(name: str) -> str:
    name = name.removesuffix(".md").removeprefix("./")
    return name if name.startswith("chapters/") else f"chapters/{name}"


def partial_toc(toc: dict, chapters: list[str]) -> dict:
    """The book's toc cut to the named chapters (``fermi``,
    ``chapters/fermi`` or ``chapters/fermi.md``), their nested notebooks
    and the reference part; raises ``ValueError`` naming ``chapters`` when
    one is not a chapter of ``toc``.
    """
    wanted = [_chapter_name(c) for c in chapters]
    if not wanted:
        raise ValueError("chapters must name at least one chapter")
    known = [c["file"] for p in toc["parts"] for c in p["chapters"]]
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise ValueError(
            f"chapters: {', '.join(unknown)} not in the toc; "
            f"choose from {', '.join(k.split('/')[-1] for k in known)}"
        )
    parts = []
    for part in toc["parts"]:
        keep = [
            c
            for c in part["chapters"]
            if c["file"] in wanted or part.get("caption") == REFERENCE
        ]
        if keep:
            parts.append({**part, "chapters": keep})
    return {**toc, "parts": parts}


def own_docs(toc: dict) -> list[str]:
    """The documents a partial toc was cut for: its chapters and their
    notebooks, not the root page and not the reference part.
    """
    return [
        doc
        for part in toc.get("parts", [])
        if part.get("caption") != REFERENCE
        for doc in _docs(part["chapters"])
    ]


def _text(path: Path) -> str:
    """A page's text; for a notebook, its cells' sources."""
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n".join(
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in cells
    )


def source_file(root: Path, doc: str) -> Path:
    """The file of document ``doc`` (``.md`` or ``.ipynb``) under
    ``root``.
    """
    for suffix in (".md", ".ipynb"):
        path = Path(root) / f"{doc}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no .md or .ipynb for {doc} under {root}")


def _defined_elsewhere(root: Path, label: str, docs: list[str]) -> bool:
    """Whether ``label`` is defined in one of ``docs`` (a page the partial
    build left out).
    """
    pattern = re.compile(
        rf"(^\({re.escape(label)}\)=\s*$)"
        rf"|(^\s*:(?:label|name): {re.escape(label)}\s*$)"
        rf"|(glue\(\s*[\"']{re.escape(label)}[\"'])",
        re.M,
    )
    for doc in docs:
        try:
            text = _text(source_file(root, doc))
        except FileNotFoundError:
            continue
        if pattern.search(text):
            return True
    return False


def _left_out(root, path, message, full_docs, partial_docs) -> bool:
    """Whether a warning only says that a document is missing which the
    whole book has but the partial build left out.
    """
    left_out = [d for d in full_docs if d not in partial_docs]
    if match := _MISSING_DOC.search(message):
        target = match[1].removesuffix(".md").removesuffix(".ipynb")
        here = path.parent.relative_to(root).as_posix()
        if target.startswith("/"):
            doc = target.lstrip("/")
        else:
            doc = os.path.normpath(f"{here}/{target}").replace(os.sep, "/")
        return doc in left_out
    if match := _MISSING_GLUE.search(message):
        return match[1] in left_out
    if match := _MISSING_LABEL.search(message):
        label = match[1] or match[2]
        return _defined_elsewhere(root, label, left_out)
    return False


def own_warnings(log: str, root: Path, full_toc: dict, toc: dict) -> list[str]:
    """The warning and error lines of a partial build's ``log`` that are
    the chapter's own: from its chapter pages and notebooks (or from no
    file, or in a form not understood), leaving out links to documents of
    ``full_toc`` that ``toc`` left out and the kernel's TCP notice.
    """
    root = Path(root).resolve()
    mine = {source_file(root, d).resolve() for d in own_docs(toc)}
    full_docs, partial_docs = toc_docs(full_toc), set(toc_docs(toc))
    shown = []
    for raw in log.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        if _NOISE.match(line):
            continue
        if not re.search(r"\b(WARNING|ERROR|CRITICAL):", line):
            continue
        match = _WARNING.match(line)
        if not match or match["file"] is None:
            shown.append(line)
            continue
        path = Path(match["file"])
        path = (path if path.is_absolute() else root / path).resolve()
        if path not in mine:
            continue
        if _left_out(root, path, match["message"], full_docs, partial_docs):
            continue
        shown.append(line)
    return shown


def topic_modules(notebooks: list[Path]) -> list[str]:
    """The ``llmbook.topics`` and ``llmbook.core`` modules that ``notebooks``
    import (``from llmbook.topics import fermi, dist as D``), sorted.
    """
    found = set()
    for path in notebooks:
        text = _text(Path(path))
        for names in _TOPICS.findall(text):
            found.update(n.split(" as ")[0].strip() for n in names.split(","))
        found.update(_TOPIC.findall(text))
    return sorted(n for n in found if n)
