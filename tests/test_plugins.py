"""Your own components: registered by name in your module, loaded with --import or an entry point."""
import json
import subprocess
import sys
import textwrap

import pytest

import trainlab
from trainlab import plugins
from trainlab.models import MODELS

USER_MODULE = textwrap.dedent('''
    from torch import nn
    from trainlab.plugins import register_model

    @register_model("user_tiny_cnn")
    def user_tiny_cnn(cfg, input_shape, num_classes):
        return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * input_shape[1] * input_shape[2], num_classes))
''')


def trainlab_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "trainlab", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_import_option_makes_a_user_model_trainable_by_name(tmp_path):
    (tmp_path / "user_models.py").write_text(USER_MODULE)
    args = ["train", "model.name=user_tiny_cnn", "train.epochs=1", "data.subset=100", "train.progress=false",
            "monitor.every=0", "--out", "r"]
    without = trainlab_cli(*args, cwd=tmp_path)
    assert without.returncode == 2 and "user_tiny_cnn" in without.stderr
    result = trainlab_cli("--import", "user_models", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["model"] == "user_tiny_cnn" and summary["params"] == 4 * 9 + 4 + 4 * 64 * 10 + 10
    missing = trainlab_cli("--import", "no_such_module_here", "data", cwd=tmp_path)
    assert missing.returncode == 2 and "no module named 'no_such_module_here'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_entry_points_and_the_environment_are_loaded(tmp_path, monkeypatch):
    (tmp_path / "user_plugin_ep.py").write_text(USER_MODULE.replace("user_tiny_cnn", "user_ep_net"))
    (tmp_path / "user_plugin_env.py").write_text(USER_MODULE.replace("user_tiny_cnn", "user_env_net"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV, "user_plugin_env")

    class EntryPoint:
        value = "user_plugin_ep"

        def load(self):
            return __import__(self.value)

    monkeypatch.setattr(plugins, "entry_points", lambda group: [EntryPoint()] if group == "trainlab.plugins" else [])
    try:
        assert plugins.load_plugins(["user_plugin_env"]) == ["user_plugin_ep", "user_plugin_env"]
        assert "user_ep_net" in MODELS and "user_env_net" in MODELS
    finally:
        for name in ("user_ep_net", "user_env_net"):
            MODELS._items.pop(name, None)


def test_version(capsys):
    from trainlab.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"trainlab {trainlab.__version__}"
