"""The command line: exit codes (docs/design.md §8) and the messages users see for bad input.

Exit 2 must come with a one-paragraph message and no traceback.
"""
import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainlab.cli import main
from trainlab.data import datasets

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FAST = ["train.epochs=1", "train.progress=false", "monitor.every=0", "model.width=16"]


def run_cli(*args):
    """The real console entry point in a subprocess: what a user sees."""
    return subprocess.run([sys.executable, "-m", "trainlab", *args], capture_output=True, text=True, timeout=300)


def assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.startswith("trainlab: error:")
    for w in words:
        assert w in result.stderr, (w, result.stderr)


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=0.1", ["unknown config key", "optim.lr"]),
    ("optim.name=adamm", ["optim.name", "adam"]),
    ("optim.lr=-0.1", ["optim.lr", "> 0"]),
    ("model.activation=rellu", ["model.activation", "relu"]),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, override, words):
    result = run_cli("train", override, "--out", str(tmp_path / "run"))
    assert_user_error(result, *words)
    assert not (tmp_path / "run").exists(), "a rejected config must not leave a run directory behind"


def test_truncated_data_file_exits_2(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    datasets_dir = SHARED / "mnist"
    if not datasets_dir.exists():
        pytest.skip("../shared/data/mnist is not beside the repository")
    for f in datasets_dir.iterdir():
        data = f.read_bytes()
        (folder / f.name).write_bytes(data[: len(data) // 3] if f.name.startswith("train-images") else data)
    result = run_cli("train", "data.name=mnist", f"data.root={tmp_path}", *FAST, "--out", str(tmp_path / "run"))
    assert_user_error(result, "train-images-idx3-ubyte.gz", "download")


def test_absent_dataset_without_download_exits_2(tmp_path):
    result = run_cli("train", "data.name=fashion-mnist", f"data.root={tmp_path}", "data.download=false",
                     "--out", str(tmp_path / "run"))
    assert_user_error(result, str(tmp_path / "fashion-mnist"), "train-images-idx3-ubyte")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


def test_absent_dataset_offline_exits_2(tmp_path, monkeypatch, capsys):
    """Download on, but the network is unreachable: the URLs point at a closed loopback port."""
    base = f"http://127.0.0.1:{closed_port()}/"
    spec = datasets.PUBLIC_SETS["mnist"]
    files = tuple(dataclasses.replace(f, url=base + f.name) for f in spec.files)
    monkeypatch.setitem(datasets.PUBLIC_SETS, "mnist", dataclasses.replace(spec, files=files))
    code = main(["train", "data.name=mnist", f"data.root={tmp_path}", *FAST, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "offline" in err.lower() and "Traceback" not in err
    assert not any((tmp_path / "mnist").glob("*.gz")), "a failed download must not leave partial files"


def test_bad_arguments_exit_2(tmp_path):
    assert_user_error(run_cli("train", "optim.lr", "--out", str(tmp_path / "r")), "key=value")
    assert_user_error(run_cli("train", "--resume", str(tmp_path / "nothing")), "cannot resume")
    assert_user_error(run_cli("evaluate", str(tmp_path / "missing")), "does not exist")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_user_error(run_cli("evaluate", str(bad)), "corrupt")


def test_train_evaluate_report_data_commands(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--tta", "flip"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert 0 <= result["test_acc"] <= 1 and len(result["confusion"]) == 10 and len(result["per_class_acc"]) == 10
    assert (out / "plots" / "confusion.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert "2 views each (tta=flip)" in capsys.readouterr().out  # says what it is doing before it does it
    assert main(["evaluate", str(out)]) == 0  # no TTA: the same number summary.json reports
    assert json.loads((out / "evaluation.json").read_text())["test_acc"] == pytest.approx(summary["test_acc"])
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert f"wrote {out / 'report.html'}" in capsys.readouterr().out  # `trainlab report` says what it wrote
    assert main(["data", f"data.root={tmp_path}"]) == 0
    listing = capsys.readouterr().out
    assert "digits" in listing and "mnist" in listing and "absent" in listing
    assert main(["config-keys"]) == 0 and "`optim.lr`" in capsys.readouterr().out


def test_python_m_and_console_script_agree():
    a = run_cli("--help")
    assert a.returncode == 0
    for command in ("train", "evaluate", "data", "report"):
        assert command in a.stdout


def test_tta_on_flat_features_is_rejected_before_training(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", x=rng.random((60, 5)).astype("float32"), y=np.arange(60) % 3)
    result = run_cli("train", "data.name=npz", f"data.path={tmp_path / 'flat.npz'}", "augment.tta=flip", *FAST,
                     "--out", str(tmp_path / "run"))
    assert_user_error(result, "augment.tta", "flat")
    assert not (tmp_path / "run").exists()


def test_overrides_may_follow_options(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *FAST, "train.max_steps=2"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "r2"), "--no-such-flag"])


def test_default_run_directories_name_their_command():
    from trainlab.config import load_config
    from trainlab.run import default_out_dir

    cfg = load_config()
    assert default_out_dir(cfg).name.startswith("digits-mlp-")
    assert default_out_dir(cfg, "finetune").name.startswith("finetune-digits-mlp-")


@pytest.mark.parametrize("progress", ["true", "false"])
def test_output_into_a_file_is_one_line_per_epoch(tmp_path, progress):
    """Not a terminal: no bar fragments (\\r, batch/s) in the file; train.progress=false hides only the bar."""
    result = run_cli("train", "train.epochs=2", "data.subset=200", "monitor.every=0", f"train.progress={progress}",
                     "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert "\r" not in result.stdout + result.stderr and "batch/s" not in result.stdout + result.stderr


def test_a_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch, capsys):
    import urllib.error

    from trainlab.data import download

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download, "_stream", offline)
    root = tmp_path / "new" / "data"
    assert main(["train", "data.name=fashion-mnist", f"data.root={root}", *FAST, "--out", str(tmp_path / "run")]) == 2
    assert "offline" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_help_texts_read_as_plain_text():
    """No reStructuredText ``double backticks``, internal file citations or 'a int' in what --help shows."""
    from trainlab.cli import build_parser
    from trainlab.config import keys_table

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "``" not in text and "reference/0" not in text, name
    assert "a int" not in keys_table() and "a floats" not in keys_table()
    check_help = sub.choices["check"].format_help()
    assert "runs/check-<data>-<model>-<time>" in " ".join(check_help.split())  # the folder default_out_dir makes
