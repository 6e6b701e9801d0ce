"""Check trainlab's GPU path in one command (SPEC §9). Nothing to set up beyond trainlab itself.

    python benchmarks/gpu_check.py                            # MNIST from $TRAINLAB_DATA, else downloaded
    python benchmarks/gpu_check.py --data-root ../shared/data
    python benchmarks/gpu_check.py --full-grid                # also compile=on without channels-last

On a CUDA machine:
  1. images/s and peak device memory (torch.cuda.max_memory_allocated) for fp32 / bf16 / fp16 ×
     torch.compile off/on × channels-last, for examples/mnist.yaml's conv net (1×28×28) and a
     ResNet-20 on CIFAR-sized synthetic data (3×32×32), each step through trainlab's own
     Trainer.train_step (autocast, GradScaler, compiled forward), timed between two
     torch.cuda.synchronize() calls after warm-up steps (compilation happens in the warm-up).
     A setting the GPU cannot honour (bf16 before Ampere) is shown as refused, not failed.
  2. trains examples/mnist.yaml with the CLI (train.amp=auto) and requires test accuracy >= 0.990;
     prints the wall time.
  3. kill-and-resume exactness: a run killed with SIGKILL mid-training and resumed with --resume
     must end with weights bitwise equal to an uninterrupted run (train.deterministic=true), in
     fp32 and in fp16 (the GradScaler's state is resumed too).
  4. with two or more GPUs: the 2-process NCCL run (torchrun --nproc_per_node=2 -m trainlab train),
     whose summary.json must say world_size 2; and tests/test_distributed.py if it is there.
It exits 1 if anything fails. Budget: under 8 minutes on one modern GPU (an estimate: the script
was written and its CPU subset run on a machine without a GPU).

Without CUDA it says so, runs a CPU subset (the mnist conv net's table for fp32/bf16, channels-last
and one compiled row; kill-and-resume on digits in fp32 and bf16) and exits 0 unless that fails.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import build_classifier, make_loss
from trainlab.config import load_config
from trainlab.device import autocast_dtype, check_compile, peak_memory, reset_peak_memory
from trainlab.errors import UserError
from trainlab.optim import build_optimizer
from trainlab.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
MNIST_YAML = ROOT / "examples" / "mnist.yaml"
QUIET = ["train.progress=false", "monitor.every=0", "monitor.plots=false"]
failures: list[str] = []


def fail(what: str) -> None:
    failures.append(what)
    print(f"  FAIL: {what}", flush=True)


# --- 1. throughput and memory ------------------------------------------------------------------
@dataclass
class Bench:
    """A model to time: its config (file + overrides) and the shape of its synthetic images."""

    name: str
    config: Path | None
    overrides: list[str]
    input_shape: tuple[int, int, int]
    batch_size: int


BENCHES = [
    Bench("mnist.yaml convnet", MNIST_YAML, [], (1, 28, 28), 128),
    Bench("resnet-20", None, ["model.name=resnet", "model.depth=20", "model.norm=batch", "optim.name=momentum",
                              "optim.lr=0.1", "preprocess.name=channel_mean"], (3, 32, 32), 128),
]


def time_steps(bench: Bench, device: torch.device, amp: str, compile: bool, channels_last: bool,
               warmup: int, steps: int) -> tuple[float, float | None]:
    """(images/s, peak device MiB) of ``steps`` training steps after ``warmup`` untimed ones."""
    cfg = load_config(bench.config, bench.overrides + [f"device={device.type}"])
    torch.manual_seed(0)
    # Eight distinct batches on the device, cycled: the in-memory loader's situation.
    x = torch.rand(8 * bench.batch_size, *bench.input_shape, device=device)
    y = torch.randint(0, 10, (len(x),), device=device)
    model = build_classifier(cfg, bench.input_shape, 10, x_train=x).to(device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    trainer = Trainer(model, build_optimizer(model, cfg), None, None, make_loss(cfg), lambda m: {}, epochs=1,
                      amp=autocast_dtype(amp, device), device=device, compile=compile)
    model.train()
    batches = [(x[i:i + bench.batch_size], y[i:i + bench.batch_size]) for i in range(0, len(x), bench.batch_size)]

    def run(n):
        for i in range(n):
            loss, _ = trainer.train_step(*batches[i % len(batches)])
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss {float(loss)}")

    run(warmup)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels are queued asynchronously: wait for them before reading the clock
    seconds = time.perf_counter() - t0
    return steps * bench.batch_size / seconds, peak_memory(device).get("peak_device_memory_mb")


def grid(device: torch.device, full: bool) -> list[tuple[Bench, str, bool, bool]]:
    """The rows to time. On CUDA: every precision × compile off/on with channels-last on (what
    train.channels_last=auto picks for conv nets there), plus channels-last off without compile;
    --full-grid adds compile on × channels-last off. On the CPU: a tiny subset, one compiled row
    (torch.compile's C++ build takes tens of seconds per graph on a CPU)."""
    if device.type != "cuda":
        bench = BENCHES[0]
        return [(bench, amp, False, False) for amp in ("off", "bf16", "fp16")] + [
            (bench, "off", False, True), (bench, "off", True, False)]
    rows = []
    for bench in BENCHES:
        for amp in ("off", "bf16", "fp16"):
            for compile in (False, True):
                for channels_last in (True, False):
                    if channels_last or not compile or full:
                        rows.append((bench, amp, compile, channels_last))
    return rows


def throughput_table(device: torch.device, full: bool) -> None:
    warmup, steps = (10, 50) if device.type == "cuda" else (3, 10)
    print(f"\n1. images/s and peak device memory ({steps} timed steps after {warmup} warm-up steps each; "
          f"batch {BENCHES[0].batch_size}; {device})", flush=True)
    header = f"{'model':<20} {'precision':<9} {'compile':<8} {'channels_last':<14} {'images/s':>10} {'peak MiB':>9}"
    print(header + "\n" + "-" * len(header), flush=True)
    for bench, amp, compile, channels_last in grid(device, full):
        label = f"{bench.name:<20} {'fp32' if amp == 'off' else amp:<9} {'on' if compile else 'off':<8} {'on' if channels_last else 'off':<14}"
        try:
            autocast_dtype(amp, device)
            if compile:
                check_compile("on", device)
        except UserError as e:
            print(f"{label} refused: {e}", flush=True)
            continue
        try:
            t0 = time.perf_counter()
            rate, peak = time_steps(bench, device, amp, compile, channels_last, warmup, steps)
        except Exception as e:  # one broken setting must not hide the others
            print(label, flush=True)
            fail(f"{bench.name} {amp} compile={compile} channels_last={channels_last}: {type(e).__name__}: {str(e)[:300]}")
            continue
        memory = f"{peak:9.0f}" if peak is not None else f"{'n/a':>9}"
        note = f"   ({time.perf_counter() - t0:.0f} s with compilation)" if compile else ""
        print(f"{label} {rate:10.0f} {memory}{note}", flush=True)


# --- the CLI, as a user runs it ----------------------------------------------------------------
def trainlab(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainlab", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# --- 2. MNIST to >= 99.0% ------------------------------------------------------------------------
def mnist_accuracy(data_args: list[str], work: Path) -> None:
    print("\n2. examples/mnist.yaml on the GPU (train.amp=auto, cudnn.benchmark auto)", flush=True)
    t0 = time.perf_counter()
    result = trainlab("train", "-c", str(MNIST_YAML), *data_args, "device=cuda", *QUIET, "--out", str(work / "mnist"),
                      timeout=600)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        return fail(f"mnist training exited {result.returncode}: {result.stderr[-800:]}")
    s = summary_of(work / "mnist")
    print(f"  test_acc {s['test_acc']:.4f}  wall {wall:.1f} s (run's own wall_seconds {s['wall_seconds']:.1f})  "
          f"{s['train_images_per_second']:.0f} img/s  amp {s['amp']}  peak device {s.get('peak_device_memory_mb')} MiB  "
          f"peak RSS {s['peak_rss_mb']} MiB", flush=True)
    if s["test_acc"] < 0.990:
        fail(f"mnist test accuracy {s['test_acc']:.4f} < 0.990")


# --- 3. kill and resume ----------------------------------------------------------------------------
def epochs_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip() and '"kind": "epoch"' in line)


def kill_and_resume(label: str, args: list[str], work: Path, timeout: float = 600) -> None:
    """An uninterrupted run; the same run killed (SIGKILL) once its first epoch is checkpointed,
    then continued with --resume: the final weights must be bitwise equal. The second epoch's
    record is the signal: the checkpointer writes last.pt after the epoch is logged."""
    straight, killed = work / f"{label}-straight", work / f"{label}-killed"
    result = trainlab("train", *args, "--out", str(straight), timeout=timeout)
    if result.returncode != 0:
        return fail(f"{label}: uninterrupted run exited {result.returncode}: {result.stderr[-800:]}")
    log = open(work / f"{label}-killed.stderr", "w+")  # a file, not a pipe: a chatty run can never block on it
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "train", *args, "--out", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.monotonic() + timeout
    while epochs_logged(killed) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        return fail(f"{label}: the run ended (exit {proc.returncode}) before it could be killed after its first epoch; "
                    f"give it more epochs. {(work / f'{label}-killed.stderr').read_text()[-500:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    log.close()
    epoch = load_checkpoint(killed / "checkpoints" / "last.pt")["epoch"]
    result = trainlab("train", "--resume", str(killed), timeout=timeout)
    if result.returncode != 0:
        return fail(f"{label}: --resume exited {result.returncode}: {result.stderr[-800:]}")
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, killed))
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    same_acc = summary_of(straight)["test_acc"] == summary_of(killed)["test_acc"]
    print(f"  {label}: killed after epoch {epoch} of {a['epoch']}, resumed: "
          f"{'weights bitwise equal' if not differ else f'{len(differ)} tensors differ, e.g. {differ[0]}'}; "
          f"test_acc {'equal' if same_acc else 'differs'}", flush=True)
    if differ or not same_acc or a["step"] != b["step"]:
        fail(f"{label}: the resumed run differs from the uninterrupted one")


