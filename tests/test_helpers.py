"""fmt, glue, checks, plotting, data: the small helpers every notebook uses."""

import re
import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from llmbook.book import checks, data, fmt, glue, plotting


@pytest.mark.parametrize(
    "x, digits, want",
    [
        (66182.3, 3, "66,200"),
        (9.99, 2, "10"),
        (0.0012345, 2, "0.0012"),
        (1234.5678, 3, "1,230"),
        (2.0, 3, "2.00"),
        (-0.5, 2, "-0.50"),
        (0, 3, "0"),
        (148348.9, 3, "148,000"),
    ],
)
def test_sig(x, digits, want):
    assert fmt.sig(x, digits) == want


@pytest.mark.parametrize(
    "x, digits, want",
    [
        (1.7e15, 2, "1.7 × 10¹⁵"),
        (1e30, 2, "10³⁰"),
        (9.19e-20, 3, "9.19 × 10⁻²⁰"),
        (41.67, 3, "41.7"),
        (8.64e19, 3, "8.64 × 10¹⁹"),
        (-2.5e-7, 2, "-2.5 × 10⁻⁷"),
    ],
)
def test_sci(x, digits, want):
    assert fmt.sci(x, digits) == want


@pytest.mark.parametrize(
    "x, digits, want",
    [
        (65504.0, 3, "65,504"),  # largest float16 (2 - 2**-10) * 2**15
        (70144.0, 3, "70,144"),  # 70,000 rounded to bfloat16
        (448.0, 3, "448"),
        (2.0**-7, 3, "0.0078125"),
        (2.0**-9, 3, "0.001953125"),
        (-57344.0, 3, "-57,344"),
        (2.0**-14, 2, "2⁻¹⁴ ≈ 6.1 × 10⁻⁵"),
        (-(2.0**-24), 2, "-2⁻²⁴ ≈ -6.0 × 10⁻⁸"),
        (2.0**-149, 2, "2⁻¹⁴⁹ ≈ 1.4 × 10⁻⁴⁵"),
        (3.3895313892515355e38, 3, "≈ 3.39 × 10³⁸"),
        (0.1, 2, "≈ 0.10"),
        (0, 3, "0"),
    ],
)
def test_exact(x, digits, want):
    assert fmt.exact(x, digits) == want


def test_exact_prints_every_digit_when_allowed():
    # float32(0.1) is 13421773 / 2**27, a 27-digit decimal
    x = float(np.float32(0.1))
    s = fmt.exact(x, max_sig=30)
    assert s == "0.100000001490116119384765625"
    assert float(s) == x and 13421773 * 10**27 == int(s[2:]) * 2**27


def test_words_money_bytes_duration_pct():
    assert fmt.usd(2.1e11) == "210 billion USD"
    assert fmt.usd(18.18) == "18.2 USD"
    assert fmt.words(5.95e9) == "5.95 billion"
    assert (
        fmt.nbytes(2e14) == "200 TB"
        and fmt.nbytes(3.5e11) == "350 GB"
        and fmt.nbytes(512) == "512 B"
    )
    assert fmt.duration(1.6835e7) == "195 days"
    assert fmt.duration(30) == "30.0 s"
    assert fmt.pct(0.0103) == "1.0 %"


@pytest.mark.parametrize(
    "call",
    [
        lambda: fmt.sci("big"),
        lambda: fmt.sig(1.0, 0),
        lambda: fmt.nbytes(float("inf")),
        lambda: fmt.exact(float("nan")),
        lambda: fmt.exact(1.0, max_sig=0),
    ],
)
def test_fmt_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_check_close_passes_and_fails(capsys):
    assert (
        checks.check_close("same", [1.0, 2.0], [1.0, 2.0 + 1e-12], rtol=1e-9)
        is None
    )
    out = capsys.readouterr().out
    assert "same: match (largest relative difference 5.0e-13)" in out
    checks.check_close(
        "big", 2.95e21 + 2.95e9, 2.95e21
    )  # an absolute 3e9 is a relative 1e-12
    assert "relative difference 1.0e-12" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        checks.check_close("differ", 1.0, 1.1)
    with pytest.raises(ValueError, match="shapes"):
        checks.check_close("shape", [1, 2], [1, 2, 3])


def test_relative_difference_edge_cases():
    assert checks.relative_difference([0.0], [0.0]) == 0.0
    assert checks.relative_difference([1.0], [0.0]) == float("inf")
    assert checks.relative_difference([], []) == 0.0


