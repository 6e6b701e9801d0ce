"""Trainer overhead: the same model, data, optimiser, schedule and number of steps through
trainlab's Trainer (with the callbacks `trainlab train` installs: divergence guard, metrics
logger + TensorBoard, progress bar, checkpointer, monitors at their default frequency) and
through a plain hand-written PyTorch loop, back to back in one process. Prints both times and
their ratio, twice: the trainer with its standard callbacks only (the loop's own overhead), and
with the monitors at their default frequency as well (a feature the plain loop does not have;
benchmarks/monitor_overhead.py measures it on its own). Evaluation is excluded from both.

    python benchmarks/overhead.py            # mlp on digits-sized random data
    python benchmarks/overhead.py --model convnet --steps 300
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from trainlab.classifier import build_classifier, make_loss
from trainlab.config import load_config
from trainlab.run import train_run


def plain_loop(cfg, x, y, steps: int) -> float:
    """What a careful user would write by hand: tensors on device, random batches, AdamW-like step."""
    from trainlab.optim import build_optimizer
    from trainlab.schedules import build_scheduler

    torch.manual_seed(cfg["seed"])
    model = build_classifier(cfg, tuple(x.shape[1:]), 10, x_train=x)
    opt = build_optimizer(model, cfg)
    bs = cfg["train"]["batch_size"]
    per_epoch = (len(x) + bs - 1) // bs
    sched = build_scheduler(opt, cfg, per_epoch)
    loss_fn = make_loss(cfg)
    model.train()
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        perm = torch.randperm(len(x))
        for i in range(0, len(x), bs):
            idx = perm[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - t0


def trainlab_loop(cfg, data, steps: int) -> float:
    """Pure training seconds of a real `train_run` (the per-epoch `seconds` it logs: every step
    and every per-step callback, but not the per-epoch evaluation)."""
    import json
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        train_run(cfg, Path(d) / "run", data=data, say=lambda m: None)
        records = [json.loads(l) for l in (Path(d) / "run" / "metrics.jsonl").read_text().splitlines()]
        return sum(r["seconds"] for r in records if r["kind"] == "epoch")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--n", type=int, default=12800)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from trainlab.data import DataBundle

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (args.n,), generator=g)
    bs = 128
    epochs = max(1, args.steps * bs // args.n)
    base = [f"model.name={args.model}", f"train.batch_size={bs}", f"train.epochs={epochs}",
            f"train.max_steps={args.steps}", "data.val_fraction=0", "train.progress=true"]
    empty = x[:0]
    data = DataBundle("random", x, y, empty, y[:0], None, None, [str(i) for i in range(10)])
    for label, extra in (("trainer", ["monitor.every=0"]), ("trainer + default monitors", [])):
        cfg = load_config(None, base + extra)
        ratios = []
        for r in range(args.repeats):
            plain = plain_loop(cfg, x, y, args.steps)
            ours = trainlab_loop(cfg, data, args.steps)
            ratios.append(ours / plain)
            print(f"{label}, repeat {r}: plain loop {plain:.2f}s   trainlab {ours:.2f}s   ratio {ours / plain:.3f}",
                  file=sys.stderr)
        ratios.sort()
        print(f"{label}: median ratio trainlab / plain = {ratios[len(ratios) // 2]:.3f}  "
              f"({args.model}, {args.steps} steps, batch {bs}, {args.repeats} repeats)")


if __name__ == "__main__":
    main()
