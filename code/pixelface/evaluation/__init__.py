"""Measuring a generator: metric formulas, feature extractors, collectors and reports, face parsers."""