def test_glue_records_returns_nothing_and_prints_without_myst_nb(
    capsys, monkeypatch
):
    assert glue.glue("answer", "42 USD") is None
    assert glue.GLUED["answer"] == "42 USD"
    monkeypatch.setattr(glue, "_myst_glue", None)
    glue.glue("colab_value", 0.5)
    assert "colab_value = 0.5" in capsys.readouterr().out


def test_glue_shows_a_figure_once_and_closes_it(monkeypatch):
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(
        glue,
        "_myst_glue",
        lambda name, value, display: shown.append((name, display)),
    )
    # a figure is shown as myst-nb's glue shows it, with its alt text
    monkeypatch.setattr(
        glue,
        "_display_glued_figure",
        lambda name, fig: shown.append((name, True)),
    )
    fig, _ = plt.subplots()
    glue.glue("fig_x", fig)
    assert shown == [("fig_x", True)]
    assert not plt.fignum_exists(fig.number), (
        "a glued figure must be closed, or the backend shows it again"
    )


def _recorded(monkeypatch, capsys, call):
    """What ``call()`` hands to myst-nb, prints (Colab) and leaves in GLUED."""
    import matplotlib.pyplot as plt

    seen = []
    monkeypatch.setattr(glue, "GLUED", {})
    monkeypatch.setattr(
        glue,
        "_myst_glue",
        lambda name, value, display: seen.append(
            (
                name,
                type(value).__name__,
                display,
                plt.fignum_exists(value.number)
                if isinstance(value, plt.Figure)
                else value,
            )
        ),
    )
    monkeypatch.setattr(
        glue,
        "_display_glued_figure",
        lambda name, fig: seen.append(
            (name, type(fig).__name__, True, plt.fignum_exists(fig.number))
        ),
    )
    call()
    monkeypatch.setattr(glue, "_myst_glue", None)
    call()
    return (
        seen,
        capsys.readouterr().out,
        {k: type(v).__name__ for k, v in glue.GLUED.items()},
    )


def test_glue_dict_equals_one_call_per_item(monkeypatch, capsys):
    import matplotlib.pyplot as plt

    def figures():
        return [plt.subplots()[0] for _ in range(2)]

    def pairs():
        f, g = figures()
        for name, value in [
            ("a", "1.5 USD"),
            ("fig_f", f),
            ("b", 2),
            ("fig_g", g),
        ]:
            glue.glue(name, value)
        assert not plt.fignum_exists(f.number) and not plt.fignum_exists(
            g.number
        )

    def one_dict():
        f, g = figures()
        assert (
            glue.glue({"a": "1.5 USD", "fig_f": f, "b": 2, "fig_g": g}) is None
        )
        assert not plt.fignum_exists(f.number) and not plt.fignum_exists(
            g.number
        )

    want = _recorded(monkeypatch, capsys, pairs)
    got = _recorded(monkeypatch, capsys, one_dict)
    assert got == want
    seen, printed, kept = got
    assert [s[0] for s in seen] == ["a", "fig_f", "b", "fig_g"]
    assert seen[1][2:] == (True, True), "a figure is shown while still open"
    assert [line for line in printed.splitlines() if " = " in line] == [
        "a = 1.5 USD",
        "b = 2",
    ]
    assert kept == {
        "a": "str",
        "fig_f": "Figure",
        "b": "int",
        "fig_g": "Figure",
    }


@pytest.mark.parametrize(
    "args",
    [({"": 1},), ({"ok": 1, 2: 3},), ({"a": 1}, 2), ("a",), ({None: 1},)],
)
def test_glue_dict_rejects_bad_keys_and_glues_nothing(monkeypatch, args):
    monkeypatch.setattr(glue, "GLUED", {})
    with pytest.raises(ValueError):
        glue.glue(*args)
    assert glue.GLUED == {}


def test_glue_rejects_empty_name_and_reads_back(tmp_path):
    with pytest.raises(ValueError, match="name"):
        glue.glue("", 1)
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {
                            "scrapbook": {
                                "name": "k",
                                "mime_prefix": "application/papermill.record/",
                            }
                        },
                        "data": {
                            "application/papermill.record/text/plain": "'1.7 × 10¹⁵'"
                        },
                    },
                    {
                        "output_type": "display_data",
                        "metadata": {
                            "scrapbook": {"name": "n", "mime_prefix": ""}
                        },
                        "data": {"text/plain": "3.5"},
                    },
                ],
            }
        ]
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert glue.read_glued(path) == {"k": "1.7 × 10¹⁵", "n": "3.5"}


