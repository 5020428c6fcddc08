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
        cell = {
            "cell_type": "code",
            "source": src,
            "outputs": [],
            "execution_count": None,
            "metadata": {"tags": ["parameters"]}
            if i == 1
            else {"tags": list(sync.BOOTSTRAP_TAGS)}
            if i == 0
            else {},
        }
        if ids:
            cell["id"] = f"c{i:02d}"
        cells.append(cell)
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_a_clean_notebook_has_no_problems():
    good = nb(
        "from llmbook.topics import lora\nimport pandas as pd",
        "table = pd.concat([])\nfor row in table: pass\nprint(lora.INITS)",
    )
    assert lint.notebook_problems(good, URL) == []


@pytest.mark.parametrize(
    "code",
    [
        "lora = pd.concat([a, b])",
        "lora += 1",
        "x, lora = 1, 2",
        "for lora in range(3):\n    pass",
        "def lora():\n    pass",
        "class lora:\n    pass",
        "import numpy as lora",
        "with open('f') as lora:\n    pass",
        "if True:\n    lora = 1",
        "try:\n    pass\nexcept Exception:\n    lora = 1",
        "%matplotlib inline\nlora = 1",
    ],
)
def test_a_variable_named_like_an_imported_module_is_reported(code):
    bad = nb("from llmbook.topics import lora, fermi", code)
    problems = lint.notebook_problems(bad, URL)
    assert len(problems) == 1, problems
    assert "cell 4 (id c03)" in problems[0]
    assert "`lora`" in problems[0]
    assert "llmbook.topics.lora" in problems[0]
    assert "rename the variable" in problems[0]


def test_an_alias_is_the_name_that_counts():
    bad = nb("from llmbook.topics import dist as D", "D = 3")
    assert "`D`" in lint.shadowed_modules(bad)[0]
    # the bare module name is free when the notebook imports it as D
    assert (
        lint.shadowed_modules(
            nb("from llmbook.topics import dist as D", "dist = 3")
        )
        == []
    )


def test_names_in_functions_and_imported_functions_are_not_reported():
    ok = nb(
        "from llmbook.topics import lora\nfrom llmbook.book.fmt import sig",
        "def f():\n    lora = 1\n    return lora",
        "sig = 3",  # a function, not a module
        "from llmbook.topics import lora",  # the same module again
        "[lora for lora in range(2)]",
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


def test_a_bootstrap_cell_without_hide_input_is_reported():
    """The set-up code is folded on every notebook page (attention-flash and
    attention-mha once showed it): `make sync` adds the missing tag."""
    shown = nb("x = 1")
    shown["cells"][1]["metadata"] = {"tags": ["bootstrap"]}
    problems = lint.notebook_problems(shown, URL)
    assert problems == [
        "bootstrap cell lacks the tags ['hide-input']: run `make sync`"
    ]
