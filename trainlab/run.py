"""One training run, from a validated config to a complete run directory (SPEC §8)::

    run_dir/config.yaml  metrics.jsonl  summary.json  checkpoints/{last,best}.pt
            report.html  plots/*.png  tensorboard/

``train_run`` is what ``trainlab train`` calls; search, tune, ensembles and fine-tuning call it
too, passing their own model, callbacks or per-layer learning rates.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from trainlab import __version__
from trainlab.callbacks import (
    EMA,
    Checkpointer,
    DivergenceGuard,
    EarlyStopping,
    MetricsLogger,
    ProgressBar,
)
from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import (
    PreprocessedModel,
    build_classifier,
    checkpoint_meta,
    count_params,
    make_loss,
    make_penalty,
)
from trainlab.config import dump_config
from trainlab.device import resolve_device
from trainlab.errors import UserError
from trainlab.io import read_jsonl, write_json
from trainlab.train import Callback, Trainer


def prepare_run_dir(out: Path, resume: bool) -> None:
    """A run directory holds one run: refuse to overwrite a finished or interrupted one (checked
    before any work; the directory itself is made once data and model are ready)."""
    if resume:
        if not (out / "checkpoints" / "last.pt").is_file():
            raise UserError(f"cannot resume {str(out)!r}: it has no checkpoints/last.pt")
        return
    if (out / "checkpoints" / "last.pt").exists() or (out / "summary.json").exists():
        raise UserError(f"{str(out)!r} already holds a run; continue it with --resume {out}, "
                        "or choose another --out directory")


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop what was logged after the checkpoint so no step appears twice."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def full_batch_overrides(cfg: dict, n_train: int, say: Callable[[str], None]) -> dict:
    """L-BFGS is a full-batch, deterministic method: no minibatches, no dropout, no augmentation."""
    from trainlab.optim import is_full_batch

    if not is_full_batch(cfg):
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg["train"]["batch_size"] = n_train
    for key in ("dropout", "dropconnect", "stochastic_depth"):
        cfg["model"][key] = 0.0
    cfg["augment"]["names"] = []
    say(f"optim.name={cfg['optim']['name']} is full-batch: using batch_size={n_train} "
        "and turning off dropout, DropConnect, stochastic depth and augmentation")
    return cfg


@dataclass
class Prepared:
    """Everything a run needs, built from a config: reused by check, lr-find and search."""

    cfg: dict
    device: torch.device
    data: object
    model: PreprocessedModel
    loader: object


def prepare(cfg: dict, say: Callable[[str], None] = print, model: PreprocessedModel | None = None,
            data=None) -> Prepared:
    """Seed, load data onto the device, build (or adopt) the model and the batch loader."""
    from trainlab.augmentation import build_augment
    from trainlab.data import load_data
    from trainlab.data.loader import TensorLoader

    torch.manual_seed(cfg["seed"])
    device = resolve_device(cfg["device"])
    data = data if data is not None else load_data(cfg)
    if cfg["augment"]["tta"] != "none" and data.train_x.ndim != 4:
        raise UserError(f"augment.tta={cfg['augment']['tta']} needs images (N, C, H, W); this data is flat "
                        f"features of shape {tuple(data.train_x.shape[1:])}: use augment.tta=none")
    cfg = full_batch_overrides(cfg, len(data.train_y), say)
    # A new bundle on the device: the caller's (often a cache shared by many runs) stays as it was.
    names = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    data = dataclasses.replace(data, **{n: getattr(data, n).to(device) for n in names if getattr(data, n) is not None})
    if model is None:
        model = build_classifier(cfg, data.input_shape, data.num_classes, x_train=data.train_x)
    model = model.to(device)
    channels_last = cfg["train"]["channels_last"] == "on" or (
        cfg["train"]["channels_last"] == "auto" and device.type == "cuda" and data.train_x.ndim == 4)
    augment = build_augment(cfg["augment"], data.num_classes, data.train_x)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inner = augment

        def augment(x, y, gen):  # noqa: F811  (wraps the augmentation with the memory format)
            x, y = inner(x, y, gen) if inner is not None else (x, y)
            return x.contiguous(memory_format=torch.channels_last), y

    loader = TensorLoader(data.train_x, data.train_y, cfg["train"]["batch_size"], shuffle=True,
                          transform=augment, seed=cfg["seed"])
    return Prepared(cfg, device, data, model, loader)


def make_evaluator(p: Prepared) -> Callable[[nn.Module], dict]:
    from trainlab.evaluate import evaluate

    def evaluate_val(model: nn.Module) -> dict:
        if p.data.val_y is None or len(p.data.val_y) == 0:
            return {}
        m = evaluate(model, p.data.val_x, p.data.val_y, p.data.num_classes, p.cfg["train"]["eval_batch_size"])
        return {"val_loss": m["loss"], "val_acc": m["acc"]}

    return evaluate_val


def train_run(cfg: dict, out: str | Path, resume: bool = False, callbacks: list[Callback] = (),
              model: PreprocessedModel | None = None, lr_multipliers: dict | None = None, data=None,
              say: Callable[[str], None] = print, extra_summary: dict | None = None, report: bool = True) -> dict:
    """Train per ``cfg`` into run directory ``out`` and return ``summary.json``'s contents.

    ``report=False`` skips plots and report.html (many short search trials; ``trainlab report``
    can make them later from the files)."""
    from trainlab.optim import build_optimizer, is_full_batch
    from trainlab.schedules import build_scheduler

    out = Path(out)
    prepare_run_dir(out, resume)
    t_start = time.perf_counter()
    p = prepare(cfg, say, model=model, data=data)
    cfg, model, data = p.cfg, p.model, p.data
    optimizer = build_optimizer(model, cfg, lr_multipliers)
    scheduler = build_scheduler(optimizer, cfg, len(p.loader))
    tc = cfg["train"]
    meta = checkpoint_meta(cfg, data, model)
    cbs: list[Callback] = [DivergenceGuard(every=1 if p.device.type == "cpu" else tc["log_every"])] if tc["nan_policy"] == "stop" else []
    if tc["ema"] > 0:
        cbs.append(EMA(tc["ema"]))
    if tc["early_stopping"] > 0:
        cbs.append(EarlyStopping(tc["early_stopping"]))
    if cfg["monitor"]["every"] > 0:
        from trainlab.babysit.monitors import Monitors

        cbs.append(Monitors(cfg, data.train_x[: cfg["monitor"]["probe_size"]], out))
    if tc["snapshots"] > 0:
        from trainlab.ensemble import SnapshotSaver

        cbs.append(SnapshotSaver(cfg, len(p.loader), out, meta))
    cbs += list(callbacks)
    cbs.append(MetricsLogger(out, tc["log_every"]))
    cbs.append(ProgressBar(bar=tc["progress"] and sys.stdout.isatty(), say=say))
    cbs.append(Checkpointer(out, meta))
    out.mkdir(parents=True, exist_ok=True)  # only now: bad data or config leaves no run directory behind
    dump_config(cfg, out / "config.yaml")
    amp = tc["amp"] == "on" or (tc["amp"] == "auto" and p.device.type == "cuda")
    trainer = Trainer(model, optimizer, scheduler, p.loader, make_loss(cfg), make_evaluator(p), tc["epochs"],
                      penalty=make_penalty(cfg, model), clip_grad=tc["clip_grad"], max_steps=tc["max_steps"],
                      amp=amp, device=p.device, callbacks=cbs, closure_step=is_full_batch(cfg))
    if resume:
        ckpt = load_checkpoint(out / "checkpoints" / "last.pt", map_location=p.device)
        trainer.load_state_dict(ckpt)
        truncate_metrics(out / "metrics.jsonl", trainer.state.step)
        say(f"resuming {out} after epoch {trainer.state.epoch} (step {trainer.state.step})")
    else:
        say(f"training {cfg['model']['name']} ({count_params(model):,} parameters) on {cfg['data']['name']} "
            f"({len(data.train_y)} train / {len(data.val_y)} val images) on {p.device}; run directory {out}")
    try:
        trainer.fit()
    except KeyboardInterrupt:
        say(f"\ninterrupted at step {trainer.state.step}; checkpoints/last.pt holds the state after epoch "
            f"{trainer.state.epoch}. Continue with: trainlab train --resume {out}")
        raise
    summary = finish_run(out, trainer, p, time.perf_counter() - t_start, say, extra_summary or {}, report)
    return summary


def finish_run(out: Path, trainer: Trainer, p: Prepared, wall: float, say: Callable[[str], None],
               extra_summary: dict, report: bool) -> dict:
    """Best weights → test metrics, summary.json, plots and report."""
    from trainlab.evaluate import evaluate
    from trainlab.report import write_report

    cfg, data, model, state = p.cfg, p.data, p.model, trainer.state
    # Test the best-on-validation weights; a run that diverged before any epoch finished has no
    # best.pt, and its current weights are garbage, so it falls back on last.pt (the last good state).
    for name in ("best.pt", "last.pt"):
        path = out / "checkpoints" / name
        if path.exists():
            model.load_state_dict(load_checkpoint(path, map_location=p.device)["model"])
            break
    test = None
    if data.test_y is not None and len(data.test_y):
        test = evaluate(model, data.test_x, data.test_y, data.num_classes, cfg["train"]["eval_batch_size"],
                        tta=cfg["augment"]["tta"])
    history = state.history
    ema = trainer.callback(EMA)
    summary = {
        "dataset": cfg["data"]["name"], "model": cfg["model"]["name"], "params": count_params(model),
        "epochs": state.epoch, "steps": state.step,
        "best_val_acc": max((h["val_acc"] for h in history if "val_acc" in h), default=None),
        "test_acc": test["acc"] if test else None, "test_loss": test["loss"] if test else None,
        "test_top5": test["top5"] if test else None,
        "train_acc": history[-1]["train_acc"] if history else None,
        "wall_seconds": wall,
        "train_images_per_second": (sum(h["images_per_second"] for h in history) / len(history)) if history else None,
        "device": str(p.device), "seed": cfg["seed"], "torch_version": torch.__version__,
        "python_version": platform.python_version(), "trainlab_version": __version__,
        "stop_reason": state.stop_reason, "num_classes": data.num_classes, "classes": list(data.classes),
    }
    if ema is not None and ema.model is not None and test:
        summary["test_acc_ema"] = evaluate(ema.model.module, data.test_x, data.test_y, data.num_classes,
                                           cfg["train"]["eval_batch_size"])["acc"]
    if test:
        summary["per_class_acc"] = test["per_class_acc"]
        summary["confusion"] = test["confusion"]
    summary["diagnosis"] = diagnose_run(out, summary, trainer, p)
    summary.update(extra_summary)
    write_summary(out, summary)
    if report:
        write_report(out)
    acc = f"test_acc {summary['test_acc']:.4f}" if test else "no test split"
    say(f"done: {state.epoch} epochs, {state.step} steps in {wall:.1f}s; best_val_acc "
        f"{summary['best_val_acc'] if summary['best_val_acc'] is None else round(summary['best_val_acc'], 4)}; {acc}")
    for d in summary["diagnosis"]:
        say(f"  [{d['code']}] {d['message']}")
    return summary


def diagnose_run(out: Path, summary: dict, trainer: Trainer, p: Prepared) -> list[dict]:
    """The verdicts of the curve diagnosis (SPEC §4): see trainlab.babysit.diagnosis."""
    from trainlab.babysit.diagnosis import diagnose

    return diagnose(out, summary, trainer.state, p.cfg)


def write_summary(out: Path, summary: dict) -> None:
    write_json(Path(out) / "summary.json", summary)


def default_out_dir(cfg: dict, command: str = "train") -> Path:
    """runs/<data>-<model>-<time> for training; other commands prefix their name
    (runs/finetune-..., runs/check-...) so their directories are told apart."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = "" if command == "train" else f"{command}-"
    return Path("runs") / f"{prefix}{cfg['data']['name']}-{cfg['model']['name']}-{stamp}"
