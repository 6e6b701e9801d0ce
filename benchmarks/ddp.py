"""Data-parallel scaling on this machine: 1 process x 1 thread against 2 processes x 1 thread
(gloo, `trainlab train --nproc 2`), the same config (examples/mnist.yaml's model), the same global
batch and epochs. Prints training images/second of each (summary.json's
train_images_per_second: training steps only, no evaluation or start-up), their ratio (goal
>= 1.7 on 2 cores), and both test accuracies (goal: within 0.3 points).

Then, with --eval, the evaluation question: validation sharded over the 2 ranks and reduced,
against rank 0 evaluating alone while the other waits (the same 6,000 MNIST images).

    python benchmarks/ddp.py --root /work/shared/data                       # the full 5 epochs
    python benchmarks/ddp.py --root /work/shared/data train.epochs=1 data.subset=12000   # quick
    python benchmarks/ddp.py --root /work/shared/data --eval
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(nproc: int, overrides: list[str], out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 1 thread per process in both runs
    cmd = [sys.executable, "-m", "trainlab", "train", "--nproc", str(nproc), "-c", str(ROOT / "examples" / "mnist.yaml"),
           *overrides, "train.progress=false", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, timeout=7200, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    summary["launch_wall_seconds"] = time.perf_counter() - t0
    return summary


def eval_worker(overrides: list[str]) -> None:
    """Under torchrun: time validation sharded over the ranks against rank 0 alone."""
    import torch
    import torch.distributed as dist

    from trainlab.config import load_config
    from trainlab.distributed import init_from_env
    from trainlab.evaluate import evaluate
    from trainlab.run import prepare

    cfg = load_config(ROOT / "examples" / "mnist.yaml", overrides)
    dp = init_from_env("cpu", 600)
    p = prepare(cfg, say=lambda m: None, data_parallel=dp)
    x, y, c, bs = p.data.val_x, p.data.val_y, p.data.num_classes, cfg["train"]["eval_batch_size"]
    timings = {}
    for name in ("sharded", "rank0", "sharded", "rank0"):  # twice each; the second is reported
        dist.barrier()
        t0 = time.perf_counter()
        if name == "sharded":
            acc = dp.evaluate(p.model, x, y, c, bs)["acc"]
        else:
            acc = evaluate(p.model, x, y, c, bs)["acc"] if dp.is_main else None
            dist.barrier()  # the other rank waits for rank 0, as it would before the next epoch
        timings[name] = time.perf_counter() - t0
    if dp.is_main:
        print(f"validation of {len(y)} images, 2 processes x {torch.get_num_threads()} thread: "
              f"sharded + all-reduce {timings['sharded']:.2f} s, rank 0 alone {timings['rank0']:.2f} s "
              f"(ratio {timings['rank0'] / timings['sharded']:.2f}); acc {acc}")
    dp.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.environ.get("TRAINLAB_DATA", "/work/shared/data"), help="data root with mnist/")
    ap.add_argument("--eval", action="store_true", help="time sharded against rank-0 validation instead")
    ap.add_argument("--eval-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="config overrides for both runs, e.g. train.epochs=1")
    args = ap.parse_args()
    overrides = [f"data.root={args.root}", *args.overrides]
    if args.eval_worker:
        return eval_worker(overrides)
    if args.eval:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        __file__, "--eval-worker", *overrides], check=True, env=env, timeout=3600)
        return
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        one = train(1, overrides, Path(d) / "one")
        two = train(2, overrides, Path(d) / "two")
    rate1, rate2 = one["train_images_per_second"], two["train_images_per_second"]
    print(f"MNIST, examples/mnist.yaml's model, {one['epochs']} epoch(s), {one['steps']} steps of global batch "
          f"{json.dumps(overrides)}; load average at start {load:.1f} on {os.cpu_count()} cores")
    for name, s in (("1 process  x 1 thread ", one), ("2 processes x 1 thread", two)):
        print(f"  {name}: {s['train_images_per_second']:8.0f} images/s  test_acc {s['test_acc']:.4f}  "
              f"wall {s['wall_seconds']:.0f} s (launch to exit {s['launch_wall_seconds']:.0f} s)  world_size {s['world_size']}")
    print(f"  ratio {rate2 / rate1:.2f} (goal >= 1.7); test accuracy difference "
          f"{100 * abs(two['test_acc'] - one['test_acc']):.2f} points (goal <= 0.3)")


if __name__ == "__main__":
    main()
