"""Configuration: one YAML file plus dotted ``key=value`` overrides, validated before any work.

Every key trainlab understands is declared once, in :data:`SCHEMA`, with its default, its type
and its allowed values; the docs table in the README is generated from the same declarations
(``trainlab config-keys``). Names of components (activations, optimisers, ...) are checked
against the registries, so a component registered anywhere is a valid config value at once.

    cfg = load_config("examples/mnist.yaml", ["optim.lr=0.1", "train.epochs=3"])
    cfg["optim"]["lr"]  # 0.1
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from trainlab.components import REGISTRIES
from trainlab.errors import ConfigError, short, short_text
from trainlab.registry import close_matches
from trainlab.schema import SCHEMA, Key, defaults, set_dotted


def _registry_names(kind: str) -> list[str]:
    return REGISTRIES[kind].names()


def _get(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} → {"optim.lr": 0.1}. A key written both ways (``optim: {lr: ..}``
    and ``optim.lr: ..``) is warned about; the later one is used."""
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in SCHEMA:
            inner = flatten(v, name + ".") if v else {name: v}
        else:
            inner = {name: v}
        for key in inner.keys() & out.keys():
            warn(f"{short(key)} is given twice; the last value is used")
        out.update(inner)
    return out


# Last parts of keys as other tools spell them → trainlab's key.
ALIASES = {"learning_rate": "optim.lr", "lr": "optim.lr", "weight_decay": "optim.weight_decay",
           "optimizer": "optim.name", "scheduler": "schedule.name", "schedule": "schedule.name",
           "batch_size": "train.batch_size", "epochs": "train.epochs", "dropout": "model.dropout",
           "momentum": "optim.momentum", "label_smoothing": "reg.label_smoothing", "dataset": "data.name"}


def _key_suggestions(name: str) -> list[str]:
    """Keys close to ``name``: by the whole dotted name, by its last part (``train.lr`` →
    ``optim.lr``), and by what other tools call it (``optim.learning_rate`` → ``optim.lr``)."""
    last = name.rsplit(".", 1)[-1]
    found = [ALIASES[last]] if last in ALIASES and ALIASES[last] != name else []
    found += difflib.get_close_matches(name, list(SCHEMA), n=3, cutoff=0.5)
    by_last = {k.rsplit(".", 1)[-1]: k for k in SCHEMA}
    found += [by_last[m] for m in difflib.get_close_matches(last, list(by_last), n=2, cutoff=0.75)]
    return list(dict.fromkeys(k for k in found if k != name))[:3]


def _unknown_key(name: str, source: str = "") -> ConfigError:
    found = _key_suggestions(name) if len(name) <= 100 else []  # difflib is quadratic; no real key is that long
    hint = f" (did you mean: {', '.join(found)}?)" if found else ""
    return ConfigError(f"unknown config key {short(name)}{f' in {source}' if source else ''}{hint}. "
                       "Run `trainlab config-keys` for the full list.")


def _describe(key: Key) -> str:
    if key.choices is not None:
        names = key.choices if isinstance(key.choices, tuple) else _registry_names(key.choices)
        return "one of: " + ", ".join(map(str, names))
    kind = {"int": "an int", "float": "a float", "bool": "a bool", "str": "a str", "floats": "a list of numbers",
            "strs": "a list of names"}.get(key.kind, f"a {key.kind}")
    return kind + (" " + key.bounds() if key.bounds() else "") + (" or null" if key.nullable else "")


