"""Build one chapter (and its nested notebooks) alone, for quick iteration while writing it.

    python tools/build_chapter.py chapters/lora [chapters/other ...]

Writes a temporary table of contents with the landing page, the named chapters with their
notebooks, and the reference pages, and builds it into ``_build/partial/`` with warnings
shown (not fatal: links to chapters left out of the partial build warn). The real check is
the full build of ``make test``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def partial_toc(chapters: list[str]) -> dict:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    parts = []
    for part in toc["parts"]:
        keep = [c for c in part["chapters"] if c["file"] in chapters or part["caption"] == "Reference"]
        if keep:
            parts.append({**part, "chapters": keep})
    return {**toc, "parts": parts}


def main(chapters: list[str]) -> int:
    if not chapters:
        sys.exit(__doc__)
    toc_path = ROOT / "_build" / "partial_toc.yml"
    toc_path.parent.mkdir(exist_ok=True)
    toc_path.write_text(yaml.safe_dump(partial_toc(chapters), sort_keys=False))
    jb = Path(sys.executable).with_name("jupyter-book")
    out = ROOT / "_build" / "partial"
    cmd = [str(jb), "build", str(ROOT), "--toc", str(toc_path), "--path-output", str(out), "--keep-going"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log)
    for line in log.splitlines():
        if "WARNING" in line or "ERROR" in line:
            print(line)
    print(f"exit {proc.returncode}; site in {out / '_build' / 'html'}; log in {out / 'build.log'}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
