"""Foundations shared by many chapters.

``validate`` (argument checks), ``hardware`` (accelerator table, roofline,
device-seconds, rental cost), ``accounting`` (FLOP and byte counts),
``stats`` (intervals, log-log fits), ``models`` and ``cnn`` (the small
models the book trains), ``measure`` (measured FLOPs and bytes) and
``trainer`` (the vectorised multi-seed trainer: n runs that differ by seed,
data draw or learning rate, trained at once on stacked parameters). The
arithmetic modules import without torch.
"""