def _coerce(name: str, key: Key, value):
    """Turn a YAML/CLI value into the key's type, or raise a ConfigError naming key and range."""
    bad = ConfigError(f"bad value {short(value)} for {name}: expected {_describe(key)} ({key.help})")
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~") and key.kind != "str"):
        if key.nullable:
            return None
        raise bad
    if key.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise bad
    if key.kind in ("int", "float"):
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        # Past 2**53 a float no longer holds every integer, and nothing trainlab counts gets there.
        if not math.isfinite(number) or abs(number) > 2**53:
            raise bad
        if key.kind == "int":
            if number != int(number):
                raise bad
            number = int(number)
        if key.out_of_range(number):
            raise bad
        return number
    if key.kind in ("floats", "strs"):
        if isinstance(value, str):
            value = safe_load(value, name) if value.strip().startswith("[") else [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        items = []
        for v in value:
            if key.kind == "floats":
                try:
                    items.append(float(v))
                except (TypeError, ValueError, OverflowError):
                    raise bad from None
            else:
                items.append(str(v).strip())
        if key.kind == "strs" and key.choices is not None:
            allowed = key.choices if isinstance(key.choices, tuple) else _registry_names(key.choices)
            for v in items:
                if v not in allowed:
                    raise ConfigError(f"bad value {short(v)} in {name}{close_matches(v, allowed)}: expected {_describe(key)}")
        return items
    # str
    if isinstance(value, bool) and isinstance(key.choices, tuple):
        # YAML reads on/off/yes/no as booleans; map them back to the spelling this key offers
        spellings = ("on", "yes", "true") if value else ("off", "no", "false")
        value = next((c for c in key.choices if c in spellings), value)
    value = str(value)
    if key.choices is not None:
        allowed = key.choices if isinstance(key.choices, tuple) else _registry_names(key.choices)
        if value not in allowed:
            raise ConfigError(f"bad value {short(value)} for {name}{close_matches(value, allowed)}: expected {_describe(key)}")
    return value


def cfg_with(cfg: dict, changes: dict | None = None, **dotted) -> dict:
    """A validated copy of ``cfg`` with some keys changed, checked exactly as a config file is.

        cfg_with(cfg, {"optim.lr": 0.1, "train.epochs": 3})
        cfg_with(cfg, optim__lr=0.1)          # keyword form: "__" stands for the dot
    """
    flat = {**flatten(cfg), **(changes or {}), **{k.replace("__", "."): v for k, v in dotted.items()}}
    return validate(flat)


# YAML aliases let a few hundred bytes stand for a value of billions of nodes; nothing a config
# holds comes near this many, so a document that expands past it is refused before it is used.
MAX_YAML_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: dict, path: set) -> int:
    """Number of nodes ``node`` stands for once every alias is expanded (memoised per node, so
    this costs one visit per distinct node however often it is aliased)."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in path:  # a recursive alias (&a [*a]) expands forever
        return MAX_YAML_NODES + 1
    path.add(id(node))
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, path) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, path) + _expanded_size(v, memo, path) for k, v in node.value)
    path.discard(id(node))
    memo[id(node)] = min(size, MAX_YAML_NODES + 1)
    return memo[id(node)]


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses alias bombs and warns about keys given twice in a mapping."""

    source = "YAML"

    def construct_document(self, node):
        if _expanded_size(node, {}, set()) > MAX_YAML_NODES:
            raise ConfigError(f"{self.source} expands (through YAML aliases &name / *name) to more than "
                            f"{MAX_YAML_NODES:,} values; write the values out instead of aliasing them")
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    warn(f"key {short(key_node.value)} is given twice in {self.source} "
                         f"(line {key_node.start_mark.line + 1}); the last value is used")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def safe_load(text: str, source: str = "YAML"):
    """``yaml.safe_load`` with :class:`BoundedLoader`; ``source`` names the text in messages."""
    loader = BoundedLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def warn(message: str) -> None:
    """A problem the user should know about that does not stop the command."""
    print(f"trainlab: warning: {message}", file=sys.stderr)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['optim.lr=0.1', 'model.name=resnet'] → {'optim.lr': '0.1', ...} (values still strings)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"bad argument {short(item)}: overrides are written key=value, e.g. optim.lr=0.1")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"bad argument {short(item)}: no key before '='; overrides are written key=value, e.g. optim.lr=0.1")
        if key in out:
            warn(f"{key} is given twice on the command line; the last value ({short(value)}) is used")
        try:
            out[key] = safe_load(value, f"the value of {short(key)}") if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"bad value {short(value)} for {short(key)}: not a YAML value ({str(e).splitlines()[0]})") from None
    return out


def validate(flat: dict[str, Any]) -> dict:
    """Check every key and value against :data:`SCHEMA`; returns the full nested config."""
    cfg = defaults()
    for name, value in flat.items():
        if name not in SCHEMA:
            raise _unknown_key(name)
        set_dotted(cfg, name, _coerce(name, SCHEMA[name], value))
    return _check_consistency(cfg)


