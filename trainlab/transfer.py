"""Transfer learning (the 2017 lecture 7 transcript, reference/000: "Transfer learning kind of
busts this myth that you don't need [sic] a huge amount of data in order to train a CNN").

    # 1. a backbone trained on a large data set (here Fashion-MNIST classes 0-4)
    trainlab train data.name=fashion-mnist data.classes=[0,1,2,3,4] model.name=convnet --out runs/src
    # 2. a new head for the new classes, trained with the strategy of the lectures' table
    trainlab finetune --from runs/src data.name=fashion-mnist data.classes=[5,6,7,8,9] \\
        data.per_class=100 transfer.strategy=auto --out runs/ft

Strategies (``transfer.strategy``), each with a new, freshly initialised head for C classes:

    linear   train a linear classifier on frozen features (only the new head learns)
    top_k    fine-tune the last ``transfer.k`` blocks of ``model.features`` and the head
    all      fine-tune everything; block i of n learns at ``lr_decay^(n−i)`` × the head's rate
             (lower layers hold generic features that need to change least)
    head_first  two phases (the 2017 lecture: "After that top layer converges ...
             then you can consider actually trying to update the whole network"): ``linear`` for up to
             ``transfer.head_epochs`` epochs (early stopping, patience 3) into ``<out>/head``,
             then ``all`` from those weights at ``optim.lr × transfer.finetune_lr_scale`` into ``<out>``
    stages   a linear classifier on the pooled features of the last ``transfer.stages`` blocks
             together (:class:`trainlab.models.MultiStageFeatures`), everything else frozen
    auto     the lectures' table:
                                  very similar data set          very different data set
             very little data     linear classifier on top       "you're in trouble": stages
             quite a lot of data  fine-tune a few layers (top_k) fine-tune a larger number (all)

"Very little data" is fewer than ``transfer.little_data`` labelled images per class (default
100, measured in docs/transfer.md); "similar" is ``transfer.similar``, and by default (auto) the
source and target belong to the same data-set family (see :data:`FAMILIES`).

The source is a trainlab checkpoint (a run directory or a .pt file: architecture and
preprocessing come from it) or a plain state dict of a trainlab architecture (``net`` only, or
``preprocess.*`` + ``net.*``; the architecture comes from the config given).

Why the source's preprocessing is reused and not refitted on the new data: the first layer's
filters were learned on inputs normalised with the *source* statistics; refitting would shift
(or, for PCA/whitening, rotate) the input those frozen filters see, and the features they
compute would no longer be the ones that were learned. A plain state dict without preprocessing
statistics is the exception: then the configured preprocessing is fitted on the new training
split, the only data there is.

Why frozen batch norms are held in eval mode by :class:`FrozenNormClassifier` (``train()``
overridden) and not by a callback: the trainer calls ``model.train()`` at the start of every
epoch, before any callback runs, so a callback could only switch them back after the first step
had already updated the running statistics.
"""
from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from trainlab.checkpoint import is_trainlab_checkpoint, load_checkpoint, require_trainlab_checkpoint, strip_wrapper_prefixes
from trainlab.classifier import PreprocessedModel, count_params, load_classifier
from trainlab.config import load_config
from trainlab.data import load_data
from trainlab.errors import UserError
from trainlab.log import say as say_info
from trainlab.models import MultiStageFeatures, build_model
from trainlab.preprocessing import PREPROCESSORS
from trainlab.run import default_out_dir, prepare_run_dir, train_run
from trainlab.schema import defaults

# Data sets whose images come from the same source, so features learned on one describe the
# other ("similar" in the lectures' table). Folder and npz data sets are their own family, per path.
FAMILIES = {
    "digits": "handwritten digits",
    "mnist": "handwritten digits",
    "fashion-mnist": "photos of clothing (Fashion-MNIST)",
    "cifar10": "tiny natural images (CIFAR)",
    "cifar100": "tiny natural images (CIFAR)",
}

# The lectures' 2×2 table: (very little data, similar data set) → (strategy, the lectures' advice).
TABLE = {
    (True, True): ("linear", "very little data x very similar data set: 'use a linear classifier on the top layer'"),
    (False, True): ("top_k", "quite a lot of data x very similar data set: 'fine-tune a few layers'"),
    (True, False): ("stages", "very little data x very different data set: 'You're in trouble... Try linear "
                              "classifier from different stages' (compare transfer.strategy=top_k and training "
                              "from scratch)"),
    (False, False): ("all", "quite a lot of data x very different data set: 'fine-tune a larger number of layers'"),
}


