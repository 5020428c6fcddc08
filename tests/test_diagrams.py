"""The schematic diagrams: committed SVGs equal what the code draws, text
legible on a phone, and each picture says what the library computes."""

import ast
from fractions import Fraction
from pathlib import Path

import pytest
from llmbook.book import diagrams as dg
from llmbook.topics import zero

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "images" / "diagrams"


def _patches(fig):
    return {p.get_gid(): p for p in fig.axes[0].patches if p.get_gid()}


@pytest.fixture(scope="module")
def figures():
    return {name: make() for name, make in dg.DIAGRAMS.items()}


def test_committed_svgs_are_what_the_code_draws(tmp_path):
    written = dg.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        p.name for p in COMMITTED.glob("*.svg")
    ), "run `python tools/diagrams.py`"
    for path in written:
        assert path.read_bytes() == (COMMITTED / path.name).read_bytes(), (
            f"{path.name} differs from the committed file: "
            "run `python tools/diagrams.py`"
        )


def test_svg_is_deterministic(tmp_path):
    a = dg.save_svg(dg.lora_factors(), tmp_path / "a.svg").read_bytes()
    b = dg.save_svg(dg.lora_factors(), tmp_path / "b.svg").read_bytes()
    assert a == b
    assert b"<dc:date>" not in a


@pytest.mark.parametrize("name", list(dg.DIAGRAMS))
def test_legible_on_a_phone(figures, name):
    fig = figures[name]
    assert fig.get_size_inches()[0] <= dg.MAX_WIDTH_IN
    assert dg.smallest_font_pt(fig) >= dg.MIN_FONT_PT == 13
    assert dg.text_problems(fig) == []


def test_text_problems_finds_overlap_and_overflow():
    fig, ax = dg._canvas(2.0, 1.0)
    dg._text(ax, 0.5, 0.5, "one")
    dg._text(ax, 0.55, 0.5, "two")
    dg._text(ax, 1.95, 0.5, "outside")
    problems = dg.text_problems(fig)
    assert "'one' overlaps 'two'" in problems
    assert "'outside' outside the figure" in problems


def test_lora_shapes(figures):
    p = _patches(figures["lora-factors"])
    w0, a, b = p["W0"], p["A"], p["B"]
    assert a.get_height() == w0.get_height()  # m rows
    assert b.get_width() == w0.get_width()  # l columns
    assert a.get_width() == b.get_height() < a.get_height() / 3  # rank k
    assert a.get_facecolor() == b.get_facecolor() != w0.get_facecolor()
    assert p["x1"].get_height() == p["x2"].get_height() == w0.get_width()
    assert p["h"].get_height() == w0.get_height()


def test_induction_target():
    assert dg.induction_target(("A", "B", "C", "A")) == (1, "B")
    assert dg.induction_target("cacdc") == (3, "d")
    with pytest.raises(ValueError):
        dg.induction_target(("A", "B", "C"))


def test_induction_circuit(figures):
    fig = figures["induction-circuit"]
    gids = set(_patches(fig))
    n = len(dg.INDUCTION_TOKENS)
    assert {f"prev-{i - 1}-{i}" for i in range(1, n)} <= gids
    j, copied = dg.induction_target(dg.INDUCTION_TOKENS)
    assert f"induction-{j}-{n - 1}" in gids
    labels = {t.get_text() for t in dg.texts(fig)}
    assert f"predicts {copied}" in labels
    assert f"prev: {dg.INDUCTION_TOKENS[j - 1]}" in labels


@pytest.mark.parametrize("n_dp", [4, 8])
def test_zero_bars_are_the_library_bytes(n_dp):
    fig = dg.zero_partitions(n_dp)
    p = _patches(fig)
    full = sum(
        zero.zero_bytes_per_gpu(1.0, 1, 0)[k] for k in dg.ZERO_STATE_BYTES
    )
    bar = sum(p[f"zero-s0-g0-{k}"].get_width() for k in dg.ZERO_STATE_BYTES)
    for stage in zero.STAGES:
        lib = zero.zero_bytes_per_gpu(1.0, n_dp, stage)
        for g in range(n_dp):
            for key in dg.ZERO_STATE_BYTES:
                drawn = p[f"zero-s{stage}-g{g}-{key}"].get_width() / bar * full
                assert drawn == pytest.approx(lib[key])
        label = next(
            t for t in dg.texts(fig) if t.get_gid() == f"zero-total-s{stage}"
        )
        assert float(label.get_text()) == pytest.approx(lib["total"])
    # ZeRO-3's slices of one state tile the full extent, one per GPU
    for g in range(n_dp):
        part = p[f"zero-s3-g{g}-optim"]
        whole = p[f"zero-s3-g{g}-optim-empty"]
        assert part.get_x() - whole.get_x() == pytest.approx(
            g * whole.get_width() / n_dp
        )