def _check_consistency(cfg: dict) -> dict:
    """Cross-key rules that no single key can express."""
    for name in ("augment.scale", "augment.ratio", "optim.betas"):
        v = _get(cfg, name)
        if len(v) != 2:
            raise ConfigError(f"bad value {short(v)} for {name}: expected two numbers [low, high]")
    lo, hi = cfg["augment"]["scale"]
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"bad value {[lo, hi]} for augment.scale: expected 0 < low <= high <= 1")
    lo, hi = cfg["augment"]["ratio"]
    if not 0 < lo <= hi:
        raise ConfigError(f"bad value {[lo, hi]} for augment.ratio: expected 0 < low <= high")
    b1, b2 = cfg["optim"]["betas"]
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ConfigError(f"bad value {[b1, b2]} for optim.betas: each beta must be in [0, 1)")
    if any(not 0 < m < 1 for m in cfg["schedule"]["milestones"]):
        raise ConfigError("bad value for schedule.milestones: expected fractions of training in (0, 1), e.g. [0.5, 0.75]")
    if cfg["preprocess"]["components"] > 1 and cfg["preprocess"]["components"] != int(cfg["preprocess"]["components"]):
        raise ConfigError("bad value for preprocess.components: an integer number of components, or a variance fraction in (0, 1]")
    if cfg["train"]["deterministic"] and cfg["train"]["cudnn_benchmark"] == "on":
        raise ConfigError("train.deterministic=true and train.cudnn_benchmark=on contradict each other: the autotuner may pick "
                        "different kernels run to run; use train.cudnn_benchmark=auto (or off)")
    return cfg


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        tree = safe_load(path.read_text(encoding="utf-8"), f"config file {str(path)!r}") or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {short_text(str(e), 600)}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping of keys to values, got {type(tree).__name__}")
    return tree


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | dict | None = None) -> dict:
    """YAML file (optional) + overrides → validated nested config. Raises ConfigError."""
    flat: dict[str, Any] = {}
    if path is not None:
        flat.update(flatten(read_yaml(path)))
        unknown = next((k for k in flat if k not in SCHEMA), None)
        if unknown is not None:
            raise _unknown_key(unknown, f"config file {str(path)!r}")
    if isinstance(overrides, dict):
        flat.update(overrides)
    elif overrides:
        flat.update(parse_overrides(overrides))
    return validate(flat)


# Keys that name files or folders. A written config names them absolutely, so that
# `trainlab train -c RUN/config.yaml` (or a search's best.yaml) finds the data from any directory.
PATH_KEYS = ("data.root", "data.path")


def resolve_paths(cfg: dict) -> dict:
    """A copy of ``cfg`` whose set PATH_KEYS are absolute (``~`` expanded, relative paths taken
    from the current directory, which is where the run reads them). A data root given by
    ``$TRAINLAB_DATA`` is written into ``data.root``: a later command in a shell without that
    variable (evaluate, ``train -c RUN/config.yaml``, ensemble, finetune) finds the same data."""
    cfg = copy.deepcopy(cfg)
    if "data" in cfg and not cfg["data"].get("root") and os.environ.get("TRAINLAB_DATA"):
        cfg["data"]["root"] = os.environ["TRAINLAB_DATA"]
    for key in PATH_KEYS:
        section, name = key.split(".")
        if cfg.get(section, {}).get(name):
            cfg[section][name] = str(Path(cfg[section][name]).expanduser().resolve())
    return cfg


def dump_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML with its paths resolved (docs/design.md §8: config.yaml is fully resolved)."""
    Path(path).write_text(yaml.safe_dump(resolve_paths(cfg), sort_keys=False))


def keys_table() -> str:
    """Markdown table of every key (the README's configuration section is made from this)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, key in SCHEMA.items():
        allowed = _describe(key).replace("|", "/")
        rows.append(f"| `{name}` | `{key.default}` | {allowed} | {key.help} |")
    return "\n".join(rows)


def as_flat(cfg: dict) -> dict:
    return {k: _get(cfg, k) for k in SCHEMA}


__all__ = ["SCHEMA", "Key", "load_config", "validate", "defaults", "dump_config", "resolve_paths", "PATH_KEYS", "flatten",
           "keys_table", "as_flat", "parse_overrides", "read_yaml", "cfg_with"]