# head_first: epochs without a better validation accuracy after which the head counts as converged.
HEAD_PATIENCE = 3


# --- the source model -----------------------------------------------------------------------------


@dataclass
class Source:
    """The backbone to transfer from: its model (old head still on) and where it came from."""

    model: PreprocessedModel
    info: dict  # checkpoint, kind, dataset, classes, model: recorded in summary.json


def family(cfg_data: dict) -> str:
    name = cfg_data["name"]
    return FAMILIES.get(name) or f"{name} at {cfg_data.get('path') or cfg_data.get('root')}"


def adopt_source_architecture(cfg: dict, source_cfg: dict, say: Callable[[str], None]) -> dict:
    """``cfg`` with ``model`` and ``preprocess`` taken from the source checkpoint: the weights only
    fit the architecture they were trained in. Values the user set differently are reported."""
    cfg, default = copy.deepcopy(cfg), defaults()
    for section in ("model", "preprocess"):
        for key, value in source_cfg[section].items():
            mine = cfg[section].get(key)
            if mine != value and mine != default[section].get(key):
                say(f"{section}.{key}={mine} ignored: the architecture and preprocessing come from the source "
                    f"({section}.{key}={value})")
            cfg[section][key] = value
    return cfg


def unwrap_state_dict(obj: dict, path: str) -> dict:
    """The tensors of a plain state dict, also when wrapped as {"model": ...} / {"state_dict": ...}
    or saved from DataParallel/DDP or torch.compile (every key prefixed ``module.`` / ``_orig_mod.``)."""
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path!r} is neither a trainlab checkpoint nor a state dict (a mapping of names to tensors)")
    return strip_wrapper_prefixes(obj)


def model_from_state_dict(state: dict, cfg: dict, data, path: str, say: Callable[[str], None]) -> PreprocessedModel:
    """A trainlab model built from ``cfg`` (for the new number of classes) with the backbone
    weights of a plain state dict; everything but the head must match the architecture."""
    pre_state = {k[len("preprocess."):]: v for k, v in state.items() if k.startswith("preprocess.")}
    net_state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")} if pre_state else state
    pre = PREPROCESSORS.get(cfg["preprocess"]["name"])(cfg["preprocess"])
    if pre_state:
        try:
            pre.load_state_dict(pre_state)
        except RuntimeError as e:
            raise UserError(f"the preprocessing statistics in {path!r} do not fit preprocess.name="
                            f"{cfg['preprocess']['name']}: {str(e).splitlines()[0]}") from None
    else:
        say(f"{path} holds no preprocessing statistics: fitting preprocess.name={cfg['preprocess']['name']} "
            "on the new training split")
        pre.fit(data.train_x)
    net = build_model(cfg["model"], pre.output_shape(tuple(data.input_shape)), data.num_classes)
    backbone = {k: v for k, v in net_state.items() if not k.startswith("head.")}
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
    missing = [k for k in expected if k not in backbone]
    unexpected = [k for k in backbone if k not in expected]
    bad_shape = [k for k, v in backbone.items() if k in expected and expected[k].shape != v.shape]
    if missing or unexpected or bad_shape:
        raise UserError(f"the state dict {path!r} does not fit model.name={cfg['model']['name']} with the config given "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}); "
                        "set model.depth, model.width, model.norm, ... as the backbone was trained")
    net.load_state_dict(backbone, strict=False)  # all but the head, checked above
    return PreprocessedModel(pre, net)


def load_source(path: str | Path, cfg: dict, say: Callable[[str], None] = say_info) -> tuple[dict, dict]:
    """(checkpoint or state dict, cfg to train with): for a trainlab checkpoint the config's
    architecture and preprocessing are replaced by the source's."""
    ckpt = load_checkpoint(path)
    if is_trainlab_checkpoint(ckpt):
        require_trainlab_checkpoint(ckpt, path)
        return ckpt, adopt_source_architecture(cfg, ckpt["config"], say)
    return unwrap_state_dict(ckpt, str(path)), cfg


