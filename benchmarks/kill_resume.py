"""Soak test: a run killed N times at random moments, resumed each time, must end bit-identical
to the same run left alone; a 2-worker search on PostgreSQL with one worker killed repeatedly
must end with every trial recorded once, none lost, none duplicated.

    python benchmarks/kill_resume.py --kills 20                 # both parts
    python benchmarks/kill_resume.py --kills 5 --skip-search    # training only
    python benchmarks/kill_resume.py --postgres postgresql://postgres@127.0.0.1:55432/postgres

The run uses what makes resuming hard: EMA weights, dropout, batch norm, mixup (random per
batch), SGDR with snapshot checkpoints, and mid-epoch checkpoints when the installed trainlab
has ``train.checkpoint_every``. Each kill is SIGKILL or SIGINT (seeded choice), sent at a random
moment after training has started; SIGINT must exit 130 and SIGKILL leaves whatever it cut.
Compared at the end: every tensor of last.pt (weights, optimiser, EMA, RNG), best.pt, each
snapshot, summary.json's metrics, and metrics.jsonl without its timing fields.

Without --postgres a throw-away cluster is started from /usr/lib/postgresql/*/bin on 127.0.0.1
(as .ci/run does); the search part is skipped when there is none. Exit 0 when everything held.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMING = {"seconds", "images_per_second", "wall_seconds", "train_images_per_second", "peak_rss_mb"}
RUN = ["data.subset=400", "model.name=mlp", "model.width=32", "model.norm=batch", "model.dropout=0.2",
       "train.ema=0.99", "augment.names=[mixup]", "schedule.name=sgdr", "schedule.cycle_epochs=2",
       "train.snapshots=2", "train.epochs=6", "train.batch_size=16", "train.log_every=5",
       "train.progress=false", "monitor.every=50", "seed=3"]


def trainlab(*args) -> list[str]:
    return [sys.executable, "-m", "trainlab", *map(str, args)]


def run_args() -> list[str]:
    from trainlab.schema import SCHEMA

    return RUN + (["train.checkpoint_every=7"] if "train.checkpoint_every" in SCHEMA else [])


def started(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the line trainlab prints when training (re)starts; False if the process ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return False
        if line.startswith(("training ", "resuming ")):
            return True
    raise TimeoutError("trainlab did not start training in time")


# --- part 1: one run, killed N times ---------------------------------------------------------------


def reference_run(out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(trainlab("train", *run_args(), "--out", out), env=ENV, check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - t0


def killed_run(out: Path, kills: int, window: float, rng: random.Random) -> list[str]:
    """Train into ``out``, killing it ``kills`` times; returns what each kill was."""
    done = []
    while True:
        resume = (out / "checkpoints" / "last.pt").exists()
        cmd = trainlab("train", "--resume", out) if resume else trainlab("train", *run_args(), "--out", out)
        proc = subprocess.Popen(cmd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            if len(done) < kills and started(proc, 600):
                time.sleep(rng.uniform(0, window))
                sig = rng.choice([signal.SIGKILL, signal.SIGINT])
                if proc.poll() is None:
                    proc.send_signal(sig)
                    rest = proc.communicate(timeout=600)[0]
                    if proc.returncode == 0:  # it finished just before the signal
                        return done
                    expected = 130 if sig == signal.SIGINT else -signal.SIGKILL
                    if proc.returncode != expected:
                        raise RuntimeError(f"{sig.name}: exit {proc.returncode}, expected {expected}:\n{rest[-3000:]}")
                    done.append(sig.name)
                    print(f"  kill {len(done)}/{kills}: {sig.name} -> exit {proc.returncode}", flush=True)
                    continue
            rest = proc.communicate(timeout=1800)[0]
            if proc.returncode != 0:
                raise RuntimeError(f"resume failed with exit {proc.returncode}:\n{rest[-3000:]}")
            return done
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def same(a, b, where: str, problems: list[str]) -> None:
    """Exact equality of nested checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b)):
            problems.append(where)
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            if k in TIMING:
                continue
            same(a.get(k), b.get(k), f"{where}.{k}", problems)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]", problems)
    elif a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        problems.append(where)


