"""Data-parallel training (trainlab.distributed): sharding, one writer, equality with one
process, faults and resume. Multi-process tests run gloo on loopback (127.0.0.1 / localhost) with
a timeout on every subprocess, so a failure can never hang the suite."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import free_port, quiet
from trainlab.checkpoint import load_checkpoint
from trainlab.cli import launch_argv, main
from trainlab.config import load_config
from trainlab.data.loader import TensorLoader, shard
from trainlab.run import train_run

TIMEOUT = 240  # seconds: generous for a busy shared machine; a healthy run takes ~10-20 s
HERE = Path(__file__).resolve().parent

# 180 training images, global batch 25: 8 batches an epoch, the last one 5 images (shares 3 and 2),
# so 20 updates cross two epoch ends with unequal shares.
EQUAL = ["data.subset=200", "train.batch_size=25", "train.max_steps=20", "optim.name=sgd", "optim.lr=0.1",
         "optim.momentum=0.9", "model.width=32", "augment.names=[flip,crop]", "monitor.every=0",
         "train.progress=false", "schedule.name=constant"]


# --- sharding ---------------------------------------------------------------------------------------


@given(n=st.integers(0, 300), world=st.integers(1, 8))
def test_shards_partition_the_global_batch_in_order(n, world):
    parts = [shard(list(range(n)), r, world) for r in range(world)]
    assert sum(parts, []) == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank"):
        shard(range(10), 2, 2)


def flip_some(x, y, gen):
    """A transform with per-sample randomness drawn from the loader's generator."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip[:, None], -x, x), y


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_together_see_exactly_the_single_process_batches(world):
    x, y = torch.arange(47.0)[:, None].repeat(1, 2), torch.arange(47)
    single = TensorLoader(x, y, batch_size=10, transform=flip_some, seed=3)
    ranks = [TensorLoader(x, y, batch_size=10, transform=flip_some, seed=3, rank=r, world_size=world)
             for r in range(world)]
    for epoch in (0, 1):
        for loader in [single, *ranks]:
            loader.set_epoch(epoch)
        one = list(single)
        split = list(zip(*ranks))
        assert len(split) == len(one) == len(single) == len(ranks[0])
        for (xb, yb), shares in zip(one, split):
            # same samples, and each with the same augmentation, whichever rank drew it
            assert torch.equal(torch.cat([s[0] for s in shares]), xb)
            assert torch.equal(torch.cat([s[1] for s in shares]), yb)


def test_a_last_batch_smaller_than_the_world_is_dropped_on_every_rank():
    x, y = torch.zeros(21, 2), torch.zeros(21, dtype=torch.long)  # last batch: 1 image for 2 ranks
    loaders = [TensorLoader(x, y, batch_size=10, rank=r, world_size=2) for r in range(2)]
    assert [len(loader) for loader in loaders] == [2, 2]
    assert [sum(len(b[0]) for b in loader) for loader in loaders] == [10, 10]
    assert len(TensorLoader(x, y, batch_size=10)) == 3  # one process keeps it


# --- command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["check"], ["lr-find"], ["tune", "--out", "t"], ["search", "--space", "x.yaml", "--out", "s"],
                                     ["finetune", "--from", "x"], ["evaluate", "x"]])