def build_source(ckpt: dict, cfg: dict, data, path: str, say: Callable[[str], None] = say_info) -> Source:
    """The source model with its weights, checked against the new data."""
    if not is_trainlab_checkpoint(ckpt):
        model = model_from_state_dict(ckpt, cfg, data, path, say)
        head = ckpt.get("head.weight", ckpt.get("net.head.weight"))
        return Source(model, {"checkpoint": path, "kind": "state dict", "dataset": None, "classes": None,
                              "num_classes": int(head.shape[0]) if head is not None else None,
                              "model": cfg["model"]["name"]})
    if tuple(ckpt["input_shape"]) != tuple(data.input_shape):
        raise UserError(f"the source {path!r} was trained on images of shape {tuple(ckpt['input_shape'])} but "
                        f"{cfg['data']['name']} has shape {tuple(data.input_shape)}; transfer needs the same input "
                        "shape (for folder data sets set data.image_size)")
    return Source(load_classifier(ckpt, source=path), {"checkpoint": path, "kind": "trainlab checkpoint",
                                          "dataset": ckpt["config"]["data"]["name"], "classes": list(ckpt["classes"]),
                                          "num_classes": ckpt["num_classes"], "model": ckpt["config"]["model"]["name"],
                                          "data": ckpt["config"]["data"]})


def replace_head(model: PreprocessedModel, cfg_model: dict, num_classes: int, seed: int) -> None:
    """Swap in a new head for ``num_classes`` classes, initialised exactly as a fresh model's head
    (the lecture: "reinitialize this last matrix randomly")."""
    net = model.net
    torch.manual_seed(seed)
    fresh = build_model(cfg_model, net.input_shape, num_classes)
    net.head = fresh.head.to(next(net.parameters()).device)
    net.num_classes = num_classes


# --- choosing the strategy (the lectures' table) ---------------------------------------------------


def images_per_class(data) -> float:
    """Labelled images per class the user has: training plus validation split."""
    return (len(data.train_y) + len(data.val_y)) / data.num_classes


def similar_data(source: dict, cfg: dict) -> tuple[bool, str]:
    """Is the target data set similar to the source's? ``transfer.similar``, or (auto) the same
    family of data sets (:data:`FAMILIES`)."""
    setting = cfg["transfer"]["similar"]
    if setting != "auto":
        return setting == "yes", f"transfer.similar={setting}"
    if source.get("data") is None:
        return False, ("the source is a plain state dict, so its data set is unknown: treated as very different "
                       "(set transfer.similar=yes if it was trained on similar images)")
    a, b = family(source["data"]), family(cfg["data"])
    if a == b:
        return True, f"source {source['dataset']} and target {cfg['data']['name']} are both {a}: similar"
    return False, f"source {source['dataset']} ({a}) and target {cfg['data']['name']} ({b}): very different"


def choose_strategy(per_class: float, little_threshold: int, similar: bool) -> tuple[str, str]:
    """The lectures' 2×2 table: (strategy, why) for the amount of data and the similarity."""
    little = per_class < little_threshold
    strategy, advice = TABLE[(little, similar)]
    amount = (f"{per_class:.0f} labelled images per class {'<' if little else '>='} transfer.little_data="
              f"{little_threshold}: {'very little' if little else 'quite a lot of'} data")
    return strategy, f"{amount}; the lectures' table says {advice} -> {strategy}"


def decide_strategy(cfg: dict, data, source: dict) -> tuple[str, str, bool]:
    """(strategy, reasoning, similar) for ``transfer.strategy``; auto consults the table."""
    similar, why_similar = similar_data(source, cfg)
    requested = cfg["transfer"]["strategy"]
    if requested != "auto":
        return requested, f"transfer.strategy={requested} was given", similar
    strategy, why = choose_strategy(images_per_class(data), cfg["transfer"]["little_data"], similar)
    return strategy, f"{why_similar}; {why}", similar


# --- applying it ------------------------------------------------------------------------------------


def trainable_blocks(strategy: str, n_blocks: int, k: int) -> range:
    """Indices of the ``model.features`` blocks that learn (the head always does)."""
    if strategy in ("linear", "stages"):
        return range(n_blocks, n_blocks)
    if strategy == "top_k":
        if k > n_blocks:
            raise UserError(f"transfer.k={k} but the model has only {n_blocks} blocks in model.features; "
                            f"use transfer.k<={n_blocks} or transfer.strategy=all")
        return range(n_blocks - k, n_blocks)
    return range(n_blocks)


