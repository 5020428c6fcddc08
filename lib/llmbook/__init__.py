"""llmbook: the small library behind the executable textbook on LLM adaptation,
interpretability, scaling and compression. Three layers, one folder each:

- ``llmbook.core``: foundations shared by many chapters (argument checks,
  hardware arithmetic, FLOP and byte accounting, statistics, the small models
  the book trains, the multi-seed trainer).
- ``llmbook.topics``: one module per chapter topic (``lora``, ``fermi``,
  ``quant``, ``dist``, ...), built on ``core``.
- ``llmbook.book``: book infrastructure (glue, number formatting, plotting
  style, the Sphinx extension, extras, silencing, checks, data paths, sync).

Above them, ``llmbook.grade`` is the labs' autograder, a student-facing entry
point that imports from the layers (none imports it).

CONTRIBUTING.md has the table of where each concept lives.
"""

from llmbook.book import quiet as _quiet

_quiet.install()

__version__ = "0.1.0"
