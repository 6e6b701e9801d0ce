"""Learning-rate schedules (lecture: "Learning Rate Decay"), stepped once per iteration.

Each schedule is a pure function ``multiplier(t, T, **options) -> float``: ``t`` is the
iteration measured in epochs (``step / steps_per_epoch``, fractional), ``T`` is the number of
epochs and the rate is ``base_lr * multiplier``; options (gamma, cycle_epochs, ...) have their
defaults in the signature. A linear warm-up (``warmup`` epochs) goes in front of any of them:

    lr(step) = base_lr * warmup(step) * multiplier(step / steps_per_epoch, T, **options)
    warmup(step) = min(1, (step + 1) / W),  W = max(1, round(warmup_epochs * steps_per_epoch))

``step`` counts updates from 0, so the first update uses ``base_lr / W`` (never a wasted update
at rate 0) and update ``W - 1`` the full rate; without warm-up, ``warmup(step) = 1``.

    sched = create_scheduler(optimizer, "sgdr", epochs=10, steps_per_epoch=len(loader), cycle_epochs=2)
    sched = build_scheduler(optimizer, cfg, steps_per_epoch=len(loader))    # from the config
    for x, y in loader:
        ...; optimizer.step(); sched.step()      # once per iteration
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from trainlab.optim import base_lr
from trainlab.registry import Component, Registry, check_bounds


@dataclass(frozen=True)
class ScheduleInfo(Component):
    """A schedule entry. ``cycle_index(t, **options) -> int``: for cyclic schedules (sgdr,
    cyclic), the cycle that epoch-time t falls in; snapshot ensembles save at cycle ends."""

    cycle_index: Callable[..., int] | None = None

    def __call__(self, t: float, T: float, cfg_schedule: dict) -> float:
        """The config adapter: the multiplier at t with options from the ``schedule`` section."""
        return self.make(t, T, **self.options_from(cfg_schedule))


SCHEDULES: Registry[ScheduleInfo] = Registry("schedule", entry=ScheduleInfo, section="schedule")
_CYCLE = {"cycle_epochs": "cycle_epochs", "min_scale": "min_scale"}

# t is step / steps_per_epoch in floating point: a boundary at an exact epoch such as 3.0 may come
# out as 2.9999999999999996. Boundaries are compared with this slack so they land on the step
# where exact arithmetic puts them (steps are >= 1e-6 epochs apart for any realistic loader).
_SLACK = 1e-9


def _half_cosine(u: float) -> float:
    """½(1 + cos(π u)) for u clamped to [0, 1]: 1 at u=0, 0 at u=1."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(u, 0.0), 1.0)))


@SCHEDULES.register("constant")
def constant(t: float, T: float) -> float:
    """α_t = α_0."""
    return 1.0


@SCHEDULES.register("step", options={"milestones": "milestones", "gamma": "gamma"})
def step_decay(t: float, T: float, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1) -> float:
    """Step decay: α_t = α_0 · gamma^n, n = number of ``milestones`` m (fractions of T) with t ≥ m·T.

    The slides' ResNet recipe ("for ResNets, multiply LR by 0.1 after epochs 30, 60, and 90") is
    milestones [0.3, 0.6, 0.9] for a 100-epoch run (the 100 is trainlab's choice; the slides give none).
    """
    passed = sum(1 for m in milestones if t + _SLACK >= m * T)
    return float(gamma) ** passed


@SCHEDULES.register("exponential", options={"decay": "decay"})
def exponential(t: float, T: float, decay: float = 1.0) -> float:
    """Exponential decay: α_t = α_0 · exp(−k t), k = ``decay`` per epoch."""
    return math.exp(-float(decay) * t)


@SCHEDULES.register("inv_t", options={"decay": "decay"})
def inv_t(t: float, T: float, decay: float = 1.0) -> float:
    """1/t decay: α_t = α_0 / (1 + k t), k = ``decay`` per epoch."""
    return 1.0 / (1.0 + float(decay) * t)


