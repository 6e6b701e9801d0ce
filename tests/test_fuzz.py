"""Property-based fuzzing of everything trainlab reads (Hypothesis): config overrides, YAML files,
data files (npz, IDX, CIFAR pickles) and checkpoints, each generated or mutated (truncated,
bit-flipped, wrong header fields, wrong dtypes and types), then given to the CLI in-process.

Whatever the input, the command must:
- exit 0 or 2, never 1 (an input problem is the user's to fix, not a crash);
- print no traceback, and on exit 2 a message under 2 KB that names the key or the file;
- change nothing outside its own output directory (the inputs and the user's other files stay
  byte for byte as they were).

Seeded (``derandomize``) and sized for about a minute in CI; a longer run:

    TRAINLAB_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_fuzz.py

(the number is the examples per input kind). Plots and report.html are not drawn (they read only
what trainlab itself wrote, and cost most of a tiny run's time).
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainlab.cli import main
from trainlab.config import SCHEMA

pytestmark = pytest.mark.slow  # every test runs trainlab on many generated inputs

EXAMPLES = int(os.environ.get("TRAINLAB_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TINY = ["model.name=mlp", "model.width=8", "train.epochs=1", "train.max_steps=2", "train.progress=false",
        "monitor.every=0", "train.batch_size=16"]
DIGITS = ["data.subset=60", *TINY]


@pytest.fixture(scope="module", autouse=True)
def no_plots():
    """A tiny run spends most of its time drawing plots from files trainlab wrote itself."""
    import trainlab.report as report

    saved = report.write_report, report.plot_confusion
    report.write_report = lambda run_dir, *a, **k: Path(run_dir) / "report.html"
    report.plot_confusion = lambda *a, **k: None
    yield
    report.write_report, report.plot_confusion = saved


@pytest.fixture(scope="module")
def sandbox():
    """A folder standing for the user's disk: a finished run, data files, a file of their own."""
    root = Path(tempfile.mkdtemp(prefix="trainlab-fuzz-"))
    (root / "user").mkdir()
    (root / "user" / "notes.txt").write_text("the user's own file\n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", *DIGITS, "--out", str(root / "run")]) == 0
    yield root
    shutil.rmtree(root, ignore_errors=True)


def tree_state(root: Path, skip: Path) -> dict:
    """path → content hash of every file under ``root`` except those under ``skip``."""
    state = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and skip not in p.parents:
            state[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def fresh_dir(sandbox: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=sandbox))


def run_cli(sandbox: Path, out: Path, args: list, names: list[str]) -> tuple[int, str]:
    """Run ``trainlab ARGS`` and check the properties; ``out`` is the only folder it may change,
    ``names`` what an exit-2 message must mention (one of them)."""
    before = tree_state(sandbox, out)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors exit 2 by themselves
            code = e.code
    err, text = stderr.getvalue(), stdout.getvalue() + stderr.getvalue()
    assert code in (0, 2), f"exit {code} for {args!r}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    if code == 2:
        message = err[err.rfind("trainlab: error:"):] if "trainlab: error:" in err else err
        assert len(message.encode()) < 2048, f"{len(message.encode())}-byte message for {args!r}"
        named = [form for n in names if n for form in (n, repr(n)[1:-1][:60])]  # raw, or as repr echoes it
        assert any(n in message for n in named), f"message names none of {names[:6]}: {message[:500]}"
    assert tree_state(sandbox, out) == before, f"files outside {out} changed for {args!r}"
    return code, text


# --- config overrides ------------------------------------------------------------------------

# Keys whose valid values can make a run arbitrarily long or large: only invalid values are
# generated for them (validation is what is fuzzed; a legal 10^6-epoch run is not a bug).
COSTLY = {"train.epochs", "train.max_steps", "model.width", "model.depth", "data.subset", "data.per_class",
          "monitor.every", "monitor.probe_size", "train.batch_size", "train.eval_batch_size", "data.image_size",
          "train.snapshots", "preprocess.components"}
