"""Convert the official PixelFace+ checkpoint: pixelface.commands.convert (also `pixelface-convert`), kept
here so `python scripts/convert_reference.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import convert as main

if __name__ == "__main__":
    sys.exit(main())
