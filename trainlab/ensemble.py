"""Model ensembles (the 2016 slides, reference/001: "Train multiple independent models" · "At test
time average their results" · "Enjoy 2% extra performance"), snapshot ensembles and Polyak/EMA weights.

    # independent models: same config, different seeds (or different hyperparameters)
    for s in 1 2 3 4 5; do trainlab train -c examples/fm-ensemble.yaml seed=$s --out runs/fm-$s; done
    trainlab ensemble runs/fm-1 runs/fm-2 runs/fm-3 runs/fm-4 runs/fm-5 --out runs/ens-fm

    # snapshot ensemble: one run, the weights at the end of each of the last 5 SGDR cycles
    trainlab train -c examples/fm-ensemble.yaml schedule.name=sgdr schedule.cycle_epochs=2 train.epochs=10 \\
        train.snapshots=5 --out runs/snap-fm
    trainlab ensemble runs/snap-fm --snapshots --out runs/snap-fm-ens

    # options: --method vote (majority vote), --tta crops (test-time augmentation), and
    # key=value overrides for loading the test split, e.g. data.root=../shared/data

A member is a run's ``checkpoints/best.pt`` (or any checkpoint file given directly), or with
``--snapshots`` each ``checkpoints/snapshot-<i>.pt`` of the run. Every member and the ensemble
are evaluated on the test split; ``ensemble.json`` reports the gain over the best single
member. Where a run kept Polyak/EMA weights (``train.ema``), they are evaluated beside the raw
ones, alone and as an ensemble of their own.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from trainlab.checkpoint import load_checkpoint, model_state, require_trainlab_checkpoint, save_checkpoint
from trainlab.classifier import check_same_data, load_classifier
from trainlab.config import cfg_with, parse_overrides
from trainlab.data import load_data
from trainlab.device import resolve_device
from trainlab.errors import UserError
from trainlab.evaluate import metrics_from_probs, predict_probs
from trainlab.io import ensure_writable_dir, write_json
from trainlab.log import say as say_info
from trainlab.plots import plot_confusion
from trainlab.schedules import cycle_end_steps
from trainlab.schema import SCHEMA
from trainlab.train import Callback, StepInfo, Trainer

# --- snapshot ensembles (Huang et al. 2017, "Snapshot ensembles: train 1, get M for free") ---------


def snapshot_name(index: int) -> str:
    return f"snapshot-{index}.pt"


def snapshot_steps(cfg: dict, steps_per_epoch: int) -> list[int]:
    """The update counts after which the ``train.snapshots`` = K snapshots are taken: the ends of
    the last K cycles (schedules.cycle_end_steps). UserError when the schedule has no cycles or
    fewer than K complete ones, so a bad config is refused before any training."""
    k = int(cfg["train"]["snapshots"])
    ends = cycle_end_steps(cfg, steps_per_epoch)
    schedule = cfg["schedule"]["name"]
    if not ends:
        raise UserError(f"train.snapshots={k} saves the weights at the end of each learning-rate cycle, but "
                        f"schedule.name={schedule} has no cycles; use schedule.name=sgdr or cyclic "
                        "(with schedule.cycle_epochs), or set train.snapshots=0")
    if len(ends) < k:
        raise UserError(f"train.snapshots={k} but schedule.name={schedule} with schedule.cycle_epochs="
                        f"{cfg['schedule']['cycle_epochs']:g} completes only {len(ends)} cycles in "
                        f"train.epochs={cfg['train']['epochs']}; train longer, shorten the cycles, "
                        f"or ask for at most {len(ends)} snapshots")
    return ends[-k:]


class SnapshotSaver(Callback):
    """Saves the weights at the end of each of the last ``train.snapshots`` = K cycles of a
    cyclic (``cyclic``) or warm-restart (``sgdr``) schedule as ``checkpoints/snapshot-<i>.pt``,
    i = 1..K in training order.

    Why the cycle ends: there the rate is at its lowest, so the weights sit at the bottom of a
    minimum; the rate then jumps up and carries the model to a different minimum. Averaging the
    predictions of models from different minima is an ensemble for the price of one run.

    Each snapshot has best.pt's layout ({**meta, "model", "step", "epoch"}), so any command that
    reads a checkpoint reads a snapshot. A schedule without cycles, or fewer complete cycles
    than K, is a UserError raised here, before any training.
    """

    name = "snapshot_saver"

    def __init__(self, cfg: dict, steps_per_epoch: int, run_dir: str | Path, meta: dict):
        ends = snapshot_steps(cfg, steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        self.dir, self.meta = Path(run_dir) / "checkpoints", meta
        # update count after which snapshot i is taken
        self.at_step = {step: i for i, step in enumerate(ends, start=1)}

    def on_step_end(self, trainer: Trainer, step: StepInfo) -> None:
        index = self.at_step.get(step.step)
        if index is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint({**self.meta, "model": model_state(trainer.model), "step": step.step,
                         "epoch": step.step / self.steps_per_epoch}, self.dir / snapshot_name(index))


def snapshot_paths(run: Path) -> list[Path]:
    """The snapshot checkpoints of a run directory, in training order."""
    found = [(int(m.group(1)), p) for p in (run / "checkpoints").glob("snapshot-*.pt")
             if (m := re.fullmatch(r"snapshot-(\d+)\.pt", p.name))]
    if not found:
        raise UserError(f"run {str(run)!r} has no snapshots (checkpoints/snapshot-<i>.pt); train it with "
                        "train.snapshots=K and schedule.name=sgdr or cyclic, or leave out --snapshots")
    return [p for _, p in sorted(found)]


# --- members -----------------------------------------------------------------------------------


@dataclass
class Member:
    """One model of the ensemble: where it came from, its checkpoint, and (if the run kept them)
    its Polyak/EMA weights."""

    label: str
    ckpt: dict
    ema_state: dict | None = None


def member_paths(runs: list[str | Path], snapshots: bool) -> list[Path]:
    """best.pt of each run directory (a checkpoint file stands for itself), or with ``snapshots``
    every snapshot of every run."""
    paths = []
    for run in map(Path, runs):
        if not run.exists():
            raise UserError(f"{str(run)!r} does not exist; give run directories or checkpoint files")
        if snapshots:
            if not run.is_dir():
                raise UserError(f"--snapshots needs run directories, got the file {str(run)!r}")
            paths += snapshot_paths(run)
        else:
            paths.append(run / "checkpoints" / "best.pt" if run.is_dir() else run)
    return paths


def ema_state(run_checkpoint: Path) -> dict | None:
    """The EMA model weights kept in the run's last.pt (``callbacks.ema``, an AveragedModel state
    dict whose keys are ``module.<name>``), or None when the run had no EMA.

    They are the average at the end of training (the EMA callback keeps one average, not one per
    epoch), so they are compared with the run's raw weights, not necessarily of the same epoch.
    """
    last = run_checkpoint.parent / "last.pt"
    if run_checkpoint.name.startswith("snapshot-") or not last.is_file():
        return None
    averaged = load_checkpoint(last).get("callbacks", {}).get("ema") or {}
    state = {k[len("module."):]: v for k, v in averaged.items() if k.startswith("module.")}
    return state or None


def load_members(paths: list[Path]) -> list[Member]:
    """Read every member's checkpoint and check that they classify the same classes of one data
    set: averaging probabilities over different label spaces means nothing."""
    members = [Member(str(p), require_trainlab_checkpoint(load_checkpoint(p), p), ema_state(p)) for p in paths]
    first = members[0].ckpt
    for m in members[1:]:
        for what, a, b in (("data set", first["config"]["data"]["name"], m.ckpt["config"]["data"]["name"]),
                           ("classes", first["classes"], m.ckpt["classes"]),
                           ("input shape", first["input_shape"], m.ckpt["input_shape"])):
            if a != b:
                raise UserError(f"ensemble members must agree on the {what}: {members[0].label} has {a!r} but "
                                f"{m.label} has {b!r}; ensemble runs trained on the same data set and classes")
    return members


# --- combining predictions ---------------------------------------------------------------------


def mean_probs(probs: list[torch.Tensor]) -> torch.Tensor:
    """The lecture's ensemble: p(y|x) = (1/M) Σ_m p_m(y|x), the average predicted distribution."""
    return torch.stack(probs).mean(0)


