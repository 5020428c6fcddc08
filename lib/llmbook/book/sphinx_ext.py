"""Sphinx extension: the ``{n}`` role for glued values; serve MathJax from the
built site instead of a CDN; drop duplicate scripts; the problems-only edition.

In a chapter, ``{n}`lora-basics:ts_loss_k1``` pastes the value that the
notebook ``notebooks/lora-basics.ipynb`` glued as ``ts_loss_k1``: the role is
``{glue:text}`` with the path and the format spec ``s`` filled in. Another
format spec may follow: ``{n}`lora-basics:ts_loss_k1:.2f```.

The book builds and is tested offline, and the site should render maths without
a network. MathJax 3 comes from the ``django-static-mathjax`` wheel (pinned in
requirements.txt); its ``es5`` folder is copied to ``_static/mathjax``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

SHORT_GLUE = re.compile(
    r"(?P<stem>[A-Za-z0-9_.-]+):(?P<name>[A-Za-z0-9_]+)(?::(?P<spec>[^:`]+))?"
)


def short_glue_target(text: str) -> str:
    """The ``{glue:text}`` target that ``{n}`text``` stands for.

    Args:
        text: ``stem:name`` or ``stem:name:spec``: a notebook's file name
            without ``.ipynb`` (in ``notebooks/``), the name it glues, and an
            optional format spec (default ``s``, the string as glued).

    Returns ``/notebooks/<stem>.ipynb::<name>:<spec>``. Raises ``ValueError``
    naming the expected form for any other ``text``.
    """
    match = SHORT_GLUE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"text must be notebook:name or notebook:name:format (as in "
            f"lora-basics:ts_loss_k1), got {text!r}"
        )
    stem, name, spec = match.group("stem", "name", "spec")
    return f"/notebooks/{stem}.ipynb::{name}:{spec or 's'}"


def _short_glue_role():
    """A ``{glue:text}`` role that reads ``{n}`stem:name```."""
    from myst_nb.ext.glue.roles import PasteTextRole
    from myst_nb.ext.glue.utils import glue_warning

    class ShortGlueRole(PasteTextRole):
        def run(self):
            short = self.text
            try:
                self.text = short_glue_target(short)
            except ValueError as exc:
                return [], [
                    glue_warning(f"{{n}}: {exc}", self.document, self.line)
                ]
            env = self.document.settings.env
            notebook = self.text.split("::")[0]
            _, path = env.relfn2path(notebook, env.docname)
            if env.path2doc(path) not in env.found_docs:
                return [], [
                    glue_warning(
                        f"{{n}}`{short}`: no notebook {notebook.lstrip('/')} "
                        f"in the book",
                        self.document,
                        self.line,
                    )
                ]
            return super().run()

    return ShortGlueRole()


def _mathjax_es5() -> Path | None:
    try:
        import mathjax  # the django-static-mathjax package
    except ImportError:
        return None
    folder = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    return folder if (folder / "tex-mml-chtml.js").is_file() else None


def _use_local(app, config) -> None:
    # pydata-sphinx-theme logs a console error when no colour mode is set.
    config.html_context.setdefault("default_mode", "light")
    if _mathjax_es5() is not None:
        config.mathjax_path = "mathjax/tex-mml-chtml.js"


def _copy(app, exception) -> None:
    source = _mathjax_es5()
    if (
        exception is None
        and source is not None
        and app.builder.format == "html"
    ):
        target = Path(app.outdir) / "_static" / "mathjax"
        # The speech-rule engine (sre) is only loaded on demand by the
        # accessibility menu.
        shutil.copytree(source, target, dirs_exist_ok=True)


def executed_downloads(outdir, srcdir, docs) -> list[tuple[Path, Path]]:
    """The notebooks the ``.ipynb`` download buttons serve.

    Args:
        outdir: the HTML builder's output folder (``_build/html``).
        srcdir: the book's source folder (the repository root).
        docs: the book's docnames (``notebooks/fermi``, ``labs/lora-lab``,
            ``chapters/lora``, ...).

    Returns ``(source, download)`` pairs: for each docname whose source is a
    notebook, ``<srcdir>/<docname>.ipynb`` and the copy
    ``<outdir>/_sources/<docname>.ipynb`` the theme's download button links
    to. Chapter pages (MyST ``.md``) give no pair. Used by
    :func:`_serve_executed` (issue 20: a reader who downloads a notebook
    gets its outputs).
    """
    outdir, srcdir = Path(outdir), Path(srcdir)
    pairs = []
    for doc in sorted(docs):
        source = srcdir / f"{doc}.ipynb"
        if source.is_file():
            pairs.append((source, outdir / "_sources" / f"{doc}.ipynb"))
    return pairs


def executed_notebook(source, cache, executed):
    """A notebook with the outputs of its execution, or ``None``.

    Args:
        source: the notebook as committed (no outputs).
        cache: the build's jupyter-cache folder (``_build/.jupyter_cache``);
            with ``execute_notebooks: cache`` the outputs live there, and
            myst-nb's own copy in ``_build/jupyter_execute`` has none.
        executed: that copy, ``_build/jupyter_execute/<docname>.ipynb``,
            which holds the outputs when the book executes in place
            (``force``, ``auto``).

    Returns the source with the cached outputs merged in (as myst-nb merges
    them to render the page), else the copy if it has outputs, else
    ``None``. Used by :func:`_serve_executed`.
    """
    import nbformat

    if cache is not None and Path(cache).is_dir():
        from jupyter_cache import get_cache

        try:
            return (
                get_cache(str(cache)).merge_match_into_notebook(
                    nbformat.read(str(source), as_version=4)
                )
            )[1]
        except KeyError:  # not in the cache: executed otherwise
            pass
    if Path(executed).is_file():
        nb = nbformat.read(str(executed), as_version=4)
        if any(cell.get("outputs") for cell in nb.cells):
            return nb
    return None


def _serve_executed(app, exception) -> None:
    # The theme's ".ipynb" download links to _sources/<doc>.ipynb, the
    # notebook as committed (no outputs): serve the executed one instead, with
    # every output and figure. Labs too: their stubs are as the student gets
    # them, and the outputs show what the reference solution prints. The
    # problems-only edition offers no download and keeps its sources.
    if (
        exception is not None
        or app.builder.format != "html"
        or getattr(app.config, "hide_solutions", False)
    ):
        return
    import nbformat

    config = getattr(app.env, "mystnb_config", None)
    cache = getattr(config, "execution_cache_path", None) or None
    executed_dir = Path(app.outdir).parent / "jupyter_execute"
    for source, download in executed_downloads(
        app.outdir, app.srcdir, app.env.found_docs
    ):
        doc = download.relative_to(Path(app.outdir) / "_sources")
        nb = executed_notebook(source, cache, executed_dir / doc)
        if nb is not None:
            download.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(download))


def _no_markdown_download(app, pagename, templatename, context, doctree):
    # A chapter's ".md" download would be the raw MyST, with glue roles in
    # place of the numbers: a reader wants the page, which the ".pdf" entry
    # prints (and `make pdf` prints the whole book). Notebook pages keep their
    # ".ipynb" download.
    if context.get("page_source_suffix") != ".md":
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"] = [
                button
                for button in group["buttons"]
                if button.get("label") != "download-source-button"
            ]


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    # Jupyter Book 1 registers sphinx-thebe's inline config script twice; the
    # second `const THEBE_JS_URL` declaration is a console error on every page.
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (
            getattr(script, "filename", None) or "",
            tuple(sorted(getattr(script, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"][:] = (
        unique  # in place: later handlers (sphinx.ext.mathjax) append to it
    )


PROBLEMS_NOTE = (
    "This is the problems-only edition: the "
    "computations behind the answers are left out. "
    "The full edition shows this notebook with its results."
)


TAKEAWAYS_TITLE = "Key takeaways"
TAKEAWAYS_NOTE = (
    "The key takeaways are left out of the problems-only edition: they state "
    "the answers."
)


def _keep_only_title(section, note: str) -> None:
    """Empty a section except for its title, and add a one-paragraph note."""
    from docutils import nodes

    title = next(iter(section.findall(nodes.title)), None)
    title = title.deepcopy() if title is not None else None
    section.clear()
    if title is not None:
        section += (
            title  # ``+=`` sets the parent, which Sphinx's indexer reads
        )
    section += nodes.paragraph(text=note)


def _strip_answers_in_problems_edition(app, doctree, docname) -> None:
    # With `hide_solutions`, sphinx-exercise drops every solution block. The
    # notebook pages are all solution, so only their title and a note remain;
    # on chapter pages the key takeaways, which sum up the answers, go too.
    if not getattr(app.config, "hide_solutions", False):
        return
    from docutils import nodes

    if docname.startswith("notebooks/"):
        section = next(iter(doctree.findall(nodes.section)), None)
        if section is None:
            return
        _keep_only_title(section, PROBLEMS_NOTE)
        for other in list(doctree.children):
            if other is not section:
                doctree.remove(other)
        return
    for section in list(doctree.findall(nodes.section)):
        title = next(iter(section.findall(nodes.title)), None)
        if title is not None and title.astext() == TAKEAWAYS_TITLE:
            _keep_only_title(section, TAKEAWAYS_NOTE)


LAB_PREFIX = "labs/"
"""Pages under this docname prefix are the student labs (stubs, no
answers): the problems-only edition keeps their Colab button."""

LAB_LAUNCH_KEYS = ("colab_url", "notebook_interface")
"""The launch settings a lab page keeps in the problems-only edition."""


def lab_launch_buttons(launch_buttons: dict | None) -> dict:
    """The launch settings of a lab page in the problems-only edition:
    the Colab ones of the book's ``launch_buttons`` (``_config.yml``), no
    Binder, JupyterHub or Thebe; ``{}`` when the book has no Colab URL."""
    launch = dict(launch_buttons or {})
    if not launch.get("colab_url"):
        return {}
    return {k: launch[k] for k in LAB_LAUNCH_KEYS if k in launch}


def _no_buttons_in_problems_edition(app, config) -> None:
    # A Colab launch or an .ipynb download would open the full notebook, with
    # the answers: the problems-only edition offers neither, except on the
    # labs (stubs for students), whose Colab button
    # _launch_buttons_on_labs_only switches back on page by page.
    if not getattr(config, "hide_solutions", False):
        return
    options = dict(config.html_theme_options or {})
    app._llmbook_lab_launch = lab_launch_buttons(options.get("launch_buttons"))
    options["use_download_button"] = False
    options["launch_buttons"] = {}
    config.html_theme_options = options


def _launch_buttons_on_labs_only(
    app, pagename, templatename, context, doctree
):
    # Runs before sphinx-book-theme's add_launch_buttons (priority 501),
    # which reads the launch settings from the config for every page.
    if not getattr(app.config, "hide_solutions", False):
        return
    lab = pagename.startswith(LAB_PREFIX)
    launch = getattr(app, "_llmbook_lab_launch", {}) if lab else {}
    app.config.html_theme_options["launch_buttons"] = dict(launch)


def _no_page_toc_on_stubs(app, pagename, templatename, context, doctree):
    # The "on this page" list is collected before the notebook pages are
    # reduced to their titles: in the problems-only edition it would point at
    # sections that are no longer there.
    if getattr(app.config, "hide_solutions", False) and pagename.startswith(
        "notebooks/"
    ):
        context["theme_secondary_sidebar_items"] = []
        context.pop("toc", None)  # the print edition's contents list too


def _svg_cross_document_glue() -> None:
    # myst-nb pastes a figure glued in another document only from
    # PNG/JPEG/GIF/PDF data; an SVG figure falls through to its text/plain repr
    # ("<Figure size ...>"). Treat SVG like PNG: the notebook page has already
    # written it to _images under the same hash name.
    import hashlib
    import os

    from docutils import nodes
    from myst_nb.ext.glue import crossref

    original = crossref.generate_any_nodes
    if getattr(original, "_llmbook_svg", False):
        return

    def generate_any_nodes(node, output, priority_list, builder, env):
        made = _pasted_nodes(node, output, priority_list, builder, env)
        alt = node.get("alt") or output_words(output).get("alt")
        for image in made:
            if isinstance(image, nodes.image) and alt:
                image["alt"] = alt
        return made

    def _pasted_nodes(node, output, priority_list, builder, env):
        data = output["data"]
        first = next((m for m in priority_list if m in data), None)
        if first != "image/svg+xml":
            return original(node, output, priority_list, builder, env)
        text = (
            data[first]
            if isinstance(data[first], str)
            else "".join(data[first])
        )
        digest = hashlib.sha256(
            os.linesep.join(text.splitlines()).encode("utf-8")
        ).hexdigest()
        outdir = Path(builder.outdir)
        target = outdir / builder.imagedir / f"{digest}.svg"
        uri = os.path.relpath(target, (outdir / env.docname).parent)
        image = nodes.image(uri=uri)
        image["candidates"] = {"*": uri}
        return [image]

    generate_any_nodes._llmbook_svg = True
    crossref.generate_any_nodes = generate_any_nodes


def output_words(output: dict) -> dict[str, str]:
    """The alt text and short caption a glued figure's output carries:
    ``{"alt": ..., "caption": ...}`` from its ``metadata["llmbook"]``
    (written by ``llmbook.book.glue``), or ``{}`` for any other output."""
    words = output.get("metadata", {}).get("llmbook", {})
    return {
        key: str(words[key]).strip()
        for key in ("alt", "caption")
        if str(words.get(key, "")).strip()
    }


def output_image_name(data: dict) -> str | None:
    """The file name myst-nb gives a cell output's image: the sha256 of its
    data (an SVG's text with the platform's line ends, a PNG's bytes) and
    the extension, as ``myst_nb.core.render.NbElementRenderer.render_image``
    writes it; ``None`` for an output without an SVG or PNG image."""
    import hashlib
    import os
    from binascii import a2b_base64

    for mime, ext in (("image/svg+xml", ".svg"), ("image/png", ".png")):
        if mime not in data:
            continue
        text = (
            data[mime] if isinstance(data[mime], str) else "".join(data[mime])
        )
        raw = (
            os.linesep.join(text.splitlines()).encode("utf-8")
            if ext == ".svg"
            else a2b_base64(text)
        )
        return hashlib.sha256(raw).hexdigest() + ext
    return None


def _executed_outputs(app, docname: str) -> dict[str, dict]:
    """Image file name -> output, for every image output of the executed
    notebook of ``docname``: its glued outputs (``<docname>.glue.json`` in
    myst-nb's output folder, ``_build/jupyter_execute``) and the image
    outputs of ``<docname>.ipynb`` there. (When myst-nb takes a notebook
    from its cache it writes that ``.ipynb`` without outputs; the glue file
    it always writes.)"""
    import json

    folder = getattr(app.env, "mystnb_config", None)
    folder = getattr(folder, "output_folder", None)
    if folder is None:
        return {}
    stem = Path(folder).joinpath(*docname.split("/"))
    found = {}
    executed = stem.with_name(stem.name + ".ipynb")
    if executed.is_file():
        for cell in json.loads(executed.read_text()).get("cells", []):
            for output in cell.get("outputs", []):
                name = output_image_name(output.get("data", {}))
                if name is not None:
                    found[name] = output
    glued = stem.with_name(stem.name + ".glue.json")
    if glued.is_file():
        for output in json.loads(glued.read_text()).values():
            name = output_image_name(output.get("data", {}))
            if name is not None:
                found[name] = output
    return found


def _glued_figure_directive():
    """``{glue:figure}`` that also takes ``:doc:``: a figure glued in a
    notebook, pasted on a chapter page as a numbered figure with the
    directive's body as its caption (myst-nb 1.x pastes across documents
    only with plain ``{glue}``, without a figure). Records which chapter
    figure pastes which glued figure (:func:`_pastes`)."""
    from typing import ClassVar

    from docutils import nodes
    from docutils.parsers.rst import directives as spec
    from myst_nb.ext.glue.directives import PasteFigureDirective
    from myst_nb.ext.glue.utils import (
        PendingGlueReferenceError,
        create_pending_glue_ref,
        glue_warning,
    )

    class PasteFigure(PasteFigureDirective):
        option_spec: ClassVar[dict] = {
            **PasteFigureDirective.option_spec,
            "doc": spec.unchanged,
        }

        def run(self):
            if "doc" not in self.options:
                return super().run()
            key = self.arguments[0]
            extra = (
                {"alt": self.options["alt"]} if "alt" in self.options else {}
            )
            try:
                ref = create_pending_glue_ref(
                    self.document,
                    self.source,
                    self.line,
                    self.options["doc"],
                    key,
                    **extra,
                )
            except PendingGlueReferenceError as exc:
                return [glue_warning(str(exc), self.document, self.line)]
            figure = nodes.figure("", ref)
            self.set_source_info(figure)
            if self.options.get("figclass"):
                figure["classes"] += self.options["figclass"]
            if self.options.get("align"):
                figure["align"] = self.options["align"]
            if self.options.get("figwidth") is not None:
                figure["width"] = self.options["figwidth"]
            self.add_name(figure)
            if self.content:
                holder = nodes.Element()
                self.state.nested_parse(
                    self.content, self.content_offset, holder
                )
                first = holder[0]
                if not isinstance(first, nodes.paragraph):
                    return [
                        figure,
                        glue_warning(
                            "Figure caption must be a paragraph.",
                            self.document,
                            self.lineno,
                        ),
                    ]
                caption = nodes.caption(first.rawsource, "", *first.children)
                caption.source, caption.line = first.source, first.line
                figure += caption
                if len(holder) > 1:
                    figure += nodes.legend("", *holder[1:])
            env = self.state.document.settings.env
            if figure["ids"]:
                _pastes(env)[f"{ref.refdoc}::{key}"] = (
                    env.docname,
                    figure["ids"][0],
                )
            return [figure]

    return PasteFigure


def _pastes(env) -> dict:
    """``"notebook-doc::key"`` -> ``(chapter docname, figure id)`` of every
    ``{glue:figure}`` with ``:doc:`` read so far (kept in the environment,
    so an incremental build knows the pages it did not re-read)."""
    if not hasattr(env, "llmbook_figure_pastes"):
        env.llmbook_figure_pastes = {}
    return env.llmbook_figure_pastes


def _forget_pastes(app, env, docname) -> None:
    pastes = _pastes(env)
    for key in [k for k, v in pastes.items() if v[0] == docname]:
        del pastes[key]


def _merge_pastes(app, env, docnames, other) -> None:
    _pastes(env).update(
        {k: v for k, v in _pastes(other).items() if v[0] in docnames}
    )


def _caption_notebook_figures(app, doctree, docname) -> None:
    # On a notebook page, every image a cell shows becomes a figure: alt
    # text and short caption from the glued output's metadata, and a link
    # to the chapter figure that pastes it.
    from docutils import nodes

    images = [
        image
        for image in doctree.findall(nodes.image)
        if not any(isinstance(p, nodes.figure) for p in _ancestors(image))
    ]
    if not images:
        return
    outputs = _executed_outputs(app, docname)
    for image in images:
        output = outputs.get(Path(image["uri"]).name)
        if output is None:
            continue
        words = output_words(output)
        if "alt" in words and not image.get("alt"):
            image["alt"] = words["alt"]
        key = output.get("metadata", {}).get("scrapbook", {}).get("name")
        # An id, as the HTML writer wants of a figure with a caption (the
        # glued name, else the image's hash); no number: the chapter's is.
        stem = key or Path(image["uri"]).stem[:16]
        figure = nodes.figure(
            "",
            classes=["llmbook-output-figure"],
            ids=[nodes.make_id(f"output-{stem}")],
        )
        image.replace_self(figure)
        figure += image
        text = words.get("caption", "Output of this cell").rstrip(".")
        caption = nodes.caption("", text)
        pasted = _pastes(app.env).get(f"{docname}::{key}") if key else None
        if pasted is not None:
            chapter, figure_id = pasted
            number = app.env.toc_fignumbers.get(chapter, {})
            number = number.get("figure", {}).get(figure_id)
            label = (
                "Figure " + ".".join(map(str, number))
                if number
                else "a figure"
            )
            title = app.env.titles.get(chapter)
            title = title.astext() if title is not None else chapter
            if app.builder.format == "html":
                uri = app.builder.get_relative_uri(docname, chapter)
                caption += nodes.Text(". Shown as ")
                caption += nodes.reference(
                    "", label, internal=True, refuri=f"{uri}#{figure_id}"
                )
                caption += nodes.Text(f" in {title}.")
        figure += caption


def _ancestors(node):
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def image_link_target(node, docname: str, builder) -> str:
    """The address a figure links to: the image file as the page shows it.

    Args:
        node: a docutils ``image`` node of the resolved doctree of
            ``docname``.
        docname: the page, e.g. ``chapters/pruning-quantization``.
        builder: the HTML builder (its ``env.images``, ``imagedir`` and
            ``supported_image_types``).

    Picks the candidate Sphinx will pick (``post_process_images``): a file
    the build copies to ``_images/`` gets its address there relative to the
    page; any other URI (a glued SVG already under ``_images``, a URL) is
    kept. Used by :func:`_link_figures` (issue 20: tap a figure on a phone
    to open it full-screen and zoom).
    """
    import posixpath

    from sphinx.util.osutil import relative_uri

    candidates = node.get("candidates", {})
    uri = node["uri"]
    if "*" not in candidates and "?" not in candidates:
        uri = next(
            (
                candidates[kind]
                for kind in builder.supported_image_types
                if candidates.get(kind)
            ),
            uri,
        )
    if uri not in builder.env.images:
        return uri
    folder = relative_uri(builder.get_target_uri(docname), builder.imagedir)
    return posixpath.join(folder, builder.env.images[uri][1])


def _link_figures(app, doctree, docname) -> None:
    # Every figure, glued or not, is a link to its own image file, so a
    # phone reader can open it alone and zoom (the build writes the link;
    # no script).
    if app.builder.format != "html":
        return
    from docutils import nodes

    for image in list(doctree.findall(nodes.image)):
        if isinstance(image.parent, nodes.reference):
            continue
        link = nodes.reference(
            "",
            "",
            internal=True,
            refuri=image_link_target(image, docname, app.builder),
        )
        image.replace_self(link)
        link.append(image)


def setup(app):
    _svg_cross_document_glue()
    app.add_role("n", _short_glue_role())
    app.connect("doctree-resolved", _strip_answers_in_problems_edition)
    app.connect("doctree-resolved", _caption_notebook_figures)
    app.connect("doctree-resolved", _link_figures)
    app.connect("env-purge-doc", _forget_pastes)
    app.connect("env-merge-info", _merge_pastes)
    app.add_directive_to_domain(
        "glue", "figure", _glued_figure_directive(), override=True
    )
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    app.connect("html-page-context", _no_page_toc_on_stubs, priority=100)
    app.connect(
        "html-page-context", _launch_buttons_on_labs_only, priority=500
    )
    app.connect("config-inited", _use_local)
    app.connect("config-inited", _no_buttons_in_problems_edition)
    app.connect("build-finished", _copy)
    app.connect("build-finished", _serve_executed)
    app.connect("html-page-context", _no_markdown_download, priority=600)
    from llmbook.book import a11y  # the accessibility fixes (axe-core)

    a11y.setup(app)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
