"""Execution-time reporting: how long each notebook of a build took, read
from the build's jupyter-cache."""

from __future__ import annotations

from pathlib import Path


def execution_times(build_dir: Path) -> list[tuple[str, float]]:
    """``(notebook, seconds)`` for every notebook executed in a build, from
    its jupyter-cache.
    """
    from jupyter_cache import get_cache

    cache_dir = Path(build_dir) / ".jupyter_cache"
    if not cache_dir.is_dir():
        return []
    rows = []
    for record in get_cache(str(cache_dir)).list_cache_records():
        rows.append(
            (
                Path(record.uri).name,
                float(record.data.get("execution_seconds", float("nan"))),
            )
        )
    return sorted(rows)


def executed_notebook(build_dir: Path, name: str) -> dict:
    """The executed copy of notebook ``name`` (e.g. ``"fermi.ipynb"``)
    stored in a build's cache.
    """
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(str(Path(build_dir) / ".jupyter_cache"))
    for record in cache.list_cache_records():
        if Path(record.uri).name == name:
            return nbformat.from_dict(cache.get_cache_bundle(record.pk).nb)
    raise FileNotFoundError(f"{name} was not executed in {build_dir}")


def format_times(rows: list[tuple[str, float]], limit_s: float = 180.0) -> str:
    """A plain-text table of notebook execution times, flagging any over
    ``limit_s``.
    """
    width = max([len(name) for name, _ in rows] + [len("notebook")])
    lines = [
        f"{'notebook':<{width}}  seconds  within {limit_s:.0f} s",
        "-" * (width + 27),
    ]
    for name, sec in rows:
        lines.append(
            f"{name:<{width}}  {sec:7.1f}  {'yes' if sec < limit_s else 'NO'}"
        )
    lines.append(f"{'total':<{width}}  {sum(s for _, s in rows):7.1f}")
    return "\n".join(lines)