def test_plotting_style_and_labels():
    with pytest.raises(ValueError, match="image_format"):
        plotting.use_style("jpeg")
    fig, ax = plotting.new_axes("x (s)", "y (m)", "a title", logx=True)
    assert ax.get_xlabel() == "x (s)" and ax.get_xscale() == "log"
    assert (
        matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0]
        == plotting.PALETTE[0]
    )
    with pytest.raises(ValueError, match="ylabel"):
        plotting.new_axes("x (s)", " ", "t")
    assert plotting.spans_decades(
        [1, 10, 1000]
    ) and not plotting.spans_decades([1, 5])


def test_load_csv_reads_the_package_and_rejects_paths():
    prices = data.load_csv("storage_prices.csv")
    assert {"year", "dram_usd_per_mb", "source"} <= set(prices.columns)
    assert data.data_path("storage_prices.csv").parent == data.PACKAGE_DATA
    with pytest.raises(ValueError, match="name"):
        data.load_csv("../secrets.csv")
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        data.load_csv("nothing.csv")


def test_the_top_level_data_folder_is_the_package_data():
    from conftest import ROOT

    assert (ROOT / "data").resolve() == data.PACKAGE_DATA


def test_every_data_table_names_its_source():
    folder = data.data_dir()
    for path in sorted(folder.glob("*.csv")):
        if path.name == "questions.csv":
            continue
        table = data.load_csv(path.name)
        assert "source" in table.columns and table["source"].notna().all(), (
            path.name
        )


def test_storage_table_relative_columns_agree_with_absolute_prices():
    prices = data.load_csv("storage_prices.csv").set_index("year")
    base = prices.loc[2025, "hdd_usd_per_mb"]
    for kind in ["dram", "ssd", "hdd"]:
        recomputed = prices[f"{kind}_usd_per_mb"] / base
        ratio = (prices[f"{kind}_relative_homework"] / recomputed).dropna()
        assert np.all(np.abs(ratio - 1) < 0.01), (
            kind
        )  # rounding only, under 1 %


def test_extras_read_their_ranges_from_the_package_metadata():
    from llmbook.book import extras

    (interp,) = extras.extra_requirements("interp")
    assert (
        interp.startswith("transformer-lens")
        and ">=4.3" in interp
        and "<5" in interp
    )
    assert all(
        not r.startswith("torch") or r.startswith("torchao")
        for r in extras.extra_requirements("adapt")
    )
    assert extras.missing_modules("interp") == []
    extras.require("interp")  # present: installs nothing, prints nothing
    with pytest.raises(ValueError, match="extra"):
        extras.require("gpu")
    # mup goes in without its declared dependencies (torchvision); PyYAML is listed by hand
    assert "mup" in extras.NO_DEPS
    names = sorted(
        re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower()
        for r in extras.extra_requirements("mup")
    )
    assert names == ["mup", "pyyaml"]
    assert extras.missing_modules("mup") == []


def test_online_sees_a_listening_port_and_a_closed_one():
    import socket

    from llmbook.book.extras import online

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert online("127.0.0.1", port, timeout=1.0)
    finally:
        server.close()
    assert not online("127.0.0.1", port, timeout=1.0)  # nobody listens


def test_quiet_filters_known_noise_by_logger_and_message(caplog):
    import logging

    from llmbook.book import quiet

    quiet.install()
    noisy = logging.getLogger("torchao")
    with caplog.at_level(logging.WARNING):
        noisy.warning(
            "Failed to load /x/_C_mxfp8.so: Could not load this library"
        )
        noisy.warning("something a reader should see")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["something a reader should see"]


def test_matrix_and_vector_as_prose():
    assert fmt.matrix([[1, -2], [0, 3]]) == "(1, -2), (0, 3)"
    assert fmt.matrix([["01", "10"]]) == "(01, 10)"
    got = fmt.vector([0.5, 2e-5, float("nan"), 0.0])
    assert got == "[0.500, 2.0 × 10⁻⁵, NaN, 0]"


