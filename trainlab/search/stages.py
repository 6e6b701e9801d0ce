"""Coarse-to-fine search (the lectures' recipe, steps 4 and 5), on any number of workers.

    coarse   wide ranges, short trials (--trials N, --epochs E: the lectures' "1-5 epochs")
    refine   ranges narrowed around the best coarse trials, longer trials (--refine-trials,
             --refine-epochs); its first slots retrain the best coarse configurations for longer
             ("Pick best models from Step 4, train them for longer (~10-20 epochs) without
             learning rate decay": ``tune`` sets schedule.name=constant in its search for that)

``loops`` > 0 adds the recipe's step 7, "GOTO step 5": up to ``loops`` more refine rounds, each
narrowed around the best refine trials so far, with half the refine trials and the same epochs
(so every refine trial is compared fairly), run only while the round before raised the best
validation accuracy ("while it still helps"; the loops are the bound).

After each round, a best value in the outer 10% of its range (in decades for log parameters)
widens that range and the stage is repeated with half as many trials (at most ``max_widen``
times): the 2017 lecture asks for ranges so wide "that your network is kind of blowing up at either end
of the range".

Every worker runs this same plan against the shared study. Rounds end only when all their
trials have finished, and the next round's ranges are computed from the finished trials alone,
so every worker, on any machine, derives the same ranges without talking to the others.
"""
from __future__ import annotations

import math
import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainlab.device import place_worker
from trainlab.errors import UserError, first_line
from trainlab.log import say as say_info
from trainlab.plugins import load_plugins
from trainlab.search.results import write_results
from trainlab.search.space import (
    Space,
    grid_points,
    narrow_space,
    space_from_state,
    space_state,
    space_to_dict,
    suggest,
    widen_at_edges,
)
from trainlab.search.study import (
    SurplusTrial,
    TrialFailed,
    beat_now,
    claim_slot,
    default_storage_url,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
    ranking,
    redact,
    run_round,
)
from trainlab.search.trials import cached_data, run_trial, trial_config

SAMPLERS = ("random", "grid", "tpe")
PRUNERS = ("median", "halving", "none")
STAGES = ("coarse-to-fine", "single")


@dataclass
class SearchOptions:
    """How to search. ``None`` fields get defaults from the others (see :meth:`resolved`)."""

    trials: int | None = None  # per coarse (or single) round; grid: the grid's size
    epochs: int = 2
    refine_trials: int | None = None  # default: half of trials
    refine_epochs: int | None = None  # default: 3 x epochs
    stages: str | None = None  # default: coarse-to-fine for random, single for grid and tpe
    sampler: str = "random"
    grid_points: int = 3
    pruner: str = "median"
    storage: str | None = None  # default: sqlite:///<out>/study.db
    study: str | None = None  # default: the name of the --out directory
    workers: int = 1
    heartbeat: int = 10  # seconds between heartbeats; 3 missed beats make a trial stale
    max_widen: int = 2
    loops: int = 0  # step 7 "GOTO step 5": extra refine rounds while they raise the best
    top_k: int = 3  # best coarse trials the refine ranges are narrowed around
    monitors: bool = False

    def resolved(self, out: Path) -> SearchOptions:
        o = SearchOptions(**asdict(self))
        # `is None`, not `or`: --trials 0 is refused below, not read as "the default"
        o.trials = 20 if o.trials is None else o.trials
        o.refine_trials = max(2, math.ceil(o.trials / 2)) if o.refine_trials is None else o.refine_trials
        o.refine_epochs = 3 * o.epochs if o.refine_epochs is None else o.refine_epochs
        o.stages = o.stages or ("coarse-to-fine" if o.sampler == "random" else "single")
        o.storage = o.storage or default_storage_url(out)
        o.study = o.study or Path(out).resolve().name
        for name, value, allowed in (("--sampler", o.sampler, SAMPLERS), ("--pruner", o.pruner, PRUNERS),
                                     ("--stages", o.stages, STAGES)):
            if value not in allowed:
                raise UserError(f"bad value {value!r} for {name}: expected one of {', '.join(allowed)}")
        for name in ("trials", "epochs", "refine_trials", "refine_epochs", "grid_points", "workers", "heartbeat", "top_k"):
            if getattr(o, name) < 1:
                raise UserError(f"bad value {getattr(o, name)} for --{name.replace('_', '-')}: expected an integer >= 1")
        if o.loops < 0:
            raise UserError(f"bad value {o.loops} for --loops: expected an integer >= 0")
        if o.sampler == "tpe" and o.stages == "coarse-to-fine":
            raise UserError("--sampler tpe narrows its ranges by itself; use it with --stages single "
                            "(coarse-to-fine is the by-hand version of what TPE does)")
        return o


@dataclass(frozen=True)
class Stage:
    name: str
    trials: int
    epochs: int
    label: str = ""  # its rounds' label when it differs from the name (the loops of step 7)

    @property
    def round_label(self) -> str:
        return self.label or self.name


