"""Predict the mask of a photo with a face parser: pixelface.commands.make_mask (also `pixelface-make-mask`),
kept here so `python scripts/make_mask.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import make_mask as main

if __name__ == "__main__":
    sys.exit(main())
