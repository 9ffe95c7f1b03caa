"""The command-line programs, importable so that an installed package has them too.

pixelface.commands.launch is every program's entry point: the console scripts (pixelface-train, -sample, -edit,
-eval, -make-mask, -editor, -convert, -export), code/main.py and the scripts/ shells call it. It parses the
arguments with pixelface.commands.parsers (no torch), then imports the program's module here, whose execute(args)
does the work; each module's main(argv=None) is the same launch, and `python -m pixelface.commands.<name>` runs it.
"""
