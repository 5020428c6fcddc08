"""``python -m llmbook.book sync | labs | format | lint | problems-config``:
what ``make sync`` (the generated files, the labs among them), ``make
format``, ``make lint`` (notebooks) and ``make problems`` run."""

import sys

from llmbook.book.labs import write_labs
from llmbook.book.notebooks import FIX, format_notebooks, lint
from llmbook.book.sync import problems_config, repo_root, sync

USAGE = (
    "usage: python -m llmbook.book sync | labs | format | lint | "
    "problems-config"
)

if sys.argv[1:] == ["sync"]:
    for name in sync(repo_root()) + write_labs(repo_root()):
        print("rewrote", name)
elif sys.argv[1:] == ["labs"]:
    for name in write_labs(repo_root()):
        print("rewrote", name)
elif sys.argv[1:] == ["format"]:
    for name in format_notebooks(repo_root()):
        print("reformatted", name)
elif sys.argv[1:] == ["lint"]:
    problems = lint(repo_root())
    for line in problems + [FIX] if problems else []:
        print(line)
    sys.exit(1 if problems else 0)
elif sys.argv[1:] == ["problems-config"]:
    print(problems_config(repo_root()), end="")
else:
    sys.exit(USAGE)