def plan_stages(o: SearchOptions) -> list[Stage]:
    if o.stages == "single":
        return [Stage("single", o.trials, o.epochs)]
    return [Stage("coarse", o.trials, o.epochs), Stage("refine", o.refine_trials, o.refine_epochs)]


def top_trials(trials: list[FrozenTrial], k: int) -> list[FrozenTrial]:
    """The ``k`` best finished trials, in the order of :func:`~trainlab.search.study.ranking`."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(done, key=ranking)[:k]


@dataclass
class SearchJob:
    """Everything a worker process needs (picklable: workers are spawned processes)."""

    base: dict
    space: Space
    options: SearchOptions
    out: Path
    seed: int = 0


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def settle_round(study: optuna.Study, label: str, space: Space, seeds: dict[int, dict]) -> tuple[Space, dict[int, dict]]:
    """The ranges (and retrained configurations) of a round, as first recorded in the study.

    Every worker computes the same ones from the same finished trials; recording them keeps a
    resumed search consistent even when earlier rounds have grown since (a larger --trials).
    """
    key = f"round:{label}"
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, {"space": space_state(space), "seeds": {str(i): p for i, p in seeds.items()}})
        return space, seeds
    return space_from_state(stored["space"]), {int(i): p for i, p in stored["seeds"].items()}


def _duration(seconds: float) -> str:
    """12 s, 3.5 min, 1.2 h."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def make_objective(storage, study: optuna.Study, job: SearchJob, label: str, n: int, stage: Stage, space: Space,
                   say: Callable[[str], None]) -> Callable:
    grace = 3 * job.options.heartbeat
    durations: list[float] = []  # this worker's trials of this round, for the time estimate

    def done(head: str, slot: int, seconds: float, what: str) -> None:
        durations.append(seconds)
        left = math.ceil((n - slot - 1) / job.options.workers)
        eta = f"; round done in about {_duration(left * sum(durations) / len(durations))}" if left > 0 else ""
        say(f"{head}: {what} ({_duration(seconds)}{eta})")

    def objective(trial: optuna.Trial) -> float:
        beat_now(storage, study, trial)
        trial.set_user_attr("stage", stage.name)
        trial.set_user_attr("epochs", stage.epochs)
        slot = claim_slot(study, trial, label, n, grace)
        if slot < 0:
            raise SurplusTrial(f"round {label} already has its {n} trials")
        overrides = suggest(trial, space)
        trial.set_user_attr("overrides", overrides)
        head = f"trial {trial.number} [{label} {slot + 1} of {n}] " + " ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())
        start = time.perf_counter()
        try:
            value = run_trial(trial, job.base, overrides, stage.epochs, job.out, job.options.monitors)
        except optuna.TrialPruned as e:
            done(head, slot, time.perf_counter() - start, str(e))
            raise
        except (UserError, RuntimeError, MemoryError, ValueError) as e:
            # One configuration of the space cannot be trained (out of memory, a shape that does
            # not fit...): that trial FAILs and frees its slot; the study goes on.
            message = first_line(e)
            trial.set_user_attr("error", message)
            done(head, slot, time.perf_counter() - start, f"FAIL ({message})")
            raise TrialFailed(message) from e
        done(head, slot, time.perf_counter() - start, f"val_acc {value:.4f}")
        return value

    return objective


