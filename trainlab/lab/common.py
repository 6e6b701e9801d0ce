"""What every lab experiment shares: its context (sizes, configs, quiet training runs), the
lecture's claims set against the measurement, and one writer for the results.

An experiment is one function registered in :data:`EXPERIMENTS`::

    @experiment("activations", "sigmoid, tanh, relu, ... on one conv net: iterations to a target error")
    def activations(ctx: LabContext) -> LabResult:
        cfg = ctx.config(DEFAULTS, "model.activation=relu")
        summary = ctx.train("relu", cfg)
        ...

:func:`write_results` turns the returned :class:`LabResult` into the experiment directory::

    DIR/results.json  results.md  plots/*.png  tensorboard/  report.html  runs/<variant>/ (train_run dirs)
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import torch

from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import load_classifier
from trainlab.config import load_config, parse_overrides
from trainlab.data import load_data_cached
from trainlab.errors import UserError
from trainlab.io import write_json
from trainlab.log import say_stderr
from trainlab.plots import moving_average, plt, save_figure
from trainlab.registry import Registry
from trainlab.report import write_report
from trainlab.run import train_run
from trainlab.train import Callback, StepInfo

EXPERIMENTS: Registry = Registry("lab experiment")

AGREES, PARTLY, DISAGREES = "agrees", "partly", "does not agree"

# The lecture material in shared/reference/, named the way docs/lab.md cites it.
SLIDES = "Training Neural Networks slides"
TRANSCRIPT = "Lecture 7 transcript"
SLIDES_2016 = "Lecture 6 slides, 2016"

# Every training run of the lab: no progress bars or monitors (they cost time and the lab
# measures its own quantities); the rest is trainlab's defaults unless an experiment says otherwise.
LAB_BASE = ["train.progress=false", "monitor.every=0"]


def experiment(name: str, summary: str) -> Callable:
    """Register ``fn(ctx) -> LabResult`` as ``trainlab lab NAME``; ``summary`` is its line in ``lab list``."""

    def add(fn):
        fn.lab_name, fn.summary = name, summary
        return EXPERIMENTS.register(name)(fn)

    return add


# --- claims and verdicts ------------------------------------------------------------------------

def claim(text: str, source: str, measured: str, verdict: str) -> dict:
    """One row of the claims table: the lecture's words, where they are, what trainlab measured,
    and whether the two agree (``agrees``, ``partly`` or ``does not agree``)."""
    if verdict not in (AGREES, PARTLY, DISAGREES):
        raise ValueError(f"verdict must be one of {AGREES!r}, {PARTLY!r}, {DISAGREES!r}; got {verdict!r}")
    return {"claim": text, "source": source, "measured": measured, "verdict": verdict}


def graded(value: float | None, agrees_at: float, partly_at: float) -> str:
    """The verdict for a measured ``value`` where larger means "more like the claim":
    ``agrees`` from ``agrees_at`` up, ``partly`` from ``partly_at`` up, else ``does not agree``
    (also when there is no value). +inf — the claim's side reached a target the other never
    did — agrees."""
    if value is None or math.isnan(value):
        return DISAGREES
    if value >= agrees_at:
        return AGREES
    return PARTLY if value >= partly_at else DISAGREES


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b for step counts, where None means "never got there": a never and b did → inf;
    b never (or 0) → None, since nothing can be said."""
    if b is None or b == 0:
        return None
    return math.inf if a is None else a / b


def times(r: float | None) -> str:
    """A ratio for the claims table: '3.20×', 'never' (inf) or '—' (unknown)."""
    if r is None:
        return "—"
    return "∞ (never reached)" if math.isinf(r) else f"{r:.2f}×"


def median(values: list[float | None]) -> float | None:
    """Median where None means "never happened" (counted as +inf); None if the median is +inf."""
    if not values:
        return None
    m = float(np.median([math.inf if v is None else v for v in values]))
    if math.isinf(m):
        return None
    return int(m) if m.is_integer() and all(isinstance(v, int) or v is None for v in values) else m


# --- measuring inside a training run --------------------------------------------------------------

class StepRecorder(Callback):
    """Keeps every update's minibatch loss and error, so curves and "iterations to a target
    training error" need no extra passes over the data (one device sync per step: fine on CPU)."""

    name = "lab_step_recorder"

    def __init__(self):
        self.loss: list[float] = []
        self.error: list[float] = []

    def on_step_end(self, trainer, step: StepInfo) -> None:
        self.loss.append(float(step.loss))
        self.error.append(1.0 - float(step.correct) / step.batch_size)