@pytest.mark.parametrize("p,m", [(4, 6), (2, 1), (3, 8)])
def test_gpipe_schedule(p, m):
    sched = dg.gpipe_schedule(p, m)
    busy = sched["busy"]
    assert len(busy) == 2 * p * m  # no two blocks share a slot
    for s in range(p):
        for j in range(m):
            f = next(
                t for (st, t), v in busy.items() if st == s and v == ("F", j)
            )
            b = next(
                t for (st, t), v in busy.items() if st == s and v == ("B", j)
            )
            if s:
                assert busy[(s - 1, f - 1)] == (
                    "F",
                    j,
                )  # after the stage ahead
            if s < p - 1:
                assert busy[(s + 1, b - 1)] == ("B", j)
            assert b > max(
                t
                for (st, t) in busy
                if st == p - 1 and busy[(st, t)][0] == "F"
            )
    idle = p * sched["slots"] - len(busy)
    assert Fraction(idle, p * sched["slots"]) == Fraction(p - 1, m + p - 1)


def test_pipeline_shaded_area_is_the_bubble(figures):
    fig = figures["pipeline-bubble"]
    patches = _patches(fig)

    def area(r):
        return r.get_width() * r.get_height()

    idle = sum(area(r) for g, r in patches.items() if g.startswith("idle-"))
    blocks = sum(area(r) for g, r in patches.items() if g[:2] in ("F-", "B-"))
    assert idle / (idle + blocks) == pytest.approx(zero.pipeline_bubble(4, 6))
    title = dg.texts(fig)[0].get_text()
    assert f"{100 * zero.pipeline_bubble(4, 6):.0f} %" in title


def test_flash_loop_order_is_the_code(figures):
    """The picture's outer loop runs over key/value tiles, as
    ``flash_attention_forward`` does (read from its source, no torch)."""
    src = (ROOT / "lib/llmbook/topics/attention.py").read_text()
    fn = next(
        n
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.FunctionDef)
        and n.name == "flash_attention_forward"
    )
    outer = next(n for n in fn.body if isinstance(n, ast.For))
    inner = next(
        n for n in ast.walk(outer) if isinstance(n, ast.For) and n is not outer
    )
    assert "block_k" in ast.unparse(outer.iter)
    assert "block_q" in ast.unparse(inner.iter)
    fig = figures["flash-tiling"]
    labels = [t.get_text() for t in dg.texts(fig)]
    assert "outer loop: K, V tiles" in labels
    assert "inner loop: Q tiles" in labels
    assert "all of S: never written" in labels
    tiles = [g for g in _patches(fig) if g.startswith("tile-")]
    assert len(tiles) == 4 * 3


def test_alt_texts_quote_the_drawn_numbers():
    """The static alt texts on the page say the numbers the code draws."""
    page = (ROOT / "chapters" / "lecture-parallelism.md").read_text()
    gb = [
        f"{zero.zero_bytes_per_gpu(1.0, 4, s)['total']:g}" for s in zero.STAGES
    ]
    assert f"fall from {gb[0]} to {gb[1]}, {gb[2]} and {gb[3]}." in page
    assert "of 4 stages and 6 microbatches" in page
    assert "3/9 of the time" in page
    assert zero.pipeline_bubble(4, 6) == 3 / 9
    for name in dg.DIAGRAMS:
        pages = [
            p
            for p in (ROOT / "chapters").glob("*.md")
            if f"../images/diagrams/{name}.svg" in p.read_text()
        ]
        assert len(pages) == 1, f"{name}.svg is on {len(pages)} pages"
