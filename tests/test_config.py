"""Configuration: defaults, YAML + overrides, and the errors users see for bad input."""
from pathlib import Path

import pytest
import torch

from trainlab.config import SCHEMA, defaults, keys_table, load_config, parse_overrides
from trainlab.errors import UserError


def test_defaults_cover_every_key_and_validate():
    cfg = load_config()
    assert cfg == defaults()
    assert cfg["data"]["name"] == "digits"


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  name: sgd\n  lr: 0.5\ntrain:\n  epochs: 3\n")
    cfg = load_config(f, ["optim.lr=0.1", "model.name=convnet", "augment.names=[flip,crop]", "data.subset=null"])
    assert cfg["optim"]["name"] == "sgd" and cfg["optim"]["lr"] == 0.1
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["name"] == "convnet"
    assert cfg["augment"]["names"] == ["flip", "crop"] and cfg["data"]["subset"] is None


@pytest.mark.parametrize("override, words", [
    (["optim.lrr=0.1"], ["unknown config key", "optim.lr"]),
    (["optim.name=adamm"], ["optim.name", "adam", "one of"]),
    (["optim.lr=-0.1"], ["optim.lr", "> 0"]),
    (["optim.lr=abc"], ["optim.lr"]),
    (["train.epochs=2.5"], ["train.epochs", "int"]),
    (["model.dropout=1.0"], ["model.dropout", "< 1"]),
    (["augment.names=[flip,flop]"], ["augment.names", "flop"]),
    (["train.progress=maybe"], ["train.progress", "bool"]),
    (["schedule.milestones=[0.5,1.5]"], ["schedule.milestones"]),
    (["optim.lr"], ["key=value"]),
])
def test_bad_input_names_the_key(override, words):
    with pytest.raises(UserError) as e:
        load_config(None, override)
    for w in words:
        assert w in str(e.value)


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    f.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(f)


def test_nested_unknown_key_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  nam: mlp\n")
    with pytest.raises(UserError, match="model.name"):
        load_config(f)


def test_parse_overrides_types():
    assert parse_overrides(["a=1", "b=0.5", "c=x", "d=[1,2]"]) == {"a": 1, "b": 0.5, "c": "x", "d": [1, 2]}


def test_keys_table_lists_every_key():
    table = keys_table()
    for name in SCHEMA:
        assert f"`{name}`" in table


@pytest.mark.parametrize("override, key, expected", [
    ("train.amp=on", ("train", "amp"), "on"), ("train.amp=off", ("train", "amp"), "off"),
    ("train.channels_last=on", ("train", "channels_last"), "on"), ("transfer.similar=yes", ("transfer", "similar"), "yes"),
    ("transfer.similar=no", ("transfer", "similar"), "no"),
])
def test_yaml_booleans_map_back_to_on_off_choices(override, key, expected, tmp_path):
    cfg = load_config(None, [override])
    assert cfg[key[0]][key[1]] == expected
    f = tmp_path / "c.yaml"
    name, value = override.split("=")
    section, leaf = name.split(".")
    f.write_text(f"{section}:\n  {leaf}: {value}\n")  # unquoted in YAML, too
    assert load_config(f)[key[0]][key[1]] == expected


def test_written_configs_name_their_paths_absolutely(tmp_path, monkeypatch):
    """config.yaml is 'fully resolved' (docs/design.md §8): a relative data.root is written as the folder it
    meant from where the run started, so the file loads from any other directory."""
    from trainlab.config import dump_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINLAB_DATA", raising=False)
    cfg = load_config(None, ["data.root=data", "data.path=~/sets/x.npz"])
    dump_config(cfg, tmp_path / "config.yaml")
    monkeypatch.chdir("/")
    again = load_config(tmp_path / "config.yaml")
    assert again["data"]["root"] == str((tmp_path / "data").resolve())
    assert again["data"]["path"] == str(Path("~/sets/x.npz").expanduser())
    assert cfg["data"]["root"] == "data"  # the caller's config is left as it was
    defaults_only = load_config(None, [])
    dump_config(defaults_only, tmp_path / "d.yaml")
    assert load_config(tmp_path / "d.yaml")["data"]["root"] is None  # unset stays unset (~/.cache/trainlab applies)
    monkeypatch.setenv("TRAINLAB_DATA", "sets")
    dump_config(defaults_only, tmp_path / "e.yaml")
    assert load_config(tmp_path / "e.yaml")["data"]["root"] == str(Path("sets").resolve())  # from the cwd


def test_checkpoints_carry_the_resolved_config(tmp_path, monkeypatch):
    """`trainlab evaluate CHECKPOINT` rebuilds the data from the checkpoint's config: its paths are absolute."""
    from types import SimpleNamespace

    from trainlab.classifier import checkpoint_meta

    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.root=data"])
    data = SimpleNamespace(classes=["a", "b"], num_classes=2, input_shape=(1, 8, 8), train_x=torch.rand(4, 1, 8, 8))
    model = SimpleNamespace(preprocess=SimpleNamespace(output_shape=lambda shape: shape))
    assert checkpoint_meta(cfg, data, model)["config"]["data"]["root"] == str((tmp_path / "data").resolve())


@pytest.mark.parametrize("override, first", [
    ("optim.learning_rate=0.1", "optim.lr"),   # what other tools call it
    ("train.lr=0.1", "optim.lr"),              # the right last part in the wrong section
    ("model.epochs=3", "train.epochs"),
])
def test_unknown_keys_suggest_by_their_last_part_too(override, first):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    assert f"(did you mean: {first}" in str(e.value)


def test_names_are_lower_case_and_the_message_says_so():
    with pytest.raises(UserError, match="names are lower-case: did you mean mnist"):
        load_config(None, ["data.name=MNIST"])