def steps_to_target(errors: list[float], target: float, window: int) -> int | None:
    """The first update (1-based) at which the trailing mean of the last ``window`` minibatch
    errors is ≤ ``target``; None if it never is. The mean smooths single lucky minibatches."""
    smooth = moving_average(errors, window)
    hits = np.nonzero(smooth[window - 1:] <= target)[0] if len(smooth) >= window else []
    return int(hits[0]) + window if len(hits) else None


@dataclass
class Trial:
    """One training run of an experiment: its summary.json and its per-step record."""

    name: str
    lr: float
    seed: int
    summary: dict
    steps: StepRecorder
    run_dir: Path

    def load_model(self) -> torch.nn.Module:
        """The run's best weights (checkpoints/best.pt), in eval mode, on the CPU."""
        return load_classifier(load_checkpoint(self.run_dir / "checkpoints" / "best.pt")).eval()

    @property
    def diverged(self) -> bool:
        return (self.summary.get("stop_reason") or "").startswith("diverged")


def time_to_target(target: float, window: int) -> Callable[[Trial], float]:
    """A ``cost`` for :meth:`LabContext.tuned`: updates until the trailing mean training error is
    ≤ ``target``; runs that never get there rank after all that do, by their final error."""

    def cost(trial: Trial) -> float:
        hit = steps_to_target(trial.steps.error, target, window)
        if hit is not None:
            return hit
        tail = trial.steps.error[-window:]
        return 1e9 + (sum(tail) / len(tail) if tail and math.isfinite(sum(tail)) else 1.0)

    return cost


# --- the context an experiment runs in ---------------------------------------------------------

@dataclass
class LabContext:
    """Where an experiment writes, how big it runs, and the user's config overrides.

    ``overrides`` (``key=value`` strings from the command line, e.g. ``data.name=mnist``) apply
    to every run on top of the experiment's defaults; the keys an experiment varies are applied
    last, so they always hold.
    """

    out: Path
    quick: bool = False
    overrides: list[str] = field(default_factory=list)
    say: Callable[[str], None] = say_stderr
    _data: dict = field(default_factory=dict, repr=False)

    def size(self, default, quick):
        """``quick`` in --quick mode (tests, smoke runs), else ``default``."""
        return quick if self.quick else default

    def config(self, defaults: list[str], *variant: str) -> dict:
        """A validated config: lab base, experiment ``defaults``, user overrides, then ``variant``."""
        def lab_layer(items) -> dict:  # a later item overrides an earlier one (DEFAULTS + QUICK), silently
            return {key: value for item in items for key, value in parse_overrides([item]).items()}

        # a later layer overrides an earlier one, without a warning; the user's command line is
        # parsed whole, so a key typed twice there is still warned about
        flat = {**lab_layer(LAB_BASE), **lab_layer(defaults), **parse_overrides(list(self.overrides)), **lab_layer(variant)}
        return load_config(None, flat)

    def data(self, cfg: dict):
        """The data bundle for ``cfg``, loaded once per distinct ``data`` section and seed."""
        return load_data_cached(cfg, self._data)

    def train(self, name: str, cfg: dict, callbacks: list[Callback] = (), data=None) -> dict:
        """``train_run`` into ``runs/<name>`` of the experiment directory (on ``data``, default
        :meth:`data`); returns its summary."""
        self.say(f"  training {name}")
        return train_run(cfg, self.out / "runs" / name, data=data if data is not None else self.data(cfg),
                         callbacks=list(callbacks), say=lambda msg: None)

    def trial(self, name: str, cfg: dict, data=None) -> Trial:
        """:meth:`train` with a :class:`StepRecorder` attached."""
        recorder = StepRecorder()
        summary = self.train(name, cfg, [recorder], data)
        return Trial(name, cfg["optim"]["lr"], cfg["seed"], summary, recorder, self.out / "runs" / name)

    def tuned(self, name: str, cfg_at: Callable[[float, int], dict], lrs: list[float], seeds: int,
              cost: Callable[[Trial], float], data=None) -> list[Trial]:
        """Train ``cfg_at(lr, seed=0)`` for every rate in ``lrs``, keep the one of lowest ``cost``,
        and repeat it with seeds 1 .. seeds−1. Returns the kept rate's trials, seed 0 first.

        Each variant gets its own best rate, as the lectures' comparisons assume (in the AlexNet
        ReLU/tanh figure, Krizhevsky et al. 2012, each network's rate was chosen independently).
        """
        grid = [self.trial(f"{name}/lr{lr:g}-seed0", cfg_at(lr, 0), data) for lr in lrs]
        best = min(grid, key=cost)
        return [best] + [self.trial(f"{name}/lr{best.lr:g}-seed{s}", cfg_at(best.lr, s), data) for s in range(1, seeds)]

    def plot_path(self, name: str) -> Path:
        return self.out / "plots" / f"{name}.png"


