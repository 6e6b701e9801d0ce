"""Search spaces: which config keys to vary and over which range (docs/design.md §5).

A space is a YAML file next to the config it tunes, mapping config keys to distributions::

    optim.lr: loguniform(1e-4, 1e-1)      # rates matter by ratio: sample the exponent
    optim.weight_decay: loguniform(1e-6, 1e-2)
    model.dropout: uniform(0.0, 0.5)
    model.width: int(32, 256)
    optim.name: choice([sgd, adam, adamw])

Every key and every value is checked against the config schema before any trial runs, so a
misspelt key or an impossible range fails at once (exit 2) and names the key.

The lectures' coarse-to-fine search is three pure functions on a space: :func:`narrow_space`
(zoom in around the best trials), :func:`widen_at_edges` (a best value on the edge of its range
means the range was too small) and :func:`grid_points` (the grid that random search is compared
with). They work in log space for log-uniform parameters, where "around" and "edge" are
measured in decades.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from trainlab.config import SCHEMA, flatten, read_yaml, safe_load, validate
from trainlab.errors import UserError, short

KINDS = ("loguniform", "uniform", "int", "choice")
EXAMPLE = "e.g. optim.lr: loguniform(1e-4, 1e-1), model.dropout: uniform(0, 0.5), model.width: int(32, 256), optim.name: choice([sgd, adam])"
# The stage length is the search's business (--epochs); letting a trial pick it would compare
# trials trained for different lengths.
RESERVED = {"train.epochs": "the number of epochs is set per stage by --epochs / --refine-epochs"}


@dataclass(frozen=True)
class Param:
    """One searched config key: ``loguniform``/``uniform``/``int`` over [low, high], or ``choice``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    # A choice narrowed by the refine stage keeps fewer values. Optuna fixes a parameter's
    # distribution per study, so the narrowed choice is asked for under its own name: the
    # values it keeps (``optim.name{adam|sgd}``), and the same narrowing always gets the same name.
    narrowed: bool = False

    @property
    def optuna_name(self) -> str:
        if not self.narrowed:
            return self.key
        return self.key + "{" + "|".join(map(str, (encode_choice(c) for c in self.choices))) + "}"

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    @property
    def numeric(self) -> bool:
        return self.kind != "choice"

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"choice({encode_choice(list(self.choices))})"
        return f"{self.kind}({self.low:g}, {self.high:g})"


Space = dict  # config key -> Param, in the order the space file lists them


# --- parsing and validation ---------------------------------------------------------------
def load_space(path: str | Path) -> Space:
    """Read and validate a space file (raises UserError naming the file and the key)."""
    return parse_space(read_yaml(path), source=f"search space {str(path)!r}")


def parse_space(tree: dict, source: str = "search space") -> Space:
    """``{key: "loguniform(1e-4, 1e-1)", ...}`` (nested or dotted) → ``{key: Param}``."""
    flat = flatten(tree)
    if not flat:
        raise UserError(f"{source} is empty: give at least one key and its range ({EXAMPLE})")
    return {key: parse_param(key, text, source) for key, text in flat.items()}