def search_worker(job: SearchJob, say: Callable[[str], None] = say_info) -> list[dict]:
    """Run the whole plan against the shared study; returns what each round searched."""
    o = job.options
    storage = make_storage(o.storage, o.heartbeat)
    study = open_study(storage, o.study, space_to_dict(job.space))
    study.pruner = make_pruner(o.pruner)
    rounds: list[dict] = []
    space, previous = job.space, []
    for stage in plan_stages(o):
        seeds: dict[int, dict] = {}
        best = top_trials(previous, o.top_k)
        if best:  # refine: zoom in around the best of the stage before, and retrain those
            space = narrow_space(space, [t.user_attrs["overrides"] for t in best])
            if o.sampler != "grid":
                seeds = {i: t.user_attrs["overrides"] for i, t in enumerate(best[: stage.trials // 2])}
        previous, space = run_stage(storage, study, job, stage, space, seeds, rounds, say)
    if o.stages == "coarse-to-fine" and o.loops:
        run_loops(storage, study, job, previous, space, rounds, say)
    return rounds


def run_loops(storage, study: optuna.Study, job: SearchJob, refined: list[FrozenTrial], space: Space,
              rounds: list[dict], say: Callable[[str], None]) -> None:
    """Step 7, "GOTO step 5": more refine rounds around the best refine trials so far, while the
    round before raised the best validation accuracy, at most ``loops`` of them. Their trials
    belong to the refine stage (same epochs), so the search's best is the best of them all."""
    o = job.options
    for loop in range(1, o.loops + 1):
        best = top_trials(refined, o.top_k)
        if not best:
            return
        before = best[0].value
        space = narrow_space(space, [t.user_attrs["overrides"] for t in best])
        stage = Stage("refine", max(2, math.ceil(o.refine_trials / 2)), o.refine_epochs, label=f"loop{loop}")
        trials, space = run_stage(storage, study, job, stage, space, {}, rounds, say)
        refined = refined + trials
        after = top_trials(refined, 1)
        rounds[-1]["improved"] = bool(after and after[0].value > before)
        if not rounds[-1]["improved"]:
            say(f"round loop{loop}: no better validation accuracy than {before:.4f}: back to step 5 no more")
            return


def run_stage(storage, study: optuna.Study, job: SearchJob, stage: Stage, space: Space, seeds: dict[int, dict],
              rounds: list[dict], say: Callable[[str], None]) -> tuple[list[FrozenTrial], Space]:
    """A stage's rounds: the first, then (coarse-to-fine) a repeat with widened ranges while its
    best value sits on the edge of a range. Appends to ``rounds``; returns the stage's trials and
    its final ranges."""
    o = job.options
    stage_trials: list[FrozenTrial] = []
    repeats = o.max_widen if o.stages == "coarse-to-fine" else 0
    for repeat in range(repeats + 1):
        label = stage.round_label if repeat == 0 else f"{stage.round_label}.{repeat + 1}"
        space, seeds = settle_round(study, label, space, seeds)
        if o.sampler == "grid":
            points = dict(enumerate(grid_points(space, o.grid_points)))
            n = len(points)
        else:
            points, n = seeds, stage.trials if repeat == 0 else math.ceil(stage.trials / 2)
        study.sampler = make_sampler(o.sampler, job.seed, points)
        record = {"round": label, "stage": stage.name, "trials": n, "epochs": stage.epochs,
                  "space": space_to_dict(space), "retrained_best": len(points) if o.sampler != "grid" else 0}
        rounds.append(record)
        say(f"round {label}: {n} trials of {stage.epochs} epoch(s) over "
            + ", ".join(f"{k} {v}" for k, v in record["space"].items()))
        objective = make_objective(storage, study, job, label, n, stage, space, say)
        stage_trials += run_round(study, label, n, objective, say, grace=3 * o.heartbeat)
        seeds = {}  # the best coarse configurations are retrained once, in the first refine round
        best = top_trials(stage_trials, 1)
        if not best or repeat == repeats:
            break
        space, widened = widen_at_edges(space, best[0].user_attrs["overrides"])
        if not widened:
            break
        record["widened"] = widened
        say(f"round {label}: best value on the edge of its range for {', '.join(widened)}: widening and repeating")
    return stage_trials, space


def _worker_process(job: SearchJob, index: int) -> None:
    """Entry point of a spawned worker: its own storage connection, its GPU or share of the cores."""
    say = lambda msg: print(f"[worker {index}] {msg}", flush=True)  # noqa: E731
    say(f"on {place_worker(index, job.options.workers)}")
    try:
        load_plugins()  # the user's components named by --import (passed on in $TRAINLAB_IMPORT)
        search_worker(job, say=say)
    except UserError as e:
        print(f"[worker {index}] trainlab: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_search(base: dict, space: Space, out: str | Path, options: SearchOptions,
               say: Callable[[str], None] = say_info) -> dict:
    """Search, with ``options.workers`` processes on this machine sharing the study (this process
    is worker 0), then write trials.csv, best.yaml, search.json and the plots. Re-running the
    same search resumes it: finished trials count, and only the missing ones run."""
    out = Path(out)
    o = options.resolved(out)
    if base["data"]["val_fraction"] <= 0:
        raise UserError("search compares trials on the validation split: set data.val_fraction > 0 (e.g. 0.1)")
    data = cached_data(trial_config(base, {}, 1))  # bad data fails here, before any trial exists
    if len(data.val_y) == 0:
        raise UserError("the validation split is empty: raise data.val_fraction or use more data")
    out.mkdir(parents=True, exist_ok=True)
    job = SearchJob(base, space, o, out, seed=base["seed"])
    t0 = time.perf_counter()
    say(f"search: study {o.study!r} in {redact(o.storage)}; {o.workers} worker(s); sampler {o.sampler}; "
        f"stages {o.stages}; pruner {o.pruner}; trials in {out / 'trials'}")
    children = []
    if o.workers > 1:
        say(f"[worker 0] on {place_worker(0, o.workers)}")
        ctx = multiprocessing.get_context("spawn")  # fork would copy torch threads and DB connections
        children = [ctx.Process(target=_worker_process, args=(job, i), daemon=False)
                    for i in range(1, o.workers)]
        for c in children:
            c.start()
    try:
        rounds = search_worker(job, say)
    finally:
        for c in children:
            c.join()
    failed = [(i, c.exitcode) for i, c in enumerate(children, 1) if c.exitcode != 0]
    if failed:
        raise RuntimeError("search worker(s) failed: " + ", ".join(f"worker {i} exit code {code}" for i, code in failed))
    study = open_study(make_storage(o.storage, o.heartbeat), o.study, space_to_dict(space))
    return write_results(study, base, space, rounds, out, o, wall=time.perf_counter() - t0, say=say)
