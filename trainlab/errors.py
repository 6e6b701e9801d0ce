"""The exception types that mean "the user gave us something we cannot use".

The CLI turns a :class:`UserError` into a one-paragraph message and exit code 2 (docs/design.md §8);
anything else is a bug or an environment failure and exits 1.
"""
from __future__ import annotations

import reprlib

# A message is one paragraph: whatever it echoes of the user's input is cut to this many
# characters (a 374-byte YAML alias bomb once produced a 358 MB "paragraph").
ECHO_LIMIT = 120
MESSAGE_LIMIT = 1500

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = ECHO_LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


class UserError(Exception):
    """Bad input: a config key or value, a data file, a command-line argument.

    The message must name the problem and say what to do about it.
    """


class ConfigError(UserError):
    """A bad configuration: an unknown key, component name or keyword argument, or a value out
    of range — from a YAML file, a command-line override, a dict or a factory's arguments."""
def short(value, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without ever building the full repr
    (reprlib stops at a few items per container and a few levels deep)."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    lines = str(error).splitlines()
    return short_text(lines[0]) if lines and lines[0].strip() else type(error).__name__


def short_text(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message cut to ``limit`` characters, one paragraph (newlines become spaces)."""
    text = " ".join(str(text).split("\n"))
    return text if len(text) <= limit else text[: limit - 3] + "..."