@SCHEDULES.register("cosine", options={"min_scale": "min_scale"})
def cosine(t: float, T: float, min_scale: float = 0.0) -> float:
    """Cosine: α_t = α_0 · (min + (1 − min) · ½(1 + cos(π t/T))), min = ``min_scale``.

    With min_scale = 0 this is the lecture's α_t = ½ α_0 (1 + cos(tπ/T)).
    """
    low = float(min_scale)
    return low + (1.0 - low) * _half_cosine(t / T)


@SCHEDULES.register("linear", options={"min_scale": "min_scale"})
def linear(t: float, T: float, min_scale: float = 0.0) -> float:
    """Linear: α_t = α_0 · (min + (1 − min)(1 − t/T)), min = ``min_scale``, flat at min after T.

    With min_scale = 0 this is the lecture's α_t = α_0 (1 − t/T).
    """
    low = float(min_scale)
    return low + (1.0 - low) * (1.0 - min(max(t / T, 0.0), 1.0))


@SCHEDULES.register("inv_sqrt", options={"warmup": "warmup_epochs"})
def inv_sqrt(t: float, T: float, warmup: float = 0.0) -> float:
    """Inverse square root: α_t = α_0 · √(t0 / max(t, t0)), t0 = max(``warmup`` epochs, 1 epoch).

    The lecture's α_0/√t is infinite at t=0, so the decay starts at t0 where the multiplier is 1:
    flat (under the warm-up, if any) until t0, then ∝ 1/√t (Vaswani et al.: rsqrt after warm-up).
    """
    t0 = max(float(warmup), 1.0)
    return math.sqrt(t0 / max(t, t0))


def _sgdr_cycle(t: float, first: float, mult: float) -> tuple[int, float, float]:
    """(index, start, length) of the SGDR cycle holding t. Cycle i has length first·multⁱ and
    starts at first·i (mult = 1) or first·(multⁱ − 1)/(mult − 1)."""

    def start(i: int) -> float:
        return first * i if mult == 1 else first * (mult**i - 1.0) / (mult - 1.0)

    if mult == 1:
        i = math.floor(t / first)
    else:
        i = math.floor(math.log1p(max(t, 0.0) * (mult - 1.0) / first) / math.log(mult))
    # The closed form can land one cycle off at a boundary; settle it with the same slack as _SLACK.
    while i > 0 and t + _SLACK < start(i):
        i -= 1
    while t + _SLACK >= start(i + 1):
        i += 1
    return i, start(i), first * mult**i


def _sgdr_index(t: float, cycle_epochs: float = 2.0, cycle_mult: float = 1.0, **_) -> int:
    return _sgdr_cycle(t, float(cycle_epochs), float(cycle_mult))[0]


@SCHEDULES.register("sgdr", options={**_CYCLE, "cycle_mult": "cycle_mult"}, cycle_index=_sgdr_index)
def sgdr(t: float, T: float, cycle_epochs: float = 2.0, cycle_mult: float = 1.0, min_scale: float = 0.0) -> float:
    """SGDR, cosine with warm restarts (Loshchilov & Hutter): within cycle i, of length
    L_i = ``cycle_epochs`` · ``cycle_mult``ⁱ and started at s_i,
    α_t = α_0 · (min + (1 − min) · ½(1 + cos(π (t − s_i)/L_i))); at s_{i+1} the rate jumps back to α_0.
    """
    _, start, length = _sgdr_cycle(t, float(cycle_epochs), float(cycle_mult))
    low = float(min_scale)
    return low + (1.0 - low) * _half_cosine((t - start) / length)


def _cyclic_index(t: float, cycle_epochs: float = 2.0, **_) -> int:
    return max(math.floor(t / float(cycle_epochs) + _SLACK), 0)


@SCHEDULES.register("cyclic", options=_CYCLE, cycle_index=_cyclic_index)
def cyclic(t: float, T: float, cycle_epochs: float = 2.0, min_scale: float = 0.0) -> float:
    """Triangular cyclic rate (Smith, CLR), period P = ``cycle_epochs``, starting low:
    α_t = α_0 · (min + (1 − min) · (1 − |2u − 1|)), u = (t mod P)/P.

    The rate is at min (``min_scale``) at the start and end of every cycle and α_0 mid-cycle; the
    cycle ends are where snapshot ensembles take their members.
    """
    period = float(cycle_epochs)
    u = max(t - _cyclic_index(t, period) * period, 0.0) / period
    low = float(min_scale)
    return low + (1.0 - low) * (1.0 - abs(2.0 * u - 1.0))


