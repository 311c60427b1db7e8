"""Benchmarks: theoretical vs measured speed (``speed``, with its plans, model forms, multiply-add
counts and detector cases) and solver quality on a network trained here (``quality``)."""
