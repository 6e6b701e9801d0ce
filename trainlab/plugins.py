"""Your own components, found by name like the built-in ones.

A module of yours registers a model (or an activation, optimiser, schedule, ...) under a name::

    # my_models.py
    from torch import nn
    from trainlab.plugins import register_model

    @register_model("tiny_cnn")
    def tiny_cnn(cfg: dict, input_shape: tuple, num_classes: int) -> nn.Module:
        # cfg: the model config section (cfg["width"], cfg["activation"], ...); input_shape: (C, H, W)
        return nn.Sequential(nn.Conv2d(input_shape[0], 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(8 * input_shape[1] * input_shape[2], num_classes))

and trainlab loads that module before it reads the config, in either of two ways:

    trainlab --import my_models train model.name=tiny_cnn      # a module on sys.path or in the current folder
    # or, in your package's pyproject.toml, once for every command:
    [project.entry-points."trainlab.plugins"]
    my_models = "my_models"

``--import`` is passed on to the processes a command starts (search workers) through the
environment variable ``TRAINLAB_IMPORT`` (module names separated by commas), which may also be set
directly. A model that has ``features`` (blocks) and ``head`` (the last nn.Linear) gets the
monitors' per-layer names and transfer learning's strategies too; any nn.Module trains.
"""
from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from trainlab.activations import ACTIVATIONS
from trainlab.augmentation import AUGMENTATIONS
from trainlab.data.datasets import DATASETS
from trainlab.errors import UserError
from trainlab.init import INITS
from trainlab.models import MODELS
from trainlab.norms import NORMS
from trainlab.optim import OPTIMIZERS
from trainlab.preprocessing import PREPROCESSORS
from trainlab.regularization import PENALTIES
from trainlab.schedules import SCHEDULES

ENTRY_POINT_GROUP = "trainlab.plugins"
ENV = "TRAINLAB_IMPORT"

register_model = MODELS.register
register_activation = ACTIVATIONS.register
register_norm = NORMS.register
register_init = INITS.register
register_optimizer = OPTIMIZERS.register
register_schedule = SCHEDULES.register
register_augmentation = AUGMENTATIONS.register
register_preprocessor = PREPROCESSORS.register
register_penalty = PENALTIES.register
register_dataset = DATASETS.register


def import_module(name: str):
    """Import a user's module by name; the current folder is searched too (the ``trainlab``
    console script, unlike ``python -m``, does not put it on sys.path)."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name.split(".")[0] and e.name != name:
            raise  # the module exists but imports something missing: show that traceback
        raise UserError(f"--import {name}: no module named {name!r} in the current folder or on sys.path; "
                        f"give a module name (my_models for my_models.py), not a file path") from None


def load_plugins(names: list[str] = ()) -> list[str]:
    """Import the entry points of group ``trainlab.plugins``, the modules in $TRAINLAB_IMPORT and
    ``names``; ``names`` are added to $TRAINLAB_IMPORT for the processes this one starts.
    Returns the module names imported."""
    from_env = [n for n in os.environ.get(ENV, "").split(",") if n.strip()]
    wanted = list(dict.fromkeys([n.strip() for n in from_env] + list(names)))
    if wanted:
        os.environ[ENV] = ",".join(wanted)
    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
        loaded.append(ep.value)
    for name in wanted:
        import_module(name)
        loaded.append(name)
    return loaded
