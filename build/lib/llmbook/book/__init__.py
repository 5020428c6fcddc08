"""Book infrastructure: what turns the library's numbers into pages.

``glue`` (values and figures for the pages, also in Colab), ``fmt`` (numbers
as prose), ``plotting`` (the one figure style), ``checks`` (``check_close``),
``data`` (the shipped tables), ``extras`` (optional packages, installed where
missing), ``quiet`` (known third-party noise, silenced by logger and
message), ``sphinx_ext`` (the book's Sphinx extension), ``sync`` (bootstrap
cells, the Problem Index), ``lint`` (notebook checks), ``notebooks`` (the
notebooks' normal form, their cells through ruff), ``uses``
(``LIBRARY-USES.md``), ``report`` (execution times, speed targets),
``partial`` (one chapter built alone, ``make check``). Nothing here is
imported by ``llmbook.core`` or ``llmbook.topics`` except ``fmt``,
``plotting`` and ``data`` where a topic draws or reads a table.
"""
