"""Bad input exits 2 with a bounded one-paragraph message, and a run's record cannot be corrupted
(issue 15: one test per item of "Broken today", each failing before its fix).

The CLI runs in-process (``trainlab.cli.main``) with its output captured: what a user would see,
without a Python start-up per case.
"""
import json
import pickle
import shutil
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trainlab.checkpoint import load_checkpoint, save_checkpoint
from trainlab.cli import main
from trainlab.errors import UserError
from trainlab.run import train_run
from trainlab.train import Callback

TINY = ["data.subset=120", "model.name=mlp", "model.width=16", "train.epochs=2", "train.progress=false",
        "monitor.every=0", "train.log_every=1"]
README = Path(__file__).resolve().parents[1] / "README.md"


def cli(capsys, *args):
    """(exit code, stdout, stderr) of ``trainlab ARGS`` run in-process."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_exit_2(result, *words):
    code, out, err = result
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out
    assert len(err.encode()) < 2048, len(err)
    for w in words:
        assert w in err, (w, err)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


def steps_of(run):
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]


# --- 1. --resume with a changed config --------------------------------------------------------------


def test_resume_refuses_a_config_edited_in_config_yaml(run_copy, capsys):
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    cfg["optim"]["lr"] = 0.5
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = (run_copy / "metrics.jsonl").read_bytes()
    assert_exit_2(cli(capsys, "train", "--resume", run_copy), "optim.lr", "0.5")
    assert (run_copy / "metrics.jsonl").read_bytes() == before


def test_resume_refuses_an_architecture_override_instead_of_crashing(run_copy, capsys):
    assert_exit_2(cli(capsys, "train", "--resume", run_copy, "model.width=32"), "model.width", "16", "32")
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["model"]["width"] == 16


@pytest.mark.slow
def test_resume_applies_safe_keys_and_records_them(run_copy, capsys):
    code, _, err = cli(capsys, "train", "--resume", run_copy, "train.epochs=3")
    assert code == 0, err
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in records if r["kind"] == "event"]
    assert events == [{"kind": "event", "event": "resume_config_changed", "epoch": 2, "step": events[0]["step"],
                       "changes": {"train.epochs": {"from": 2, "to": 3}}}]
    assert yaml.safe_load((run_copy / "config.yaml").read_text())["train"]["epochs"] == 3
    assert json.loads((run_copy / "summary.json").read_text())["epochs"] == 3


def test_resume_guard_works_on_any_checkpoint_config(finished_run):
    from trainlab.resume import SAFE_ON_RESUME, check_resume_config

    trained = load_checkpoint(finished_run / "checkpoints" / "last.pt")["config"]
    same = json.loads(json.dumps(trained))
    assert check_resume_config(trained, same, "x") == {}
    changed = json.loads(json.dumps(trained))
    changed["train"]["epochs"], changed["reg"]["strength"] = 9, 0.123
    with pytest.raises(UserError, match="reg.strength") as e:
        check_resume_config(trained, changed, "x")
    assert "train.epochs" not in str(e.value).split("Only")[0]
    assert "train.epochs" in SAFE_ON_RESUME


# --- 2. a non-run --out folder --------------------------------------------------------------------------


def test_a_non_empty_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "config.yaml").write_text("mine\n")
    assert_exit_2(cli(capsys, "train", *TINY, "--out", d), "not empty", "--force")
    assert (d / "config.yaml").read_text() == "mine\n"
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml"]


@pytest.mark.slow
def test_force_writes_a_fresh_run_and_keeps_other_files(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("mine\n")
    stale = '{"kind": "step", "step": 1, "epoch": 0, "loss": 9.0}\n'
    (d / "metrics.jsonl").write_text(stale * 3)  # a leftover without checkpoints
    assert_exit_2(cli(capsys, "train", *TINY, "--out", d), "not empty")
    code, _, err = cli(capsys, "train", *TINY, "--out", d, "--force")
    assert code == 0, err
    assert (d / "notes.txt").read_text() == "mine\n"
    steps = steps_of(d)
    assert steps == sorted(set(steps)), "no step may appear twice"


# --- 3. bad data ----------------------------------------------------------------------------------


def npz_run(capsys, tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return cli(capsys, "train", "data.name=npz", f"data.path={path}", *TINY[1:], "--out", tmp_path / "run")


def test_npz_with_nan_pixels_is_refused(tmp_path, capsys):
    x = np.random.rand(40, 4).astype(np.float32)
    x[3, 1] = np.nan
    assert_exit_2(npz_run(capsys, tmp_path, x=x, y=np.arange(40) % 2), "NaN")


def test_truncated_npz_is_refused(tmp_path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.random.rand(40, 4), y=np.arange(40) % 2)
    path.write_bytes(path.read_bytes()[:300])
    assert_exit_2(cli(capsys, "train", "data.name=npz", f"data.path={path}", *TINY[1:], "--out", tmp_path / "r"),
                  str(path))


def test_single_class_data_is_refused(tmp_path, capsys):
    assert_exit_2(npz_run(capsys, tmp_path, x=np.random.rand(40, 4), y=np.zeros(40, int)), "two")


def cifar_folder(root: Path, labels=(0, 1), names=None) -> Path:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n = 2 if isinstance(labels, int) else len(labels)
    batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(labels) if not isinstance(labels, int) else labels}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": names if names is not None else [b"a", b"b"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


@pytest.mark.parametrize("labels, names, word", [(5, None, "labels"), ((0, 1), 7, "label_names")])
def test_cifar_batches_with_wrong_types_are_refused(tmp_path, capsys, labels, names, word):
    root = cifar_folder(tmp_path / "data", labels, names)
    assert_exit_2(cli(capsys, "train", "data.name=cifar10", f"data.root={root}", "data.download=false", *TINY[1:],
                      "--out", tmp_path / "run"), word)


def write_idx(path: Path, shape, data: bytes = b"") -> None:
    path.write_bytes(bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data)


def idx_folder(root: Path, image_shape, n_labels: int) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", image_shape)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (n_labels,), bytes(i % 2 for i in range(n_labels)))
    return root


@pytest.mark.parametrize("shape, word", [((2**31, 2**31, 2**31), "header"), ((20, 0, 0), "no values")])
def test_idx_headers_that_overflow_or_hold_no_pixels_are_refused(tmp_path, capsys, shape, word):
    root = idx_folder(tmp_path / "data", shape, n_labels=min(shape[0], 20))
    assert_exit_2(cli(capsys, "train", "data.name=mnist", f"data.root={root}", "data.download=false", *TINY[1:],
                      "--out", tmp_path / "run"), word)


# --- 4. bad checkpoints ---------------------------------------------------------------------------


def test_zero_byte_checkpoints_are_refused_by_every_command(run_copy, tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_exit_2(cli(capsys, "evaluate", empty), "empty.pt", "corrupt")
    assert_exit_2(cli(capsys, "finetune", "--from", empty, *TINY, "--out", tmp_path / "ft"), "empty.pt")
    assert_exit_2(cli(capsys, "ensemble", empty, run_copy, "--out", tmp_path / "ens"), "empty.pt")
    (run_copy / "checkpoints" / "last.pt").write_bytes(b"")
    assert_exit_2(cli(capsys, "train", "--resume", run_copy), "last.pt")


def test_checkpoints_without_config_or_plain_state_dicts_are_refused_by_evaluate(finished_run, tmp_path, capsys):
    ckpt = load_checkpoint(finished_run / "checkpoints" / "best.pt")
    no_config = tmp_path / "no_config.pt"
    save_checkpoint({k: v for k, v in ckpt.items() if k not in ("config", "format")}, no_config)
    assert_exit_2(cli(capsys, "evaluate", no_config), "no_config.pt")
    plain = tmp_path / "plain.pt"
    torch.save(ckpt["model"], plain)
    assert_exit_2(cli(capsys, "evaluate", plain), "plain.pt", "state dict")


def test_evaluate_refuses_data_with_other_classes(run_copy, capsys):
    assert_exit_2(cli(capsys, "evaluate", run_copy, "data.classes=[0,1,2]"), "10 classes", "3 classes")


def test_evaluate_refuses_an_unknown_checkpoint_name(run_copy, capsys):
    code, _, err = cli(capsys, "evaluate", run_copy, "--checkpoint", "nope")
    assert code == 2 and "nope" in err and not (run_copy / "evaluation.json").exists()


# --- 5. bad arguments -----------------------------------------------------------------------------


def test_out_that_is_a_file_is_refused_before_data_is_loaded(tmp_path, capsys, monkeypatch):
    import trainlab.data as data

    monkeypatch.setattr(data, "load_data", lambda cfg: pytest.fail("data loaded before --out was checked"))
    f = tmp_path / "file"
    f.write_text("mine")
    assert_exit_2(cli(capsys, "train", *TINY, "--out", f), "is a file")
    assert f.read_text() == "mine"


def test_unwritable_out_is_refused_by_train_evaluate_and_search(run_copy, tmp_path, capsys):
    bad = "/sys/trainlab-test"  # sysfs refuses new files even to root
    assert_exit_2(cli(capsys, "train", *TINY, "--out", bad), "not writable")
    assert_exit_2(cli(capsys, "evaluate", run_copy, "--out", bad), "not writable")
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: loguniform(1e-3, 1e-1)\n")
    assert_exit_2(cli(capsys, "search", *TINY, "--space", space, "--out", bad), "not writable")


def test_config_file_that_is_not_utf8_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"seed: 1\nmodel.name: \xff\xfe\n")
    assert_exit_2(cli(capsys, "train", "-c", cfg, "--out", tmp_path / "run"), "UTF-8", "c.yaml")


def test_a_seed_too_large_for_any_generator_is_refused(tmp_path, capsys):
    assert_exit_2(cli(capsys, "train", "seed=99999999999999999999", "--out", tmp_path / "run"), "seed")


# --- 6. message size --------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, capsys):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines += ["data:", "  classes: *a8"]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    assert_exit_2(cli(capsys, "train", "-c", bomb, "--out", tmp_path / "run"), "alias")
    assert time.perf_counter() - t0 < 30  # generous: only a runaway expansion takes longer


@pytest.mark.slow
def test_messages_echo_a_bounded_part_of_a_huge_value(tmp_path, capsys):
    assert_exit_2(cli(capsys, "train", "optim.lr=" + "9" * 100_000 + "x", "--out", tmp_path / "r"), "optim.lr")
    assert_exit_2(cli(capsys, "train", "x" * 100_000 + "=1", "--out", tmp_path / "r"), "unknown config key")
    assert_exit_2(cli(capsys, "train", "data.classes=[" + ",".join(["99"] * 50_000) + "]", "--out", tmp_path / "r"),
                  "data.classes")


# --- 7. a torn metrics.jsonl --------------------------------------------------------------------


@pytest.mark.slow
def test_a_torn_last_metrics_line_is_dropped_on_resume(run_copy, capsys):
    metrics = run_copy / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes() + b'{"kind": "step", "step": 99, "lo')
    code, _, err = cli(capsys, "train", "--resume", run_copy, "train.epochs=3")
    assert code == 0, err
    lines = metrics.read_text().splitlines()
    assert all(json.loads(line) for line in lines) and '"lo' not in metrics.read_text().split("\n")[-1]


def test_corruption_before_the_last_metrics_line_is_refused(run_copy, capsys):
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1] = lines[1][:10]
    metrics.write_text("\n".join(lines) + "\n")
    assert_exit_2(cli(capsys, "train", "--resume", run_copy, "train.epochs=3"), "metrics.jsonl", "line 2")


# --- 8. smaller --------------------------------------------------------------------------------------


def test_search_with_zero_trials_is_refused(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: loguniform(1e-3, 1e-1)\n")
    assert_exit_2(cli(capsys, "search", *TINY, "--space", space, "--trials", "0", "--out", tmp_path / "s"), "--trials")


def test_a_space_with_impossible_sizes_is_refused_up_front(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("model.width: int(1, 1e12)\n")
    assert_exit_2(cli(capsys, "search", *TINY, "--space", space, "--out", tmp_path / "s"), "model.width")
    assert not (tmp_path / "s" / "trials").exists()


@pytest.mark.slow
def test_a_failing_trial_is_recorded_fail_and_the_search_goes_on(tmp_path, capsys, monkeypatch):
    import trainlab.search.stages as stages

    real, calls = stages.run_trial, []

    def flaky(trial, *args, **kwargs):
        calls.append(trial.number)
        if len(calls) == 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000000 bytes")
        return real(trial, *args, **kwargs)

    monkeypatch.setattr(stages, "run_trial", flaky)
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: loguniform(1e-3, 1e-1)\n")
    code, out, err = cli(capsys, "search", *TINY, "--space", space, "--trials", "2", "--epochs", "1",
                         "--stages", "single", "--out", tmp_path / "s")
    assert code == 0, err
    rows = (tmp_path / "s" / "trials.csv").read_text().splitlines()
    states = [r.split(",")[1] for r in rows[1:]]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 2, rows
    assert "FAIL (DefaultCPUAllocator" in out


def test_readme_documents_exit_130_for_ctrl_c(monkeypatch, capsys):
    text = README.read_text()
    assert "130" in text.split("Exit codes")[1][:600]
    import trainlab.cli as cli_module

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "cmd_report", interrupted)
    assert cli(capsys, "report", ".")[0] == 130


class InterruptAtEpoch(Callback):
    """Ctrl-C arriving after the loop counted epoch ``n`` but before its checkpoint was written."""

    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, trainer, epoch):
        if epoch["epoch"] == self.n:
            raise KeyboardInterrupt


def test_the_interrupt_message_names_the_epoch_last_pt_holds(tmp_path):
    from trainlab.config import load_config

    said = []
    with pytest.raises(KeyboardInterrupt):
        train_run(load_config(None, TINY + ["train.epochs=3"]), tmp_path / "run", callbacks=[InterruptAtEpoch(2)],
                  say=said.append)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 1
    assert "after epoch 1 " in said[-1], said[-1]


def test_stale_checkpoint_temp_files_are_removed_on_the_next_start(run_copy, capsys):
    stale = run_copy / "checkpoints" / ".last.pt.tmp-999999999"
    stale.write_bytes(b"half a checkpoint")
    code, _, err = cli(capsys, "train", "--resume", run_copy, "train.epochs=3")
    assert code == 0, err
    assert not stale.exists()


def test_a_key_given_twice_is_warned_about(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 1\nseed: 2\n")
    code, _, err = cli(capsys, "config-keys")
    from trainlab.config import load_config

    assert load_config(cfg, ["optim.lr=0.1", "optim.lr=0.2"])["optim"]["lr"] == 0.2
    err = capsys.readouterr().err
    assert "seed" in err and "twice" in err and "optim.lr is given twice on the command line" in err


def test_npz_zip_reader_errors_are_all_user_errors(tmp_path, capsys):
    """A zip whose member is not a .npy array (a hand-made archive) is bad data too."""
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"not an array")
        z.writestr("y.npy", b"nor this")
    assert_exit_2(cli(capsys, "train", "data.name=npz", f"data.path={path}", *TINY[1:], "--out", tmp_path / "r"),
                  "data.npz")