def vote_probs(probs: list[torch.Tensor]) -> torch.Tensor:
    """Majority vote: each member votes for its top class; ties go to the class with the higher
    mean probability. Returned as a distribution, (votes_c + ½ p̄_c) / (M + ½), so the metrics
    code applies as is: its argmax is the vote (½ p̄ < 1 vote can only break a tie)."""
    m = len(probs)
    votes = sum(torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).float() for p in probs)
    return (votes + 0.5 * mean_probs(probs)) / (m + 0.5)


COMBINE: dict[str, Callable[[list[torch.Tensor]], torch.Tensor]] = {"mean": mean_probs, "vote": vote_probs}


def ensemble_metrics(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, num_classes: int,
                     method: str = "mean", tta: str = "none", batch_size: int = 1024) -> tuple[list[dict], dict, dict]:
    """Metrics of each model alone and of their ensemble on (x, y):
    (per-member metrics, ensemble metrics, {method: ensemble accuracy} for every method).

    Each model's probabilities are computed once (the expensive part) and reused by every method.
    """
    if method not in COMBINE:
        raise UserError(f"unknown ensemble method {method!r}; choose one of: {', '.join(COMBINE)}")
    probs = [predict_probs(m, x, batch_size, tta) for m in models]
    singles = [metrics_from_probs(p, y, num_classes) for p in probs]
    by_method = {name: metrics_from_probs(combine(probs), y, num_classes)["acc"] for name, combine in COMBINE.items()}
    return singles, metrics_from_probs(COMBINE[method](probs), y, num_classes), by_method


