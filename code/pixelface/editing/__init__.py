"""Editing given faces: inputs, inversion and edits, the Python API and the web editor."""
