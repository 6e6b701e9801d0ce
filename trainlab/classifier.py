"""What a run trains: fitted preprocessing followed by a network, its loss and penalty, and the
checkpoint metadata that lets it be rebuilt anywhere."""
from __future__ import annotations

from collections.abc import Callable

import psutil
import torch
import torch.nn as nn

from trainlab import __version__
from trainlab.checkpoint import load_model_state, require_trainlab_checkpoint
from trainlab.config import flatten, resolve_paths, validate
from trainlab.errors import UserError, first_line, short
from trainlab.models import build_model
from trainlab.preprocessing import PREPROCESSORS, to_unit_float
from trainlab.regularization import smoothed_cross_entropy, weight_penalty


class PreprocessedModel(nn.Module):
    """Preprocessing (fitted on the training split, stored as buffers) followed by the network,
    so a checkpoint carries everything needed to classify raw images: floats in [0, 1], or uint8
    pixels, converted batch by batch on the model's device (:func:`to_unit_float`)."""

    def __init__(self, preprocess: nn.Module, net: nn.Module):
        super().__init__()
        self.preprocess, self.net = preprocess, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(to_unit_float(x)))


def build_classifier(cfg: dict, input_shape: tuple, num_classes: int, x_train: torch.Tensor | None = None,
                     net_input_shape: tuple | None = None) -> PreprocessedModel:
    """The preprocessing named in ``cfg`` (fitted on ``x_train`` when given) and a freshly
    initialised network. When loading a checkpoint, pass ``net_input_shape`` from its meta."""
    pre = PREPROCESSORS.get(cfg["preprocess"]["name"])(cfg["preprocess"])
    if x_train is not None:
        pre.fit(x_train)
    shape = tuple(net_input_shape) if net_input_shape is not None else tuple(pre.output_shape(tuple(input_shape)))
    check_model_fits(cfg["model"], shape, num_classes)
    return PreprocessedModel(pre, build_model(cfg["model"], shape, num_classes))


def check_model_fits(cfg_model: dict, input_shape: tuple, num_classes: int) -> None:
    """Refuse a network whose training state cannot fit in memory before allocating it: the
    network is first built on PyTorch's "meta" device (shapes only, no storage), and its
    weights, gradients and two optimiser moments (4 x 4 bytes per parameter) are compared with
    the memory available. A search space such as ``model.width: int(1, 1e6)`` meets this."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            params = count_params(build_model(cfg_model, input_shape, num_classes))
    except Exception:  # noqa: BLE001  an architecture that cannot be built on "meta" is built for real below
        return
    need, available = 16 * params, psutil.virtual_memory().available
    if need > available:
        raise UserError(f"model.name={cfg_model['name']} with model.depth={cfg_model.get('depth')} and "
                        f"model.width={cfg_model.get('width')} has {params:,} parameters: training it needs about "
                        f"{need / 2**30:.1f} GiB, and {available / 2**30:.1f} GiB are free; choose a smaller "
                        "model.width or model.depth")


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
    `trainlab predict` can tell a 0-255 array from one in [0, 1] instead of silently misreading it.

    uint8 pixels count as the floats p / 255 the model turns them into; a streamed split (not a
    tensor) is judged by its first RANGE_SAMPLE images rather than decoded whole."""
    if len(x) == 0:
        return [0.0, 1.0]
    if not isinstance(x, torch.Tensor):
        x = x[:RANGE_SAMPLE]
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    return [float(x.min()) / scale, float(x.max()) / scale]


RANGE_SAMPLE = 4096


def load_classifier(ckpt: dict, device: torch.device | str = "cpu", source: str = "checkpoint") -> PreprocessedModel:
    """Rebuild the model of a trainlab checkpoint (best.pt or last.pt) with its weights;
    ``source`` names the file in the UserError raised when the checkpoint is not a usable one."""
    require_trainlab_checkpoint(ckpt, source)
    cfg = validate(flatten(ckpt["config"]))
    try:
        model = build_classifier(cfg, tuple(ckpt["input_shape"]), ckpt["num_classes"],
                                 net_input_shape=tuple(ckpt["net_input_shape"]))
        load_model_state(model, ckpt["model"])
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"checkpoint {source!r} does not rebuild into the model its config describes "
                        f"({first_line(e)}); it is damaged: use the run's other checkpoint or train again") from None
    return model.to(device)


def check_same_data(ckpt: dict, data, source: str = "checkpoint") -> None:
    """A model answers for the classes and input shape it was trained on: refuse data that differ
    (e.g. `trainlab evaluate RUN data.classes=[0,1,2]` on a 10-class model)."""
    if list(data.classes) != list(ckpt["classes"]) or tuple(data.input_shape) != tuple(ckpt["input_shape"]):
        raise UserError(f"{source!r} was trained on {ckpt['num_classes']} classes {short(list(ckpt['classes']))} of "
                        f"shape {tuple(ckpt['input_shape'])}, but the data now gives {data.num_classes} classes "
                        f"{short(list(data.classes))} of shape {tuple(data.input_shape)}; evaluate it on the data it "
                        "was trained on (drop the data.* overrides that change the classes or image size)")


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
