"""Speed reporting (llmbook.book.report, tools/bench_speed.py): a report against the targets,
never a failure."""

import pytest

from llmbook.book import report

ROWS = [("fast.ipynb", 12.0), ("slow.ipynb", 95.5)]


def test_format_times_flags_notebooks_over_90_s_by_default():
    table = report.format_times(ROWS).splitlines()
    assert "within 90 s" in table[0]
    assert table[2].split() == ["fast.ipynb", "12.0", "yes"]
    assert table[3].split() == ["slow.ipynb", "95.5", "NO"]
    assert table[-1].split() == ["total", "107.5"]
    assert (
        report.format_times(ROWS, limit_s=100).splitlines()[3].endswith("yes")
    )
    with pytest.raises(ValueError, match="limit_s"):
        report.format_times(ROWS, limit_s=0)


def test_speed_report_against_the_three_targets():
    text = report.speed_report(ROWS, build_s=540.0, test_s=1300.0)
    assert "notebooks over 90 s: slow.ipynb" in text
    assert "clean build: 540 s, within the target of 600 s" in text
    assert "make test: 1300 s, OVER the target of 1200 s" in text
    empty = report.speed_report([])
    assert (
        "no executed notebooks found" in empty
        and "notebooks over 90 s: none" in empty
    )
    assert (
        "clean build: not measured" in empty
        and "make test: not measured" in empty
    )


def test_build_seconds_round_trip(tmp_path):
    assert report.read_build_seconds(tmp_path) is None
    report.write_build_seconds(tmp_path / "b", 612.5)
    assert report.read_build_seconds(tmp_path / "b") == 612.5
    with pytest.raises(ValueError, match="seconds"):
        report.write_build_seconds(tmp_path, -1)


@pytest.mark.parametrize(
    "log, want",
    [
        (
            "collected 3 items\n\x1b[32m===== 312 passed, 2 skipped in 912.40s (0:15:12) =====\x1b[0m\n",
            912.4,
        ),
        (
            "== 1 failed, 9 passed in 3.10s ==\n\nreal\t18m3.50s\nuser\t30m0.00s\n",
            1083.5,
        ),
        ("make: *** [Makefile:60: test] Error 2\n", None),
    ],
)
def test_log_seconds_reads_the_shell_time_or_pytest_summary(log, want):
    assert report.log_seconds(log) == want


def test_an_edited_notebook_is_timed_by_its_current_execution(tmp_path):
    """An incremental build's cache holds old executions too; the table shows one row per
    notebook, the one matching the file as it is."""
    import time

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    path = tmp_path / "a.ipynb"

    def execute(code, seconds):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nbformat.write(nb, path)
        cache.cache_notebook_bundle(
            CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
            check_validity=False,
        )
        time.sleep(0.01)
        return nb

    current = execute("x = 1", 5.0)
    execute("x = 2", 7.0)
    nbformat.write(
        current, path
    )  # edited back: the first execution is current again
    assert report.execution_times(tmp_path / "_build") == [("a.ipynb", 5.0)]
    assert (
        report.executed_notebook(tmp_path / "_build", "a.ipynb")
        .cells[0]
        .source
        == "x = 1"
    )
