"""Where a search lives and how many processes share it: Optuna storage, samplers, pruner, slots.

One URL decides where a study lives: an SQLite file in the search directory by default, or any
database Optuna supports (``postgresql://user@host/db``) so that workers on many machines share
one study. Every storage is an :class:`optuna.storages.RDBStorage` with a heartbeat: a worker
that crashes or is killed stops beating, and the next worker to look marks its trial FAIL
(``optuna.storages.fail_stale_trials``), so the trial is neither lost nor counted.

A search is a sequence of *rounds* (a stage, or a repeat of it with widened ranges), each of
``n`` trials. Exactly ``n`` trials per round finish, however many workers run, through *slots*:
a new trial takes the lowest slot of its round that no earlier live trial holds. Trial numbers
are handed out one at a time by the storage, and a trial waits until every earlier trial has
its slot, so two workers can never take the same slot. A trial that finds no free slot (two
workers raced for the last one) ends at once as FAIL, marked ``slot = -1``: no training ran, and
it is not listed in trials.csv. A FAIL trial (crash, kill) frees its slot for a new trial.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import math
import random
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from trainlab.errors import UserError
from trainlab.search.space import config_key, encode_choice

FINISHED_OK = (TrialState.COMPLETE, TrialState.PRUNED)


class SurplusTrial(Exception):
    """Raised by a trial that found its round already full (another worker took the last slot)."""


class TrialFailed(Exception):
    """Raised by a trial whose configuration could not be trained (recorded FAIL with its
    ``error`` user attribute); the round goes on with another trial."""


# --- storage -----------------------------------------------------------------------------
def default_storage_url(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'study.db'}"


def redact(url: str) -> str:
    """The URL without its password, for logs and result files."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg (version 3) to SQLAlchemy 2.1 but psycopg2 to earlier
    versions; name whichever driver is installed, so the URL users know works everywhere."""
    if not url.startswith("postgresql://"):
        return url
    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return scheme + url[len("postgresql"):]
    return url


def make_storage(url: str, heartbeat: int, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage with a heartbeat every ``heartbeat`` s; a trial silent for 3 beats is stale.

    SQLite lets several local processes share a file, serialising writers: they wait up to 60 s
    for the lock instead of failing at once (Optuna's default engine gives up after 5 s).
    Workers started together on a fresh database race to create Optuna's tables; the loser of
    that race simply tries again and finds them made.
    """
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for _ in range(attempts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(with_installed_driver(url), engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=heartbeat, grace_period=3 * heartbeat)
            except (ImportError, ModuleNotFoundError) as e:
                raise UserError(f"storage {redact(url)}: the database driver is not installed ({e}); "
                                "for PostgreSQL: pip install psycopg2-binary") from None
            except Exception as e:  # sqlalchemy's errors: bad URL, server down, wrong password, races
                error = e
                if "IntegrityError" not in type(e).__name__ + str(e) and "already exists" not in str(e):
                    break
                time.sleep(0.2 + random.random())
    raise UserError(f"cannot open storage {redact(url)}: {type(error).__name__}: {str(error).splitlines()[0]}")


def open_study(storage, name: str, space: dict) -> optuna.Study:
    """Create the study, or join it: the search space is stored with the study, and a worker
    bringing a different one is refused (its trials would not be comparable)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", space)
    elif stored != space:
        raise UserError(f"study {name!r} already exists with another search space {stored}; "
                        f"this one is {space}. Use another --study name or the same space file.")
    return study


def fail_stale(study: optuna.Study) -> None:
    """Mark the trials of dead workers (no heartbeat for the grace period) FAIL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def beat_now(storage: optuna.storages.RDBStorage, study: optuna.Study, trial: optuna.Trial) -> None:
    """Record a trial's first heartbeat before any work. Optuna's heartbeat thread beats
    asynchronously, and a worker killed before its first beat leaves a trial that no heartbeat
    check will ever call stale (it has no beat to be late): a resumed search would wait for it
    forever (seen when a worker was killed half a second into a trial)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))


# --- samplers ----------------------------------------------------------------------------
class TrialSeededRandomSampler(optuna.samplers.BaseSampler):
    """Random search whose draws for trial k depend only on (seed, k, parameter).

    A per-process seeded RandomSampler would make every worker draw the same sequence; seeding
    per trial keeps workers apart and a study reproducible however many workers ran it.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        seed = zlib.crc32(f"{self.seed}:{trial.number}:{param_name}".encode())
        return optuna.samplers.RandomSampler(seed=seed).sample_independent(study, trial, param_name, param_distribution)


class SlotSampler(optuna.samplers.BaseSampler):
    """Fixed values for some slots of a round (every slot of a grid; the retrained best of the
    coarse stage), the ``fallback`` sampler for the others."""

    def __init__(self, fallback: optuna.samplers.BaseSampler, points: dict[int, dict] | None = None):
        self.fallback, self.points = fallback, points or {}

    def infer_relative_search_space(self, study, trial):
        return self.fallback.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.fallback.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        point = self.points.get(trial.user_attrs.get("slot"))
        key = config_key(param_name)
        if point is not None and key in point:
            value = point[key]
            return encode_choice(value) if isinstance(param_distribution, CategoricalDistribution) else value
        return self.fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.fallback.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.fallback.after_trial(study, trial, state, values)


def make_sampler(name: str, seed: int, points: dict[int, dict] | None = None) -> SlotSampler:
    """random (the default: the lectures' choice over grid), grid (``points`` is the grid) or tpe."""
    if name == "tpe":
        # Each worker's TPE has its own state; the constant liar keeps concurrent workers from
        # all proposing the same point while their trials run.
        fallback = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)
    else:
        fallback = TrialSeededRandomSampler(seed)
    return SlotSampler(fallback, points)