# Keys that name where data lives or whether to download it: the data-file fuzzers cover them.
ELSEWHERE = {"data.name", "data.root", "data.path", "data.download", "device"}
KEYS = sorted(set(SCHEMA) - ELSEWHERE)

odd_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
numbers = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats().map(repr),
                    st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "0x10", "1_000", "1e-400"]))
yamlish = st.sampled_from(["null", "~", "[]", "{}", "[1, 2]", "[0.5, 0.75]", "{a: 1}", "true", "off", "yes",
                           "&a [1]", "*a", "!!python/object/apply:os.system [ls]", "[" * 40, "'", '"', "- 1",
                           "[1, [2, [3]]]", "!!binary AAAA", "2001-12-14", "[nan, inf]", "?", "@"])


def choice_values(key: str):
    choices = SCHEMA[key].choices
    if isinstance(choices, tuple):
        return st.sampled_from([str(c) for c in choices])
    return st.just("relu")


@st.composite
def override(draw):
    key = draw(st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k + "x"),
                         odd_text.filter(lambda s: s and "=" not in s and not s.startswith("-"))))
    if key in COSTLY:
        value = draw(st.one_of(st.integers(-10**6, 0).map(str), st.sampled_from(["x", "1.5", "[1]", "nan", "1e99"])))
    elif key in SCHEMA and SCHEMA[key].choices is not None:
        value = draw(st.one_of(choice_values(key), odd_text, yamlish))
    else:
        value = draw(st.one_of(numbers, odd_text, yamlish, st.integers(0, 3).map(str)))
    return key, value


@given(st.lists(override(), min_size=1, max_size=4))
@FUZZ
def test_fuzz_config_overrides(sandbox, overrides):
    out = fresh_dir(sandbox, "cfg")
    run_dir = out / "run"
    args = ["train", *DIGITS, *(f"{k}={v}" for k, v in overrides), "--out", run_dir]
    run_cli(sandbox, out, args, [k.strip()[:40] for k, _ in overrides] + list(SCHEMA))  # keys are read stripped


# --- YAML files ---------------------------------------------------------------------------------

sections = st.sampled_from(sorted({k.split(".")[0] for k in SCHEMA}))
leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(), odd_text,
                 st.lists(st.integers(-3, 12), max_size=4))


@st.composite
def yaml_document(draw) -> bytes:
    kind = draw(st.sampled_from(["tree", "raw", "bytes", "alias"]))
    if kind == "raw":
        return draw(odd_text).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    tree = {}
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(KEYS))
        if key in COSTLY:
            continue
        section, name = key.split(".", 1) if "." in key else (key, None)
        value = draw(leaf)
        if name is None:
            tree[section] = value
        elif draw(st.booleans()):
            tree.setdefault(section, {}) if isinstance(tree.get(section), dict) else tree.update({section: {}})
            tree[section][name] = value
        else:
            tree[key] = value
    if draw(st.booleans()):
        tree[draw(odd_text)] = draw(leaf)
    text = yaml.safe_dump(tree, allow_unicode=True)
    if kind == "alias":  # aliases nested k deep, each repeated w times
        k, w = draw(st.integers(1, 9)), draw(st.integers(1, 12))
        lines = ["x0: &x0 [1]"] + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * w)}]" for i in range(1, k)]
        text = "\n".join(lines) + f"\ndata:\n  classes: *x{k - 1}\n" + text
    return text.encode()


@given(yaml_document())
@FUZZ
def test_fuzz_yaml_config_files(sandbox, document):
    out = fresh_dir(sandbox, "yaml")
    path = out / "config.yaml"
    path.write_bytes(document)
    args = ["train", "-c", path, *DIGITS, "--out", out / "run"]
    run_cli(sandbox, out, args, ["config.yaml"] + list(SCHEMA))