def test_commands_other_than_train_refuse_torchrun(command, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(command) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_under_torchrun_needs_out(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train"]) == 2
    assert "--out" in capsys.readouterr().err


def test_nproc_refuses_bad_input_before_starting_processes(monkeypatch, tmp_path, capsys):
    import trainlab.distributed

    monkeypatch.setattr(trainlab.distributed, "launch", lambda *a, **kw: pytest.fail("processes were started"))
    assert main(["train", "--nproc", "2", "model.nam=mlp", "--out", str(tmp_path / "r")]) == 2
    assert "model.nam" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text("{}")
    assert main(["train", "--nproc", "2", "--out", str(tmp_path / "r")]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_launch_argv_fixes_the_run_directory_and_drops_launcher_options():
    argv = ["train", "--nproc", "2", "--max-restarts=1", "-c", "a.yaml", "seed=1"]
    assert launch_argv(argv, Path("runs/x")) == ["train", "-c", "a.yaml", "seed=1", "--out", "runs/x"]
    assert launch_argv(["train", "--nproc=2", "--resume", "r"], Path("r")) == ["train", "--resume", "r"]


# --- multi-process runs --------------------------------------------------------------------------------


def run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, **(env or {})})


def torchrun(script: list[str], cwd: Path, max_restarts: int = 0, env: dict | None = None):
    """Two processes on loopback, rendezvous through a c10d store on 127.0.0.1 with a job id."""
    return run(["-m", "torch.distributed.run", "--nproc-per-node=2", "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{free_port()}", f"--rdzv-id=test-{time.time_ns()}",
                f"--max-restarts={max_restarts}", "--monitor-interval=0.1", *script], cwd, env)


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def max_abs_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()  # also: no "module." prefix from the DDP wrapper
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["model.norm=batch", "model.sync_bn=on"]], ids=["mlp", "sync_bn"])
def test_two_processes_match_one_process_after_20_updates(extra, tmp_path):
    one = tmp_path / "one"
    train_run(load_config(None, EQUAL + extra), one, say=quiet)
    work = tmp_path / "work"
    work.mkdir()
    result = run(["-m", "trainlab", "train", "--nproc", "2", *EQUAL, *extra, "--out", "two"], work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in work.iterdir()] == ["two"]  # exactly one run directory
    summary = json.loads((work / "two" / "summary.json").read_text())
    assert (summary["world_size"], summary["backend"], summary["steps"]) == (2, "gloo", 20)
    assert max_abs_difference(weights(one), weights(work / "two")) < 1e-5
    # one writer: one line per logged step and epoch, as in the single-process run
    lines = lambda d: [(r["kind"], r["step"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]  # noqa: E731
    assert lines(work / "two") == lines(one)


KILL = ["data.subset=300", "train.batch_size=32", "train.epochs=4", "optim.name=sgd", "optim.lr=0.05",
        "model.width=32", "model.dropout=0.2", "monitor.every=0", "train.progress=false"]
KILL_STEP = 14  # 9 updates an epoch: mid-way through epoch 2


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same 2-process run, never interrupted."""
    work = tmp_path_factory.mktemp("uninterrupted")
    result = torchrun(["-m", "trainlab", "train", *KILL, "--out", "run"], work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "run"


def assert_same_run(a: Path, b: Path) -> None:
    ca, cb = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (a, b))
    assert ca["step"] == cb["step"] == 4 * 9
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])  # bit for bit
    assert all(torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
               for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()))
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("seconds", "images_per_second")} for h in hs]  # noqa: E731
    assert strip(ca["history"]) == strip(cb["history"])


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_and_torchrun_resume_continues_exactly(uninterrupted, tmp_path):
    mark = tmp_path / "killed"
    env = {"KILL_RANK": "1", "KILL_STEP": str(KILL_STEP), "KILL_MARK": str(mark)}
    result = torchrun([str(HERE / "ddp_kill.py"), "train", *KILL, "--out", "run"], tmp_path, env=env)
    ended = time.time()
    assert mark.exists(), result.stderr[-3000:]
    assert result.returncode != 0
    assert ended - mark.stat().st_mtime < 30, "the job outlived its dead rank by more than 30 s"
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")  # intact, loadable
    assert last["epoch"] == 1 and last["step"] == 9
    assert not (tmp_path / "run" / "summary.json").exists()

    result = torchrun(["-m", "trainlab", "train", "--resume", "run"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(uninterrupted, tmp_path / "run")


@pytest.mark.slow
def test_torchrun_max_restarts_recovers_by_itself(uninterrupted, tmp_path):
    mark = tmp_path / "killed"
    env = {"KILL_RANK": "0", "KILL_STEP": str(KILL_STEP), "KILL_MARK": str(mark)}
    result = torchrun([str(HERE / "ddp_kill.py"), "train", *KILL, "--out", "run"], tmp_path, max_restarts=1, env=env)
    assert mark.exists() and result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout + result.stderr
    assert_same_run(uninterrupted, tmp_path / "run")


# --- search workers ------------------------------------------------------------------------------------


def test_search_workers_go_round_robin_over_gpus(monkeypatch):
    from trainlab.device import place_worker

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert [place_worker(i, 5) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert chosen == [0, 1, 2, 0, 1]


def test_search_workers_divide_the_cores_on_cpu(monkeypatch):
    from trainlab.device import place_worker

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    threads = torch.get_num_threads()
    try:
        assert place_worker(1, 3) == "cpu, 2 thread(s)" and torch.get_num_threads() == 2
        assert place_worker(0, 16) == "cpu, 1 thread(s)"
    finally:
        torch.set_num_threads(threads)