def parse_param(key: str, text, source: str = "search space") -> Param:
    """One entry of a space file → a validated :class:`Param`."""
    where = f"{source}, key {key!r}"
    if key not in SCHEMA:
        _check_value(key, None, where)  # the config's own unknown-key message, with close matches
    if key in RESERVED:
        raise UserError(f"{where}: cannot be searched: {RESERVED[key]}")
    match = re.fullmatch(r"\s*([A-Za-z_]+)\s*\((.*)\)\s*", str(text), flags=re.S)
    if match is None or match.group(1) not in KINDS:
        raise UserError(f"{where}: cannot read {short(text)}: expected one of {', '.join(k + '(...)' for k in KINDS)} ({EXAMPLE})")
    kind, body = match.group(1), match.group(2)
    try:
        args = safe_load(f"[{body}]", where)
    except yaml.YAMLError:
        raise UserError(f"{where}: cannot read the arguments of {short(text)}") from None
    if kind == "choice":
        choices = args[0] if len(args) == 1 and isinstance(args[0], list) else args
        if not choices:
            raise UserError(f"{where}: choice() needs at least one value")
        return Param(key, kind, choices=tuple(_check_value(key, c, where) for c in choices))
    if len(args) != 2:
        raise UserError(f"{where}: {kind}(low, high) takes two numbers, got {short(text)}")
    try:
        low, high = (float(a) for a in args)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where}: {kind}(low, high) takes two numbers, got {short(text)}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{where}: {kind}(low, high) takes finite numbers, got {short(text)}")
    if low > high:
        raise UserError(f"{where}: low {low:g} > high {high:g} in {short(text)}")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0 (log of {low:g} is undefined), got {short(text)}; "
                        "to reach 0, use uniform() or a low end small enough to act as 0 (e.g. 1e-6)")
    if kind == "int":
        if low != int(low) or high != int(high):
            raise UserError(f"{where}: int(low, high) takes whole numbers, got {short(text)}")
        low, high = int(low), int(high)
    elif SCHEMA[key].kind != "float":
        raise UserError(f"{where}: {kind}() samples real numbers but {key} takes {SCHEMA[key].kind} values; "
                        "use int(low, high) or choice([...])")
    for end in (low, high):
        _check_value(key, end, where)
    return Param(key, kind, low, high)


def _check_value(key: str, value, where: str):
    """The config's own validation of one value; returns it coerced to the key's type."""
    try:
        return flatten(validate({key: value}))[key]
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def check_space(space: Space, base: dict, source: str = "search space") -> None:
    """Every end of every range (and every choice) together with the base config must make a
    valid config: rules that span keys (e.g. optim.betas) are caught before the first trial."""
    flat = flatten(base)
    for key, p in space.items():
        for value in (p.choices if p.kind == "choice" else (p.low, p.high)):
            try:
                validate({**flat, key: value})
            except UserError as e:
                raise UserError(f"{source}, key {key!r}: value {short(value)} with the base config: {e}") from None


def space_to_dict(space: Space) -> dict:
    """``{key: "loguniform(0.0001, 0.1)"}``: how a space is stored in the study and printed."""
    return {key: str(p) for key, p in space.items()}


def space_state(space: Space) -> dict:
    """A space as JSON, exactly (``space_to_dict`` rounds numbers for reading)."""
    return {key: {"kind": p.kind, "low": p.low, "high": p.high, "choices": list(p.choices), "narrowed": p.narrowed}
            for key, p in space.items()}


def space_from_state(state: dict) -> Space:
    return {key: Param(key, d["kind"], d["low"], d["high"], tuple(d["choices"]), d.get("narrowed", False))
            for key, d in state.items()}


def config_key(optuna_name: str) -> str:
    """The config key an Optuna parameter name stands for (see :attr:`Param.optuna_name`)."""
    return optuna_name.split("{", 1)[0]


