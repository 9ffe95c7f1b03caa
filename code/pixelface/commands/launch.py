"""Every command's entry point (the console scripts pixelface-*, code/main.py and the scripts/ shells): parse the
arguments with the light parsers of pixelface.commands.parsers, and only then import the command's module, which
loads torch and the networks. So `--help` and a mistyped option answer at once, without paying for them.

The one deliberate deferred import of the package: COMMANDS maps each name to its module, imported by name
after parsing (tests/test_install.py times every console script's --help).
"""
from __future__ import annotations

import importlib
import sys

from pixelface.commands import parsers

COMMANDS = {"train": "pixelface.commands.train", "sample": "pixelface.commands.sample",
            "edit": "pixelface.commands.edit", "evaluate": "pixelface.commands.evaluate",
            "make_mask": "pixelface.commands.make_mask", "editor": "pixelface.commands.editor",
            "convert": "pixelface.commands.convert", "export": "pixelface.commands.export",
            "align_face": "pixelface.commands.align_face"}


def launch(name: str, argv=None) -> int:
    """Parse `argv` for command `name`, then run it: its exit code (argparse exits 0 on --help, 2 on bad usage)."""
    args = parsers.parse(name, argv)
    return importlib.import_module(COMMANDS[name]).execute(args)


def _entry(name: str):
    """The console-script function of command `name` (pyproject.toml names them: pixelface.commands.launch:NAME)."""
    def main(argv=None) -> int:
        return launch(name, argv)
    main.__name__ = main.__qualname__ = name
    main.__doc__ = f"Command {name!r}: parse the arguments, then run pixelface.commands.{name}."
    return main


train, sample, edit, evaluate, make_mask, editor, convert, export, align_face = (_entry(name) for name in COMMANDS)


if __name__ == "__main__":     # python -m pixelface.commands.launch NAME [options]
    sys.exit(launch(sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] in COMMANDS
             else f"usage: python -m pixelface.commands.launch {{{','.join(COMMANDS)}}} [options]")
