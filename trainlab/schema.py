"""Every configuration key trainlab understands: its default, type and allowed values.

The bottom of the package: this module imports nothing from trainlab, so components, data
loaders and the config validator above them can all read their defaults from here. Choices that
name a registry ("activations", "optimizers", ...) are resolved by :mod:`trainlab.config`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Key:
    """One config key: default, type, and what values it accepts.

    kind: "int" | "float" | "bool" | "str" | "floats" (list of numbers) | "strs" (list of names)
    low/high: inclusive bounds unless low_open/high_open; choices: a tuple, or the name of a
    registry (resolved lazily, see :func:`_registry_names`).
    """

    default: Any
    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | str | None = None
    nullable: bool = False

    def out_of_range(self, number: float) -> bool:
        """True when ``number`` breaks the bounds low/high (open or closed)."""
        return ((self.low is not None and (number < self.low or (self.low_open and number == self.low)))
                or (self.high is not None and (number > self.high or (self.high_open and number == self.high))))

    def bounds(self) -> str:
        """The bounds in words: '>= 0 and < 1', or '' without bounds."""
        parts = []
        fmt = (lambda v: str(int(v))) if self.kind == "int" else (lambda v: f"{v:g}")
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {fmt(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {fmt(self.high)}")
        return " and ".join(parts)


def _k(default, kind, help, **kw) -> Key:
    return Key(default, kind, help, **kw)


POS = dict(low=0.0, low_open=True)  # strictly positive
NONNEG = dict(low=0.0)
FRACTION = dict(low=0.0, high=1.0, high_open=True)

SCHEMA: dict[str, Key] = {
    # --- run -----------------------------------------------------------------------------
    "seed": _k(0, "int", "random seed: data split, init, batch order, augmentation", low=0, high=2**32 - 1),
    "device": _k("auto", "str", "auto picks cuda, then mps, then cpu", choices=("auto", "cpu", "cuda", "mps")),
    # --- data (docs/design.md §1) ------------------------------------------------------
    "data.name": _k("digits", "str", "data set", choices="datasets"),
    "data.root": _k(None, "str", "folder with one sub-folder per data set (default: $TRAINLAB_DATA, else ~/.cache/trainlab)", nullable=True),
    "data.path": _k(None, "str", "for folder/npz: the folder or .npz file (default: <root>/<name>)", nullable=True),
    "data.download": _k(True, "bool", "download a missing public data set from its official URL"),
    "data.val_fraction": _k(0.1, "float", "fraction of train carved out (seeded, stratified) for validation", **FRACTION),
    "data.subset": _k(None, "int", "keep only this many training images (stratified)", low=1, nullable=True),
    "data.per_class": _k(None, "int", "keep only this many training images per class", low=1, nullable=True),
    "data.classes": _k(None, "floats", "keep only these class indices (relabelled 0..k-1)", nullable=True),
    "data.stream": _k("auto", "str", "off: load into memory; on: stream batches from disk (DataLoader workers); auto: stream if over data.memory_limit_gb",
                      choices=("off", "on", "auto")),
    "data.memory_limit_gb": _k(None, "float", "data.stream=auto streams sets bigger than this (default: 1/4 of device memory, of RAM on CPU)",
                             nullable=True, **POS),
    "data.workers": _k(None, "int", "streaming: DataLoader worker processes (default: 0 for arrays, CPU cores - 1 up to 8 for image files)",
                       nullable=True, **NONNEG),
    "data.prefetch": _k(2, "int", "streaming: batches each worker decodes ahead", low=1),
    "data.image_size": _k(32, "int", "folder data sets: images are resized to this square size", low=4),
    # --- preprocessing (fitted on train, saved in the model) -----------------------------
    "preprocess.name": _k("standardize", "str", "none, mean_image, channel_mean, standardize, pca, pca_whiten, zca", choices="preprocessors"),
    "preprocess.components": _k(0.99, "float", "pca: an int >= 1 keeps that many components; a fraction keeps that much variance", **POS),
    "preprocess.epsilon": _k(1e-5, "float", "whitening: added to eigenvalues before the inverse square root", **NONNEG),
    # --- augmentation (batched, on device, per-sample randomness) ------------------------
    "augment.names": _k([], "strs", "augmentations applied in order to each training batch", choices="augmentations"),
    "augment.crop_padding": _k(4, "int", "crop: pixels of zero padding before the random crop", **NONNEG),
    "augment.cutout_size": _k(8, "int", "cutout: side of the zeroed square", low=1),
    "augment.scale": _k([0.35, 1.0], "floats", "resized_crop: area fraction range"),
    "augment.ratio": _k([0.75, 1.3333333], "floats", "resized_crop: aspect-ratio range"),
    "augment.brightness": _k(0.4, "float", "jitter: brightness factor drawn from [1-b, 1+b]", **NONNEG),
    "augment.contrast": _k(0.4, "float", "jitter: contrast factor drawn from [1-c, 1+c]", **NONNEG),
    "augment.saturation": _k(0.4, "float", "jitter: saturation factor drawn from [1-s, 1+s]", **NONNEG),
    "augment.lighting_std": _k(0.1, "float", "lighting: std of the PCA colour noise (AlexNet)", **NONNEG),
    "augment.rotate": _k(15.0, "float", "affine: max rotation in degrees", **NONNEG),
    "augment.shear": _k(10.0, "float", "affine: max shear in degrees", **NONNEG),
    "augment.translate": _k(0.1, "float", "affine: max shift as a fraction of the image side", **NONNEG),
    "augment.mix_alpha": _k(1.0, "float", "mixup/cutmix: Beta(alpha, alpha) for the mixing weight", **POS),
    "augment.tta": _k("none", "str", "test-time views averaged: none, flip, crops (fixed crops + flips), scales (crops at 3 scales)",
                      choices=("none", "flip", "crops", "scales")),
    # --- model (docs/design.md §2) -----------------------------------------------------
    "model.name": _k("mlp", "str", "architecture", choices="models"),
    "model.depth": _k(None, "int", "mlp: hidden layers (2); convnet: stages (3); resnet: 20, 32, 44, 56, 110 or 18", low=1, high=1000, nullable=True),
    "model.width": _k(None, "int", "mlp: hidden units (256); convnet/resnet: channels of the first stage (32 / 16, 64 for resnet18)",
                      low=1, high=65536, nullable=True),
    "model.activation": _k("relu", "str", "activation function", choices="activations"),
    "model.leaky_slope": _k(0.01, "float", "leaky_relu: slope for x < 0", **NONNEG),
    "model.elu_alpha": _k(1.0, "float", "elu: alpha", **POS),
    "model.maxout_k": _k(2, "int", "maxout: number of linear pieces", low=2),
    "model.norm": _k(None, "str", "normalisation layer after each conv/linear (null: batch for resnet, else none)", choices="norms", nullable=True),
    "model.groups": _k(8, "int", "group norm: number of groups", low=1),
    "model.sync_bn": _k("off", "str", "data-parallel: batch norm over the global batch (all ranks) instead of each rank's share", choices=("off", "on")),
    "model.init": _k("kaiming", "str", "weight initialisation", choices="inits"),
    "model.init_std": _k(0.01, "float", "small_gaussian: std; constant: the value", **NONNEG),
    "model.bias_init": _k(0.0, "float", "initial value of every bias (a large negative one kills ReLUs)"),
    "model.head_scale": _k(0.1, "float", "multiplies the initial weights of the last layer (small: initial loss near ln C)", **NONNEG),
    "model.zero_init_residual": _k(True, "bool", "resnet: zero the last norm's gamma in each block"),
    "model.dropout": _k(0.0, "float", "inverted dropout probability of dropping a unit", **FRACTION),
    "model.dropconnect": _k(0.0, "float", "DropConnect probability of dropping a weight (mlp hidden layers)", **FRACTION),
    "model.stochastic_depth": _k(0.0, "float", "resnet: drop probability of the last block (linear in depth)", **FRACTION),
    "model.fractional_pool": _k(False, "bool", "convnet: fractional max pooling (ratio 1/sqrt 2) instead of 2x2 max pooling"),
    "model.fractional_eval_sets": _k(1, "int", "fractional_pool: test predictions averaged over this many fixed pooling-region sets", low=1),
    "model.channel_dropout": _k(0.0, "float", "convnet: probability of dropping a whole channel after each stage's convolutions (spatial dropout)", **FRACTION),
    "model.head_stages": _k(1, "int", "the head reads the pooled features of this many last blocks of model.features, concatenated (1: the last only)", low=1),
    # --- regularisation in the loss ------------------------------------------------------
    "reg.penalty": _k("none", "str", "weight penalty added to the loss", choices="penalties"),
    "reg.strength": _k(1e-4, "float", "lambda of the penalty", **NONNEG),
    "reg.beta": _k(0.5, "float", "elastic: R(W) = sum(beta W^2 + |W|)", **NONNEG),
    "reg.label_smoothing": _k(0.0, "float", "label smoothing epsilon", **FRACTION),
    # --- optimiser (docs/design.md §3) -------------------------------------------------
    "optim.name": _k("adam", "str", "update rule (torch.optim)", choices="optimizers"),
    "optim.lr": _k(1e-3, "float", "base learning rate", **POS),
    "optim.momentum": _k(0.9, "float", "momentum / nesterov: rho", low=0.0, high=1.0, high_open=True),
    "optim.betas": _k([0.9, 0.999], "floats", "adam/adamw: beta1, beta2"),
    "optim.alpha": _k(0.99, "float", "rmsprop: decay rate of the squared-gradient average", low=0.0, high=1.0, high_open=True),
    "optim.momentum_start": _k(0.5, "float", "momentum annealing: rho (adam: beta1) at the first update", low=0.0, high=1.0, high_open=True),
    "optim.momentum_anneal_epochs": _k(0.0, "float", "rho (adam: beta1) rises linearly from momentum_start to its configured value over these epochs (0: off)",
                                    **NONNEG),
    "optim.eps": _k(1e-8, "float", "adagrad/rmsprop/adam: added to the denominator", **POS),
    "optim.weight_decay": _k(0.0, "float", "torch.optim weight decay (decoupled for adamw)", **NONNEG),
    "optim.no_decay_bias_norm": _k(True, "bool", "no weight decay or penalty on biases and norm parameters"),
    "optim.batch_scaling": _k(False, "bool", "linear scaling rule: lr x batch_size / reference_batch"),
    "optim.reference_batch": _k(256, "int", "batch size the base lr is meant for", low=1),
    "optim.lbfgs_history": _k(10, "int", "lbfgs: history size", low=1),
    "optim.lbfgs_iters": _k(20, "int", "lbfgs: inner iterations per step", low=1),
    # --- learning-rate schedule, stepped per iteration -----------------------------------
    "schedule.name": _k("cosine", "str", "learning-rate schedule", choices="schedules"),
    "schedule.warmup_epochs": _k(0.0, "float", "linear warm-up from 0 over this many epochs", **NONNEG),
    "schedule.milestones": _k([0.5, 0.75], "floats", "step: fractions of training at which lr is multiplied by gamma"),
    "schedule.gamma": _k(0.1, "float", "step: factor at each milestone", **POS),
    "schedule.decay": _k(1.0, "float", "exponential a0*exp(-k t) and 1/t a0/(1+k t): k per epoch", **NONNEG),
    "schedule.min_scale": _k(0.0, "float", "cosine/linear/sgdr/cyclic: lowest lr as a fraction of the base", **NONNEG),
    "schedule.cycle_epochs": _k(2.0, "float", "sgdr/cyclic: length of the first cycle in epochs", **POS),
    "schedule.cycle_mult": _k(1.0, "float", "sgdr: each cycle is this many times longer than the last", low=1.0),
    "schedule.peak_fraction": _k(0.3, "float", "onecycle: fraction of training spent rising to the peak", low=0.0, high=1.0, low_open=True, high_open=True),
    # --- training loop ------------------------------------------------------------------
    "train.epochs": _k(30, "int", "passes over the training split", low=1),
    "train.batch_size": _k(64, "int", "minibatch size", low=1),
    "train.eval_batch_size": _k(256, "int", "batch size for evaluation (its activations are the peak memory of evaluation)", low=1),
    "train.train_eval_size": _k(5000, "int", "size of the fixed, seeded training subset measured in eval mode each epoch (train_acc, train_loss)", low=1),
    "train.max_steps": _k(None, "int", "stop after this many updates (smoke tests)", low=1, nullable=True),
    "train.clip_grad": _k(0.0, "float", "clip the global gradient norm to this (0: off)", **NONNEG),
    "train.early_stopping": _k(0, "int", "stop after this many epochs without a better val accuracy (0: off)", **NONNEG),
    "train.ema": _k(0.0, "float", "Polyak/EMA decay of the weights, e.g. 0.999 (0: off)", low=0.0, high=1.0, high_open=True),
    "train.snapshots": _k(0, "int", "keep the weights at the end of each of the last K cycles (sgdr/cyclic)", **NONNEG),
    "train.amp": _k("auto", "str", "mixed precision (autocast): off; fp16 (with a GradScaler; cuda, mps); bf16 (cpu, Ampere+ cuda); "
                    "auto = bf16 where native (Ampere+ cuda), else off; on = fp16 (old spelling). Refused (exit 2) where the device cannot",
                    choices=("off", "fp16", "bf16", "auto", "on")),
    "train.compile": _k("off", "str", "torch.compile the model for training (checkpoints stay loadable without it)", choices=("off", "on")),
    "train.deterministic": _k(False, "bool", "deterministic kernels (torch.use_deterministic_algorithms, cudnn.deterministic); turns cudnn_benchmark auto off"),
    "train.cudnn_benchmark": _k("auto", "str", "cudnn.benchmark (autotune conv kernels per input shape): auto (on for cuda unless deterministic), on, off",
                                choices=("auto", "on", "off")),
    "train.channels_last": _k("auto", "str", "channels-last memory format: auto (on for cuda conv nets), on, off", choices=("auto", "on", "off")),
    "train.checkpoint_every": _k(None, "int", "also write last.pt every N steps (exact mid-epoch --resume); 0: epoch ends only; unset: every ~10 minutes",
                                  nullable=True, **NONNEG),
    "train.log_every": _k(20, "int", "log the training loss every N steps", low=1),
    "train.progress": _k(True, "bool", "show a progress bar"),
    "train.dist_timeout": _k(300.0, "float", "data-parallel: seconds a rank waits for the others before the job fails", **POS),
    "train.nan_policy": _k("stop", "str", "on a NaN/inf or exploding loss: stop (keep the last good checkpoint) or continue", choices=("stop", "continue")),
    # --- monitors (docs/design.md §4) --------------------------------------------------
    "monitor.every": _k(100, "int", "probe activations, gradients and update ratios every N steps (0: off)", **NONNEG),
    "monitor.probe_size": _k(256, "int", "images in the fixed probe batch", low=1),
    "monitor.bins": _k(30, "int", "bins of the activation histograms", low=2),
    "monitor.warn": _k(True, "bool", "print a warning as soon as a monitor sees dead or saturated units, vanishing activations or an odd update ratio"),
    "monitor.plots": _k(True, "bool", "write the monitor plots (histograms, std per layer, update ratios, gradient norms, first-layer filters) at the end"),
    # --- transfer (docs/design.md §6) --------------------------------------------------
    "transfer.strategy": _k("auto", "str", "auto, linear, top_k, all, head_first (head, then all) or stages (linear on several stages)",
                              choices=("auto", "linear", "top_k", "all", "head_first", "stages")),
    "transfer.head_epochs": _k(10, "int", "head_first: epochs of the head-only phase (stops after 3 epochs without a better val accuracy)", low=1),
    "transfer.finetune_lr_scale": _k(0.1, "float", "head_first: the whole-network phase runs at optim.lr times this", **POS),
    "transfer.stages": _k(3, "int", "stages: the linear classifier reads the pooled features of this many last blocks", low=1),
    "transfer.k": _k(1, "int", "top_k: number of top blocks to fine-tune", low=1),
    "transfer.lr_decay": _k(0.3, "float", "all: each lower block's lr is this times the block above's", **POS),
    "transfer.freeze_bn": _k(True, "bool", "keep batch-norm statistics of frozen layers fixed"),
    "transfer.similar": _k("auto", "str", "is the new data similar to the source? auto: same data set family", choices=("auto", "yes", "no")),
    "transfer.little_data": _k(100, "int", "auto: fewer labelled images per class than this is 'very little data'", low=1),
}


def defaults() -> dict:
    """The full nested default config."""
    cfg: dict = {}
    for dotted, key in SCHEMA.items():
        set_dotted(cfg, dotted, copy.deepcopy(key.default))
    return cfg


def set_dotted(cfg: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        cfg = cfg.setdefault(p, {})
    cfg[leaf] = value


def default(dotted: str):
    """The default value of one key (a fresh copy)."""
    return copy.deepcopy(SCHEMA[dotted].default)
