"""What a run trains: fitted preprocessing followed by a network, its loss and penalty, and the
checkpoint metadata that lets it be rebuilt anywhere."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from trainlab import __version__
from trainlab.config import resolve_paths
from trainlab.models import build_model
from trainlab.preprocessing import PREPROCESSORS
from trainlab.regularization import smoothed_cross_entropy, weight_penalty


class PreprocessedModel(nn.Module):
    """Preprocessing (fitted on the training split, stored as buffers) followed by the network,
    so a checkpoint carries everything needed to classify raw images in [0, 1]."""

    def __init__(self, preprocess: nn.Module, net: nn.Module):
        super().__init__()
        self.preprocess, self.net = preprocess, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))


def build_classifier(cfg: dict, input_shape: tuple, num_classes: int, x_train: torch.Tensor | None = None,
                     net_input_shape: tuple | None = None) -> PreprocessedModel:
    """The preprocessing named in ``cfg`` (fitted on ``x_train`` when given) and a freshly
    initialised network. When loading a checkpoint, pass ``net_input_shape`` from its meta."""
    pre = PREPROCESSORS.get(cfg["preprocess"]["name"])(cfg["preprocess"])
    if x_train is not None:
        pre.fit(x_train)
    shape = tuple(net_input_shape) if net_input_shape is not None else tuple(pre.output_shape(tuple(input_shape)))
    return PreprocessedModel(pre, build_model(cfg["model"], shape, num_classes))


def checkpoint_meta(cfg: dict, data, model: PreprocessedModel) -> dict:
    """What every checkpoint carries besides the weights: the run's config (paths resolved, so
    `trainlab evaluate CHECKPOINT` finds the data from any directory), the data's shape and the
    range of its raw values."""
    return {"config": resolve_paths(cfg), "classes": list(data.classes), "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "net_input_shape": list(model.preprocess.output_shape(tuple(data.input_shape))),
            "input_range": input_range(data.train_x), "trainlab_version": __version__}


def input_range(x: torch.Tensor) -> list[float]:
    """[min, max] of the raw training inputs (before preprocessing): what the model was fed, so
    `trainlab predict` can tell a 0-255 array from one in [0, 1] instead of silently misreading it."""
    if x.numel() == 0:
        return [0.0, 1.0]
    return [float(x.min()), float(x.max())]


def load_classifier(ckpt: dict, device: torch.device | str = "cpu") -> PreprocessedModel:
    """Rebuild the model of a trainlab checkpoint (best.pt or last.pt) with its weights."""
    model = build_classifier(ckpt["config"], tuple(ckpt["input_shape"]), ckpt["num_classes"],
                             net_input_shape=tuple(ckpt["net_input_shape"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def make_loss(cfg: dict) -> Callable:
    eps = cfg["reg"]["label_smoothing"]
    return lambda logits, target: smoothed_cross_entropy(logits, target, eps)


def make_penalty(cfg: dict, model: nn.Module) -> Callable[[], torch.Tensor] | None:
    """λ·R(W) over the weights (not biases or norm parameters), or None when off."""
    if cfg["reg"]["penalty"] == "none" or cfg["reg"]["strength"] == 0:
        return None
    return lambda: weight_penalty(model, cfg["reg"])
