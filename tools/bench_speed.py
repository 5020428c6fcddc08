"""The book's speed against its targets (a report: it exits 0 however slow the machine is).

    python tools/bench_speed.py                      # from the existing _build
    python tools/bench_speed.py --clean              # first a clean build, timed (~10 min)
    python tools/bench_speed.py --test-log test.log  # also the time of a `make test` run
    python tools/bench_speed.py --run-test           # also run `make test`, timed (~20 min)

Targets on a quiet 2-core machine: each notebook <= 90 s, a clean build <= 10 minutes,
`make test` from a fresh clone <= 20 minutes. The notebook times come from the build's
jupyter-cache; the clean-build time from ``_build/timings.json``, which a timed clean build
(this tool's --clean, or the test suite's build) writes. For a log, time the run yourself:
``( time make test ) > test.log 2>&1`` (the shell's ``real`` line counts the install too);
without it, pytest's own summary time is used.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from llmbook.book import report

ROOT = Path(__file__).resolve().parents[1]


def clean_build(build: Path) -> float:
    """Remove ``build`` and build the book into it as ``make book`` does; return seconds."""
    shutil.rmtree(build, ignore_errors=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    start = time.perf_counter()
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "-W", "-n", "--keep-going"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    (ROOT / "_build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(
            f"the clean build failed (exit {proc.returncode}); see _build.log",
            file=sys.stderr,
        )
    else:
        report.write_build_seconds(build, seconds)
    return seconds


def run_make_test() -> float:
    """Run `make test` here, its output shown; return seconds."""
    start = time.perf_counter()
    subprocess.run(["make", "test"], cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--build", type=Path, default=ROOT / "_build", help="the build folder"
    )
    parser.add_argument(
        "--clean", action="store_true", help="first run a clean build, timed"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--test-log", type=Path, help="the log of a `make test` run"
    )
    group.add_argument(
        "--run-test", action="store_true", help="run `make test`, timed"
    )
    args = parser.parse_args(argv)
    build_s = (
        clean_build(args.build)
        if args.clean
        else report.read_build_seconds(args.build)
    )
    test_s = None
    if args.test_log:
        test_s = report.log_seconds(args.test_log.read_text(errors="replace"))
    elif args.run_test:
        test_s = run_make_test()
    print(
        report.speed_report(
            report.execution_times(args.build), build_s, test_s
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
