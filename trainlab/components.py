"""Every name → component registry in one place, for config validation, the CLI and the docs.

Importing this module imports the modules that fill the registries.
"""
from trainlab.activations import ACTIVATIONS
from trainlab.augmentation import AUGMENTATIONS
from trainlab.data.datasets import DATASETS
from trainlab.init import INITS
from trainlab.models import MODELS
from trainlab.norms import NORMS
from trainlab.optim import OPTIMIZERS
from trainlab.preprocessing import PREPROCESSORS
from trainlab.regularization import PENALTIES
from trainlab.schedules import SCHEDULES

REGISTRIES = {
    "datasets": DATASETS,
    "preprocessors": PREPROCESSORS,
    "augmentations": AUGMENTATIONS,
    "models": MODELS,
    "activations": ACTIVATIONS,
    "norms": NORMS,
    "inits": INITS,
    "penalties": PENALTIES,
    "optimizers": OPTIMIZERS,
    "schedules": SCHEDULES,
}
