"""trainlab's messages go through the standard ``logging`` module, logger ``"trainlab"``.

Progress (epoch lines, "wrote ...") is logged at INFO, problems at WARNING, details at DEBUG.
So that a script or notebook sees what ``print`` used to show, importing trainlab attaches one
handler writing the bare message to the current ``sys.stdout``; silence or redirect it the usual
way::

    logging.getLogger("trainlab").setLevel(logging.WARNING)   # what `trainlab -q` does

Functions that talk take ``say=`` (a ``str -> None`` callable, e.g. ``print`` or a no-op); its
default is :func:`say`, the logger at INFO.
"""
from __future__ import annotations

import logging
import sys

logger = logging.getLogger("trainlab")


class StdoutHandler(logging.Handler):
    """The bare message on ``sys.stdout`` as it is when the record is emitted (not when the
    handler was made: pytest's capture and contextlib.redirect_stdout swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 (logging's contract: a broken stream must not stop training)
            self.handleError(record)


def say(message: str) -> None:
    """The default ``say=``: ``message`` to the ``trainlab`` logger at INFO."""
    logger.info(message)


def say_stderr(message: str) -> None:
    """``say=`` for commands whose stdout is their result (``trainlab lab`` prints its verdicts
    there): ``message`` on stderr, shown when the logger is at INFO, so ``-q`` silences it too."""
    if logger.isEnabledFor(logging.INFO):
        print(message, file=sys.stderr, flush=True)


def set_verbosity(level: int) -> None:
    """The CLI's -q (WARNING) / default (INFO) / -v (DEBUG)."""
    logger.setLevel(level)


if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
    logger.addHandler(StdoutHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one copy of each line, not a second one through the root logger
