"""Foundations every layer may use: configuration, atomic files, errors, the CLI runner, processes."""
