"""Notebook figures become captioned figures with alt text (issue 20): the
image file name myst-nb gives an output, and the figure the build wraps
around each cell output's image."""

import base64
import json
from types import SimpleNamespace

import pytest
from docutils import nodes
from llmbook.book.sphinx_ext import (
    _caption_notebook_figures,
    _link_figures,
    output_image_name,
    output_words,
)

SVG = '<svg xmlns="http://www.w3.org/2000/svg">\n<rect width="1"/>\n</svg>\n'
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png").decode()


@pytest.mark.parametrize(
    "mime, content",
    [("image/svg+xml", SVG), ("image/png", PNG)],
    ids=["svg", "png"],
)
def test_output_image_name_is_the_file_myst_nb_writes(mime, content):
    from myst_nb.core.render import MimeData, NbElementRenderer

    written = []
    renderer = NbElementRenderer.__new__(NbElementRenderer)
    renderer._renderer = SimpleNamespace(
        get_cell_level_config=lambda *args, **kwargs: {}
    )
    renderer.write_file = lambda path, data, **kwargs: (
        written.append(path[0]) or path[0]
    )
    (image,) = renderer.render_image(MimeData(mime, content))
    assert output_image_name({mime: content}) == written[0] == image["uri"]
    assert output_image_name({"text/plain": "x"}) is None


def test_output_words_reads_the_glued_metadata():
    output = {"metadata": {"llmbook": {"alt": " A plot. ", "caption": ""}}}
    assert output_words(output) == {"alt": "A plot."}
    assert output_words({"data": {}}) == {}


def fake_app(tmp_path, pastes, fignumbers):
    builder = SimpleNamespace(
        format="html",
        env=SimpleNamespace(images={}),
        imagedir="_images",
        supported_image_types=["image/svg+xml"],
        get_target_uri=lambda docname: f"{docname}.html",
        get_relative_uri=lambda a, b: f"../{b}.html",
    )
    env = SimpleNamespace(
        mystnb_config=SimpleNamespace(output_folder=str(tmp_path)),
        llmbook_figure_pastes=pastes,
        toc_fignumbers=fignumbers,
        titles={"chapters/lora": nodes.title(text="LoRA")},
    )
    builder.env.images = {}
    return SimpleNamespace(builder=builder, env=env)


# myst-nb writes the executed notebook with its outputs when it runs it,
# and without them when it takes it from its cache; the glue file always.
@pytest.mark.parametrize("written", ["run", "cached"])
def test_a_cell_output_image_becomes_a_captioned_figure(tmp_path, written):
    glued = {
        "output_type": "display_data",
        "data": {"image/svg+xml": SVG, "text/plain": "<Figure>"},
        "metadata": {
            "scrapbook": {"name": "fig_knee", "mime_prefix": ""},
            "llmbook": {
                "alt": "Line plot of loss against rank k.",
                "caption": "Loss against rank",
            },
        },
    }
    outputs = [glued] if written == "run" else []
    notebook = {"cells": [{"cell_type": "code", "outputs": outputs}]}
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "lora-basics.ipynb").write_text(
        json.dumps(notebook)
    )
    (tmp_path / "notebooks" / "lora-basics.glue.json").write_text(
        json.dumps({"fig_knee": glued} if written == "cached" else {})
    )
    app = fake_app(
        tmp_path,
        {"notebooks/lora-basics::fig_knee": ("chapters/lora", "fig-knee")},
        {"chapters/lora": {"figure": {"fig-knee": (4,)}}},
    )
    doctree = nodes.document(None, None)
    output = nodes.container(classes=["cell_output"])
    name = output_image_name(glued["data"])
    output += nodes.image(uri=f"../_build/jupyter_execute/{name}")
    other = nodes.figure()  # a figure already: left alone
    other += nodes.image(uri="diagram.svg", alt="A diagram.")
    doctree += [output, other]

    _caption_notebook_figures(app, doctree, "notebooks/lora-basics")
    _link_figures(app, doctree, "notebooks/lora-basics")

    figure = output[0]
    assert isinstance(figure, nodes.figure)
    assert figure["ids"] == ["output-fig-knee"]
    image = next(figure.findall(nodes.image))
    assert isinstance(image.parent, nodes.reference)  # still linked
    assert image["alt"] == "Line plot of loss against rank k."
    caption = figure[-1]
    assert isinstance(caption, nodes.caption)
    assert caption.astext() == (
        "Loss against rank. Shown as Figure 4 in LoRA."
    )
    link = next(caption.findall(nodes.reference))
    assert link["refuri"] == "../chapters/lora.html#fig-knee"
    assert len(list(doctree.findall(nodes.figure))) == 2
