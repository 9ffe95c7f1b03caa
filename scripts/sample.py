"""Generate faces from a checkpoint for given captions and masks: pixelface.commands.sample (also
`pixelface-sample`), kept here so `python scripts/sample.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import sample as main

if __name__ == "__main__":
    sys.exit(main())
