"""Benchmarks behind ``revgan bench``: each returns a plain dict (the ``--json`` output) and
has a formatter for the human-readable table."""
