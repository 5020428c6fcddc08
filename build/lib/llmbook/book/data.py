"""Small tables and files that ship with the package (prices, GPU specs,
project costs, question ids).

They live in ``llmbook/data/`` inside the package, so ``pip install`` of the
repository (Colab, a fresh environment) brings them along and nothing is
fetched over the network. The repository's top-level ``data/`` is a link to the
same folder: one source of truth.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"


def data_dir() -> Path:
    """The folder the tables are read from: ``$LLMBOOK_DATA`` when set, else
    the package's own.
    """
    env = os.environ.get("LLMBOOK_DATA")
    return Path(env) if env else PACKAGE_DATA


def data_path(name: str) -> Path:
    """Path of the shipped file ``name`` (a plain file name such as
    ``"accelerators.csv"``).

    Raises ``ValueError`` for a name with a folder in it and
    ``FileNotFoundError`` for a file the package does not ship.
    """
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
    ):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    path = data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"llmbook ships no data file {name!r} (looked in {data_dir()})"
        )
    return path


def load_csv(name: str, **read_csv_kwargs) -> pd.DataFrame:
    """Read the shipped table ``name`` with pandas (offline: it is part of the
    package).

    Raises ``ValueError`` for a name that is not a plain ``.csv`` file name.
    """
    if not isinstance(name, str) or not name.endswith(".csv"):
        raise ValueError(f"name must be a plain .csv file name, got {name!r}")
    return pd.read_csv(data_path(name), **read_csv_kwargs)
