"""trainlab: train neural-network image classifiers the way the "Training Neural Networks" lectures teach.

The Python API (docs/api.md). Components for your own training loop, by name, with keyword
arguments whose defaults are the config's:

    model = trainlab.create_model("convnet", num_classes=10, input_shape=(1, 8, 8), width=16)
    opt = trainlab.create_optimizer(model, "nesterov", lr=0.05, weight_decay=5e-4)
    sched = trainlab.create_scheduler(opt, "sgdr", epochs=10, steps_per_epoch=len(loader))
    augment = trainlab.create_augmentation(["flip", "crop", "cutout"], crop_padding=1, cutout_size=3)
    monitors = trainlab.attach_monitors(model, x[:256], opt)
    trainlab.diagnose(history)

and whole runs, as ``trainlab train`` makes them:

    run = trainlab.train(overrides=["train.epochs=2"], out="runs/api")
    run = trainlab.load_run("runs/api"); run.predict(x)

``import trainlab`` stays light: the API's modules (and torch) are imported on first use.
"""
import importlib
import sys
import types

from trainlab.errors import ConfigError, UserError

__version__ = "0.1.0"

# public name → the module that defines it (imported on first access)
_LAZY = {
    "create_model": "trainlab.models",
    "create_activation": "trainlab.activations",
    "create_norm": "trainlab.norms",
    "create_init": "trainlab.init",
    "create_optimizer": "trainlab.optim",
    "create_scheduler": "trainlab.schedules",
    "create_augmentation": "trainlab.augmentation",
    "create_preprocessing": "trainlab.preprocessing",
    "train": "trainlab.api",
    "evaluate": "trainlab.api",
    "load_run": "trainlab.api",
    "Run": "trainlab.api",
    "attach_monitors": "trainlab.api",
    "diagnose": "trainlab.api",
}

__all__ = ["__version__", "ConfigError", "UserError", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'trainlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``trainlab.train`` and ``trainlab.evaluate`` are API functions and also the names of
    submodules (the training loop, the metrics). Importing a submodule normally rebinds the
    package attribute of that name to the module; here the function keeps the name. The
    submodules are reached as usual with ``from trainlab.train import Trainer``."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
