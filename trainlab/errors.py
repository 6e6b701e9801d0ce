"""The one exception type that means "the user gave us something we cannot use".

The CLI turns a :class:`UserError` into a one-paragraph message and exit code 2 (SPEC §8);
anything else is a bug or an environment failure and exits 1.
"""


class UserError(Exception):
    """Bad input: a config key or value, a data file, a command-line argument.

    The message must name the problem and say what to do about it.
    """
