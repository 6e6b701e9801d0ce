"""The exception types that mean "the user gave us something we cannot use".

The CLI turns a :class:`UserError` into a one-paragraph message and exit code 2 (SPEC §8);
anything else is a bug or an environment failure and exits 1.
"""


class UserError(Exception):
    """Bad input: a config key or value, a data file, a command-line argument.

    The message must name the problem and say what to do about it.
    """


class ConfigError(UserError):
    """A bad configuration: an unknown key, component name or keyword argument, or a value out
    of range — from a YAML file, a command-line override, a dict or a factory's arguments."""
