"""Execution-time reporting: how long each notebook of a build took, read
from the build's jupyter-cache, and the book's speed targets (a report, not
a failure: a busy machine is slower, and the build's timeout only guards
against hangs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

#: Speed targets on a quiet 2-core machine, in seconds.
NOTEBOOK_TARGET_S = 90.0
CLEAN_BUILD_TARGET_S = 600.0
MAKE_TEST_TARGET_S = 1200.0
_TIMINGS = "timings.json"


def _current_records(cache) -> list:
    """One cache record per notebook: the one that matches the notebook's
    current file, else (file gone or edited since) the last one used.
    """
    latest = {}
    for record in cache.list_cache_records():
        kept = latest.get(record.uri)
        if kept is None or record.accessed > kept.accessed:
            latest[record.uri] = record
    current = []
    for uri, record in latest.items():
        try:
            record = cache.match_cache_file(uri)
        except (KeyError, OSError, ValueError):
            pass
        current.append(record)
    return current


def execution_times(build_dir: Path) -> list[tuple[str, float]]:
    """``(notebook, seconds)`` for every notebook executed in a build, from
    its jupyter-cache.
    """
    from jupyter_cache import get_cache

    cache_dir = Path(build_dir) / ".jupyter_cache"
    if not cache_dir.is_dir():
        return []
    rows = []
    for record in _current_records(get_cache(str(cache_dir))):
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
    for record in _current_records(cache):
        if Path(record.uri).name == name:
            return nbformat.from_dict(cache.get_cache_bundle(record.pk).nb)
    raise FileNotFoundError(f"{name} was not executed in {build_dir}")


def format_times(
    rows: list[tuple[str, float]], limit_s: float = NOTEBOOK_TARGET_S
) -> str:
    """A plain-text table of notebook execution times, flagging any over
    ``limit_s`` (the 90 s target by default) with ``NO``; it reports and
    never fails.
    """
    if not limit_s > 0:
        raise ValueError(f"limit_s must be positive, got {limit_s!r}")
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


def write_build_seconds(build_dir: Path, seconds: float) -> None:
    """Record the wall time of the clean build in ``build_dir``
    (``timings.json``), for :func:`read_build_seconds`.
    """
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, got {seconds!r}")
    path = Path(build_dir) / _TIMINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"clean_build_s": float(seconds)}) + "\n")


def read_build_seconds(build_dir: Path) -> float | None:
    """The clean-build wall time recorded in ``build_dir``, or ``None``
    when that build was not timed (an incremental or partial build).
    """
    path = Path(build_dir) / _TIMINGS
    if not path.is_file():
        return None
    return float(json.loads(path.read_text())["clean_build_s"])


_PYTEST_END = re.compile(
    r"^=+ .*\b(?:passed|failed|skipped|error|errors|deselected)\b.*"
    r" in ([0-9.]+)s\b.*=+$"
)
_SHELL_REAL = re.compile(r"^real\s+(\d+)m([0-9.]+)s$")


def log_seconds(log: str) -> float | None:
    """The wall time of a ``make test`` run from its log: the shell's
    ``time`` line (``real 18m3.2s``) where the log has one (it counts the
    install too), else pytest's summary line (``=== 300 passed in
    912.40s ===``); ``None`` when the log has neither.
    """
    real = pytest = None
    for line in log.splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if match := _SHELL_REAL.match(line):
            real = 60 * int(match[1]) + float(match[2])
        elif match := _PYTEST_END.match(line):
            pytest = float(match[1])
    return real if real is not None else pytest


def _verdict(seconds: float | None, target: float) -> str:
    if seconds is None:
        return "not measured"
    ok = "within" if seconds <= target else "OVER"
    return f"{seconds:.0f} s, {ok} the target of {target:.0f} s"


def speed_report(
    rows: list[tuple[str, float]],
    build_s: float | None = None,
    test_s: float | None = None,
) -> str:
    """The speed report of ``tools/bench_speed.py``: the notebook table
    against 90 s, the clean build against 10 minutes and ``make test``
    against 20 minutes; ``None`` reads "not measured". A report: slow
    lines say ``NO``/``OVER`` and nothing raises.
    """
    slow = [name for name, sec in rows if not sec <= NOTEBOOK_TARGET_S]
    lines = [
        format_times(rows) if rows else "no executed notebooks found",
        "",
        f"notebooks over {NOTEBOOK_TARGET_S:.0f} s: "
        + (", ".join(slow) if slow else "none"),
        f"clean build: {_verdict(build_s, CLEAN_BUILD_TARGET_S)}",
        f"make test: {_verdict(test_s, MAKE_TEST_TARGET_S)}",
    ]
    return "\n".join(lines)
