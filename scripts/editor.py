"""Serve the web editor: pixelface.commands.editor (also `pixelface-editor`), kept here so
`python scripts/editor.py ...` works in a checkout.
"""
import sys

from pixelface.commands.launch import editor as main

if __name__ == "__main__":
    sys.exit(main())
