"""The command-line programs, importable so that an installed package has them too.

Each module has main(argv=None) -> exit code and runs as `python -m pixelface.commands.<name>`; pyproject.toml
names them as console scripts (pixelface-train, -sample, -edit, -eval), and code/main.py and
scripts/{sample,manipulate,evaluate}.py are thin shells around them in a checkout.
"""
