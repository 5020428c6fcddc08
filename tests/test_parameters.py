"""Changing an assumption in a notebook's parameters cell changes the glued results as the
formulas say; running with the defaults reproduces the book build exactly (determinism)."""

import papermill as pm
import pytest

from llmbook import book, fermi, fmt, scaling
from llmbook.glue import read_glued
from conftest import BUILD, ROOT

NOTEBOOK = ROOT / "notebooks" / "fermi.ipynb"


def run(tmp_path, name, **parameters):
    out = tmp_path / name
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=parameters, cwd=str(NOTEBOOK.parent),
                        kernel_name="python3", progress_bar=False, log_output=False)
    return read_glued(out)


@pytest.fixture(scope="module")
def changed(tmp_path_factory):
    return run(tmp_path_factory.mktemp("params"), "fermi-1e15.ipynb", n_params_gpt6=1e15, gpu_bandwidth=9.6e12)


def test_changed_parameter_flows_through_every_formula(changed):
    n, bw = 1e15, 9.6e12
    c = scaling.compute_for_params(n)                     # (1e15 / 0.1)^2 = 1e32 FLOP
    _, d = scaling.direct_fit_allocation(c)
    weights = fermi.model_bytes(n)
    assert changed["n_gpt6"] == fmt.sci(n) == "10¹⁵"
    assert changed["c_gpt6"] == fmt.sci(c) == "10³²"
    assert changed["d_gpt6"] == fmt.sci(d) == "1.7 × 10¹⁶"
    assert changed["mem_gpt6"] == fmt.nbytes(weights) == "2.00 PB"
    assert changed["gpus_gpt6"] == "20,000"
    assert changed["f_ssd"] == fmt.usd(fermi.storage_cost_per_year(weights, 0.00005))
    assert changed["g_lat_gpt6"] == fmt.sig(weights / bw, 3) == "208"
    assert changed["h_gpt6"] == fmt.usd(fermi.rental_cost(c, 1.98e15, 1.5))
    # quantities that do not depend on the changed assumptions stay put
    assert changed["h_gpt3"] == "66,200 USD"
    assert changed["k_power"] == fmt.sci(fermi.landauer_joules(32, 300) * 1.98e15, 3)


def test_defaults_reproduce_the_book_build(built_book, tmp_path):
    built = read_glued(book.executed_notebook(BUILD, "fermi.ipynb"))
    again = run(tmp_path, "fermi-default.ipynb")
    texts = {k: v for k, v in built.items() if not k.startswith("fig_")}
    assert texts and texts == {k: v for k, v in again.items() if not k.startswith("fig_")}
    assert built["c_gpt6"] == "10³⁰" and built["h_gpt6"] == "210 billion USD"