# --- pruner ------------------------------------------------------------------------------
class _RoundView:
    """A study seen through one round: what the pruner compares a trial with."""

    def __init__(self, study: optuna.Study, label: str | None):
        self._study, self._label = study, label

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.user_attrs.get("round") == self._label]

    def __getattr__(self, name):
        return getattr(self._study, name)


class RoundPruner(optuna.pruners.BasePruner):
    """Prunes a trial by comparing it only with the trials of its own round: an epoch-1 accuracy
    of a 6-epoch refine trial (cosine still high) is not comparable with a 2-epoch coarse one's."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study, trial) -> bool:
        return self.inner.prune(_RoundView(study, trial.user_attrs.get("round")), trial)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """median: stop a trial whose accuracy is below the round's median at the same epoch (after 3
    finished trials); halving: successive halving, keep the top third at each rung; none."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "halving":
        return RoundPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    return RoundPruner(optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0, n_min_trials=3))


def ranking(t: FrozenTrial) -> tuple:
    """Sort key, best first: higher validation accuracy; for equal accuracy (a small validation
    split has few distinct values) the lower validation loss; then the earlier trial."""
    loss = t.user_attrs.get("val_loss")
    return (-t.value, loss if loss is not None and math.isfinite(loss) else math.inf, t.number)


# --- slots and rounds ----------------------------------------------------------------------
def _unclaimed(t: FrozenTrial, grace: float) -> bool:
    """A running trial that has not taken its slot yet (and is not long dead)."""
    if t.state != TrialState.RUNNING or "slot" in t.user_attrs:
        return False
    started = t.datetime_start or dt.datetime.now()
    return (dt.datetime.now() - started).total_seconds() < grace


def claim_slot(study: optuna.Study, trial: optuna.Trial, label: str, n: int, grace: float) -> int:
    """The lowest slot in 0..n-1 of round ``label`` not held by an earlier live trial, or -1."""
    trial.set_user_attr("round", label)
    while True:
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if not any(_unclaimed(t, grace) for t in earlier):
            break
        time.sleep(0.05)
    taken = {t.user_attrs["slot"] for t in earlier if in_round(t, label) and t.state != TrialState.FAIL}
    slot = next((i for i in range(n) if i not in taken), -1)
    trial.set_user_attr("slot", slot)
    return slot


def in_round(t: FrozenTrial, label: str) -> bool:
    """A trial of round ``label`` that took a slot (surplus trials never trained: left out)."""
    return t.user_attrs.get("round") == label and t.user_attrs.get("slot", -1) >= 0


def round_trials(study: optuna.Study, label: str) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if in_round(t, label)]


def run_round(study: optuna.Study, label: str, n: int, objective: Callable, say: Callable[[str], None],
              poll: float = 0.5, grace: float = 30.0) -> list[FrozenTrial]:
    """Run trials of round ``label`` until ``n`` of them have finished (COMPLETE or PRUNED), with
    whatever other workers share the study; returns the round's trials."""
    waiting_said = False
    while True:
        fail_stale(study)
        everything = study.get_trials(deepcopy=False)
        trials = [t for t in everything if in_round(t, label)]
        done = sum(t.state in FINISHED_OK for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        # Trials just created elsewhere that have not taken a slot yet may take one of ours.
        arriving = sum(_unclaimed(t, grace) for t in everything)
        if done >= n and running == 0:
            return trials
        failed = [t for t in trials if t.state == TrialState.FAIL and "error" in t.user_attrs]
        if len(failed) >= max(n, 3):  # the space, not one unlucky point, is at fault: stop looping
            raise UserError(f"round {label}: {len(failed)} trials failed (the last: {failed[-1].user_attrs['error']}); "
                            "narrow the search space or fix the base config")
        if done + running + arriving >= n:
            if not waiting_said and running:
                say(f"round {label}: waiting for {running} trial(s) running elsewhere")
                waiting_said = True
            time.sleep(poll)
            continue
        waiting_said = False
        # Optuna logs each FAIL trial with a traceback; a surplus trial is routine, not an error,
        # and any other failure is raised to the caller, which reports it.
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            study.optimize(objective, n_trials=1, catch=(SurplusTrial, TrialFailed), gc_after_trial=False)
        finally:
            optuna.logging.set_verbosity(verbosity)
