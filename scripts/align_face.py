"""Write the aligned face crop of a photo: pixelface.commands.align_face (also `pixelface-align`), kept here so
`python scripts/align_face.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import align_face as main

if __name__ == "__main__":
    sys.exit(main())
