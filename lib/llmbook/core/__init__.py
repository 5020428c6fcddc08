"""Foundations shared by many chapters: argument checks (``validate``) and
the vectorised multi-seed trainer (``trainer``: n runs that differ by seed,
data draw and learning rate, trained at once on stacked parameters).

Hardware arithmetic, FLOP and byte accounting, statistics and the small
models the book trains live here too; the arithmetic modules import without
torch.
"""
