"""Many workers on one study: a real PostgreSQL server shared by two processes, and a worker
killed with SIGKILL in the middle of a trial, then resumed.

PostgreSQL comes from $TRAINLAB_TEST_POSTGRES (set by .ci/run), else a throw-away cluster is
started here from the Debian server binaries, on 127.0.0.1 only; the test is skipped only when
neither exists.
"""
import csv
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.slow  # every test runs several search worker processes (and a postgres)

TINY = ["data.subset=300", "model.width=16", "train.batch_size=32"]
SPACE = "optim.lr: loguniform(1e-3, 1e-1)\nmodel.dropout: uniform(0, 0.3)\n"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models on a shared 2-core machine


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return cmd
    return ["su", "postgres", "-c", " ".join(cmd)]


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get("TRAINLAB_TEST_POSTGRES")
    if url:
        yield url
        return
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    if not pg_ctl:
        pytest.skip("no PostgreSQL server: TRAINLAB_TEST_POSTGRES is unset and no pg_ctl under "
                    "/usr/lib/postgresql/*/bin (install the Debian package `postgresql`; .ci/run does)")
    bin_dir = Path(pg_ctl[-1]).parent
    data = tempfile.mkdtemp(prefix="trainlab-pg-")  # not under pytest's 0700 tmp: the postgres user must enter it
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(as_postgres([str(bin_dir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    options = f"'-c listen_addresses=127.0.0.1 -p {port} -k {data}'"
    subprocess.run(as_postgres([str(bin_dir / "pg_ctl"), "-D", data, "-o", options, "-l", f"{data}/log", "-w", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres([str(bin_dir / "pg_ctl"), "-D", data, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def search_cmd(space, out, *extra):
    return [sys.executable, "-m", "trainlab", "search", *TINY, "--space", str(space), "--out", str(out), *extra]


def rows(out):
    with (Path(out) / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def trial_numbers(out) -> set[int]:
    folder = Path(out) / "trials"
    return {int(p.name) for p in folder.iterdir()} if folder.exists() else set()


def test_two_workers_share_one_postgres_study_and_record_each_trial_once(tmp_path, postgres_url):
    """Two processes (as on two machines: each its own --out) fill one study of 5 trials."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    study = f"two-workers-{uuid.uuid4().hex[:8]}"
    common = ["--trials", "5", "--epochs", "1", "--stages", "single", "--pruner", "none",
              "--storage", postgres_url, "--study", study]
    procs = [subprocess.Popen(search_cmd(space, tmp_path / name, *common), env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for name in ("a", "b")]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs

    table = rows(tmp_path / "a")
    assert rows(tmp_path / "b") == table  # both write the whole study
    numbers = [int(r["number"]) for r in table]
    assert len(numbers) == len(set(numbers)) == 5 and all(r["state"] == "COMPLETE" for r in table)
    a, b = trial_numbers(tmp_path / "a"), trial_numbers(tmp_path / "b")
    assert not a & b and a | b == set(numbers), (a, b, numbers)  # each trial trained once, by one worker
    assert len({(r["optim.lr"], r["model.dropout"]) for r in table}) == 5  # workers never repeat a draw


def test_killed_worker_trial_is_failed_and_the_search_completes_on_resume(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "search"
    # Trials of ~300 updates (seconds, not milliseconds) so that the kill lands mid-training.
    cmd = search_cmd(space, out, "--trials", "2", "--epochs", "30", "--stages", "single", "--pruner", "none",
                     "--heartbeat", "1")
    worker = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mid_trial = out / "trials" / "1" / "metrics.jsonl"  # trial 1 has logged its first training step
    deadline = time.time() + 240
    while not mid_trial.exists() and worker.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert worker.poll() is None, "the worker finished before it could be killed"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert not (out / "trials" / "1" / "summary.json").exists()

    resumed = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    states = {int(r["number"]): r["state"] for r in rows(out)}
    assert states[0] == "COMPLETE" and states[1] == "FAIL"  # the killed trial: recorded, not counted
    assert sum(s == "COMPLETE" for s in states.values()) == 2
    assert sorted(states) == [0, 1, 2]  # trial 2 took the killed trial's slot
