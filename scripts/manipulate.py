"""Edit a given face (invert, then change its description and/or mask): pixelface.commands.edit (also
`pixelface-edit`), kept here so `python scripts/manipulate.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import edit as main

if __name__ == "__main__":
    sys.exit(main())
