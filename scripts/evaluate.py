"""Evaluate generator checkpoints: pixelface.commands.evaluate (also `pixelface-eval`), kept here so
`python scripts/evaluate.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import evaluate as main

if __name__ == "__main__":
    sys.exit(main())
