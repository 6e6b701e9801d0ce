"""Time to accuracy and peak memory: trainlab's example config against a plain PyTorch loop.

Both run side by side in one invocation, each pinned to its own core (``os.sched_setaffinity``)
with one thread (``OMP_NUM_THREADS=1``), so they see the same machine at the same time:

- trainlab: ``trainlab train -c examples/<dataset>.yaml train.epochs=E`` for E = 1, 2, ... until
  every target accuracy is reached (its time to a target is the wall time of the shortest such
  run: with a one-cycle schedule a shorter setting is a different, complete run, not a prefix of
  the long one), then the config's own ``train.epochs`` for the final accuracy;
- plain: ``benchmarks/plain_loop.py`` (PyTorch's MNIST example), test accuracy after every epoch;
  its time to a target is the first epoch end at or above it.

Wall times count the whole process (start-up, data loading, evaluation, trainlab's report); peak
RSS is each process's own ``ru_maxrss`` (from ``os.wait4``).

    python benchmarks/time_to_accuracy.py --data-root ../shared/data                     # MNIST, full
    python benchmarks/time_to_accuracy.py --data-root ../shared/data --dataset fashion-mnist
    python benchmarks/time_to_accuracy.py --data-root ../shared/data --plain-epochs 1 \\
        --trainlab-epochs 1 --final-epochs 1                                            # a quick check

Needs a quiet machine for meaningful times (two free cores); on a shared one say so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = {"mnist": [0.99], "fashion-mnist": [0.91, 0.92, 0.93]}
PLAIN_EPOCHS = 14  # the PyTorch example's default


def pinned(core: int):
    """preexec_fn for a child: run on ``core`` only (set before the child imports torch)."""
    return lambda: os.sched_setaffinity(0, {core})


def single_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def wait(proc: subprocess.Popen) -> tuple[int, float]:
    """Exit code and peak RSS in MB of a finished child (``os.wait4``'s rusage is the child's own)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def run_plain(args, core: int, result: dict) -> None:
    cmd = [sys.executable, str(HERE / "plain_loop.py"), "--data-root", args.data_root, "--dataset", args.dataset,
           "--epochs", str(args.plain_epochs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=single_thread_env(), preexec_fn=pinned(core))
    result["epochs"] = [json.loads(line) for line in proc.stdout if line.startswith("{")]
    result["exit"], result["peak_rss_mb"] = wait(proc)


def run_trainlab(args, core: int, result: dict) -> None:
    config = ROOT / "examples" / f"{args.dataset}.yaml"
    final = args.final_epochs or yaml.safe_load(config.read_text())["train"]["epochs"]
    result["runs"] = []

    def train(epochs: int) -> dict:
        out = Path(args.out) / f"trainlab-{args.dataset}-e{epochs}"
        cmd = [sys.executable, "-m", "trainlab", "train", "-c", str(config), f"data.root={args.data_root}",
               f"train.epochs={epochs}", "train.progress=false", "--out", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=single_thread_env(), preexec_fn=pinned(core))
        code, rss = wait(proc)
        wall = time.perf_counter() - t0
        summary = json.loads((out / "summary.json").read_text()) if code == 0 else {}
        run = {"epochs": epochs, "seconds": wall, "test_acc": summary.get("test_acc"), "peak_rss_mb": rss, "exit": code}
        result["runs"].append(run)
        return run

    for epochs in args.trainlab_epochs:
        run = train(epochs)
        if run["test_acc"] is not None and run["test_acc"] >= max(args.targets):
            break
    result["final"] = next((r for r in result["runs"] if r["epochs"] == final), None) or train(final)


def first_reaching(points: list[tuple[str, float, float]], target: float):
    """(label, seconds, acc) of the first point at or above ``target``, else None."""
    return next((p for p in points if p[2] is not None and p[2] >= target), None)


def report(args, plain: dict, lab: dict) -> dict:
    lab_points = [(f"train.epochs={r['epochs']}", r["seconds"], r["test_acc"]) for r in lab["runs"]]
    plain_points = [(f"epoch {e['epoch']}", e["seconds"], e["test_acc"]) for e in plain["epochs"]]
    rows = {}
    print(f"\n## {args.dataset}: trainlab (examples/{args.dataset}.yaml) vs the plain PyTorch loop, "
          "one core and one thread each, side by side\n")
    print("| | trainlab | plain PyTorch loop | trainlab / plain |")
    print("|---|---|---|---|")
    for target in args.targets:
        a, b = first_reaching(lab_points, target), first_reaching(plain_points, target)
        cell = lambda p: f"{p[1]:.0f} s ({p[0]}, {100 * p[2]:.2f}%)" if p else "not reached"  # noqa: E731
        ratio = f"{a[1] / b[1]:.2f}" if a and b else "–"
        print(f"| time to {100 * target:.1f}% test accuracy | {cell(a)} | {cell(b)} | {ratio} |")
        rows[f"time_to_{target}"] = {"trainlab": a, "plain": b}
    fin, last = lab["final"], plain["epochs"][-1] if plain["epochs"] else None
    print(f"| final test accuracy | {100 * fin['test_acc']:.2f}% ({fin['epochs']} epochs) | "
          + (f"{100 * last['test_acc']:.2f}% ({last['epoch']} epochs)" if last else "–") + " | |")
    print(f"| final wall time | {fin['seconds']:.0f} s | " + (f"{last['seconds']:.0f} s" if last else "–")
          + (f" | {fin['seconds'] / last['seconds']:.2f} |" if last else " | |"))
    lab_peak = max(r["peak_rss_mb"] for r in lab["runs"] + [fin])
    print(f"| peak RSS | {fin['peak_rss_mb']:.0f} MB (final run; {lab_peak:.0f} MB the largest of its "
          f"{len(lab['runs'])} run(s)) | {plain['peak_rss_mb']:.0f} MB | {lab_peak / plain['peak_rss_mb']:.2f} |")
    print("\ntrainlab runs: " + ", ".join(f"train.epochs={r['epochs']}: {100 * (r['test_acc'] or 0):.2f}% in "
                                          f"{r['seconds']:.0f} s, {r['peak_rss_mb']:.0f} MB" for r in lab["runs"]))
    print("plain loop epochs: " + ", ".join(f"{e['epoch']}: {100 * e['test_acc']:.2f}% at {e['seconds']:.0f} s"
                                            for e in plain["epochs"]))
    return {"dataset": args.dataset, "targets": args.targets, "trainlab": lab, "plain": plain, "rows": rows,
            "load_average_at_end": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--dataset", default="mnist", choices=sorted(TARGETS))
    ap.add_argument("--targets", type=lambda s: [float(x) for x in s.split(",")], default=None,
                    help="test accuracies to time, e.g. 0.99 (default: 0.99 MNIST, 0.91,0.92,0.93 Fashion-MNIST)")
    ap.add_argument("--plain-epochs", type=int, default=PLAIN_EPOCHS)
    ap.add_argument("--trainlab-epochs", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="train.epochs settings tried in order until every target is reached (default 1..final)")
    ap.add_argument("--final-epochs", type=int, default=None, help="default: the example config's train.epochs")
    ap.add_argument("--out", default=None, help="where trainlab's run directories go (default: a temporary folder)")
    args = ap.parse_args()
    args.data_root = str(Path(args.data_root).resolve())
    args.targets = args.targets or TARGETS[args.dataset]
    args.out = args.out or tempfile.mkdtemp(prefix="time-to-accuracy-")
    config_epochs = yaml.safe_load((ROOT / "examples" / f"{args.dataset}.yaml").read_text())["train"]["epochs"]
    args.trainlab_epochs = args.trainlab_epochs or list(range(1, (args.final_epochs or config_epochs) + 1))
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("warning: one core available: both sides share it, and the times mean little", file=sys.stderr)
    lab_core, plain_core = cores[0], cores[-1]
    plain, lab = {}, {}
    sides = [threading.Thread(target=run_trainlab, args=(args, lab_core, lab)),
             threading.Thread(target=run_plain, args=(args, plain_core, plain))]
    print(f"trainlab on core {lab_core}, plain loop on core {plain_core}; load average {os.getloadavg()[0]:.1f}; "
          f"trainlab runs in {args.out}", flush=True)
    for t in sides:
        t.start()
    for t in sides:
        t.join()
    if plain.get("exit") or any(r["exit"] for r in lab.get("runs", [])):
        sys.exit(f"a side failed: plain exit {plain.get('exit')}, trainlab exits {[r['exit'] for r in lab['runs']]}")
    result = report(args, plain, lab)
    (Path(args.out) / f"time_to_accuracy-{args.dataset}.json").write_text(json.dumps(result, indent=1))
    print(f"\nload average at the end {result['load_average_at_end'][0]:.1f} (1 min); "
          f"results in {args.out}/time_to_accuracy-{args.dataset}.json")


if __name__ == "__main__":
    main()
