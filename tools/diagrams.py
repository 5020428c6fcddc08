"""Write the book's schematic diagrams as SVG into images/diagrams/.

Usage: python tools/diagrams.py
The drawings are ``llmbook.book.diagrams`` (one function per diagram); the
SVG is byte for byte the same on every run, and ``tests/test_diagrams.py``
fails when a committed file differs from what the code draws.
"""

from __future__ import annotations

from pathlib import Path

from llmbook.book import diagrams

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "images" / "diagrams"

if __name__ == "__main__":
    for path in diagrams.write_all(OUT):
        print(path.relative_to(ROOT))
