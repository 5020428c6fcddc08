"""Verdicts chosen in code and glued with their evidence.

``glue_verdict("v_lora_vs_full", lora_interval, full_interval)`` glues the
word :func:`llmbook.core.stats.compare` chooses ("better", "worse",
"within noise"), or the phrase ``words`` maps it to, under the name, and the
two intervals under ``<name>__evidence`` (JSON, never pasted). The tests
re-derive every glued verdict of the built book, and of every exercise
variant, from its evidence with their own rule, so a verdict on a page
cannot contradict the numbers it rests on.
"""

from __future__ import annotations

import json

from llmbook.book.glue import glue, has_myst_nb
from llmbook.core.stats import VERDICTS, _bounds, compare

EVIDENCE = "__evidence"


def verdict(a, b, higher_is_better: bool = True, words=None) -> str:
    """The word or phrase for ``compare(a, b, higher_is_better)``: the verdict
    itself, or ``words[verdict]`` when ``words`` (a dict with the three
    keys of :data:`llmbook.core.stats.VERDICTS`) is given."""
    word = compare(a, b, higher_is_better)
    if words is None:
        return word
    if not isinstance(words, dict) or set(words) != set(VERDICTS):
        raise ValueError(
            f"words must map exactly {VERDICTS}, got {sorted(words)}"
        )
    return words[word]


def glue_verdict(
    name: str, a, b, higher_is_better: bool = True, words=None
) -> None:
    """Glue the verdict on ``a`` against ``b`` under ``name`` and its
    evidence under ``name + "__evidence"``; return nothing (as ``glue``:
    a cell that ends with it echoes nothing). Where myst-nb is missing
    (Colab) only the verdict is printed, as ``glue`` prints values.

    Args:
        name: the key the chapter pastes (``{n}`notebook:name```).
        a, b: intervals of the method and the baseline, ``(lo, hi)`` or a
            dict with ``lo`` and ``hi``.
        higher_is_better: False for a loss or an error.
        words: optional phrases for the three verdicts, e.g.
            ``{"better": "beats", "worse": "loses to",
            "within noise": "ties with"}``.
    """
    text = verdict(a, b, higher_is_better, words)
    (a_lo, a_hi), (b_lo, b_hi) = _bounds(a, "a"), _bounds(b, "b")
    evidence = {
        "a": [a_lo, a_hi],
        "b": [b_lo, b_hi],
        "higher_is_better": bool(higher_is_better),
        "verdict": compare(a, b, higher_is_better),
        "words": words,
    }
    glue(name, text)
    if has_myst_nb():
        glue(name + EVIDENCE, json.dumps(evidence))
