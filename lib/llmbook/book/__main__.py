"""``python -m llmbook.book sync | problems-config``: what ``make sync`` and
``make problems`` run."""

import sys

from llmbook.book.sync import problems_config, repo_root, sync

if sys.argv[1:] == ["sync"]:
    for name in sync(repo_root()):
        print("rewrote", name)
elif sys.argv[1:] == ["problems-config"]:
    print(problems_config(repo_root()), end="")
else:
    sys.exit("usage: python -m llmbook.book sync | problems-config")
