"""trainlab's messages go through the "trainlab" logger; the CLI's -q/-v set how much is shown."""
import logging
import subprocess
import sys

import pytest

from trainlab.cli import main
from trainlab.config import load_config
from trainlab.log import logger, set_verbosity
from trainlab.run import train_run
from trainlab.train import Callback

FAST = ["train.epochs=2", "data.subset=200", "train.progress=false", "monitor.every=0", "model.width=16"]


@pytest.fixture(autouse=True)
def default_verbosity():
    yield
    set_verbosity(logging.INFO)  # main(["-q", ...]) in this process must not silence later tests


def lines(text, start):
    return [line for line in text.splitlines() if line.startswith(start)]


def test_quiet_silences_the_progress_lines(tmp_path, capsys):
    assert main(["-q", "train", *FAST, "--out", str(tmp_path / "q")]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "q" / "summary.json").is_file()


def test_default_output_is_the_progress_lines(tmp_path, capsys):
    assert main(["train", *FAST, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in lines(out, "epoch ")] == ["1/2", "2/2"]
    assert len(lines(out, "training mlp (")) == 1 and len(lines(out, "done: 2 epochs")) == 1
    assert logger.isEnabledFor(logging.INFO) and not logger.isEnabledFor(logging.DEBUG)


def test_verbose_adds_debug_and_the_flags_exclude_each_other(capsys):
    assert main(["-v", "config-keys"]) == 0
    assert logger.isEnabledFor(logging.DEBUG)
    with pytest.raises(SystemExit):
        main(["-q", "-v", "config-keys"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_say_defaults_to_the_logger_and_an_explicit_say_still_hears_everything(tmp_path, capsys):
    cfg = load_config(None, FAST)
    set_verbosity(logging.WARNING)
    heard = []
    train_run(cfg, tmp_path / "a", say=heard.append)  # public API: a caller's own say= is used as before
    assert len(lines("\n".join(heard), "epoch ")) == 2
    train_run(cfg, tmp_path / "b")  # the default goes through the (now quiet) logger
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_quiet_in_a_subprocess_prints_nothing_on_stdout(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trainlab", "-q", "train", *FAST, "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_the_interrupt_message_is_a_warning_that_quiet_still_shows(tmp_path, capsys):
    class CtrlC(Callback):
        def on_step_end(self, trainer, step):
            if trainer.state.step == 3:
                raise KeyboardInterrupt

    set_verbosity(logging.WARNING)  # trainlab -q
    with pytest.raises(KeyboardInterrupt):
        train_run(load_config(None, FAST), tmp_path / "r", callbacks=[CtrlC()])
    out = capsys.readouterr().out
    assert "interrupted at step 3" in out and f"trainlab train --resume {tmp_path / 'r'}" in out
    assert "training mlp" not in out  # the progress lines stay quiet


@pytest.mark.slow
def test_the_lab_talks_on_stderr_and_quiet_silences_it(tmp_path, capsys):
    assert main(["-q", "lab", "dropout", "--quick", "--out", str(tmp_path / "q")]) == 0
    quiet = capsys.readouterr()
    set_verbosity(logging.INFO)
    assert main(["lab", "dropout", "--quick", "--out", str(tmp_path / "v")]) == 0
    loud = capsys.readouterr()
    assert quiet.err == "" and "lab dropout (quick)" in loud.err
    assert "measured:" in quiet.out and "measured:" in loud.out  # the verdicts are the command's output


def test_no_say_parameter_defaults_to_print():
    """Every ``say=`` defaults to the logger (the lab's to :func:`say_stderr`, its stdout being its
    verdicts), so that -q silences it."""
    import importlib
    import inspect
    import pkgutil

    import trainlab
    from trainlab.log import say, say_stderr

    found = {}
    for info in pkgutil.walk_packages(trainlab.__path__, "trainlab."):
        if info.name.endswith("__main__"):  # __main__ runs the CLI
            continue
        module = importlib.import_module(info.name)
        for owner in [module, *(c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == info.name)]:
            for _, f in inspect.getmembers(owner, inspect.isfunction):
                if f.__module__ == info.name and "say" in inspect.signature(f).parameters:
                    found[f"{info.name}.{f.__qualname__}"] = inspect.signature(f).parameters["say"].default
    assert found["trainlab.run.train_run"] is say and found["trainlab.callbacks.ProgressBar.__init__"] is say
    assert found["trainlab.lab.common.run_experiment"] is say_stderr
    assert [name for name, default in found.items() if default is print] == []