def test_smallest_text_px_by_hand():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig = plt.figure(figsize=(4, 2))
    # a patch over the whole figure: the tight box is the figure plus
    # 0.1 in each side, (4 + 0.2) x 72 = 302.4 pt, 403.2 px when natural
    fig.add_artist(Rectangle((0, 0), 1, 1, transform=fig.transFigure))
    fig.text(0.5, 0.5, "twelve", fontsize=12)
    px, text = plotting.smallest_text_px(fig, 374)
    assert text == "twelve"
    assert px == pytest.approx(12 * 374 / 302.4, rel=1e-4)
    # a wider column shows it at its natural size: 12 pt = 16 px
    px, _ = plotting.smallest_text_px(fig, 621)
    assert px == pytest.approx(16, rel=1e-4)
    assert plotting.legible(fig)
    # a superscript is 70 % of its text: 10 pt -> 7 pt
    fig.text(0.1, 0.1, "$10^{5}$", fontsize=10)
    px, text = plotting.smallest_text_px(fig, 374)
    assert text == "5"
    assert px == pytest.approx(7 * 374 / 302.4, rel=1e-4)
    fig.text(0.1, 0.8, "tiny", fontsize=6)  # 4.6 px on a phone
    assert not plotting.legible(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match="no text"):
        plotting.smallest_text_px(plt.figure())
    plt.close("all")


def test_heatmap_grid_shares_one_scale_and_labels_the_edges():
    import matplotlib.pyplot as plt

    panels = {
        "a": [[1.0, -2.0]],
        "b": [[0.5, 0.0]],
        "c": [[0.0, 1.0]],
        "d": [[-1.0, 1.0]],
    }
    fig = plotting.heatmap_grid(panels, ncols=3, xlabel="col", ylabel="row")
    axes = fig.axes
    assert len(axes) == 6  # 2 rows of 3, the last two panels empty
    assert [ax.get_title() for ax in axes[:4]] == ["a", "b", "c", "d"]
    assert all(ax.get_xlabel() == "col" for ax in axes)
    assert [ax.get_ylabel() for ax in axes] == ["row", "", "", "row", "", ""]
    # the scale is +-max|first panel| = 2 on every panel
    assert all(ax.images[0].get_clim() == (-2.0, 2.0) for ax in axes[:4])
    assert {t.get_fontsize() for ax in axes for t in ax.texts} == {8}
    plt.close(fig)
    fig = plotting.heatmap_grid(
        panels, ncols=2, xlabel="col", ylabel="row", text_size=10
    )
    assert len(fig.axes) == 4
    assert {t.get_fontsize() for ax in fig.axes for t in ax.texts} == {10}
    assert sum(len(ax.texts) for ax in fig.axes) == 8  # one per cell
    plt.close(fig)
    with pytest.raises(ValueError, match="panels"):
        plotting.heatmap_grid({}, ncols=2, xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="ncols"):
        plotting.heatmap_grid(panels, ncols=0, xlabel="x", ylabel="y")


def test_span_of_an_interval():
    assert fmt.span({"lo": 0.8761, "hi": 1.204, "median": 1}) == "0.88 to 1.2"
    assert fmt.span((12.34, 56.78), 3) == "12.3 to 56.8"


def test_median_range_is_the_one_seed_summary():
    # hand values: median 0.26 of five exponents, ends 0.24 and 0.28
    assert fmt.median_range([0.26, 0.24, 0.28, 0.25, 0.27]) == (
        "0.26 (0.24 to 0.28)"
    )
    # a leading minus becomes the typographic one, at every end
    assert fmt.median_range([0.2, -0.01, 0.05], lambda x: f"{x:.3f}") == (
        "0.050 (\u22120.010 to 0.200)"
    )
    assert fmt.median_range([1, 3, 2], str, sep="–") == "2.0 (1.0–3.0)"
    assert fmt.median_range([1, 3], prefix="range ") == (
        "2.0 (range 1.0 to 3.0)"
    )
    # ends written alike: the median alone, or with a note, or as a range
    assert fmt.median_range([0.5, 0.5], str, when_equal="") == "0.5"
    assert fmt.median_range([4, 4], str, when_equal=" (every seed)") == (
        "4.0 (every seed)"
    )
    assert fmt.median_range([4, 4], str) == "4.0 (4.0 to 4.0)"
    assert fmt.median_range([0.7]) == "0.70"  # one seed: no range
    with pytest.raises(ValueError, match="values"):
        fmt.median_range([])