@SCHEDULES.register("onecycle", options={"min_scale": "min_scale", "peak_fraction": "peak_fraction"})
def onecycle(t: float, T: float, min_scale: float = 0.0, peak_fraction: float = 0.3) -> float:
    """One-cycle (Smith & Topin): linear rise from ``low`` to 1 over the first p·T epochs
    (p = ``peak_fraction``), then cosine down to ``low``/10⁴:

        t < pT:  low + (1 − low) · t/(pT)
        t ≥ pT:  end + (1 − end) · ½(1 + cos(π (t − pT)/(T − pT))),  end = low · 1e-4

    ``low`` = ``min_scale``, or 0.04 when min_scale is 0 (torch's OneCycleLR div_factor 25 and
    final_div_factor 1e4): the peak rate is α_0.
    """
    low = float(min_scale) or 0.04
    peak = float(peak_fraction) * T
    if t < peak:
        return low + (1.0 - low) * max(t, 0.0) / peak
    end = low * 1e-4
    return end + (1.0 - end) * _half_cosine((t - peak) / (T - peak))


# --- per-iteration schedulers ------------------------------------------------------------------


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """W = max(1, round(warmup_epochs · steps_per_epoch)), or 0 without warm-up."""
    return max(1, round(float(warmup_epochs) * steps_per_epoch)) if warmup_epochs > 0 else 0


def warmup(step: int, steps: int) -> float:
    """Linear warm-up from 0: min(1, (step + 1)/W) for update number ``step`` = 0, 1, ...
    ("linearly increasing learning rate from 0 over the first ~5000 iterations"); 1 when W = 0."""
    return 1.0 if steps <= 0 else min(1.0, (step + 1) / steps)


def multiplier_fn(name: str, epochs: float, steps_per_epoch: int, warmup_epochs: float = 0.0,
                  **options) -> Callable[[int], float]:
    """step ↦ warmup(step) · multiplier(step / steps_per_epoch, epochs, **options)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    info = SCHEDULES.get(name)
    if "warmup" in info.keywords():  # inv_sqrt starts its decay where the warm-up ends
        options = {"warmup": warmup_epochs, **options}
    info.create(0.0, float(epochs), **options)  # refuses an unknown option now, not at the first step
    schedule, total, w = info.make, float(epochs), warmup_steps(warmup_epochs, steps_per_epoch)

    def multiplier_at(step: int) -> float:
        return warmup(step, w) * schedule(step / steps_per_epoch, total, **options)

    return multiplier_at


class PerIterationLambdaLR(LambdaLR):
    """A LambdaLR whose ``load_state_dict`` also writes the restored rate into the optimiser.

    Why: building a LambdaLR sets every group's lr to the schedule's value at step 0, so a plain
    LambdaLR resumes at the wrong rate when the optimiser's state was loaded before the scheduler
    was built. Here resume is exact whichever order the checkpoint is loaded in.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        lrs = [base * f(self.last_epoch) for f, base in zip(self.lr_lambdas, self.base_lrs)]
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs


def create_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: float, steps_per_epoch: int,
                     warmup: float = 0.0, **options) -> LambdaLR:
    """The schedule ``name`` over ``epochs`` epochs of ``steps_per_epoch`` updates, with a linear
    warm-up over the first ``warmup`` epochs, as a LambdaLR to step once per iteration
    (``optimizer.step(); scheduler.step()``): e.g.
    ``create_scheduler(opt, "sgdr", epochs=10, steps_per_epoch=len(loader), cycle_epochs=2)``.

    Each group's rate is its ``initial_lr`` (set by :func:`trainlab.optim.create_optimizer`;
    else its current ``lr``) times the multiplier, so per-layer multipliers carry through.
    ``options`` are the schedule's own (milestones, gamma, decay, min_scale, cycle_epochs,
    cycle_mult, peak_fraction); an unknown name or option raises :class:`trainlab.errors.ConfigError`.
    """
    check_bounds(f"schedule {name!r}", {"warmup": warmup, "epochs": epochs},
                 {"warmup": "schedule.warmup_epochs", "epochs": "train.epochs"})
    return PerIterationLambdaLR(optimizer, multiplier_fn(name, epochs, steps_per_epoch, warmup, **options))


