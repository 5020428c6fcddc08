"""Seed checks that take minutes, run once by a tool and stored as JSON.

A notebook that trains one seed live summarises several seeds from a file
written by ``tools/<topic>_seeds.py``: ``{"settings": {..., "seeds": [...]},
"rows": [{"seed": s, ...}, ...]}``. The file counts only when it was made
with the notebook's present settings (a reader who changes a parameter sees
the live seed alone). The live seed's row is shown as computed here and
compared with its stored row: on the machine that wrote the file the two
are equal, on another CPU (Colab) rounding may move them a little, and the
notebook says so instead of stopping. The book's tests read the glued
comparison and fail a build whose file is stale.

Used by the induction-trained, cost-mup and cost-isoflop notebooks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def load_stored(path, settings: dict) -> dict | None:
    """The stored check at ``path`` when its settings, other than "seeds",
    equal ``settings`` (compared after a JSON round trip, so tuples and
    lists are alike); else ``None`` (no file, or other settings)."""
    p = Path(path)
    if not p.exists():
        return None
    stored = json.loads(p.read_text())
    have = {k: v for k, v in stored["settings"].items() if k != "seeds"}
    want = json.loads(json.dumps(settings))
    want.pop("seeds", None)
    return stored if have == want else None


def row_differences(
    live, stored, rtol: float = 1e-3, atol: float = 1e-9, where: str = ""
) -> list[str]:
    """Where two rows (nested dicts, lists, numbers, strings, booleans)
    differ: numbers by more than ``rtol`` relative plus ``atol`` absolute,
    anything else by inequality. Returns one line per difference, naming
    its path (``"a/best_lr[2]: 0.01 here, 0.0101 stored"``); empty when
    the rows agree. NaN equals NaN."""
    if isinstance(live, dict) and isinstance(stored, dict):
        if set(live) != set(stored):
            return [
                f"{where or 'row'}: keys {sorted(live)} here, {sorted(stored)} stored"
            ]
        out = []
        for k in live:
            out += row_differences(
                live[k], stored[k], rtol, atol, f"{where}/{k}" if where else k
            )
        return out
    if isinstance(live, (list, tuple)) and isinstance(stored, (list, tuple)):
        if len(live) != len(stored):
            return [f"{where}: {len(live)} entries here, {len(stored)} stored"]
        out = []
        for i, (a, b) in enumerate(zip(live, stored)):
            out += row_differences(a, b, rtol, atol, f"{where}[{i}]")
        return out
    if isinstance(live, bool) or isinstance(stored, bool):
        if type(live) is type(stored) and live == stored:
            return []
    elif isinstance(live, (int, float)) and isinstance(stored, (int, float)):
        a, b = float(live), float(stored)
        if math.isnan(a) and math.isnan(b):
            return []
        if abs(a - b) <= atol + rtol * abs(b):
            return []
    elif live == stored:
        return []
    return [f"{where}: {live!r} here, {stored!r} stored"]


def rows_with_live(
    live: dict, path, settings: dict, rtol: float = 1e-3
) -> tuple[list[dict], bool, list[str]]:
    """The seeds a page summarises: the stored rows at ``path``
    (:func:`load_stored` with ``settings``) with the live seed's stored row
    replaced by ``live`` (the page shows what ran here), when the file
    matches and holds that seed; otherwise ``[live]`` alone.

    Returns ``(rows, from_file, differences)``: ``differences`` are
    :func:`row_differences` between the live row and its stored row
    (empty on the machine that wrote the file; a few rounding-sized ones
    on another CPU; large ones mean the file is stale)."""
    stored = load_stored(path, settings)
    if stored is None:
        return [live], False, []
    same = [r for r in stored["rows"] if r["seed"] == live["seed"]]
    if not same:
        return [live], False, []
    diffs = row_differences(live, same[0], rtol)
    rows = [live if r["seed"] == live["seed"] else r for r in stored["rows"]]
    return rows, True, diffs


def agreement_text(diffs: list[str], tool: str) -> str:
    """One sentence for the page on the live seed against its stored row:
    equal, or how many entries differ and how to refresh the file."""
    if not diffs:
        return "equals its stored row"
    n = len(diffs)
    return (
        f"differs from its stored row in {n} "
        f"entr{'y' if n == 1 else 'ies'} (another CPU rounds differently; "
        f"`{tool}` rewrites the file on this machine)"
    )
