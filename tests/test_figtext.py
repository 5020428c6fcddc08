"""Alt text and short captions of figures (llmbook.book.figtext), and the
glued figure's output metadata that carries them (llmbook.book.glue)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from llmbook.book import glue as glue_mod
from llmbook.book.figtext import (
    describe,
    plain_text,
    set_alt,
    short_caption,
)


@pytest.fixture
def line_figure():
    fig, ax = plt.subplots()
    ax.plot([1, 10, 100], [3.0, 2.0, 1.5], label="SGD")
    ax.plot([1, 10, 100], [2.5, 1.8, 1.4], label=r"Adam, $\beta_2 = 0.95$")
    ax.set_xscale("log")
    ax.set_xlabel("batch size $B$ (examples)")
    ax.set_ylabel(r"optimal $\eta^*$")
    ax.set_title(r"$\eta^*$ against $B$")
    ax.legend()
    yield fig
    plt.close(fig)


def test_plain_text_writes_mathtext_as_characters():
    assert plain_text(r"$\eta^*$ at $\mathrm{lr} \times 2$") == "η^* at lr × 2"
    assert plain_text(r"$1/\sqrt{d}$, $\ell_{\max}$") == "1/√d, ℓ_max"
    assert plain_text("no maths  here") == "no maths here"


def test_describe_one_panel(line_figure):
    assert describe(line_figure) == (
        "η^* against B: lines of optimal η^* against batch size B "
        "(examples), x on a log scale. Legend: SGD; Adam, β_2 = 0.95."
    )
    assert short_caption(line_figure) == "η^* against B"


def test_describe_panels_image_bars_and_colour_bar():
    fig, (left, right) = plt.subplots(1, 2)
    image = left.imshow([[1, 2], [3, 4]])
    left.set_title("weights")
    fig.colorbar(image)
    right.bar([1, 2], [3, 4])
    right.set_xlabel("expert")
    right.set_ylabel("tokens")
    right.set_yscale("log")
    fig.suptitle("Routing")
    try:
        assert describe(fig) == (
            "Routing. Figure of 2 panels. Panel 1, weights: 2 by 2 image. Panel "
            "2, "
            "bar chart of tokens against expert, y on a log scale."
        )
        assert short_caption(fig) == "Routing"
        fig.suptitle("")
        fig._suptitle = None
        assert short_caption(fig) == "weights"
        left.set_title("")
        assert short_caption(fig) == "tokens against expert"
    finally:
        plt.close(fig)


def test_describe_names_categories_steps_and_skips_blank_cells():
    fig, axes = plt.subplots(2, 2)
    axes[0, 0].bar(["H200", "Landauer minimum"], [700, 1.8e-4])
    axes[0, 0].set_ylabel("power (W)")
    axes[0, 1].stairs([3, 1, 2], [0, 1, 2, 3])
    axes[0, 1].set_xlabel("weight")
    axes[1, 0].barh([0, 1], [2, 3])
    axes[1, 0].set_yticks([0, 1], ["backbone.17", "fc"])
    axes[1, 1].axis("off")  # the spare cell of the grid
    try:
        assert describe(fig) == (
            "Figure of 3 panels. Panel 1, bar chart (H200, Landauer minimum)"
            " of power (W). Panel 2, histogram against weight. Panel 3, bar"
            " chart (backbone.17, fc)."
        )
    finally:
        plt.close(fig)


def test_set_alt_overrides_describe(line_figure):
    set_alt(line_figure, "  Two falling curves.  ")
    assert describe(line_figure) == "Two falling curves."
    with pytest.raises(ValueError, match="text"):
        set_alt(line_figure, " ")


def test_glued_figure_is_still_a_myst_nb_glue(line_figure, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    glue_ext = pytest.importorskip("myst_nb.ext.glue")
    import IPython.display

    shown = []
    monkeypatch.setattr(
        IPython.display,
        "display",
        lambda data, raw, metadata: shown.append((data, metadata)),
    )
    glue_mod._display_glued_figure("fig_opt", line_figure)
    ((data, metadata),) = shown
    assert metadata["llmbook"] == {
        "alt": describe(line_figure),
        "caption": "η^* against B",
    }
    cell = nbformat.v4.new_code_cell(
        "glue('fig_opt', fig)",
        outputs=[
            nbformat.v4.new_output(
                "display_data", data=data, metadata=metadata
            )
        ],
    )
    notebook = nbformat.v4.new_notebook(cells=[cell])
    found = glue_ext.extract_glue_data(notebook, [0], None)
    assert list(found) == ["fig_opt"]
    assert found["fig_opt"]["metadata"]["llmbook"]["caption"] == (
        "η^* against B"
    )
    # and the cell still shows the figure (mime_prefix "": displayed)
    assert notebook.cells[0].outputs != []


def test_a_twin_axes_is_the_right_axis_of_its_panel():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1, 2, 3], label="sharpness")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("sharpness")
    right = ax.twinx()
    right.plot([1, 2, 3], [3, 2, 1], "s", label="test MSE")
    right.set_ylabel("test MSE")
    right.set_yscale("log")
    right.legend()
    try:
        assert describe(fig) == (
            "Line plot of sharpness against learning rate; on the right "
            "axis, markers of test MSE on a log scale. Legend: test MSE."
        )
    finally:
        plt.close(fig)