# --- from the full config -------------------------------------------------------------------------


def schedule_options(cfg: dict) -> dict:
    """``create_scheduler``'s keyword arguments (but the optimiser and steps) from a config."""
    s = cfg["schedule"]
    return {"name": s["name"], "epochs": cfg["train"]["epochs"], "warmup": s.get("warmup_epochs", 0.0),
            **SCHEDULES.get(s["name"]).options_from({k: v for k, v in s.items() if k != "warmup_epochs"})}


def lr_lambda(cfg: dict, steps_per_epoch: int) -> Callable[[int], float]:
    """step ↦ warmup(step) · multiplier(step / steps_per_epoch, train.epochs, cfg["schedule"])."""
    o = schedule_options(cfg)
    return multiplier_fn(o.pop("name"), o.pop("epochs"), steps_per_epoch, o.pop("warmup"), **o)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict, steps_per_epoch: int) -> LambdaLR:
    """The config adapter of :func:`create_scheduler`: ``schedule.name`` (with warm-up) over
    ``train.epochs`` epochs. Batch scaling is already in the optimiser's ``initial_lr``."""
    return create_scheduler(optimizer, steps_per_epoch=steps_per_epoch, **schedule_options(cfg))


def total_steps(cfg: dict, steps_per_epoch: int) -> int:
    return int(cfg["train"]["epochs"]) * steps_per_epoch


def schedule_curve(cfg: dict, steps_per_epoch: int) -> list[float]:
    """The rate used by every update 0 .. epochs·steps_per_epoch − 1 (base rate after batch
    scaling, times warm-up and schedule) — what the optimiser's group 0 sees without multipliers."""
    f = lr_lambda(cfg, steps_per_epoch)
    lr0 = base_lr(cfg)
    return [lr0 * f(k) for k in range(total_steps(cfg, steps_per_epoch))]


def cycle_end_steps(cfg: dict, steps_per_epoch: int) -> list[int]:
    """Update counts n (1 ≤ n ≤ epochs·steps_per_epoch) after which a cycle of sgdr/cyclic ends:
    update n − 1 is the last of one cycle and update n would start the next. Snapshot ensembles
    save the weights after those updates, where the rate is lowest. Empty for other schedules.

    A cycle that ends exactly at the end of training counts; a cut-off last cycle does not.
    """
    info = SCHEDULES.get(cfg["schedule"]["name"])
    if info.cycle_index is None:
        return []
    options = info.options_from(cfg["schedule"])
    return [
        n
        for n in range(1, total_steps(cfg, steps_per_epoch) + 1)
        if info.cycle_index(n / steps_per_epoch, **options) > info.cycle_index((n - 1) / steps_per_epoch, **options)
    ]


# --- momentum annealing ---------------------------------------------------------------------------


def annealed_momentum(step: int, steps: int, start: float, end: float) -> float:
    """Momentum annealing ("Sometimes annealed over time, e.g. from 0.5 -> 0.99", 2016 slides):
    ρ(step) = start + (end − start) · min(1, step / S) for update number ``step`` = 0, 1, ...,
    S = ``steps`` (ρ = end when S = 0). With the slides' numbers: 0.5 at the first update, 0.99
    from update S on.

    Why linear in the update count: like the warm-up of the rate, it is stepped per iteration,
    so the ramp does not depend on where epochs end.
    """
    return end if steps <= 0 else start + (end - start) * min(1.0, step / steps)


def momentum_anneal_steps(cfg: dict, steps_per_epoch: int) -> int:
    """S = round(momentum_anneal_epochs · steps_per_epoch), 0 when annealing is off."""
    return round(float(cfg["optim"].get("momentum_anneal_epochs", 0.0)) * steps_per_epoch)


__all__ = [
    "SCHEDULES", "ScheduleInfo", "create_scheduler", "multiplier_fn", "schedule_options",
    "build_scheduler", "cycle_end_steps", "schedule_curve", "lr_lambda", "warmup",
    "annealed_momentum", "momentum_anneal_steps",
    "warmup_steps", "total_steps", "PerIterationLambdaLR",
]
