"""Helpers shared by several test modules (one copy instead of one per file)."""
import socket
import subprocess
import sys

from trainlab.config import defaults


def quiet(msg):
    """A ``say`` function that prints nothing: the tests read the run directory instead."""


def model_cfg(**kw) -> dict:
    """The default ``model`` config section with ``kw`` replaced."""
    c = defaults()["model"]
    c.update(kw)
    return c


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess: what a user sees."""
    return subprocess.run([sys.executable, "-m", "trainlab", *args], capture_output=True, text=True, timeout=300)


def assert_user_error(result, *words: str) -> None:
    """Exit 2 with a one-paragraph message naming ``words``, and no traceback (docs/design.md §8).

    ``result`` is a finished ``run_cli`` process, or ``(exit code, capsys.readouterr())`` of an
    in-process ``main([...])``.
    """
    if isinstance(result, subprocess.CompletedProcess):
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        code, captured = result
        out, err = captured.out, captured.err
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("trainlab: error:"), err
    for w in words:
        assert w in err, (w, err)
