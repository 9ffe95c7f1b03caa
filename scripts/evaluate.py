"""Evaluate generator checkpoints: pixelface.commands.evaluate (also `pixelface-eval`), kept here so
`python scripts/evaluate.py ...` works in a checkout.
"""
import sys

from pixelface.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
