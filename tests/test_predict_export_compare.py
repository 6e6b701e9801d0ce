"""What a practitioner does after training: predict on new inputs, export the model, compare runs;
and a run made with $TRAINLAB_DATA that evaluates later in a shell without it."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.checkpoint import load_checkpoint
from trainlab.classifier import load_classifier
from trainlab.cli import main
from trainlab.data import load_data
from trainlab.errors import UserError
from trainlab.export import onnx_missing
from trainlab.predict import check_range, read_inputs

TINY = ["data.subset=200", "train.epochs=1", "train.progress=false", "monitor.every=0"]
# A conv net with batch norm: the export must carry the running statistics and the preprocessing.
CONV = ["model.name=convnet", "model.width=4", "model.norm=batch", "model.depth=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "conv"
    assert main(["train", *TINY, *CONV, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def digits_test(run):
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    data = load_data(ckpt["config"])
    return data.test_x[:12], load_classifier(ckpt).eval()


def test_checkpoint_records_the_raw_input_range(run):
    assert load_checkpoint(run / "checkpoints" / "best.pt")["input_range"] == [0.0, 1.0]


def test_predict_reads_images_folders_and_arrays_as_training_did(run, digits_test, tmp_path, capsys):
    x, model = digits_test
    pixels = (x[:, 0].numpy() * 255).round().astype(np.uint8)  # what a user's PNG files hold
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(pixels[:3]):
        Image.fromarray(im).convert("RGB").save(folder / f"d{i}.png")  # colour file, greyscale model
    np.save(tmp_path / "u8.npy", pixels[3:])
    np.savez(tmp_path / "f.npz", x=pixels[3:].astype(np.float32) / 255)
    out = tmp_path / "p.json"
    assert main(["predict", str(run), str(folder), str(tmp_path / "u8.npy"), str(tmp_path / "f.npz"),
                 "--top", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["input"] for r in rows[:3]] == [str(folder / f"d{i}.png") for i in range(3)]
    assert len(rows) == 3 + 2 * 9
    expected = torch.softmax(model(torch.from_numpy(pixels).float()[:, None] / 255), 1)
    for r, p in zip(rows, torch.cat([expected, expected[3:]])):
        assert [c["class"] for c in r["top"]] == [str(int(i)) for i in p.topk(3).indices]
        assert [c["prob"] for c in r["top"]] == pytest.approx(p.topk(3).values.tolist(), abs=1e-5)
    assert "wrote" in capsys.readouterr().out


def test_predict_writes_csv_and_runs_tta(run, digits_test, tmp_path):
    x, _ = digits_test
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "p.csv"
    assert main(["predict", str(run / "checkpoints" / "last.pt"), str(tmp_path / "x.npy"), "--tta", "crops",
                 "--top", "2", "--out", str(out)]) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["input", "class_1", "prob_1", "class_2", "prob_2"]
    assert len(rows) == 1 + len(x) and all(float(r[2]) >= float(r[4]) for r in rows[1:])


def test_predict_refuses_0_255_floats_for_a_model_trained_on_0_1(run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 200.0, dtype=np.float32))
    assert main(["predict", str(run), str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "divide it by 255" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(UserError, match="shape"):
        read_inputs([tmp_path / "x.npy"], (3, 8, 8))
    check_range(torch.full((1, 4), 1.2), [0.0, 1.0])  # a little brighter than training passes


@pytest.mark.parametrize("fmt, load", [
    ("exported", lambda p: torch.export.load(p).module()),
    ("torchscript", lambda p: torch.jit.load(str(p))),
])
def test_exported_model_matches_the_checkpoint(run, digits_test, tmp_path, fmt, load, capsys):
    x, model = digits_test
    assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path)]) == 0
    info = json.loads((tmp_path / "export.json").read_text())
    assert info["max_abs_diff"] < 1e-4 and info["input_shape"] == [1, 8, 8] and len(info["classes"]) == 10
    exported = load(info["file"])
    with torch.no_grad():
        for batch in (x, x[:1]):  # any batch size, raw [0, 1] pixels: preprocessing is baked in
            assert torch.allclose(exported(batch), model(batch), atol=1e-5)
    assert "largest difference" in capsys.readouterr().out


def test_onnx_export_needs_its_packages(run, digits_test, tmp_path, capsys):
    rc = main(["export", str(run), "--format", "onnx", "--out", str(tmp_path)])
    if onnx_missing():
        assert rc == 2
        assert "pip install" in capsys.readouterr().err
        return
    assert rc == 0
    info = json.loads((tmp_path / "export.json").read_text())
    if info["max_abs_diff"] is not None:
        assert info["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_compare_tables_differences_metrics_and_curves(run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", *TINY, *CONV, "optim.lr=0.003", "seed=1", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["compare", str(run), str(other), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "optim.lr" in printed and "seed" in printed and "test_acc" in printed
    assert "model.name" not in printed  # the same in both runs
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["optim.lr"] for r in result["rows"]] == [0.001, 0.003]
    assert (tmp_path / "cmp" / "plots" / "compare_curves.png").stat().st_size > 1000
    assert "data:image/png;base64" in (tmp_path / "cmp" / "compare.html").read_text()
    assert main(["compare", str(run)]) == 2


@pytest.mark.slow
def test_run_made_with_trainlab_data_evaluates_in_a_shell_without_it(tmp_path, monkeypatch):
    """The data root from $TRAINLAB_DATA is written into config.yaml and the checkpoints."""
    root = tmp_path / "data"
    root.mkdir()
    gen = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (gen.random((60, 1, 6, 6)) * 50 + y[:, None, None, None] * 60).astype(np.uint8)
    np.savez(root / "npz.npz", x=x, y=y, x_test=x[:15], y_test=y[:15])
    monkeypatch.setenv("TRAINLAB_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "data.name=npz", *TINY[1:], "--out", "r"]) == 0
    monkeypatch.delenv("TRAINLAB_DATA")
    assert main(["evaluate", "r"]) == 0
    assert main(["train", "-c", "r/config.yaml", "--out", "r2"]) == 0
