"""docs/api.md's code blocks run, in order, as a reader would paste them (one namespace, a fresh
directory): the plain PyTorch loop that trains digits with trainlab's optimiser, schedule,
augmentations and monitors, the components by name, and whole runs."""
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_plain_loop_shows_what_issue_11_asks_for():
    loop = python_blocks(DOC.read_text())[0]
    for needed in ("DataLoader(", "class SmallConvNet(nn.Module)", 'create_optimizer(model, "nesterov"',
                   'create_scheduler(optimizer, "sgdr"', 'create_augmentation(["flip", "crop", "cutout"]',
                   "attach_monitors(model", "scheduler.step()"):
        assert needed in loop, needed


@pytest.mark.slow
def test_every_code_block_of_docs_api_md_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "api_md"}
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 4
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert namespace["history"][-1]["val_acc"] > 0.9  # the loop trained digits
    assert len(namespace["monitors"].records) > 2  # step 0, step 1 and every 25 updates
    assert "did you mean: nesterov?" in out and "bad value -1 for optim.lr" in out
    assert (tmp_path / "runs" / "api-digits" / "summary.json").is_file()
    assert not (tmp_path / "runs" / "never").exists()
