"""Foundations shared by many chapters: argument checks (``validate``).

Hardware arithmetic, FLOP and byte accounting, statistics, the small models
the book trains and the multi-seed trainer live here too; the arithmetic
modules import without torch.
"""
