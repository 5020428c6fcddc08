"""Verdicts are chosen in code from intervals (``core.stats.compare``) and
glued with their evidence (``book.verdict``); every verdict the built book
glues is re-derived here from its evidence with this file's own rule."""

import json

import pytest

from llmbook.book import glue as glue_mod
from llmbook.book import report
from llmbook.book.verdict import EVIDENCE, glue_verdict, verdict
from llmbook.core.stats import VERDICTS, binomial_interval, compare
from conftest import BUILD, ROOT

WORDS = {"better": "beats", "worse": "loses to", "within noise": "ties with"}


@pytest.mark.parametrize(
    "a, b, higher, want",
    [
        ((0.8, 0.9), (0.5, 0.7), True, "better"),
        ((0.5, 0.7), (0.8, 0.9), True, "worse"),
        ((0.6, 0.85), (0.8, 0.9), True, "within noise"),
        ((0.7, 0.8), (0.8, 0.9), True, "within noise"),  # touching
        ((0.1, 0.2), (0.3, 0.4), False, "better"),  # a loss: lower wins
        ((0.3, 0.4), (0.1, 0.2), False, "worse"),
        (
            {"lo": 2, "hi": 3, "median": 2.5},
            {"lo": 0, "hi": 1},
            True,
            "better",
        ),
    ],
)
def test_compare_by_hand(a, b, higher, want):
    assert compare(a, b, higher) == want
    assert want in VERDICTS


def test_compare_on_binomial_intervals():
    # 90/100 against 60/100: Clopper-Pearson intervals do not overlap
    good, bad = binomial_interval(90, 100), binomial_interval(60, 100)
    assert compare(good, bad) == "better"
    # 62/100 against 60/100 overlap
    assert compare(binomial_interval(62, 100), bad) == "within noise"


@pytest.mark.parametrize(
    "a", [(1, 0), (float("nan"), 1), (1,), "ab", {"lo": 1}]
)
def test_compare_rejects_bad_intervals(a):
    with pytest.raises(ValueError):
        compare(a, (0, 1))


def test_words_map_the_verdict():
    assert verdict((2, 3), (0, 1), words=WORDS) == "beats"
    assert verdict((0, 1), (2, 3), words=WORDS) == "loses to"
    with pytest.raises(ValueError, match="words must map"):
        verdict((0, 1), (2, 3), words={"better": "x"})


def test_glue_verdict_glues_word_and_evidence(monkeypatch):
    monkeypatch.setattr(glue_mod, "_myst_glue", lambda *a, **k: None)
    glue_verdict("v_demo", (0.1, 0.2), (0.3, 0.4), False, WORDS)
    assert glue_mod.GLUED["v_demo"] == "beats"
    ev = json.loads(glue_mod.GLUED["v_demo" + EVIDENCE])
    assert ev["a"] == [0.1, 0.2] and ev["b"] == [0.3, 0.4]
    assert ev["verdict"] == "better" and ev["higher_is_better"] is False


def rederive(ev: dict) -> str:
    """This test's own rule: a wins when its interval clears b's."""
    (a_lo, a_hi), (b_lo, b_hi) = ev["a"], ev["b"]
    if not ev["higher_is_better"]:
        a_lo, a_hi, b_lo, b_hi = -a_hi, -a_lo, -b_hi, -b_lo
    if a_lo > b_hi:
        return "better"
    if a_hi < b_lo:
        return "worse"
    return "within noise"


def check_verdicts(glued: dict, where: str) -> int:
    """Every ``<name>__evidence`` in ``glued`` agrees with the glued word;
    returns how many were checked."""
    n = 0
    for key, raw in glued.items():
        if not key.endswith(EVIDENCE):
            continue
        name, ev = key[: -len(EVIDENCE)], json.loads(raw)
        word = rederive(ev)
        assert ev["verdict"] == word, (
            f"{where}: {name} says {ev['verdict']!r}, intervals say {word!r}"
        )
        want = ev["words"][word] if ev["words"] else word
        assert glued[name] == want, (
            f"{where}: {name} glues {glued[name]!r}, its evidence gives "
            f"{want!r}: glue verdicts with llmbook.book.verdict.glue_verdict"
        )
        n += 1
    return n


def test_every_glued_verdict_follows_its_intervals(built_book):
    checked = 0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        try:
            nb = report.executed_notebook(BUILD, path.name)
        except FileNotFoundError:
            continue  # not in this (partial) build
        checked += check_verdicts(glue_mod.read_glued(nb), path.name)
    print(f"{checked} glued verdicts re-derived from their intervals")
