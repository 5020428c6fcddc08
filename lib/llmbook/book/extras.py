"""Optional extras: install what a notebook needs when it is missing (as in a
fresh Colab runtime).

The version ranges are read from the installed package's own metadata
(``pyproject.toml``'s ``[project.optional-dependencies]``), so they are written
in one place. torch is never installed or replaced: Colab's own build is kept.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
import sys

# The modules whose presence means an extra is installed.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "interp": ("transformer_lens",),
    "adapt": ("peft", "bitsandbytes", "torchao"),
    "compress": ("mlxtend",),
    "mup": ("mup", "yaml"),
}

# Extras installed with ``pip install --no-deps``: mup's metadata asks for
# torchvision, seaborn and tqdm, which the part the book uses never imports,
# and a torchvision from PyPI may not match the runtime's torch.
NO_DEPS: frozenset[str] = frozenset({"mup"})


def extra_requirements(extra: str) -> list[str]:
    """The requirement strings of ``extra`` from the package metadata, torch
    left out.

    Raises ``ValueError`` for an extra the package does not define.
    """
    if extra not in EXTRA_MODULES:
        raise ValueError(
            f"extra must be one of {sorted(EXTRA_MODULES)}, got {extra!r}"
        )
    found = []
    for req in importlib.metadata.requires("llmbook") or []:
        spec, _, marker = req.partition(";")
        if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", marker):
            name = re.match(r"[A-Za-z0-9_.-]+", spec.strip()).group(0)
            if name.lower() != "torch":
                found.append(spec.strip().replace(" ", ""))
    return found


def missing_modules(extra: str) -> list[str]:
    """Which of the modules that make up ``extra`` cannot be imported here."""
    if extra not in EXTRA_MODULES:
        raise ValueError(
            f"extra must be one of {sorted(EXTRA_MODULES)}, got {extra!r}"
        )
    return [
        m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None
    ]


def require(extra: str) -> None:
    """Install ``extra``'s packages with pip when any of its modules is
    missing; else do nothing.
    """
    missing = missing_modules(extra)
    if not missing:
        return
    reqs = extra_requirements(extra)
    print(
        f"installing the book's '{extra}' extra "
        f"({', '.join(reqs)}) for {', '.join(missing)}"
    )
    flags = ["--no-deps"] if extra in NO_DEPS else []
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *flags, *reqs],
        check=True,
    )
    importlib.invalidate_caches()


def online(
    host: str = "huggingface.co", port: int = 443, timeout: float = 3.0
) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout``
    seconds: the test a notebook makes before an optional download (the
    induction-trained notebook's GPT-2 small), so an offline build skips
    it instead of failing."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False
