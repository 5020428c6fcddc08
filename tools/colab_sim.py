"""Run every notebook the way a reader in Colab would, offline, outside the checkout.

    python tools/colab_sim.py [notebook.ipynb ...]      # default: every notebook

A name is a file in ``notebooks/`` or a path from the repository root
(``labs/lora-lab.ipynb``); the default is every notebook of the book, the
solution notebooks (``notebooks/``) and the labs (``labs/``).

1. A fresh virtual environment (``.colab-sim/venv``) with only what Colab preinstalls:
   numpy, pandas, matplotlib, scipy, sympy, torch, scikit-learn, ipykernel (no myst-nb,
   no papermill, no llmbook), at the versions of requirements.txt.
2. A wheelhouse standing in for PyPI (``.colab-sim/wheels``): setuptools (to build llmbook)
   and the book's optional extras, which notebooks install on demand as they would in Colab.
3. A snapshot of the working tree as a git repository; the notebooks' own bootstrap cell
   installs llmbook from it (``LLMBOOK_INSTALL_URL=git+file://...``).
4. Each notebook is copied to a temporary folder outside the checkout and executed there by a
   kernel of that environment, inside a new network namespace with only loopback up
   (``unshare -rn``): no network at all. Writes one JSON report per notebook.

Steps 1–2 need the package index and are cached in ``.colab-sim/``; step 4 is offline.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / ".colab-sim"
VENV = SIM / "venv"
WHEELS = SIM / "wheels"
COLAB_PACKAGES = [
    "numpy",
    "pandas",
    "matplotlib",
    "scipy",
    "sympy",
    "torch",
    "scikit-learn",
    "ipykernel",
]
EXTRAS = ["interp", "adapt", "compress"]
NO_DEPS_EXTRAS = [
    "mup"
]  # installed with --no-deps (llmbook.book.extras.NO_DEPS); built into wheels here


def pinned(names: list[str]) -> list[str]:
    """``name==version`` from requirements.txt for each name (Colab's versions differ; ours are tested)."""
    pins = {}
    text = (
        (ROOT / "requirements.txt").read_text()
        + "\n"
        + (ROOT / "requirements-nodeps.txt").read_text()
    )
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(0)
    return [pins.get(n.lower(), n) for n in names]


def run(cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(list(map(str, cmd)), check=True, **kw)


def make_venv() -> Path:
    stamp = VENV / ".colab-packages"
    want = "\n".join(
        pinned(COLAB_PACKAGES + ["setuptools", "wheel"])
        + [f"pip=={importlib.metadata.version('pip')}"]
    )
    if stamp.is_file() and stamp.read_text() == want:
        return VENV / "bin" / "python"
    shutil.rmtree(VENV, ignore_errors=True)
    run([sys.executable, "-m", "venv", VENV])
    py = VENV / "bin" / "python"
    # Colab's pip is recent (it accepts `llmbook @ git+file:///...`); use the build's version.
    run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            f"pip=={importlib.metadata.version('pip')}",
        ]
    )
    run([py, "-m", "pip", "install", "-q", *want.split("\n")])
    (VENV / ".colab-packages-installed").write_text(
        "\n".join(sorted(installed(py)))
    )
    stamp.write_text(want)
    return py


def extra_requirements(names: list[str] = EXTRAS) -> list[str]:
    """Every requirement of the optional extras ``names``, torch excluded, read from pyproject.toml."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    reqs = [
        r
        for e in names
        for r in extras[e]
        if not re.match(r"torch\b(?!ao)", r)
    ]
    return sorted(set(reqs))


def make_wheelhouse(py: Path) -> Path:
    stamp = WHEELS / ".requirements"
    # The extras' own packages at the tested versions; what they need comes with them.
    names = [
        re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in extra_requirements()
    ]
    no_deps = [
        re.match(r"[A-Za-z0-9_.-]+", r).group(0)
        for r in extra_requirements(NO_DEPS_EXTRAS)
    ]
    want = "\n".join(
        pinned(["setuptools", "wheel", *names])
        + ["--no-deps:"]
        + pinned(no_deps)
    )
    # Everything they pull in is held at the versions the book is tested with.
    pins = [
        line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    ]
    if stamp.is_file() and stamp.read_text() == want + "\n" + "\n".join(pins):
        return WHEELS
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    constraints = SIM / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    with_deps, _, alone = want.partition("\n--no-deps:\n")
    run(
        [
            py,
            "-m",
            "pip",
            "download",
            "-q",
            "-d",
            WHEELS,
            "-c",
            constraints,
            *with_deps.split("\n"),
        ]
    )
    # an sdist (mup has no wheel) becomes a wheel now, so the offline install needs no build
    run(
        [
            py,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            WHEELS,
            *alone.split("\n"),
        ]
    )
    stamp.write_text(want + "\n" + "\n".join(pins))
    return WHEELS


def snapshot_repo(dest: Path) -> str:
    """The working tree (tracked and untracked, not ignored) committed into a fresh repository."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = ROOT / name
        if src.is_symlink() or src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), dest / name)
            else:
                shutil.copy2(src, dest / name)
    git = ["git", "-c", "user.name=sim", "-c", "user.email=sim@localhost"]
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["commit", "-q", "-m", "snapshot"],
    ):
        subprocess.run([*git, *args], cwd=dest, check=True)
    return f"git+file://{dest}"