@dataclass
class LabResult:
    """What an experiment measured.

    rows/columns: the measured table (one dict per row, keys = columns); claims: see :func:`claim`;
    setup: how the experiment was run and scaled down, in a sentence or two; plots: PNGs it wrote;
    curves: ``{tag: [values per step]}`` written to TensorBoard as scalars.
    """

    title: str
    setup: str
    columns: list[str]
    rows: list[dict]
    claims: list[dict]
    plots: list[Path]
    curves: dict[str, list[float]] = field(default_factory=dict)


def plot_curves(series: dict[str, list[float]], path: Path, title: str, ylabel: str, window: int = 20,
                log: bool = False, target: float | None = None) -> Path:
    """One line per variant: the trailing mean over ``window`` steps of a per-step quantity
    (minibatch loss or error: single steps are too noisy to compare)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (label, values) in enumerate(series.items()):
        ax.plot(range(1, len(values) + 1), moving_average(values, window), color=f"C{i % 10}", lw=1.5, label=label)
    if target is not None:
        ax.axhline(target, color="k", ls=":", lw=1, label=f"target {target:g}")
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="update", ylabel=f"{ylabel} (mean of last {window} updates)", title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# --- writing results -----------------------------------------------------------------------------

def fmt(value) -> str:
    """A table cell: 4 significant digits for floats, '—' for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    escape = lambda v: fmt(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


CLAIM_COLUMNS = ["claim", "source", "measured", "verdict"]


def results_markdown(name: str, result: LabResult, out: Path) -> str:
    """results.md: setup, the measured table, the claims table, and the plots."""
    quoted = [{**c, "claim": f"“{c['claim']}”"} for c in result.claims]
    parts = [f"# trainlab lab {name}: {result.title}", "", result.setup, "", "## Measured", "",
             markdown_table(result.columns, result.rows), "", "## The lecture's claims", "",
             markdown_table(CLAIM_COLUMNS, quoted), ""]
    parts += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in result.plots]
    return "\n".join(parts) + "\n"


def write_tensorboard(out: Path, name: str, result: LabResult, markdown: str) -> None:
    """DIR/tensorboard: the curves as scalars, the results as text, the plots as images
    (each training run also has its own events under runs/<variant>/tensorboard)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tensorboard"))
    try:
        for tag, values in result.curves.items():
            for step, value in enumerate(values, start=1):
                if value is not None and math.isfinite(value):
                    writer.add_scalar(tag, value, step)
        writer.add_text(f"lab/{name}", markdown)
        for png in result.plots:
            image = mpimg.imread(png)[..., :3]  # RGBA → RGB, floats in [0, 1]
            writer.add_image(f"plots/{png.stem}", image, dataformats="HWC")
    finally:
        writer.close()


def write_results(ctx: LabContext, name: str, result: LabResult, seconds: float) -> dict:
    """results.json, results.md, TensorBoard events and report.html in ``ctx.out``."""
    out = ctx.out
    record = {
        "experiment": name, "title": result.title, "quick": ctx.quick, "overrides": ctx.overrides,
        "setup": result.setup, "columns": result.columns, "rows": result.rows, "claims": result.claims,
        "plots": [p.relative_to(out).as_posix() for p in result.plots],
        "wall_seconds": seconds, "torch_version": torch.__version__,
    }
    write_json(out / "results.json", record)
    markdown = results_markdown(name, result, out)
    (out / "results.md").write_text(markdown)
    write_tensorboard(out, name, result, markdown)
    write_report(out)
    return record


def run_experiment(name: str, out: Path, quick: bool = False, overrides: list[str] = (),
                   say: Callable[[str], None] = say_stderr) -> dict:
    """Run the experiment ``name`` into ``out`` and write its results; returns results.json's content."""
    fn = EXPERIMENTS.get(name)
    out = Path(out)
    if (out / "results.json").exists() or (out / "runs").exists():
        raise UserError(f"{str(out)!r} already holds lab results; choose another --out directory or delete it")
    ctx = LabContext(out, quick, list(overrides), say)
    ctx.config([])  # bad override keys or values fail here, before any work
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = fn(ctx)
    return write_results(ctx, name, result, time.perf_counter() - t0)


__all__ = ["EXPERIMENTS", "experiment", "claim", "graded", "ratio", "times", "median", "AGREES", "PARTLY", "DISAGREES",
           "StepRecorder", "steps_to_target", "time_to_target", "Trial", "LabContext", "LabResult", "write_results", "run_experiment",
           "markdown_table", "fmt", "plot_curves", "SLIDES", "TRANSCRIPT", "SLIDES_2016"]
