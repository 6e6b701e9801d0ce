"""The lab (SPEC §7): every claim of the lectures re-measured with one command, as a table and a plot.

    trainlab lab list
    trainlab lab activations --out runs/lab/activations
    trainlab lab optimizers --quick
    trainlab lab batchnorm data.name=mnist data.subset=5000     # any config override applies to every run

Each experiment is a module here, registered in :data:`EXPERIMENTS`; ``common`` holds what they share.
"""
# Importing a module registers its experiment; this order (the lectures') is `trainlab lab list`'s.
from trainlab.lab import (  # noqa: F401, E402, I001
    activations,
    adam_sgd,
    adaptive,
    batch_size,
    batchnorm,
    dropout,
    dropout_training,
    fine_tuning,
    init_stats,
    lbfgs,
    optimizers,
    preprocessing,
    regularization,
    schedules,
    search_budget,
    sigmoid_centring,
    test_time,
)
from trainlab.lab.common import EXPERIMENTS, run_experiment

__all__ = ["EXPERIMENTS", "run_experiment"]