# --- data files -----------------------------------------------------------------------------------

dtypes = st.sampled_from(["uint8", "int8", "int64", "float16", "float32", "float64", "bool", "complex64", "<U3"])
shapes = st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple)


@st.composite
def mutated_bytes(draw, blob: bytes) -> bytes:
    """``blob`` truncated, bit-flipped, or both (or left intact)."""
    blob = bytearray(blob)
    how = draw(st.sampled_from(["intact", "truncate", "flip", "both"]))
    if how in ("flip", "both") and blob:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(blob) - 1))
            blob[i] ^= 1 << draw(st.integers(0, 7))
    if how in ("truncate", "both"):
        blob = blob[: draw(st.integers(0, len(blob)))]
    return bytes(blob)


def base_arrays():
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 255, (40, 6, 6), dtype=np.uint8), "y": np.arange(40) % 3}


@st.composite
def npz_file(draw) -> bytes:
    arrays = base_arrays()
    for key in draw(st.lists(st.sampled_from(["x", "y", "x_test", "y_test", "classes"]), max_size=3, unique=True)):
        if draw(st.booleans()) and key in arrays:
            del arrays[key]
        else:
            dtype, shape = np.dtype(draw(dtypes)), draw(shapes)
            if dtype.kind == "U":
                arrays[key] = np.full(shape, "ab", dtype=dtype)
            else:
                arrays[key] = (np.random.default_rng(1).normal(0, 100, shape)).astype(dtype)
    if draw(st.booleans()) and "x" in arrays and arrays["x"].size and arrays["x"].dtype.kind in "uifb":
        arrays["x"] = arrays["x"].astype(np.float32)
        arrays["x"].flat[draw(st.integers(0, arrays["x"].size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return draw(mutated_bytes(buffer.getvalue()))


@given(npz_file())
@FUZZ
def test_fuzz_npz_data_files(sandbox, blob):
    out = fresh_dir(sandbox, "npz")
    path = out / "data.npz"
    path.write_bytes(blob)
    run_cli(sandbox, out, ["train", "data.name=npz", f"data.path={path}", *TINY, "--out", out / "run"],
            ["data.npz", "npz"])


def idx_bytes(type_code: int, shape: tuple, data: bytes) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


@st.composite
def idx_folder_files(draw) -> dict[str, bytes]:
    """The four MNIST files of a 24-image set, one of them with a mutated header or content."""
    images = np.random.default_rng(0).integers(0, 255, (24, 5, 5), dtype=np.uint8).tobytes()
    labels = bytes(i % 3 for i in range(24))
    files = {}
    for prefix in ("train", "t10k"):
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(8, (24, 5, 5), images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(8, (24,), labels)
    victim = draw(st.sampled_from(sorted(files)))
    how = draw(st.sampled_from(["header", "bytes", "gzip"]))
    if how == "header":
        ndim = draw(st.integers(0, 5))
        dims = tuple(draw(st.lists(st.one_of(st.integers(0, 30), st.just(2**31), st.just(2**32 - 1)),
                                   min_size=ndim, max_size=ndim)))
        type_code = draw(st.sampled_from([8, 9, 0x0B, 0x0C, 0x0D, 0x0E, 0, 0xFF]))
        body = files[victim][4 + 4 * files[victim][3]:]
        files[victim] = idx_bytes(type_code, dims, body[: draw(st.integers(0, len(body)))])
    elif how == "bytes":
        files[victim] = draw(mutated_bytes(files[victim]))
    else:
        files[victim + ".gz"] = draw(mutated_bytes(gzip.compress(files.pop(victim))))
    return files


@given(idx_folder_files())
@FUZZ
def test_fuzz_idx_data_files(sandbox, files):
    out = fresh_dir(sandbox, "idx")
    (out / "mnist").mkdir()
    for name, blob in files.items():
        (out / "mnist" / name).write_bytes(blob)
    run_cli(sandbox, out, ["train", "data.name=mnist", f"data.root={out}", "data.download=false", *TINY,
                           "--out", out / "run"], ["mnist", "ubyte"])


junk = st.one_of(st.none(), st.integers(-5, 2**40), st.text(max_size=5), st.binary(max_size=5),
                 st.lists(st.integers(-2, 12), max_size=4), st.floats(), st.just(np.zeros((2, 3), np.float64)))


@st.composite
def cifar_members(draw) -> dict[str, bytes]:
    """An extracted cifar-10-batches-py/ of 2-image batches, one member's content mutated."""
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    members = {f"data_batch_{i}": dict(batch) for i in range(1, 6)}
    members["test_batch"] = dict(batch)
    members["batches.meta"] = {b"label_names": [b"cat", b"dog"]}
    victim = draw(st.sampled_from(sorted(members)))
    key = draw(st.sampled_from([b"data", b"labels", b"label_names", b"other"]))
    if draw(st.booleans()):
        members[victim][key] = draw(junk)
    else:
        members[victim].pop(key, None)
    blobs = {name: pickle.dumps(m, protocol=2) for name, m in members.items()}
    blobs[victim] = draw(mutated_bytes(blobs[victim]))
    return blobs


@given(cifar_members())
@FUZZ
def test_fuzz_cifar_batches(sandbox, blobs):
    out = fresh_dir(sandbox, "cifar")
    folder = out / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    run_cli(sandbox, out, ["train", "data.name=cifar10", f"data.root={out}", "data.download=false", *TINY,
                           "--out", out / "run"], ["cifar", "batch", "label"])


# --- checkpoints ---------------------------------------------------------------------------------


@st.composite
def checkpoint_mutation(draw):
    """(how, mutate): a byte-level or dict-level change to a checkpoint."""
    if draw(st.booleans()):
        return "bytes", draw(st.randoms(use_true_random=False))
    key = draw(st.sampled_from(["config", "model", "classes", "num_classes", "input_shape", "net_input_shape",
                                "format", "epoch", "optimizer", "rng", "callbacks", "history", "step"]))
    return "dict", (key, draw(st.sampled_from(["delete", "junk", "tensor", "config-key"])), draw(junk))


def mutate_checkpoint(path: Path, mutation) -> None:
    how, what = mutation
    if how == "bytes":
        rng, blob = what, bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 6)):
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(blob[: rng.choice([len(blob), rng.randrange(len(blob))])]))
        return
    key, op, value = what
    ckpt = torch.load(path, weights_only=True)
    if op == "delete":
        ckpt.pop(key, None)
    elif op == "junk":
        ckpt[key] = value if not isinstance(value, np.ndarray) else value.tolist()
    elif op == "tensor":
        ckpt[key] = torch.zeros(3, 2)
    elif isinstance(ckpt.get("config"), dict) and value is None:  # a whole section of the config gone
        ckpt["config"].pop("train", None)
    elif isinstance(ckpt.get("config"), dict):  # a key of the config itself
        ckpt["config"]["model"] = {**ckpt["config"]["model"], "width": value if not isinstance(value, np.ndarray) else 3}
    torch.save(ckpt, path)


@given(checkpoint_mutation(), st.sampled_from(["best.pt", "last.pt"]), st.sampled_from(["evaluate", "resume"]))
@FUZZ
def test_fuzz_checkpoints(sandbox, mutation, name, command):
    out = fresh_dir(sandbox, "ckpt")
    run = out / "run"
    shutil.copytree(sandbox / "run", run)
    path = run / "checkpoints" / name
    mutate_checkpoint(path, mutation)
    if command == "evaluate":
        args = ["evaluate", path, "--out", out / "eval"]
    else:
        (run / "summary.json").unlink()
        args = ["train", "--resume", run, "train.max_steps=3"]
    run_cli(sandbox, out, args, [name, "checkpoint", "run"] + list(SCHEMA))
