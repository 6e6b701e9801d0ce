"""One training run, from a validated config to a complete run directory (docs/design.md §8)::

    run_dir/config.yaml  metrics.jsonl  summary.json  checkpoints/{last,best}.pt
            report.html  plots/*.png  tensorboard/

``train_run`` is what ``trainlab train`` calls; search, tune, ensembles and fine-tuning call it
too, passing their own model, callbacks or per-layer learning rates.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from trainlab import __version__
from trainlab.augmentation import build_augment
from trainlab.babysit.diagnosis import diagnose
from trainlab.babysit.monitors import Monitors
from trainlab.callbacks import (
    EMA,
    Checkpointer,
    DivergenceGuard,
    EarlyStopping,
    MetricsLogger,
    ProgressBar,
    momentum_annealing,
)
from trainlab.checkpoint import RESUME_KEYS, load_checkpoint, load_model_state, require_trainlab_checkpoint
from trainlab.classifier import (
    PreprocessedModel,
    build_classifier,
    checkpoint_meta,
    count_params,
    make_loss,
    make_penalty,
)
from trainlab.config import dump_config
from trainlab.data.loader import TensorLoader
from trainlab.data.split import stratified_subset
from trainlab.data.stream import DataPath, LazyImages, StreamLoader, open_data
from trainlab.device import autocast_dtype, check_compile, configure_backends, peak_memory, reset_peak_memory, resolve_device
from trainlab.distributed import RankRNG
from trainlab.ensemble import SnapshotSaver
from trainlab.errors import UserError, first_line
from trainlab.evaluate import evaluate
from trainlab.io import append_jsonl, ensure_writable_dir, read_jsonl, write_json
from trainlab.log import logger
from trainlab.log import say as say_info
from trainlab.optim import build_optimizer, is_full_batch, optimizer_base_lr
from trainlab.preprocessing import to_unit_float
from trainlab.report import write_report
from trainlab.resume import change_event, check_resume_config, remove_stale_temp_files, trained_config
from trainlab.schedules import build_scheduler
from trainlab.train import Callback, Trainer


def prepare_run_dir(out: Path, resume: bool, force: bool = False) -> None:
    """A run directory holds one run: refuse to overwrite a finished or interrupted one, or to mix
    a new run into a folder of other files (checked before any work; the directory itself is
    made once data and model are ready).

    A folder *is a trainlab run* when it has ``checkpoints/last.pt`` (resumable) or
    ``summary.json`` (finished). A new run goes into a folder that does not exist or is empty;
    ``force`` lets it go into a non-empty folder that is not a run, where it replaces only
    trainlab's own files (config.yaml, metrics.jsonl, ...) and leaves every other file alone.
    """
    ensure_writable_dir(out, "run directory")
    remove_stale_temp_files(out)
    if resume:
        if not (out / "checkpoints" / "last.pt").is_file():
            raise UserError(f"cannot resume {str(out)!r}: it has no checkpoints/last.pt")
        return
    if (out / "checkpoints" / "last.pt").exists() or (out / "summary.json").exists():
        raise UserError(f"{str(out)!r} already holds a run; continue it with --resume {out}, "
                        "or choose another --out directory")
    if out.is_dir() and not force:
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            raise UserError(f"{str(out)!r} is not empty ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}) "
                            "and is not a trainlab run (no checkpoints/last.pt or summary.json); choose a new or empty "
                            "--out directory, or add --force to write the run there (trainlab's own files such as "
                            "config.yaml and metrics.jsonl are replaced, other files are left alone)")


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop what was logged after the checkpoint so no step appears twice (and a torn
    last line, see :func:`~trainlab.io.read_jsonl`). Written atomically: a kill here loses nothing."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def full_batch_overrides(cfg: dict, n_train: int, say: Callable[[str], None]) -> dict:
    """L-BFGS is a full-batch, deterministic method: no minibatches, no dropout, no augmentation."""
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
    amp: torch.dtype | None = None  # autocast dtype (train.amp resolved for the device)
    compile: bool = False
    data_path: dict | None = None  # streamed or in memory, and why (summary.json's data_stream)
    augment: object = None  # the batched augmentation inside the loader's transform (None: none)


def prepare(cfg: dict, say: Callable[[str], None] = say_info, model: PreprocessedModel | None = None,
            data=None, data_parallel=None, pixels: bool = False) -> Prepared:
    """Seed, load data onto the device, build (or adopt) the model and the batch loader (for a
    rank of a data-parallel job: its device, and its share of each global batch).

    Without ``data``, the data set is loaded or streamed per ``data.stream`` (:func:`open_data`).
    Images may be uint8 pixels (``pixels=True``): they stay so on the device and each batch is
    converted there (the loader's transform for training, the model for evaluation).
    """
    torch.manual_seed(cfg["seed"])
    device = resolve_device(cfg["device"]) if data_parallel is None else data_parallel.device
    tc = cfg["train"]
    amp, compile = autocast_dtype(tc["amp"], device), check_compile(tc["compile"], device)  # refused before any work
    configure_backends(device, tc["deterministic"], tc["cudnn_benchmark"])
    path = DataPath(False, "data given by the caller, in memory")
    if data is None:
        data, path = open_data(cfg, device, pixels=pixels)
        say(path.reason)
    stream = isinstance(data.train_x, LazyImages)
    if cfg["augment"]["tta"] != "none" and data.train_x.ndim != 4:
        raise UserError(f"augment.tta={cfg['augment']['tta']} needs images (N, C, H, W); this data is flat "
                        f"features of shape {tuple(data.train_x.shape[1:])}: use augment.tta=none")
    cfg = full_batch_overrides(cfg, len(data.train_y), say)
    # A new bundle on the device: the caller's (often a cache shared by many runs) stays as it was.
    # (Streamed images stay on disk: LazyImages.to only says where decoded slices go.)
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

    def batch_transform(x, y, gen):
        x = to_unit_float(x)  # uint8 pixels become floats a batch at a time, on the device
        x, y = augment(x, y, gen) if augment is not None else (x, y)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    rank, world = (0, 1) if data_parallel is None else (data_parallel.rank, data_parallel.world_size)
    if cfg["train"]["batch_size"] < world:
        raise UserError(f"train.batch_size={cfg['train']['batch_size']} is the global batch, shared by {world} "
                        f"processes: make it at least {world}")
    if stream:
        loader = StreamLoader(data.train_x, data.train_y, cfg["train"]["batch_size"], device, shuffle=True,
                              transform=batch_transform, seed=cfg["seed"], workers=data.train_x.workers,
                              prefetch=data.train_x.prefetch, rank=rank, world_size=world)
    else:
        loader = TensorLoader(data.train_x, data.train_y, cfg["train"]["batch_size"], shuffle=True,
                              transform=batch_transform, seed=cfg["seed"], rank=rank, world_size=world)
    return Prepared(cfg, device, data, model, loader, amp, compile, dataclasses.asdict(path), augment)


def make_evaluator(p: Prepared, data_parallel=None) -> Callable[[nn.Module], dict]:
    """Each epoch's measurement of the current weights in eval mode, without augmentation:
    ``train_loss``/``train_acc`` on a fixed, seeded, stratified subset of the training split
    (``train.train_eval_size`` images) and ``val_loss``/``val_acc`` on the validation split.

    The lectures' train/val gap compares the same model on both splits; the trainer's running
    averages (``train_*_running``) mix a whole epoch of changing weights under dropout and
    augmentation, and a one-epoch run's would sit far below its validation accuracy.
    Data-parallel, every rank measures its shard of each split and the figures are reduced.
    """
    run_evaluate = evaluate if data_parallel is None else data_parallel.evaluate
    batch = p.cfg["train"]["eval_batch_size"]
    idx = stratified_subset(p.data.train_y, p.cfg["train"]["train_eval_size"], p.cfg["seed"])
    whole = len(idx) == len(p.data.train_y)  # a small training split is measured whole, not copied
    if whole:
        train_x, train_y = p.data.train_x, p.data.train_y
    elif isinstance(p.data.train_x, LazyImages):  # a streamed split stays on disk
        train_x, train_y = p.data.train_x.subset(idx), p.data.train_y[idx]
    else:
        train_x, train_y = p.data.train_x[idx], p.data.train_y[idx]

    def evaluate_train_and_val(model: nn.Module) -> dict:
        m = run_evaluate(model, train_x, train_y, p.data.num_classes, batch)
        record = {"train_loss": m["loss"], "train_acc": m["acc"]}
        if p.data.val_y is not None and len(p.data.val_y):
            m = run_evaluate(model, p.data.val_x, p.data.val_y, p.data.num_classes, batch)
            record.update(val_loss=m["loss"], val_acc=m["acc"])
        return record

    return evaluate_train_and_val


def build_trainer(p: Prepared, callbacks: list[Callback] = (), *, cfg: dict | None = None, model: nn.Module | None = None,
                  loader=None, evaluate: Callable[[nn.Module], dict] | None = None,
                  scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
                  lr_multipliers: dict[str, float] | None = None, epochs: int | None = None, max_steps: int | None = None,
                  accelerated: bool = True, data_parallel=None) -> Trainer:
    """The one place a :class:`Trainer` is put together from a prepared setup, for ``train``,
    ``lr-find`` and ``check``: the optimiser (:func:`build_optimizer`, with ``lr_multipliers``),
    the schedule, the loss, the weight penalty and the evaluator, all from ``cfg`` (default
    ``p.cfg``), over ``model`` and ``loader`` (default ``p.model``, ``p.loader``).

    ``scheduler``: a function optimiser → scheduler (or None for a constant rate) replacing the
    configured one; ``evaluate``: replaces :func:`make_evaluator`; ``epochs``, ``max_steps``:
    replace ``train.epochs``, ``train.max_steps``. ``accelerated=False`` trains in float32
    without ``torch.compile`` (the short probes of lr-find and check)."""
    cfg = p.cfg if cfg is None else cfg
    model = p.model if model is None else model
    loader = p.loader if loader is None else loader
    tc = cfg["train"]
    optimizer = build_optimizer(model, cfg, lr_multipliers)
    schedule = build_scheduler(optimizer, cfg, len(loader)) if scheduler is None else scheduler(optimizer)
    return Trainer(model, optimizer, schedule, loader, make_loss(cfg),
                   make_evaluator(p, data_parallel) if evaluate is None else evaluate,
                   tc["epochs"] if epochs is None else epochs, penalty=make_penalty(cfg, model),
                   clip_grad=tc["clip_grad"], max_steps=tc["max_steps"] if max_steps is None else max_steps,
                   amp=p.amp if accelerated else None, device=p.device, callbacks=callbacks,
                   closure_step=is_full_batch(cfg), compile=p.compile and accelerated, data_parallel=data_parallel)


def train_run(cfg: dict, out: str | Path, resume: bool = False, callbacks: list[Callback] = (),
              model: PreprocessedModel | None = None, lr_multipliers: dict | None = None, data=None,
              say: Callable[[str], None] = say_info, extra_summary: dict | None = None, report: bool = True,
              data_parallel=None, force: bool = False) -> dict:
    """Train per ``cfg`` into run directory ``out`` and return ``summary.json``'s contents.

    ``report=False`` skips plots and report.html (many short search trials; ``trainlab report``
    can make them later from the files). ``resume`` continues ``out/checkpoints/last.pt``, whose
    config ``cfg`` must match but for the keys of :data:`~trainlab.resume.SAFE_ON_RESUME`.
    ``force``: see :func:`prepare_run_dir`. ``data_parallel`` (a
    :class:`trainlab.distributed.DataParallel`): this process is one rank of a data-parallel job;
    rank 0 alone writes the run directory and talks."""
    out = Path(out)
    dp = data_parallel
    writer = dp is None or dp.is_main
    if dp is None:
        prepare_run_dir(out, resume, force)
    else:
        dp.on_main(lambda: prepare_run_dir(out, resume, force))
        if is_full_batch(cfg):
            raise UserError(f"optim.name={cfg['optim']['name']} is a full-batch method and does not run data-parallel; "
                            "train it in one process (without torchrun or --nproc)")
        if not writer:
            say = _silent  # noqa: F811 (one console: rank 0's)
    t_start = time.perf_counter()
    ckpt = None
    if resume:  # checked before data is loaded; L-BFGS's full-batch settings are compared again below
        last = out / "checkpoints" / "last.pt"

        def read_last() -> dict:
            return require_trainlab_checkpoint(load_checkpoint(last), last, RESUME_KEYS)

        # Rank 0 reads the file and hands it to the others: they may be on machines without the run directory.
        ckpt = read_last() if dp is None else dp.on_main(read_last)
        trained = trained_config(ckpt["config"], last)
        check_resume_config(trained, full_batch_overrides(cfg, trained["train"]["batch_size"], lambda m: None), out)
    # Pixels stay uint8 (a quarter of float32's memory) and are converted batch by batch.
    p = prepare(cfg, say, model=model, data=data, data_parallel=dp, pixels=True)
    cfg, model, data = p.cfg, p.model, p.data
    changes = check_resume_config(ckpt["config"], cfg, out) if resume else {}
    if dp is not None:
        if cfg["model"]["sync_bn"] == "on":
            model = dp.convert_sync_bn(model)
        dp.find_unused_parameters = cfg["model"]["stochastic_depth"] > 0
        dp.seed_rank(cfg["seed"])
    tc = cfg["train"]
    meta = checkpoint_meta(cfg, data, model)
    if dp is not None:
        meta["launch"] = dp.describe()
    cbs: list[Callback] = [DivergenceGuard(every=1 if p.device.type == "cpu" else tc["log_every"])] if tc["nan_policy"] == "stop" else []
    if (annealing := momentum_annealing(cfg, len(p.loader))) is not None:
        cbs.append(annealing)
    if tc["ema"] > 0:
        cbs.append(EMA(tc["ema"]))
    if tc["early_stopping"] > 0:
        cbs.append(EarlyStopping(tc["early_stopping"]))
    if cfg["monitor"]["every"] > 0 and writer:
        cbs.append(Monitors(cfg, to_unit_float(data.train_x[: cfg["monitor"]["probe_size"]]), out))
    if tc["snapshots"] > 0 and writer:
        cbs.append(SnapshotSaver(cfg, len(p.loader), out, meta))
    cbs += list(callbacks)
    if dp is not None:
        cbs.append(RankRNG(dp))  # on every rank, before the checkpointer saves what it gathered
    if writer:
        cbs.append(MetricsLogger(out, tc["log_every"]))
        # No bar where progress lines are off (trainlab -q) or would land in a file.
        cbs.append(ProgressBar(bar=tc["progress"] and sys.stdout.isatty() and logger.isEnabledFor(logging.INFO), say=say))
        cbs.append(Checkpointer(out, meta, every=tc["checkpoint_every"]))
        out.mkdir(parents=True, exist_ok=True)  # only now: bad data or config leaves no run directory behind
        if not resume:  # a new run's record starts empty (--force into a folder that had one)
            (out / "metrics.jsonl").unlink(missing_ok=True)
        dump_config(cfg, out / "config.yaml")
    reset_peak_memory(p.device)
    trainer = build_trainer(p, cbs, model=model, lr_multipliers=lr_multipliers, data_parallel=dp)
    if resume:
        launched = ckpt.get("launch", {}).get("world_size", 1)
        if launched != (1 if dp is None else dp.world_size):
            say(f"note: {out} was trained by {launched} process(es) and continues with "
                f"{1 if dp is None else dp.world_size}: same global batches, but not bit for bit the same run")
        trainer.load_state_dict(ckpt)
        del ckpt
        if writer:
            truncate_metrics(out / "metrics.jsonl", trainer.state.step)
            if changes:
                append_jsonl(out / "metrics.jsonl", change_event(changes, trainer.state.epoch, trainer.state.step))
        if changes:
            say("applied on resume: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()))
        say(f"resuming {out} at step {trainer.state.step} (epoch {trainer.state.epoch + 1}"
            f"{', mid-epoch' if trainer.state.running is not None else ''})")
    else:
        say(f"training {cfg['model']['name']} ({count_params(model):,} parameters) on {cfg['data']['name']} "
            f"({len(data.train_y)} train / {len(data.val_y)} val images) on {p.device}; run directory {out}")
    try:
        trainer.fit()
    except KeyboardInterrupt:
        checkpointer = trainer.callback(Checkpointer)
        if checkpointer is not None:  # what last.pt holds, not where the loop was
            saved = checkpointer.saved
            where = (f"at step {saved['step']}, in epoch {saved['epoch'] + 1}" if saved.get("mid_epoch")
                     else f"after epoch {saved['epoch']} (step {saved['step']})")
            # a warning through the logger (so -q still shows it), or the caller's own say=
            (logger.warning if say is say_info else say)(f"\ninterrupted at step {trainer.state.step}; checkpoints/last.pt holds the state {where}. "
                f"Continue with: trainlab train --resume {out}")
        raise
    summary = finish_run(out, trainer, p, time.perf_counter() - t_start, say, extra_summary or {}, report, dp)
    return summary


def _silent(message: str) -> None: ...


def best_weights(out: Path) -> dict | None:
    """The best-on-validation weights; a run that diverged before any epoch finished has no
    best.pt, and its current weights are garbage, so it falls back on last.pt (the last good state)."""
    for name in ("best.pt", "last.pt"):
        path = out / "checkpoints" / name
        if path.exists():
            return require_trainlab_checkpoint(load_checkpoint(path), path, {"model": dict})["model"]
    return None


def finish_run(out: Path, trainer: Trainer, p: Prepared, wall: float, say: Callable[[str], None],
               extra_summary: dict, report: bool, data_parallel=None) -> dict:
    """Best weights → test metrics, summary.json, plots and report (data-parallel: every rank
    tests its shard; rank 0 writes)."""
    dp = data_parallel
    run_evaluate = evaluate if dp is None else dp.evaluate  # sharded over the ranks
    cfg, data, model, state = p.cfg, p.data, p.model, trainer.state
    weights = best_weights(out) if dp is None else dp.on_main(lambda: best_weights(out))
    if weights is not None:
        try:
            load_model_state(model, weights)
        except (RuntimeError, KeyError, TypeError) as e:
            raise UserError(f"the best checkpoint in {str(out / 'checkpoints')!r} does not fit this run's model "
                            f"({first_line(e)}); it is damaged: delete it and resume again (the run's last.pt is kept)") from None
    test = None
    if data.test_y is not None and len(data.test_y):
        with trainer.autocast():
            test = run_evaluate(model, data.test_x, data.test_y, data.num_classes, cfg["train"]["eval_batch_size"],
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
        "stop_reason": state.stop_reason, "data_stream": p.data_path, "num_classes": data.num_classes, "classes": list(data.classes),
        "amp": {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[trainer.amp], "compile": p.compile,
        **peak_memory(p.device),
        "world_size": 1 if dp is None else dp.world_size, "backend": None if dp is None else dp.backend,
    }
    if ema is not None and ema.model is not None and test:
        with trainer.autocast():
            summary["test_acc_ema"] = run_evaluate(ema.model.module, data.test_x, data.test_y, data.num_classes,
                                                   cfg["train"]["eval_batch_size"])["acc"]
    if dp is not None and not dp.is_main:
        return {"stop_reason": state.stop_reason}
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
    """The verdicts of the curve diagnosis (docs/design.md §4): see trainlab.babysit.diagnosis."""
    return diagnose(out, summary, trainer.state, p.cfg, optimizer_base_lr(trainer.optimizer))


def write_summary(out: Path, summary: dict) -> None:
    write_json(Path(out) / "summary.json", summary)


def default_out_dir(cfg: dict, command: str = "train") -> Path:
    """runs/<data>-<model>-<time> for training; other commands prefix their name
    (runs/finetune-..., runs/check-...) so their directories are told apart."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = "" if command == "train" else f"{command}-"
    return Path("runs") / f"{prefix}{cfg['data']['name']}-{cfg['model']['name']}-{stamp}"