def kernelspec(py: Path, where: Path) -> Path:
    spec = where / "kernels" / "colab-sim"
    spec.mkdir(parents=True)
    spec.joinpath("kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    str(py),
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "Colab simulation",
                "language": "python",
            }
        )
    )
    return where


RUNNER = r"""
import json, sys, time, nbformat
from nbclient import NotebookClient
nb_path, report_path = sys.argv[1], sys.argv[2]
nb = nbformat.read(nb_path, as_version=4)
start = time.perf_counter()
error = None
try:
    NotebookClient(nb, kernel_name="colab-sim", timeout=600, resources={"metadata": {"path": str(__import__("pathlib").Path(nb_path).parent)}}).execute()
except Exception as exc:  # report it; the test decides
    error = f"{type(exc).__name__}: {exc}"[-4000:]
nbformat.write(nb, nb_path)
json.dump({"seconds": time.perf_counter() - start, "error": error}, open(report_path, "w"))
"""


def installed(py: Path) -> set[str]:
    out = subprocess.run(
        [py, "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        re.split(r"[=@ ]", line, maxsplit=1)[0].lower()
        for line in out.splitlines()
        if line.strip()
    }


def reset(py: Path) -> None:
    """Uninstall whatever a previous notebook installed: each notebook starts in a fresh runtime."""
    base = set((VENV / ".colab-packages-installed").read_text().split())
    extra = sorted(installed(py) - base)
    if extra:
        subprocess.run(
            [py, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True
        )


def run_offline(notebook: Path, py: Path, url: str, work: Path) -> dict:
    """Execute a copy of ``notebook`` in ``work`` with the Colab kernel and no network; return a report."""
    reset(py)
    shutil.copy2(notebook, work / notebook.name)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LLMBOOK", "JUPYTER"))
    }
    env.update(
        {
            "JUPYTER_PATH": str(work / "jupyter"),
            "LLMBOOK_INSTALL_URL": url,
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(WHEELS),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "HOME": str(work / "home"),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }
    )
    (work / "home").mkdir(exist_ok=True)
    runner = work / "runner.py"
    runner.write_text(RUNNER)
    report = work / f"{notebook.stem}.json"
    inner = f"ip link set lo up && exec {sys.executable} {runner} {work / notebook.name} {report}"
    subprocess.run(
        ["unshare", "-rn", "sh", "-c", inner], cwd=work, env=env, check=True
    )
    result = json.loads(report.read_text())
    result["notebook"] = json.loads((work / notebook.name).read_text())
    return result


def book_notebooks() -> list[Path]:
    """Every notebook the book's toc lists: ``notebooks/`` and ``labs/``."""
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted(
        (ROOT / "labs").glob("*.ipynb")
    )


def notebook_path(name: str) -> Path:
    """``name`` in ``notebooks/``, or a path from the repository root."""
    path = ROOT / name
    return (
        path if "/" in name and path.is_file() else ROOT / "notebooks" / name
    )


def main(names: list[str]) -> int:
    notebooks = [notebook_path(n) for n in names] or book_notebooks()
    py = make_venv()
    make_wheelhouse(py)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="colab-sim-") as tmp:
        tmp = Path(tmp)
        (tmp / "repo").mkdir()
        url = snapshot_repo(tmp / "repo")
        kernelspec(py, tmp / "jupyter")
        for nb in notebooks:
            result = run_offline(nb, py, url, tmp)
            failed += result["error"] is not None
            print(
                f"{nb.name}: {result['seconds']:.0f} s, {'ok' if result['error'] is None else result['error']}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
