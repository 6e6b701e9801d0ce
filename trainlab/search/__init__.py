"""Hyperparameter search (docs/design.md §5): search spaces, coarse-to-fine random search on Optuna, and
``trainlab tune``, the lectures' whole recipe as one command.

    space.py    search-space files, validation, and narrowing / widening / grids (pure functions)
    study.py    storage (SQLite file or a database URL), heartbeat, samplers, pruner, slots
    trials.py   one trial = one train_run, reporting validation accuracy to the pruner
    stages.py   the coarse-to-fine plan, run by any number of workers on one study
    results.py  trials.csv, best.yaml, search.json, plots
    tune.py     check → overfit → lr-find → coarse → refine → curves → final model
    commands.py the ``search`` and ``tune`` commands
"""