def freeze(model: PreprocessedModel, learning: range) -> None:
    """requires_grad only for the blocks in ``learning`` and the head. The optimiser leaves frozen
    parameters out (optim.param_groups), so they cannot change, not even by weight decay."""
    model.requires_grad_(False)
    for i in learning:
        model.net.features[i].requires_grad_(True)
    model.net.head.requires_grad_(True)


def layer_lr_multipliers(n_blocks: int, decay: float) -> dict[str, float]:
    """Per-block learning-rate multipliers for ``all``: the head learns at the base rate and block
    i of n at decay^(n − i) of it (each block below learns ``decay`` × as fast as the one above),
    keyed by the parameter-name prefixes optim.param_groups matches."""
    return {f"net.features.{i}": decay ** (n_blocks - i) for i in range(n_blocks)}


def frozen_batch_norms(model: PreprocessedModel, learning: range) -> list[str]:
    """Names of the batch-norm layers inside frozen blocks."""
    names = []
    for i, block in enumerate(model.net.features):
        if i not in learning:
            names += [f"net.features.{i}.{n}" if n else f"net.features.{i}" for n, m in block.named_modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return names


class FrozenNormClassifier(PreprocessedModel):
    """A :class:`PreprocessedModel` whose batch norms in frozen blocks stay in eval mode through
    ``train()``: they normalise with the source's running statistics and never update them, so
    the frozen features are exactly the source's. The state dict is a plain PreprocessedModel's."""

    def __init__(self, model: PreprocessedModel, frozen_norms: list[str]):
        super().__init__(model.preprocess, model.net)
        self.frozen_norms = list(frozen_norms)

    def train(self, mode: bool = True) -> FrozenNormClassifier:
        super().train(mode)
        for name in self.frozen_norms:
            self.get_submodule(name).eval()
        return self


def apply_strategy(model: PreprocessedModel, strategy: str,
                   cfg_transfer: dict) -> tuple[PreprocessedModel, dict | None, dict]:
    """Freeze per ``strategy``; returns (model to train, lr_multipliers for train_run, details)."""
    n = len(model.net.features)
    learning = trainable_blocks(strategy, n, cfg_transfer["k"])
    freeze(model, learning)
    multipliers = layer_lr_multipliers(n, cfg_transfer["lr_decay"]) if strategy == "all" else None
    norms = frozen_batch_norms(model, learning) if cfg_transfer["freeze_bn"] else []
    if norms:
        model = FrozenNormClassifier(model, norms)
    details = {"trainable_blocks": list(learning), "blocks": n, "lr_multipliers": multipliers,
               "frozen_batch_norms": len(norms)}
    return model, multipliers, details


# --- the command ------------------------------------------------------------------------------------


def finetune(cfg: dict, source_path: str | Path, out: str | Path, say: Callable[[str], None] = say_info) -> dict:
    """Transfer the backbone at ``source_path`` to the data of ``cfg``; train into run directory
    ``out`` with train_run; return summary.json (with its ``transfer`` entry)."""
    prepare_run_dir(Path(out), resume=False)  # fail before loading anything
    if cfg["transfer"]["strategy"] == "head_first":
        prepare_run_dir(Path(out) / "head", resume=False)
    ckpt, cfg = load_source(source_path, cfg, say)
    data = load_data(cfg)
    source = build_source(ckpt, cfg, data, str(source_path), say)
    model = source.model
    strategy, reason, similar = decide_strategy(cfg, data, source.info)
    if strategy == "stages":
        read_from_stages(model, cfg, say)
    replace_head(model, cfg["model"], data.num_classes, cfg["seed"])
    say(f"transfer from {source_path} ({source.info['kind']}, {source.info['dataset'] or 'data set unknown'}) "
        f"to {cfg['data']['name']} with {data.num_classes} classes")
    say(f"strategy {strategy}: {reason}")
    head_phase = None
    if strategy == "head_first":
        prepare_run_dir(Path(out), resume=False)  # the user's --out is checked before phase 1 writes into it
        model, head_phase = train_head_first(model, cfg, data, Path(out), say)
        cfg = copy.deepcopy(cfg)
        cfg["optim"]["lr"] *= cfg["transfer"]["finetune_lr_scale"]
    model, multipliers, details = apply_strategy(model, "all" if strategy == "head_first" else strategy, cfg["transfer"])
    trainable = count_params(model, trainable_only=True)
    frozen = count_params(model) - trainable
    say(f"{trainable:,} trainable and {frozen:,} frozen parameters; learning blocks {details['trainable_blocks']} "
        f"of {details['blocks']} and the new head" + (f"; lr multipliers {multipliers}" if multipliers else ""))
    info = {k: v for k, v in source.info.items() if k != "data"}
    transfer = {"strategy": strategy, "requested": cfg["transfer"]["strategy"], "reason": reason,
                "trainable_params": trainable, "frozen_params": frozen, "source": info, "similar": similar,
                "images_per_class": images_per_class(data), "little_data": cfg["transfer"]["little_data"],
                "freeze_bn": cfg["transfer"]["freeze_bn"], **details}
    if head_phase is not None:
        transfer["head_phase"] = head_phase
    # head_first: `out` holds only phase 1's head/ folder, made above, so phase 2 may write beside it.
    return train_run(cfg, out, model=model, lr_multipliers=multipliers, data=data, say=say,
                     extra_summary={"transfer": transfer}, force=head_phase is not None)


def read_from_stages(model: PreprocessedModel, cfg: dict, say: Callable[[str], None]) -> None:
    """For ``stages``: the backbone's features become :class:`MultiStageFeatures` over its last
    ``transfer.stages`` blocks (at most all of them), and ``model.head_stages`` records it in the
    config, so the saved checkpoint rebuilds the same architecture."""
    n = len(model.net.features)
    taps = min(cfg["transfer"]["stages"], n)
    if taps < cfg["transfer"]["stages"]:
        say(f"transfer.stages={cfg['transfer']['stages']} but the backbone has {n} blocks: reading all {n}")
    model.net.features = MultiStageFeatures(model.net.features, taps)
    cfg["model"]["head_stages"] = taps


def train_head_first(model: PreprocessedModel, cfg: dict, data, out: Path,
                     say: Callable[[str], None]) -> tuple[PreprocessedModel, dict]:
    """Phase 1 of ``head_first``: the new head alone on frozen features, trained into
    ``out/head`` until it converges (``transfer.head_epochs`` epochs at most, early stopping
    after 3 without a better validation accuracy). Returns the model with the head's best weights
    (unfrozen wrapper: phase 2 decides what learns) and that run's figures."""
    head_cfg = copy.deepcopy(cfg)
    head_cfg["train"]["epochs"] = cfg["transfer"]["head_epochs"]
    head_cfg["train"]["early_stopping"] = HEAD_PATIENCE
    frozen, _, _ = apply_strategy(model, "linear", cfg["transfer"])
    say(f"head_first, phase 1: the new head alone for up to {head_cfg['train']['epochs']} epochs into {out / 'head'}")
    summary = train_run(head_cfg, out / "head", model=frozen, data=data, say=say, report=False)
    say(f"head_first, phase 2: the whole network at optim.lr x {cfg['transfer']['finetune_lr_scale']:g}")
    phase = {"run": "head", "epochs": summary["epochs"], "best_val_acc": summary["best_val_acc"],
             "test_acc": summary["test_acc"], "stop_reason": summary["stop_reason"]}
    return PreprocessedModel(frozen.preprocess, frozen.net), phase


def cmd_finetune(args) -> int:
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else default_out_dir(cfg, "finetune")
    finetune(cfg, args.source, out)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune",
                              help="transfer a trained backbone to new data (new head, strategy per the lectures' table)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, metavar="CHECKPOINT",
                   help="run directory, trainlab .pt checkpoint, or plain state dict of a trainlab architecture")
    p.add_argument("-c", "--config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. data.name=fashion-mnist data.per_class=100 transfer.strategy=auto")
    p.add_argument("--out", help="run directory (default runs/<data>-<model>-<time>)")
    p.set_defaults(func=cmd_finetune)


__all__ = ["FAMILIES", "TABLE", "Source", "FrozenNormClassifier", "load_source", "build_source", "replace_head",
           "similar_data", "choose_strategy", "decide_strategy", "trainable_blocks", "freeze", "layer_lr_multipliers",
           "frozen_batch_norms", "apply_strategy", "finetune", "read_from_stages", "train_head_first", "register"]
