"""Print how long each notebook took in the last build (read from _build/.jupyter_cache)."""

from pathlib import Path

from llmbook.book.report import execution_times, format_times

rows = execution_times(Path(__file__).resolve().parents[1] / "_build")
print(
    "\nNotebook execution times (last build)\n"
    + (format_times(rows) if rows else "no executed notebooks found")
)
