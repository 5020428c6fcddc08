"""One module per chapter topic; each builds on ``llmbook.core`` and is
tested in ``tests/test_<topic>.py``."""
