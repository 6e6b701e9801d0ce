"""The run-level Python API: what ``trainlab train`` and ``trainlab evaluate`` do, from Python.

    import trainlab
    run = trainlab.train(overrides=["train.epochs=2"], out="runs/api")   # -> Run
    run.summary["test_acc"], run.history[-1]["val_acc"]
    run = trainlab.load_run("runs/api")
    probs = run.predict(x)          # class probabilities (N, C) of raw [0, 1] images
    trainlab.evaluate("runs/api")   # the metrics `trainlab evaluate` writes, without writing them

A config is validated exactly as the command line validates it, whether it comes as a YAML
path, a (partial) dict or ``key=value`` overrides: a wrong key or value raises
:class:`trainlab.ConfigError` naming it, before any work starts.

Monitors and curve diagnosis for any model and any loop: :func:`attach_monitors` and
:func:`diagnose` (see ``docs/api.md``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import torch

from trainlab.augmentation import tta_views
from trainlab.babysit.diagnosis import diagnose_history
from trainlab.babysit.monitors import AttachedMonitors, attach_monitors
from trainlab.checkpoint import load_checkpoint, require_trainlab_checkpoint
from trainlab.classifier import PreprocessedModel, check_same_data, load_classifier
from trainlab.config import flatten, load_config, parse_overrides, validate
from trainlab.data import load_data
from trainlab.device import resolve_device
from trainlab.errors import ConfigError, UserError
from trainlab.evaluate import evaluate as evaluate_model
from trainlab.evaluate import predict_probs
from trainlab.io import read_jsonl
from trainlab.run import default_out_dir, train_run

CHECKPOINTS = ("best", "last")


def resolve_config(config: str | os.PathLike | Mapping | None = None,
                   overrides: Sequence[str] | Mapping = ()) -> dict:
    """The full validated config from a YAML path, a dict (nested sections or dotted keys; a
    partial one is completed with the defaults) or None (the defaults), plus ``overrides``
    (``["optim.lr=0.1", ...]`` or ``{"optim.lr": 0.1}``), checked as the command line checks them."""
    if isinstance(overrides, str):
        overrides = [overrides]
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides if isinstance(overrides, Mapping) else list(overrides))
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a YAML path, a dict or None, not a {type(config).__name__}")
    flat = flatten(dict(config))
    flat.update(overrides if isinstance(overrides, Mapping) else parse_overrides(list(overrides)))
    return validate(flat)


def train(config: str | os.PathLike | Mapping | None = None, overrides: Sequence[str] | Mapping = (),
          out: str | os.PathLike | None = None) -> Run:
    """Train as ``trainlab train -c CONFIG OVERRIDES --out OUT`` does — same run directory, same
    summary for the same seed — and return the :class:`Run`. ``out`` defaults to
    ``runs/<data>-<model>-<time>``. A run whose loss diverged returns normally: its
    ``summary["stop_reason"]`` starts with "diverged" (the command exits 1 there)."""
    cfg = resolve_config(config, overrides)
    out = Path(out) if out is not None else default_out_dir(cfg)
    train_run(cfg, out)
    return Run(out)


def _checkpoint_path(src: Path, checkpoint: str) -> Path:
    """A run directory's checkpoints/<best|last>.pt, or ``src`` itself (a checkpoint file)."""
    if not src.is_dir():
        return src
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"unknown checkpoint {checkpoint!r}: a run directory has {' and '.join(CHECKPOINTS)}")
    return src / "checkpoints" / f"{checkpoint}.pt"


def evaluate(run: Run | str | os.PathLike, checkpoint: str = "best", tta: str = "none",
             overrides: Sequence[str] | Mapping = (), progress: bool = False,
             say: Callable[[str], None] = lambda message: None) -> dict:
    """Test metrics of a run's checkpoint (or of a checkpoint file) on its data set's test
    split, as ``trainlab evaluate`` computes them: ``{checkpoint, tta, test_loss, test_acc,
    test_top5, per_class_acc, confusion, classes}``. ``overrides`` change the data config
    (e.g. ``["data.root=/data"]``); ``tta``: none, flip, crops or scales. Nothing is written;
    ``say`` hears what is evaluated, ``progress`` draws a bar on stderr."""
    src = run.dir if isinstance(run, Run) else Path(run)
    path = _checkpoint_path(src, checkpoint)
    ckpt = require_trainlab_checkpoint(load_checkpoint(path), path)
    if isinstance(overrides, str):
        overrides = [overrides]
    cfg = validate({**flatten(ckpt["config"]),
                    **(overrides if isinstance(overrides, Mapping) else parse_overrides(list(overrides)))})
    device = resolve_device(cfg["device"])
    model = load_classifier(ckpt, device, str(path))
    data = load_data(cfg)
    check_same_data(ckpt, data, str(path))
    if data.test_y is None or len(data.test_y) == 0:
        raise UserError(f"data set {cfg['data']['name']!r} has no test split to evaluate on")
    views = len(tta_views(data.test_x[:1], tta))
    say(f"evaluating {path} on {len(data.test_y)} test images" + (f", {views} views each (tta={tta})" if views > 1 else ""))
    m = evaluate_model(model, data.test_x.to(device), data.test_y.to(device), data.num_classes,
                       cfg["train"]["eval_batch_size"], tta=tta, progress=progress)
    return {"checkpoint": str(path), "tta": tta, "test_loss": m["loss"], "test_acc": m["acc"],
            "test_top5": m["top5"], "per_class_acc": m["per_class_acc"], "confusion": m["confusion"],
            "classes": data.classes}