def encode_choice(value) -> str | int | float | bool | None:
    """Optuna's categorical values must be scalars: a list choice (augment.names) goes as YAML text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


# --- define-by-run ------------------------------------------------------------------------
def suggest(trial, space: Space) -> dict:
    """Ask an Optuna trial for one value per key: the flat config overrides of that trial."""
    values = {}
    for key, p in space.items():
        if p.kind == "choice":
            encoded = [encode_choice(c) for c in p.choices]
            values[key] = p.choices[encoded.index(trial.suggest_categorical(p.optuna_name, encoded))]
        elif p.kind == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high))
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.log)
    return values


# --- coarse to fine -------------------------------------------------------------------------
def _to_axis(p: Param, x: float) -> float:
    """Where ``x`` lies on the axis the search measures distances on: decades for log params."""
    return math.log10(x) if p.log else float(x)


def _from_axis(p: Param, t: float) -> float:
    return 10.0 ** t if p.log else t


def position(p: Param, x: float) -> float:
    """0 at ``low``, 1 at ``high`` (in log space for log params)."""
    lo, hi = _to_axis(p, p.low), _to_axis(p, p.high)
    return 0.5 if hi == lo else (_to_axis(p, x) - lo) / (hi - lo)


def _with_range(p: Param, lo: float, hi: float) -> Param:
    if p.kind == "int":
        lo, hi = math.floor(lo + 1e-9), math.ceil(hi - 1e-9)
    return replace(p, low=lo, high=hi)


def narrow(p: Param, values: list, pad: float = 0.25, min_width: float = 0.05) -> Param:
    """The range spanned by the best trials' ``values``, padded on both sides by ``pad`` of that
    span (at least ``min_width`` of the old range, so one value still leaves room), and never
    outside the old range. Log params are narrowed in decades. A choice keeps the values seen."""
    if p.kind == "choice":
        seen = set(map(encode_choice, values))
        kept = tuple(c for c in p.choices if encode_choice(c) in seen) or p.choices
        return p if kept == p.choices else replace(p, choices=kept, narrowed=True)
    axis = [_to_axis(p, v) for v in values]
    old_lo, old_hi = _to_axis(p, p.low), _to_axis(p, p.high)
    margin = max(pad * (max(axis) - min(axis)), min_width * (old_hi - old_lo))
    lo, hi = min(axis) - margin, max(axis) + margin
    # An end that reaches the old one keeps the old value exactly (no round trip through log10).
    low = p.low if lo <= old_lo else _from_axis(p, lo)
    high = p.high if hi >= old_hi else _from_axis(p, hi)
    return _with_range(p, low, high)


def narrow_space(space: Space, best: list[dict]) -> Space:
    """Each parameter narrowed around its values in ``best`` (params dicts of the top trials)."""
    return {key: narrow(p, [b[key] for b in best if key in b]) if any(key in b for b in best) else p
            for key, p in space.items()}


def _schema_limits(key: str, lo: float, hi: float) -> tuple[float, float]:
    """Clip a widened range to what the config accepts: lr > 0, dropout < 1, momentum < 1 ..."""
    k, width = SCHEMA[key], hi - lo
    if k.low is not None:
        lo = max(lo, k.low + (0.01 * width if k.low_open else 0.0))
    if k.high is not None:
        hi = min(hi, k.high - (0.01 * width if k.high_open else 0.0))
    return lo, hi


def widen_at_edges(space: Space, best: dict, edge: float = 0.1, grow: float = 0.5) -> tuple[Space, list[str]]:
    """A best value in the outer ``edge`` of its range (in log space for log params) says the
    optimum may lie outside it: that side is pushed out by ``grow`` of the range's width.

    Returns the new space and the keys widened (none: the coarse stage is done). A side that
    already sits on the config's limit (dropout 0, momentum → 1) cannot move and is left alone.
    """
    new, widened = dict(space), []
    for key, p in space.items():
        if not p.numeric or key not in best or p.low == p.high:
            continue
        u = position(p, best[key])
        lo_t, hi_t = _to_axis(p, p.low), _to_axis(p, p.high)
        width = hi_t - lo_t
        if p.kind == "int":
            width = max(width, 2.0)  # an int range must move by at least one
        if u <= edge:
            lo_t -= grow * width
        elif u >= 1 - edge:
            hi_t += grow * width
        else:
            continue
        low, high = _from_axis(p, lo_t), _from_axis(p, hi_t)
        if not p.log:
            low, high = _schema_limits(key, low, high)
        elif SCHEMA[key].high is not None:
            high = min(high, SCHEMA[key].high * (1 - 1e-3))
        candidate = _with_range(p, min(low, p.low), max(high, p.high))
        if (candidate.low, candidate.high) != (p.low, p.high):
            new[key] = candidate
            widened.append(key)
    return new, widened


def grid_points(space: Space, per_axis: int) -> list[dict]:
    """The full grid: ``per_axis`` values evenly spaced on each numeric axis (in decades for log
    params; distinct integers for int params), every value of each choice."""
    axes = {}
    for key, p in space.items():
        if p.kind == "choice":
            axes[key] = list(p.choices)
            continue
        lo, hi = _to_axis(p, p.low), _to_axis(p, p.high)
        n = 1 if lo == hi else per_axis
        ts = [lo + (hi - lo) * i / max(n - 1, 1) for i in range(n)]
        values = [p.low] + [_from_axis(p, t) for t in ts[1:-1]] + ([p.high] if n > 1 else [])
        if p.kind == "int":
            values = sorted({int(round(v)) for v in values})
        axes[key] = values
    points = [{}]
    for key, values in axes.items():
        points = [{**pt, key: v} for pt in points for v in values]
    return points
