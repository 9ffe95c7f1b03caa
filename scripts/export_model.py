"""Export a trained generator (safetensors + JSON, no pickle): pixelface.commands.export (also
`pixelface-export`), kept here so `python scripts/export_model.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import export as main

if __name__ == "__main__":
    sys.exit(main())
