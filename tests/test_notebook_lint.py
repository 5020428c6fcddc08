"""The notebook linter: each problem it reports names its fix."""

import pytest

from llmbook.book import lint, sync

URL = "https://github.com/example/book"


def nb(*sources, ids=True):
    """A notebook whose code cells hold ``sources``: bootstrap, parameters,
    then the rest."""
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# Title"}]
    for i, src in enumerate(
        [sync.bootstrap_source(URL), "n = 1  # count", *sources]
    ):
        cell = {"cell_type": "code", "source": src, "outputs": [],
                "execution_count": None,
                "metadata": {"tags": ["parameters"]} if i == 1 else {}}
        if ids:
            cell["id"] = f"c{i:02d}"
        cells.append(cell)
    return {"cells": cells, "metadata": {}, "nbformat": 4,
            "nbformat_minor": 5}


def test_a_clean_notebook_has_no_problems():
    good = nb("from llmbook.topics import costs\nimport pandas as pd",
              "table = pd.concat([])\nfor row in table: pass\n"
              "print(costs.RECIPES)")
    assert lint.notebook_problems(good, URL) == []


@pytest.mark.parametrize("code", [
    "costs = pd.concat([a, b])",
    "costs += 1",
    "x, costs = 1, 2",
    "for costs in range(3):\n    pass",
    "def costs():\n    pass",
    "class costs:\n    pass",
    "import numpy as costs",
    "with open('f') as costs:\n    pass",
    "if True:\n    costs = 1",
    "try:\n    pass\nexcept Exception:\n    costs = 1",
    "%matplotlib inline\ncosts = 1",
])
def test_a_variable_named_like_an_imported_module_is_reported(code):
    bad = nb("from llmbook.topics import costs, fermi", code)
    problems = lint.notebook_problems(bad, URL)
    assert len(problems) == 1, problems
    assert "cell 4 (id c03)" in problems[0]
    assert "`costs`" in problems[0]
    assert "llmbook.topics.costs" in problems[0]
    assert "rename the variable" in problems[0]


def test_an_alias_is_the_name_that_counts():
    bad = nb("from llmbook.topics import dist as D", "D = 3")
    assert "`D`" in lint.shadowed_modules(bad)[0]
    # the bare module name is free when the notebook imports it as D
    assert lint.shadowed_modules(nb(
        "from llmbook.topics import dist as D", "dist = 3")) == []


def test_names_in_functions_and_imported_functions_are_not_reported():
    ok = nb(
        "from llmbook.topics import costs\nfrom llmbook.book.fmt import sig",
        "def f():\n    costs = 1\n    return costs",
        "sig = 3",                      # a function, not a module
        "from llmbook.topics import costs",  # the same module again
        "[costs for costs in range(2)]",
    )
    assert lint.shadowed_modules(ok) == []


def test_a_cell_without_an_id_is_named_by_its_number():
    bad = nb("import llmbook.topics.fermi as fermi", "fermi = 1", ids=False)
    assert lint.shadowed_modules(bad) == [
        "cell 4 line 1 assigns `fermi`, the name of the module "
        "llmbook.topics.fermi the notebook imports: rename the variable"
    ]


def test_every_layout_message_names_its_fix():
    broken = nb("x = 1")
    broken["cells"][1]["source"] = "print('old bootstrap')"
    broken["cells"][2]["metadata"] = {}
    broken["cells"][3]["outputs"] = [{"output_type": "stream"}]
    problems = lint.notebook_problems(broken, URL)
    assert len(problems) == 4, problems
    assert "run `make sync`" in problems[0]
    assert all(": " in p for p in problems)
    assert "nbconvert --clear-output" in problems[-1]