# --- 4. two processes over NCCL -------------------------------------------------------------------
def nccl_check(data_args: list[str], work: Path) -> None:
    gpus = torch.cuda.device_count()
    print(f"\n4. 2-process NCCL run ({gpus} GPUs visible)", flush=True)
    if gpus < 2:
        print("  skipped: needs two GPUs", flush=True)
        return
    out = work / "nccl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "trainlab", "train",
           "-c", str(MNIST_YAML), *data_args, "device=cuda", "data.subset=12000", "train.epochs=2", *QUIET, "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if result.returncode != 0:
        return fail(f"torchrun --nproc_per_node=2 exited {result.returncode}: {result.stderr[-800:]}")
    s = summary_of(out)
    print(f"  world_size {s.get('world_size')}  test_acc {s['test_acc']:.4f}  {s['train_images_per_second']:.0f} img/s", flush=True)
    if s.get("world_size") != 2:
        fail(f"the torchrun run's summary.json says world_size {s.get('world_size')!r}, expected 2")
    tests = ROOT / "tests" / "test_distributed.py"
    if tests.exists():  # the distributed work's own multi-process tests, on this machine
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", str(tests)], capture_output=True, text=True,
                                timeout=900, cwd=ROOT)
        print(f"  {tests.relative_to(ROOT)}: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.returncode}",
              flush=True)
        if result.returncode != 0:
            fail(f"{tests.relative_to(ROOT)} failed: {result.stdout[-800:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", help="folder holding mnist/ (default: $TRAINLAB_DATA, else ~/.cache/trainlab, "
                                            "downloading MNIST if it is missing)")
    parser.add_argument("--full-grid", action="store_true", help="also time compile=on without channels-last")
    parser.add_argument("--keep", metavar="DIR", help="write the run directories here (default: a temporary directory)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    started = time.perf_counter()
    if cuda:
        major, minor = torch.cuda.get_device_capability()
        print(f"CUDA: {torch.cuda.device_count()} GPU(s); {torch.cuda.get_device_name()} (compute capability "
              f"{major}.{minor}); torch {torch.__version__}", flush=True)
    else:
        print(f"No CUDA device here (torch {torch.__version__}): running the CPU subset only; "
              "run this script on a CUDA machine for the GPU checks.", flush=True)
    data_args = [f"data.root={Path(args.data_root).resolve()}"] if args.data_root else []
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        throughput_table(device, args.full_grid)
        if cuda:
            mnist_accuracy(data_args, work)
        else:
            print("\n2. MNIST to >= 99.0%: skipped (no CUDA; examples/mnist.yaml takes ~7 minutes on 2 CPU cores)", flush=True)
        print("\n3. kill-and-resume exactness", flush=True)
        if cuda:
            base = ["-c", str(MNIST_YAML), *data_args, "device=cuda", "data.subset=6000", "train.epochs=3",
                    "train.deterministic=true", *QUIET]
            for amp in ("off", "fp16"):
                kill_and_resume(f"mnist-subset-{amp}", base + [f"train.amp={amp}"], work)
        else:
            base = ["device=cpu", "model.width=32", "train.epochs=8", *QUIET]
            for amp in ("off", "bf16"):
                kill_and_resume(f"digits-{amp}", base + [f"train.amp={amp}"], work)
        if cuda:
            nccl_check(data_args, work)
        else:
            print("\n4. 2-process NCCL run: skipped (no CUDA)", flush=True)
    print(f"\n{'FAILED' if failures else 'passed'} in {time.perf_counter() - started:.0f} s"
          + "".join(f"\n  - {f}" for f in failures), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
