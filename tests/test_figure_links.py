"""Figures link to their own image file (issue 20): the address Sphinx will
give the image, and the link the build wraps around each image."""

from types import SimpleNamespace

from docutils import nodes

from llmbook.book.sphinx_ext import _link_figures, image_link_target


def fake_builder(images):
    return SimpleNamespace(
        format="html",
        env=SimpleNamespace(images=images),
        imagedir="_images",
        supported_image_types=["image/svg+xml", "image/png"],
        get_target_uri=lambda docname: f"{docname}.html",
    )


def test_copied_image_is_linked_under_images_relative_to_the_page():
    builder = fake_builder({"images/a.svg": ({"chapters/x"}, "a1.svg")})
    node = nodes.image(uri="images/a.svg", candidates={"*": "images/a.svg"})
    assert (
        image_link_target(node, "chapters/x", builder) == "../_images/a1.svg"
    )
    assert image_link_target(node, "intro", builder) == "_images/a1.svg"


def test_the_candidate_sphinx_picks_svg_before_png():
    builder = fake_builder(
        {"out/f.png": ({"notebooks/n"}, "f.png"), "out/f.svg": ({}, "f.svg")}
    )
    node = nodes.image(
        uri="out/f.*",
        candidates={"image/png": "out/f.png", "image/svg+xml": "out/f.svg"},
    )
    assert (
        image_link_target(node, "notebooks/n", builder) == "../_images/f.svg"
    )


def test_an_address_the_build_does_not_copy_is_kept():
    # a glued SVG: sphinx_ext already points it at _images/<hash>.svg
    builder = fake_builder({})
    node = nodes.image(uri="../_images/h.svg", candidates={"*": "x"})
    assert image_link_target(node, "chapters/x", builder) == "../_images/h.svg"


def test_each_image_is_wrapped_once_in_a_link():
    builder = fake_builder({"a.svg": ({"chapters/x"}, "a.svg")})
    doctree = nodes.document(None, None)
    figure = nodes.figure()
    figure += nodes.image(uri="a.svg", candidates={"*": "a.svg"})
    linked = nodes.reference(refuri="https://example.org")
    linked += nodes.image(uri="b.svg", candidates={"*": "b.svg"})
    doctree += [figure, linked]
    app = SimpleNamespace(builder=builder)
    _link_figures(app, doctree, "chapters/x")
    _link_figures(app, doctree, "chapters/x")  # twice: still one link
    refs = [
        (img.parent["refuri"], isinstance(img.parent.parent, nodes.reference))
        for img in doctree.findall(nodes.image)
    ]
    assert refs == [
        ("../_images/a.svg", False),
        ("https://example.org", False),
    ]
