"""The errors and warnings that mean "the user's input", as opposed to a bug: every command turns an
InputError into one line and exit status 2 (pixelface.core.cli.run)."""


class InputWarning(UserWarning):
    """Something about an input the user should know, though the command can go on."""


class InputError(ValueError):
    """A user-supplied value or file that cannot be used, with a message naming it."""
