"""llmbook: the small library behind the executable textbook on LLM adaptation,
interpretability, scaling and compression. One module per topic:

- ``fermi``: memory, bandwidth, compute, money and energy estimates (hw11-q5)
- ``scaling``: the Chinchilla law and compute-optimal allocation (hw11-q5b, genai-e1..e3)
- ``fmt``: number formatting for glued prose
- ``glue``: a ``myst_nb.glue`` shim that also works in Colab
- ``checks``: ``check_close`` for numerical checks after derivations
- ``plotting``: the book's one matplotlib style
- ``data``: the CSV tables in ``data/``
- ``book``: book infrastructure (bootstrap cell, question index)
"""

__version__ = "0.1.0"
