"""Colab, simulated: a fresh environment with only what Colab preinstalls, the library installed
by each notebook's own bootstrap cell from a local clone, every notebook run outside the checkout
with the network switched off (see tools/colab_sim.py). Slow: marked ``colab``."""

import json
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT
from llmbook.book import lint

sys.path.insert(0, str(ROOT / "tools"))
import colab_sim  # noqa: E402

pytestmark = pytest.mark.colab
NOTEBOOKS = colab_sim.book_notebooks()  # the labs too


@pytest.fixture(scope="module")
def colab():
    py = colab_sim.make_venv()
    colab_sim.make_wheelhouse(py)
    with tempfile.TemporaryDirectory(prefix="colab-sim-") as tmp:
        tmp = Path(tmp)
        (tmp / "repo").mkdir()
        url = colab_sim.snapshot_repo(tmp / "repo")
        colab_sim.kernelspec(py, tmp / "jupyter")
        yield py, url, tmp


def test_the_simulated_colab_has_no_book_packages(colab):
    py, _, _ = colab
    colab_sim.reset(py)
    have = colab_sim.installed(py)
    assert {"numpy", "torch", "ipykernel"} <= have
    assert not have & {
        "llmbook",
        "myst-nb",
        "papermill",
        "transformer-lens",
        "peft",
        "mlxtend",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_offline_in_colab(colab, path):
    py, url, tmp = colab
    result = colab_sim.run_offline(path, py, url, tmp)
    assert result["error"] is None, result["error"]
    outputs = [
        o
        for c in result["notebook"]["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    ]
    text = "".join(
        "".join(o.get("text", ""))
        for o in outputs
        if o.get("output_type") == "stream"
    )
    # Without myst-nb, every glued value must still be visible to the reader of the notebook.
    keys = set(
        lint.glued_names(json.loads(path.read_text()))["names"]
    )  # glue("k", v), glue({"k": v})
    figures = {k for k in keys if k.startswith("fig")}
    missing = sorted(k for k in keys - figures if f"{k} = " not in text)
    assert missing == [], f"glued values not printed in Colab: {missing[:10]}"
    # Speed is the build's timing table's job (and tools/), not a timed test:
    # a shared CPU makes wall-clock bounds flaky.
    print(f"{path.name}: {result['seconds']:.0f} s in the simulated Colab")