class Run:
    """A run directory, read back: ``config``, ``summary``, ``history`` (one dict per epoch),
    ``records`` (all of metrics.jsonl), ``monitors`` (the monitor records), ``model(which)``,
    ``predict(x)`` and ``evaluate()``. Everything is read from the files, so a run trained by
    the command line, by :func:`train` or on another machine reads the same."""

    def __init__(self, path: str | os.PathLike):
        self.dir = Path(path)
        if not (self.dir / "config.yaml").is_file():
            raise UserError(f"{str(self.dir)!r} is not a trainlab run directory (it has no config.yaml)")
        self._models: dict[tuple[str, str], PreprocessedModel] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    @cached_property
    def config(self) -> dict:
        """The run's full config (config.yaml), validated."""
        return load_config(self.dir / "config.yaml")

    @property
    def summary(self) -> dict:
        """summary.json: dataset, model, params, epochs, steps, best_val_acc, test_acc, ... diagnosis."""
        path = self.dir / "summary.json"
        if not path.is_file():
            raise UserError(f"run {str(self.dir)!r} has no summary.json: it did not finish. Continue it with "
                            f"`trainlab train --resume {self.dir}`")
        return json.loads(path.read_text())

    @property
    def records(self) -> list[dict]:
        """Every record of metrics.jsonl: ``kind`` is step, epoch or monitor."""
        return read_jsonl(self.dir / "metrics.jsonl")

    @property
    def history(self) -> list[dict]:
        """One dict per finished epoch: epoch, step, train_loss, train_acc, lr, val_loss, val_acc, ..."""
        return [{k: v for k, v in r.items() if k != "kind"} for r in self.records if r.get("kind") == "epoch"]

    @property
    def monitors(self) -> list[dict]:
        return [r for r in self.records if r.get("kind") == "monitor"]

    def model(self, which: str = "best", device: str | torch.device | None = None) -> PreprocessedModel:
        """The trained network with its preprocessing (input: raw [0, 1] images, output: logits),
        from checkpoints/best.pt (best validation accuracy) or last.pt, in eval mode."""
        device = torch.device(device) if device is not None else resolve_device(self.config["device"])
        key = (which, str(device))
        if key not in self._models:
            ckpt = load_checkpoint(_checkpoint_path(self.dir, which), map_location=device)
            self._models[key] = load_classifier(ckpt, device).eval()
        return self._models[key]

    def predict(self, x: torch.Tensor, which: str = "best", tta: str = "none") -> torch.Tensor:
        """Class **probabilities** (softmax, shape (N, C), rows sum to 1) for raw images ``x``
        (N, C, H, W) or features (N, D) in [0, 1], as the data loader gives them: preprocessing
        is inside the model. Returned on ``x``'s device; ``tta`` as for :func:`evaluate`.
        Use ``run.model()(x)`` for logits."""
        model = self.model(which)
        device = next(model.parameters()).device
        probs = predict_probs(model, x.to(device), self.config["train"]["eval_batch_size"], tta)
        return probs.to(x.device)

    def evaluate(self, which: str = "best", tta: str = "none", overrides: Sequence[str] | Mapping = ()) -> dict:
        """:func:`evaluate` on this run."""
        return evaluate(self, which, tta, overrides)

    def diagnose(self) -> list[dict]:
        """The curve diagnosis of this run (what summary.json's ``diagnosis`` holds)."""
        return self.summary["diagnosis"]


def load_run(path: str | os.PathLike) -> Run:
    """The run in directory ``path`` (made by ``trainlab train``, :func:`train`, search, ...)."""
    return Run(path)


def diagnose(history: Sequence[Mapping], monitors: AttachedMonitors | Sequence[Mapping] = (),
             steps: Sequence[Mapping] = (), stop_reason: str | None = None, base_lr: float | None = None,
             num_classes: int | None = None) -> list[dict]:
    """The lectures' curve diagnosis for any training loop: verdicts ``{code, message,
    evidence}`` (overfitting, underfitting, lr_too_high/low, decayed_too_early, plateau,
    diverged, dead_units, saturated_units, vanishing_activations, or healthy).

    history: one dict per epoch with ``train_loss``, ``train_acc`` and, when measured,
    ``val_loss``, ``val_acc`` and ``lr``. monitors: what :func:`attach_monitors` returned (or its
    records). steps: ``{"step", "loss"}`` per logged update (the first is where the loss
    started). A history without a needed key raises :class:`trainlab.ConfigError`.
    """
    if isinstance(monitors, AttachedMonitors):
        base_lr = monitors.base_lr if base_lr is None else base_lr
        monitors = monitors.records
    return diagnose_history(list(history), steps=list(steps), monitors=list(monitors), stop_reason=stop_reason,
                            base_lr=base_lr, num_classes=num_classes)


__all__ = ["train", "evaluate", "load_run", "Run", "attach_monitors", "diagnose", "resolve_config"]
