"""llmbook: the small library behind the executable textbook on LLM adaptation,
interpretability, scaling and compression. One module per topic:

- ``fermi``: memory, bandwidth, compute, money and energy estimates (hw11-q5)
- ``scaling``: the Chinchilla law and compute-optimal allocation (hw11-q5b, genai-e1..e3)
- ``batchsize``: vectorised SGD/Adam sweeps and batch-size scaling (hw11-q4)
- ``circuits``, ``induction``: attention heads by hand and trained (hw11-q2, hw11-q3)
- ``cnn``, ``prune``: the labs' small VGG on bundled MNIST; pruning by hand, MACs, latency (hw11-q7a)
- ``quant``: the book's quantization module: k-means, linear, integer-only inference (hw11-q7b)
- ``fmt``: number formatting for glued prose
- ``glue``: a ``myst_nb.glue`` shim that also works in Colab
- ``checks``: ``check_close`` for numerical checks after derivations
- ``plotting``: the book's one matplotlib style
- ``data``: the tables that ship with the package
- ``quiet``: the known noise of third-party imports, filtered by logger and message
- ``extras``: install an optional extra (as Colab needs) when it is missing
- ``book``: book infrastructure (bootstrap cell, question index)
"""

from . import quiet as _quiet

_quiet.install()

__version__ = "0.1.0"
