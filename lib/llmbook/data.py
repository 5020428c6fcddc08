"""Small CSV tables that come from the sources (prices, GPU specs, project costs).

The canonical copies live in the repository's ``data/`` folder. In a checkout (the book
build, the tests) they are read from there; in Colab, where only the package is
installed, they are fetched once from the repository and a clear message says so.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

# Kept identical to `repository.url` / `repository.branch` in _config.yml (a test checks this).
REPO_URL = "https://github.com/open-llm-textbook/llm-book"
REPO_BRANCH = "main"


def _raw_url(name: str) -> str:
    owner_repo = REPO_URL.removeprefix("https://github.com/")
    return f"https://raw.githubusercontent.com/{owner_repo}/{REPO_BRANCH}/data/{name}"


def find_data_dir(start: str | Path | None = None) -> Path | None:
    """Return the repository's ``data/`` folder, searching upward from ``start`` and this file."""
    env = os.environ.get("LLMBOOK_DATA")
    if env:
        return Path(env)
    candidates = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve()]
    for base in candidates:
        for folder in [base, *base.parents]:
            if (folder / "data" / "questions.csv").is_file():
                return folder / "data"
    return None


def load_csv(name: str, **read_csv_kwargs) -> pd.DataFrame:
    """Read ``data/<name>`` with pandas; offline from the checkout, else from the repository.

    Raises ``ValueError`` for a name that is not a plain ``.csv`` file name, and
    ``FileNotFoundError`` when neither the checkout nor the network has the file.
    """
    if not isinstance(name, str) or not name.endswith(".csv") or "/" in name or "\\" in name:
        raise ValueError(f"name must be a plain .csv file name, got {name!r}")
    folder = find_data_dir()
    if folder is not None and (folder / name).is_file():
        return pd.read_csv(folder / name, **read_csv_kwargs)
    url = _raw_url(name)
    try:
        with urllib.request.urlopen(url, timeout=20) as response:  # noqa: S310 - fixed https URL
            print(f"data/{name} is not on disk; read it from {url}")
            return pd.read_csv(response, **read_csv_kwargs)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise FileNotFoundError(
            f"data/{name} is neither in a checkout of the book nor reachable at {url} ({exc}). "
            "Clone the repository or set LLMBOOK_DATA to its data/ folder."
        ) from exc