def compare_runs(ref: Path, cut: Path) -> list[str]:
    problems: list[str] = []
    for ckpt in sorted(p.name for p in (ref / "checkpoints").glob("*.pt")):
        same(torch.load(ref / "checkpoints" / ckpt, weights_only=True),
             torch.load(cut / "checkpoints" / ckpt, weights_only=True), ckpt, problems)
    ref_summary, cut_summary = (json.loads((d / "summary.json").read_text()) for d in (ref, cut))
    same(ref_summary, cut_summary, "summary.json", problems)

    def records(d):
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
                for line in (d / "metrics.jsonl").read_text().splitlines()]

    same(records(ref), records(cut), "metrics.jsonl", problems)
    return problems


# --- part 2: a 2-worker search on PostgreSQL, one worker killed ---------------------------------------

SPACE = "optim.lr: loguniform(1e-3, 1e-1)\nmodel.dropout: uniform(0, 0.3)\n"
SEARCH = ["data.subset=300", "model.name=mlp", "model.width=16", "train.batch_size=32"]


def as_postgres(cmd: list[str]) -> list[str]:
    return ["su", "postgres", "-c", " ".join(cmd)] if os.geteuid() == 0 else cmd


def start_postgres() -> tuple[str, callable] | None:
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    if not pg_ctl:
        return None
    bin_dir, data = Path(pg_ctl[-1]).parent, tempfile.mkdtemp(prefix="trainlab-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_postgres([str(bin_dir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True, timeout=120)
    options = f"'-c listen_addresses=127.0.0.1 -p {port} -k {data}'"
    subprocess.run(as_postgres([str(bin_dir / "pg_ctl"), "-D", data, "-o", options, "-l", f"{data}/log", "-w", "start"]),
                   check=True, capture_output=True, timeout=120)

    def stop():
        subprocess.run(as_postgres([str(bin_dir / "pg_ctl"), "-D", data, "-m", "fast", "stop"]), capture_output=True,
                       timeout=120)
        shutil.rmtree(data, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def killed_search(url: str, work: Path, trials: int, kills: int, rng: random.Random) -> dict:
    """Worker a runs to the end; worker b is SIGKILLed ``kills`` times mid-search and restarted."""
    import optuna

    work.mkdir(parents=True, exist_ok=True)
    space = work / "space.yaml"
    space.write_text(SPACE)
    study = f"kill-resume-{uuid.uuid4().hex[:8]}"
    common = ["--space", space, "--trials", trials, "--epochs", "60", "--stages", "single", "--pruner", "none",
              "--storage", url, "--study", study, "--heartbeat", "1"]

    def worker(name):
        log = (work / f"{name}.log").open("a")  # kept with --keep: what each start of a worker said
        return subprocess.Popen(trainlab("search", *SEARCH, *common, "--out", work / name), env=ENV,
                                stdout=log, stderr=subprocess.STDOUT)

    a, b, done = worker("a"), None, 0
    try:
        while done < kills and a.poll() is None:
            before = set((work / "b" / "trials").glob("*"))
            b = worker("b")
            # Mid-trial where possible: once b has made a new trial's run directory (or after 20 s:
            # a worker that finds every slot held waits, and is killed waiting).
            deadline = time.monotonic() + 20
            while b.poll() is None and a.poll() is None and time.monotonic() < deadline:
                if set((work / "b" / "trials").glob("*")) - before:
                    break
                time.sleep(0.2)
            time.sleep(rng.uniform(0, 2))
            if b.poll() is None:
                b.kill()
                done += 1
                print(f"  search kill {done}/{kills}: SIGKILL worker b", flush=True)
            b.wait(timeout=60)
        b = worker("b")  # a last worker b that is left alone, so both end on a complete study
        for p in (a, b):
            p.wait(timeout=1800)
        codes = [a.returncode, b.returncode]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    from trainlab.search.study import with_installed_driver

    storage = optuna.storages.RDBStorage(with_installed_driver(url))
    everything = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finished = [t for t in everything if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("slot", -1) >= 0]
    slots = [t.user_attrs["slot"] for t in finished]
    trial_dirs = [p.name for name in ("a", "b") for p in (work / name / "trials").glob("*") if (p / "summary.json").exists()]
    return {"kills": done, "exit_codes": codes, "trials": trials, "complete": len(finished),
            "distinct_slots": len(set(slots)), "failed_by_kill": sum(t.state == optuna.trial.TrialState.FAIL for t in everything),
            "completed_trial_dirs": len(trial_dirs), "distinct_trial_dirs": len(set(trial_dirs))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="kills of the training run (default 20)")
    ap.add_argument("--search-kills", type=int, default=6, help="kills of search worker b (default 6)")
    ap.add_argument("--search-trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--postgres", default=os.environ.get("TRAINLAB_TEST_POSTGRES"), help="database URL")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--skip-train", action="store_true", help="only the search part")
    ap.add_argument("--keep", help="keep the run directories here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.keep or tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    try:
        ok &= args.skip_train or train_part(work, args.kills, rng)
        if not args.skip_search:
            ok &= search_part(work, args, rng)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def train_part(work: Path, kills: int, rng: random.Random) -> bool:
    print(f"reference run: {' '.join(run_args())}", flush=True)
    wall = reference_run(work / "ref")
    epochs = json.loads((work / "ref" / "summary.json").read_text())["epochs"]
    window = wall / epochs  # about an epoch of training (start-up included) between start and kill
    print(f"  {wall:.1f}s for {epochs} epochs (busy shared machine); kill window 0..{window:.1f}s after start")
    t0 = time.perf_counter()
    kinds = killed_run(work / "cut", kills, window, rng)
    problems = compare_runs(work / "ref", work / "cut")
    print(f"training: survived {len(kinds)} kills ({kinds.count('SIGKILL')} SIGKILL, {kinds.count('SIGINT')} "
          f"SIGINT) in {time.perf_counter() - t0:.0f}s; final weights and metrics "
          f"{'bit-identical' if not problems else 'DIFFER: ' + ', '.join(problems[:10])}")
    if len(kinds) < kills:
        print(f"  only {len(kinds)} of {kills} kills landed before the run finished")
    return not problems and len(kinds) == kills


def search_part(work: Path, args, rng: random.Random) -> bool:
    url, stop = args.postgres, None
    if not url:
        started_pg = start_postgres()
        url, stop = started_pg if started_pg else (None, None)
    if url is None:
        print("search: skipped (no PostgreSQL: pass --postgres URL or install the postgresql package)")
        return True
    try:
        r = killed_search(url, work / "search", args.search_trials, args.search_kills, rng)
    finally:
        if stop:
            stop()
    if r["kills"] < args.search_kills:
        print(f"  only {r['kills']} of {args.search_kills} kills landed before worker a finished the study")
    good = (r["kills"] == args.search_kills and r["exit_codes"] == [0, 0] and r["complete"] == r["distinct_slots"] == r["trials"]
            and r["completed_trial_dirs"] == r["distinct_trial_dirs"] == r["trials"])
    print(f"search: {r['kills']} kills of worker b; {r['complete']} COMPLETE trials in {r['distinct_slots']} distinct "
          f"slots of {r['trials']}, {r['completed_trial_dirs']} finished trial directories (FAIL by kill: "
          f"{r['failed_by_kill']}); exit codes {r['exit_codes']}: {'no trial lost or duplicated' if good else 'PROBLEM'}")
    return good


if __name__ == "__main__":
    sys.exit(main())
