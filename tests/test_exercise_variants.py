"""Prose follows the parameters: every exercise that asks the reader to
change a parameters cell (``exercise_variants.VARIANTS``) is run with
papermill, and the chapter text it feeds must stay true with the new values:
the notebook runs without error or stderr, at least one glued value moves,
every glued verdict still follows its intervals, and no pasted value makes a
sentence false on its face ("grows 1.00-fold", "the A typical chip", "a 8",
"nan"). The same prose checks run on the default build."""

import json
import re

import papermill as pm
import pytest

from llmbook.book import report
from llmbook.book.glue import read_glued
from conftest import BUILD, ROOT
from exercise_variants import VARIANTS
from test_verdicts import check_verdicts

CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
ROLE = re.compile(r"\{n\}`([\w-]+):(\w+)(?::([^`]*))?`")
EXERCISE = re.compile(r":::\{exercise\}\n:label: (\S+)\n(.*?):::", re.S)
ASKS_TO_SET = re.compile(
    r"parameters cell|\b[Ss]et `|\b[Rr]aise `|\b[Cc]hange `"
)


def test_every_parameter_exercise_is_a_variant():
    listed = {v[0] for v in VARIANTS}
    asking = {
        m.group(1)
        for path in CHAPTERS
        for m in EXERCISE.finditer(path.read_text())
        if ASKS_TO_SET.search(m.group(2))
    }
    missing = sorted(asking - listed)
    assert not missing, (
        f"exercises {missing} ask for a parameter change but are not in "
        "tests/exercise_variants.py: add (label, notebook, parameters)"
    )
    stale = sorted(listed - asking)
    assert not stale, f"{stale} in exercise_variants.py match no exercise"


def _pasted(text: str, spec: str | None) -> str:
    if not spec or spec == "s":
        return text
    try:
        return format(float(text), spec)
    except ValueError:
        return text


VOWEL_SOUND = re.compile(r"^(8|1[18](?![\d])|1[18],|[aeiAEI])")


NOT_A_NUMBER = re.compile(r"\b(nan|NaN|inf)\b")


def prose_problems(
    source: str, notebook: str, glued: dict, default: dict | None = None
) -> list[str]:
    """Sentences of a chapter ``source`` that the values ``glued`` by
    ``notebook`` would make false on their face. With the ``default`` run's
    values, also a ``nan`` or ``inf`` where the default pasted a number (the
    number-formats chapter pastes them on purpose)."""
    found = []
    for m in ROLE.finditer(source):
        if m.group(1) != notebook or m.group(2) not in glued:
            continue
        text = _pasted(glued[m.group(2)], m.group(3))
        before = source[max(0, m.start() - 40) : m.start()]
        after = source[m.end() : m.end() + 12]
        where = f"{notebook}:{m.group(2)} = {text!r} in '…{before}[]{after}…'"
        word = re.search(r"(\S+)\s+$", before)
        prev = word.group(1) if word else ""
        if re.match(r"(A|An|The)\s", text) and re.match(r"[a-z,]", prev[-1:]):
            found.append(f"capitalised article pasted mid-sentence: {where}")
        if prev == "a" and VOWEL_SOUND.match(text):
            found.append(f"'a' before a vowel sound: {where}")
        if prev == "an" and text[:1].isdigit() and not VOWEL_SOUND.match(text):
            found.append(f"'an' before a consonant sound: {where}")
        was = (default or {}).get(m.group(2), "nan")
        if NOT_A_NUMBER.search(text) and not NOT_A_NUMBER.search(was):
            found.append(f"not a number pasted: {where}")
        joined = text + after
        if re.match(r"1(\.0+)?(-fold|x\b| times\b|×)", joined):
            found.append(f"a factor of exactly 1 stated as a change: {where}")
    return found


def chapter_problems(notebook: str, glued: dict, default=None) -> list[str]:
    return [
        f"{path.name}: {p}"
        for path in CHAPTERS
        for p in prose_problems(path.read_text(), notebook, glued, default)
    ]


def test_prose_checks_catch_what_they_should():
    src = (
        "the {n}`nb:chip` grows {n}`nb:k`-fold, a {n}`nb:n` step, "
        "an {n}`nb:m` step, got {n}`nb:x`."
    )
    glued = {"chip": "A typical chip", "k": "1.00", "n": "8", "m": "5"}
    glued["x"] = "nan"
    got = prose_problems(src, "nb", glued, default={"x": "2"})
    assert len(got) == 5, got
    fine = {"chip": "typical chip", "k": "2.0", "n": "5", "m": "80"}
    fine["x"] = "3"
    assert prose_problems(src, "nb", fine) == []


def test_default_build_prose(built_book):
    problems = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        try:
            nb = report.executed_notebook(BUILD, path.name)
        except FileNotFoundError:
            continue
        problems += chapter_problems(path.stem, read_glued(nb))
    assert not problems, "\n".join(problems)


def _stderr(nb: dict) -> list[str]:
    return [
        "".join(out.get("text", ""))[:300]
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]


@pytest.mark.parametrize(
    "label, notebook, parameters, stops",
    [(*v, None)[:4] for v in VARIANTS],
    ids=[v[0] for v in VARIANTS],
)
def test_exercise_variant_keeps_prose_true(
    built_book, tmp_path, label, notebook, parameters, stops
):
    source = ROOT / "notebooks" / f"{notebook}.ipynb"
    out = tmp_path / f"{label}.ipynb"
    run = dict(
        parameters=parameters,
        cwd=str(source.parent),
        kernel_name="python3",
        progress_bar=False,
        log_output=False,
    )
    if stops:  # the exercise's answer: the notebook stops at its check
        with pytest.raises(pm.PapermillExecutionError, match=stops):
            pm.execute_notebook(str(source), str(out), **run)
        return
    pm.execute_notebook(str(source), str(out), **run)
    nb = json.loads(out.read_text())
    assert not _stderr(nb), f"{label}: stderr in the rerun: {_stderr(nb)}"
    glued = read_glued(nb)
    default = read_glued(report.executed_notebook(BUILD, source.name))
    moved = [k for k in glued if glued[k] != default.get(k)]
    assert moved, (
        f"{label}: setting {parameters} moved no glued value: the prose "
        "does not follow the parameters cell"
    )
    check_verdicts(glued, label)
    problems = chapter_problems(notebook, glued, default)
    assert not problems, f"{label} {parameters}:\n" + "\n".join(problems)
