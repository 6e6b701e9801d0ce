"""Ensembles on Fashion-MNIST (issue 6, must-show 1): five independently trained small models
against the best of them, a snapshot ensemble of one SGDR run against that run's final weights,
and Polyak/EMA weights against raw weights. Prints Markdown tables (docs/ensembles.md has them).

    nice -n 10 python benchmarks/ensembles.py --data-root ../shared/data --out /tmp/bench-ensembles

Sizes are chosen for a 2-core CPU shared with others: a convnet with width 16 and batch norm
(3 stages, 73k parameters), 10,000 training images (9,000 train / 1,000 validation, a different
stratified subset per seed), batch 128, Adam 3e-3, EMA decay 0.99; each independent model trains
3 epochs with a cosine schedule; the snapshot run 40 epochs of SGDR (4 cycles of 10 epochs) on
2,000 images (1,800 train / 200 validation) with batch 64; the Polyak run 3 epochs at a constant
rate. The
test split is the full 10,000 images. Runs already in --out are reused (an interrupted one
resumes), so a stopped benchmark continues where it stopped. On a loaded machine run it with
OMP_NUM_THREADS=1: two processes each spinning two OpenMP threads on two cores are much
slower than one thread each.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from reuse import quiet, train

from trainlab.ensemble import run_ensemble, snapshot_paths

COMMON = [
    "data.name=fashion-mnist", "data.subset=10000", "model.name=convnet", "model.width=16", "model.norm=batch",
    "optim.name=adam", "optim.lr=0.003", "train.batch_size=128", "train.ema=0.99", "train.progress=false",
    "monitor.every=0",
]
SEEDS = (1, 2, 3, 4, 5)
INDEPENDENT = ["schedule.name=cosine", "train.epochs=3"]
# Snapshots need each cycle to converge (the paper: 6 cycles of 50 epochs), or each snapshot is
# just a less trained version of the next: a smaller training set (2,000 images) lets 4 SGDR
# cycles of 10 epochs (290 updates each) do that at the cost of ~8 epochs on 10,000 images.
CYCLE_EPOCHS = 10
SNAPSHOT = ["data.subset=2000", "train.batch_size=64", "schedule.name=sgdr", f"schedule.cycle_epochs={CYCLE_EPOCHS}",
            f"train.epochs={4 * CYCLE_EPOCHS}", "train.snapshots=4"]
# Polyak averaging where it should help: a constant rate, whose iterates keep bouncing around the minimum
CONSTANT = ["schedule.name=constant", "train.epochs=3"]


def snapshot_accuracies(paths: list[Path], overrides: list[str]) -> tuple[list[float], dict[int, float]]:
    """Test accuracy of each snapshot, and of the mean of the last m snapshots for m = 2..K
    (each snapshot's probabilities computed once)."""
    from trainlab.checkpoint import load_checkpoint
    from trainlab.classifier import load_classifier
    from trainlab.ensemble import load_test_split, mean_probs
    from trainlab.evaluate import metrics_from_probs, predict_probs

    ckpts = [load_checkpoint(p) for p in paths]
    cfg, device, data = load_test_split(ckpts[0], overrides)
    probs = [predict_probs(load_classifier(c, device), data.test_x.to(device)) for c in ckpts]
    acc = lambda p: metrics_from_probs(p, data.test_y.to(device), data.num_classes)["acc"]  # noqa: E731
    return [acc(p) for p in probs], {m: acc(mean_probs(probs[-m:])) for m in range(2, len(probs) + 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="/tmp/bench-ensembles")
    args = ap.parse_args()
    out, root = Path(args.out), [f"data.root={args.data_root}"]

    runs = [out / f"seed-{s}" for s in SEEDS]
    summaries = [train(r, COMMON + root + INDEPENDENT + [f"seed={s}"]) for r, s in zip(runs, SEEDS)]
    mean = run_ensemble(runs, out / "ensemble", method="mean", overrides=root, say=quiet)

    print("\n### Independent models (5 seeds, 3 epochs each)\n")
    print("| model | test acc (best-val weights) | test acc (EMA weights, end of training) |")
    print("|---|---|---|")
    for s, row in zip(SEEDS, mean["members"]):
        print(f"| seed {s} | {100 * row['test_acc']:.2f} | {100 * row['test_acc_ema']:.2f} |")
    best, best_ema = mean["best_single_test_acc"], mean["best_single_test_acc_ema"]
    print(f"| best single member | {100 * best:.2f} | {100 * best_ema:.2f} |")
    for method in ("mean", "vote"):
        acc, acc_ema = mean["ensemble_test_acc_by_method"][method], mean["ensemble_test_acc_ema_by_method"][method]
        print(f"| ensemble of 5, {method} | {100 * acc:.2f} (gain {100 * (acc - best):+.2f}) | "
              f"{100 * acc_ema:.2f} (gain {100 * (acc_ema - best_ema):+.2f}) |")

    snap_run = out / "sgdr-snapshots"
    snap_summary = train(snap_run, COMMON + root + SNAPSHOT + ["seed=1"])
    snaps = snapshot_paths(snap_run)
    single, last_m = snapshot_accuracies(snaps, root)
    print(f"\n### Snapshot ensemble (one SGDR run on 2,000 images: {4 * CYCLE_EPOCHS} epochs, 4 cycles of "
          f"{CYCLE_EPOCHS} epochs)\n")
    print("| weights | test acc |")
    print("|---|---|")
    for i, acc in enumerate(single, start=1):
        final = " = final weights" if i == len(single) else ""
        print(f"| snapshot {i} (end of cycle {i}, epoch {CYCLE_EPOCHS * i}){final} | {100 * acc:.2f} |")
    print(f"| EMA weights (decay 0.99 with warm-up, end of training) | {100 * snap_summary['test_acc_ema']:.2f} |")
    for m, acc in last_m.items():
        print(f"| snapshot ensemble, mean of the last {m} | {100 * acc:.2f} "
              f"({100 * (acc - single[-1]):+.2f} vs final weights) |")

    const = train(out / "constant-lr", COMMON + root + CONSTANT + ["seed=1"])
    print("\n### Polyak / EMA weights (decay 0.99 with warm-up) against raw weights\n")
    print("| run | raw weights (best on validation) | EMA weights (end of training) |")
    print("|---|---|---|")
    for name, summary in (("cosine schedule, 3 epochs (seed 1)", summaries[0]),
                          ("SGDR on 2,000 images, 40 epochs (the snapshot run)", snap_summary),
                          ("constant rate 3e-3, 3 epochs", const)):
        print(f"| {name} | {100 * summary['test_acc']:.2f} | {100 * summary['test_acc_ema']:.2f} |")
    total = sum(s["wall_seconds"] for s in summaries + [snap_summary, const])
    print(f"\ntraining wall time {total / 60:.1f} min")


if __name__ == "__main__":
    main()