# --- the command -------------------------------------------------------------------------------


def load_test_split(ckpt: dict, overrides: list[str]):
    """(config, device, data) for evaluating: the member's own config, with ``key=value`` overrides
    such as data.root (the data may live elsewhere than where the run was trained)."""
    cfg = cfg_with(ckpt["config"], parse_overrides(overrides))
    data = load_data(cfg)
    if data.test_y is None or len(data.test_y) == 0:
        raise UserError(f"data set {cfg['data']['name']!r} has no test split to evaluate the ensemble on")
    return cfg, resolve_device(cfg["device"]), data


def run_ensemble(runs: list[str | Path], out: str | Path, method: str = "mean", tta: str = "none",
                 snapshots: bool = False, overrides: list[str] = (), say: Callable[[str], None] = say_info) -> dict:
    """Evaluate every member and the ensemble on the test split; write ``out/ensemble.json`` and
    ``out/plots/confusion.png``; return what was written."""
    ensure_writable_dir(out, "--out")
    members = load_members(member_paths(runs, snapshots))
    cfg, device, data = load_test_split(members[0].ckpt, list(overrides))
    check_same_data(members[0].ckpt, data, members[0].label)
    x, y, n_cls, bs = data.test_x.to(device), data.test_y.to(device), data.num_classes, cfg["train"]["eval_batch_size"]
    say(f"ensemble of {len(members)} members ({method}, tta={tta}) on the {cfg['data']['name']} test split "
        f"({len(y)} images)")
    singles, ens, by_method = ensemble_metrics([load_classifier(m.ckpt, device, m.label) for m in members], x, y, n_cls,
                                               method, tta, bs)
    best = max(s["acc"] for s in singles)
    result = {
        "members": [{"run": m.label, "test_acc": s["acc"], "test_loss": s["loss"]} for m, s in zip(members, singles)],
        "best_single_test_acc": best, "ensemble_test_acc": ens["acc"], "ensemble_test_loss": ens["loss"],
        "ensemble_test_top5": ens["top5"], "gain": ens["acc"] - best, "method": method, "tta": tta,
        "ensemble_test_acc_by_method": by_method,
        "snapshots": snapshots, "dataset": cfg["data"]["name"], "classes": list(data.classes),
        "per_class_acc": ens["per_class_acc"], "confusion": ens["confusion"],
    }
    if all(m.ema_state is not None for m in members):
        result.update(ema_metrics(members, x, y, n_cls, method, tta, bs, device, result["members"]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ensemble.json", result)
    plot_confusion(ens["confusion"], list(data.classes), out / "plots" / "confusion.png")
    for row in result["members"]:
        ema = f"   ema {row['test_acc_ema']:.4f}" if "test_acc_ema" in row else ""
        say(f"  {row['run']}: test_acc {row['test_acc']:.4f}{ema}")
    say(f"best single {best:.4f}  ensemble {ens['acc']:.4f}  gain {100 * result['gain']:+.2f} points")
    if "ensemble_test_acc_ema" in result:
        say(f"EMA weights: best single {result['best_single_test_acc_ema']:.4f}  "
            f"ensemble {result['ensemble_test_acc_ema']:.4f}")
    say(f"wrote {out / 'ensemble.json'}")
    return result


def ema_metrics(members: list[Member], x, y, n_cls: int, method: str, tta: str, bs: int, device,
                rows: list[dict]) -> dict:
    """The same evaluation with each member's Polyak/EMA weights; adds ``test_acc_ema`` to ``rows``."""
    models = [load_classifier({**m.ckpt, "model": m.ema_state}, device) for m in members]
    singles, ens, by_method = ensemble_metrics(models, x, y, n_cls, method, tta, bs)
    for row, s in zip(rows, singles):
        row["test_acc_ema"] = s["acc"]
    best = max(s["acc"] for s in singles)
    return {"best_single_test_acc_ema": best, "ensemble_test_acc_ema": ens["acc"], "gain_ema": ens["acc"] - best,
            "ensemble_test_acc_ema_by_method": by_method}


def split_runs_and_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """RUN_DIR... and key=value... share the positional arguments: an existing path is a run."""
    runs = [i for i in items if Path(i).exists() or "=" not in i]
    return runs, [i for i in items if i not in runs]


def cmd_ensemble(args) -> int:
    runs, overrides = split_runs_and_overrides(args.items)
    if not runs:
        raise UserError("trainlab ensemble needs at least one run directory (several, or one with --snapshots)")
    if len(runs) == 1 and not args.snapshots:
        raise UserError(f"an ensemble of one run is that run; give several run directories, or add --snapshots "
                        f"to ensemble the snapshots of {runs[0]}")
    run_ensemble(runs, args.out, args.method, args.tta, args.snapshots, overrides)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("ensemble", help="evaluate an ensemble of runs (or of one run's snapshots)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="+", metavar="RUN_DIR|key=value",
                   help="run directories (or checkpoint files) and overrides such as data.root=DIR, "
                        "together: all before or all after the options")
    p.add_argument("--out", required=True, help="directory for ensemble.json and plots/confusion.png")
    p.add_argument("--method", default="mean", choices=tuple(COMBINE), help="average probabilities or majority vote")
    p.add_argument("--tta", default="none", choices=SCHEMA["augment.tta"].choices, help="test-time augmentation per member")
    p.add_argument("--snapshots", action="store_true", help="members are the runs' snapshot checkpoints")
    p.set_defaults(func=cmd_ensemble)


__all__ = ["SnapshotSaver", "snapshot_steps", "snapshot_paths", "member_paths", "load_members", "ema_state",
           "mean_probs",
           "vote_probs", "ensemble_metrics", "run_ensemble", "register"]
