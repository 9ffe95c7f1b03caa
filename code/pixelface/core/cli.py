"""What every command-line entry point shares: one way to parse seeds, check an output folder, and
report bad input.

Exit codes of every CLI (README "Failure behaviour"):
  0  done
  1  an unforeseen failure (a bug): Python prints its traceback
  2  bad input: one line "error: ..." naming the key, file or value and what was expected
     (argparse's own usage errors exit 2 as well)
  3  training stopped because its losses stayed non-finite (a checkpoint was written first)
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

from pixelface.core.errors import InputError, InputWarning
from pixelface.core.files import claim_output_folder

EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_NONFINITE = 0, 1, 2, 3
MAX_SEEDS = 100_000       # more would not fit in memory as images anyway



def parse_seeds(text: str, limit: int = MAX_SEEDS) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (stylegan2-ada syntax); seeds lie in [0, 2^32), each once,
    at most `limit` of them."""
    seeds, count = [], 0
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise InputError(f"seeds {text!r}: expected numbers and ranges like 0-7,10")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first or last >= 2 ** 32:
            raise InputError(f"seeds {text!r}: range {part.strip()} is empty or beyond 2^32 - 1")
        count += last - first + 1
        if count > limit:           # checked before the list is built: 0-4000000000 must not fill memory
            raise InputError(f"seeds {text!r}: more than {limit:,} seeds")
        seeds += range(first, last + 1)
    repeated = sorted(s for s, n in Counter(seeds).items() if n > 1)
    if repeated:
        raise InputError(f"seeds {text!r}: {repeated[:5]} appear more than once (a seed always gives the same image)")
    return seeds


def check_output_folder(path: str | Path, what: str = "--out", create: bool = True) -> Path:
    """Create the folder `path` (and its parents) or fail now, before any expensive work, naming it.
    Without `create`, only refuse a path that exists and is not a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, expected a folder")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what} {path} cannot be created ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path} is not writable")
    return path


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    if lines[0].startswith("Caught ") and len(lines) > 1:
        # A DataLoader worker's error comes back wrapped with the worker's traceback: its last line
        # ("pixelface.data.images.ImageReadError: <file>: ...") is the message that names the culprit.
        return lines[-1].split(": ", 1)[-1]
    return lines[0] if len(lines) == 1 else f"{lines[0]} (+{len(lines) - 1} more lines)"


def run(main, *args, extra_errors: dict[type, int] | None = None) -> int:
    """Call main(*args) -> exit code. A bad input (ValueError: every error type of this package is one)
    or an OS error (missing, unreadable or unwritable file, full disk) becomes one "error: ..." line and
    exit 2; `extra_errors` maps other exception types to their exit codes. Each InputWarning is printed
    as one "warning: ..." line."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        previous = warnings.showwarning

        def show(message, category, *rest, **kw):
            if issubclass(category, InputWarning):
                print(f"warning: {message}", file=sys.stderr)
            else:
                previous(message, category, *rest, **kw)

        warnings.showwarning = show
        try:
            return main(*args) or EXIT_OK
        except tuple(extra_errors or ()) as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return next(code for kind, code in extra_errors.items() if isinstance(e, kind))
        except (ValueError, OSError) as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        finally:
            warnings.showwarning = previous


def check_free(paths: list[Path], force: bool) -> None:
    """Refuse (FileExistsError naming them) to overwrite existing outputs unless `force`, and make sure
    their folders can be written: both before any expensive work. Each folder is then held by this process
    (files.claim_output_folder) until it exits, so a second writer into it stops instead of replacing these
    outputs, and the check above stays true while they are written."""
    for folder in dict.fromkeys(Path(p).parent for p in paths):
        check_output_folder(folder)
        claim_output_folder(folder)
    taken = [str(p) for p in paths if p.exists()]
    if taken and not force:
        shown = ", ".join(taken[:5]) + (f" and {len(taken) - 5} more" if len(taken) > 5 else "")
        raise FileExistsError(f"{len(taken)} output files exist already ({shown}); pass --force to overwrite "
                              f"them or choose another --out")
