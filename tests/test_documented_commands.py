"""Every `trainlab ...` command in README.md and docs/*.md runs as written, in page order.

Which text is a command:
  * in a ```bash or ```sh block: each line that starts with `trainlab ` (or has `&& trainlab `:
    the part from there), joined with its `\\`-continued lines, without its trailing `# comment`;
    a `for ...; do` ... `done` loop around such lines runs as one unit. Other lines (pip,
    `export TRAINLAB_DATA=...`, torchrun, python) are not run: the test provides the data root.
  * in any other fenced block (a transcript): each line that starts with `$ trainlab `; a trailing
    `; echo $?` is dropped (the status is checked instead).

An HTML comment right before a block (invisible on the rendered page) tells the test about it:

    <!-- doc-test
    append train: train.epochs=1 data.subset=300     # the command is long: these args are added to
                                                     # every `trainlab train ...` of the block
    exit 1: check model.head_scale=100               # this command is documented to exit 1 (default 0)
    files: my_images/a.png my_models.py              # files the commands read, made first: a file
                                                     # shown earlier on the page in a block whose
                                                     # first line is `# my_models.py` gets that
                                                     # block's text, any other a small image
    skip: why                                        # the block cannot run here (e.g. needs a database)
    -->

`append` and `exit` name a command by its first words after `trainlab`. Each page runs in its own
scratch directory (with `examples/` linked in) from top to bottom, with TRAINLAB_DATA pointing at
../shared/data beside the repository (without that folder the run is skipped) and one torch thread
per command (as in conftest.py: faster than two on a shared machine).

Two modes, one test per page (a failure names the page and line):
  * fast, test_documented_commands_run (the default run, about 4 minutes): after the block's
    `append` arguments the test adds small budgets of its own, FAST_ARGS below (one epoch, 300
    images, narrow models, no EMA copies, no activation monitors or progress bars, fewer search trials,
    `--quick` labs, ...), each only where the command and its `append` do not set that key or
    option already (but a data.subset above 300 is cut to 300), so what a page spells out (e.g.
    the SGDR cycles of a snapshot ensemble) still holds; a command documented to fail gets none.
    The commands run in a warm interpreter (SERVER below: trainlab imported once, a forked child
    per command). A command that no longer parses, names a key or option that no longer exists,
    crashes or exits with another status than documented still fails.
  * full, test_documented_commands_run_as_written: the commands as the pages show them (with only
    the pages' own `append`s), each in a fresh `python -m trainlab`; 12-35 minutes on two shared
    cores, depending on their load. Marked `slow` and skipped unless asked for:

        TRAINLAB_DOC_FULL=1 python -m pytest -q tests/test_documented_commands.py -k as_written
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = ("bash", "sh")
TIMEOUT = 900
FULL = os.environ.get("TRAINLAB_DOC_FULL") == "1"

# Fast mode: arguments added to a command that starts (after `trainlab` and `--import M`) with the
# words of the key (the longest that fits), each only where the command does not set that key= or
# --option already.
#   monitor.*, train.progress: no activation probes, monitor plots or progress bar
#   train.eval_batch_size: 1024-image batches of a conv net cost more system time (page faults)
#     than compute; runs made here pass it on to the evaluate/ensemble commands that load them
#   model.width: 8 channels in the first stage of a convnet/resnet (32 / 16 by default; a multiple
#     of model.groups), 8 hidden units in an mlp (256)
#   train.ema: no Polyak/EMA copy, which every evaluation of a run would test beside the raw
#     weights (tests/test_ensemble.py tests the ensembles of EMA weights)
FAST_QUIET = ["monitor.every=0", "monitor.plots=false", "train.progress=false"]
FAST_ARGS: dict[str, list[str]] = {
    "train": ["train.epochs=1", "data.subset=300", "model.width=8", "train.ema=0", "train.eval_batch_size=128", *FAST_QUIET],
    "finetune": ["train.epochs=1", "train.eval_batch_size=128", *FAST_QUIET],  # the model is the source's
    "lr-find": ["--steps 30"],
    "search": ["--trials 2", "--epochs 1", "--refine-trials 1", "--refine-epochs 1", "data.subset=200", *FAST_QUIET],
    # tune's trials are never longer than its final training: train.epochs bounds them all
    "tune": ["train.epochs=2", "data.subset=200", *FAST_QUIET],
    "lab": ["--quick", "train.eval_batch_size=128"],
    "lab list": [],
}
# keys that make another one of FAST_ARGS pointless: data.per_class already picks the images
SUPERSEDES = {"data.per_class": "data.subset"}
# ... and keys whose FAST_ARGS value also replaces a larger one that a command sets
CAPS = {"data.subset": 300}


@dataclass
class Directive:
    append: dict[str, str] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    skip: str | None = None


@dataclass
class DocCommand:
    page: str
    line: int
    text: str             # as written (joined), what a reader types
    run: str              # what the full test runs: with the block's `append` arguments
    fast: str = ""        # what the fast test runs: `run` with FAST_ARGS where the command leaves them out
    expect: int = 0
    files: list[str] = field(default_factory=list)
    skip: str | None = None
    sources: dict[str, str] = field(default_factory=dict)  # file name → text shown on the page


def parse_directive(body: str, where: str) -> Directive:
    d = Directive()
    for raw in body.splitlines():
        line = raw.split("  #")[0].strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{where}: doc-test line {raw!r} is not 'key: value'")
        key, value = key.strip(), value.strip()
        if key.startswith("append "):
            d.append[key[len("append "):].strip()] = value
        elif key.startswith("exit "):
            d.exits[value] = int(key.split()[1])
        elif key == "files":
            d.files += value.split()
        elif key == "skip":
            d.skip = value
        else:
            raise ValueError(f"{where}: unknown doc-test key {key!r} (append CMD, exit CODE, files, skip)")
    return d


def _words_match(command: str, prefix: str) -> bool:
    """Whether ``command`` (after `trainlab`, global options such as `--import M` skipped) starts with ``prefix``."""
    words, want = command.split(), prefix.split()
    while words[:1] == ["--import"]:
        words = words[2:]
    return words[:len(want)] == want


def _sets(command: str, arg: str) -> bool:
    """Whether ``command`` already sets the key (``key=...``) or option (``--opt ...``) of ``arg``."""
    name = arg.split()[0] if arg.startswith("-") else arg.split("=")[0] + "="
    return re.search(rf"(?<![\w.-]){re.escape(name)}" + (r"(?=[\s=]|$)" if arg.startswith("-") else ""), command) is not None


def fast_args(invocation: str) -> list[str]:
    """FAST_ARGS for ``invocation`` (`trainlab ...` with its block's `append`s), minus what it sets."""
    family = max((k for k in FAST_ARGS if _words_match(invocation.removeprefix("trainlab "), k)), key=len, default=None)
    superseded = {v for k, v in SUPERSEDES.items() if _sets(invocation, k + "=")}
    extra = [a for a in FAST_ARGS.get(family, []) if not _sets(invocation, a) and a.split("=")[0] not in superseded]
    for key, cap in CAPS.items():
        values = re.findall(rf"(?<![\w.-]){re.escape(key)}=(\d+)", invocation)
        if values and int(values[-1]) > cap:
            extra.append(f"{key}={cap}")
    return extra


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""


def _shell_units(lines: list[tuple[int, str]]) -> list[tuple[int, str, list[str]]]:
    """(line number, unit text, trainlab invocations in it) of a bash block."""
    joined: list[tuple[int, str]] = []
    for n, line in lines:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1].rstrip() + " " + line.strip())
        else:
            joined.append((n, line.rstrip()))
    units, loop = [], None
    for n, line in joined:
        text = _strip_comment(line).strip()
        if loop is not None:
            loop[1].append(text)
            if text == "done" or text.startswith("done"):
                body = [t for t in loop[1] if t.startswith("trainlab ")]
                units.append((loop[0], "\n".join(loop[1]), body))
                loop = None
            continue
        if re.match(r"for\s.*;\s*do$", text):
            loop = (n, [text])
            continue
        m = re.search(r"(?:^|&&\s*)(trainlab\s.*)$", text)
        if m:
            units.append((n, m.group(1), [m.group(1)]))
    return units


def extract(page: Path) -> list[DocCommand]:
    """The page's commands in order (see the module docstring for the rule)."""
    lines = page.read_text().splitlines()
    out: list[DocCommand] = []
    sources: dict[str, str] = {}
    pending: Directive | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("<!-- doc-test"):
            j = i
            while "-->" not in lines[j]:
                j += 1
            body = "\n".join(lines[i:j + 1]).removeprefix("<!-- doc-test").split("-->")[0]
            pending = parse_directive(body, f"{page.name}:{i + 1}")
            if not lines[j + 1].startswith("```"):
                raise ValueError(f"{page.name}:{i + 1}: a doc-test comment must stand right before a ``` block")
            i = j + 1
            continue
        fence = re.match(r"^```(\w*)", line)
        if not fence:
            i += 1
            continue
        lang, start = fence.group(1), i
        i += 1
        block = []
        while not lines[i].startswith("```"):
            block.append((i + 1, lines[i]))
            i += 1
        i += 1
        d, pending = pending or Directive(), None
        if block and re.match(r"# \S+$", block[0][1]):
            sources[block[0][1][2:]] = "\n".join(t for _, t in block) + "\n"
        if lang in SHELL_LANGS:
            units = _shell_units(block)
        else:
            units = [(n, t[2:].removesuffix("; echo $?").strip(), [t[2:].removesuffix("; echo $?").strip()])
                     for n, t in block if t.startswith("$ trainlab ")]
        used = set()
        for n, text, invocations in units:
            expect = next((code for prefix, code in d.exits.items()
                           if any(_words_match(inv.removeprefix("trainlab "), prefix) for inv in invocations)), 0)
            run = fast = text
            for inv in invocations:
                extra = [v for k, v in d.append.items() if _words_match(inv.removeprefix("trainlab "), k)]
                used |= {k for k in d.append if _words_match(inv.removeprefix("trainlab "), k)}
                written = " ".join([inv, *extra])
                run = run.replace(inv, written, 1)
                # a documented failure (say, a diverging rate) may need the page's full budget to happen
                fast = fast.replace(inv, " ".join([written, *(fast_args(written) if expect == 0 else [])]), 1)
            out.append(DocCommand(page.name, n, text, run, fast, expect, d.files, d.skip, dict(sources)))
        stale = [k for k in d.append if k not in used] + [
            p for p in d.exits if not any(_words_match(c.text.removeprefix("trainlab "), p) for c in out)]
        if stale and d.skip is None:
            raise ValueError(f"{page.name}:{start + 1}: doc-test names commands the block does not have: {stale}")
    return out


def test_extraction_rule(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text trainlab train not a command\n"
        "<!-- doc-test\nappend train: train.epochs=1\nexit 1: check model.head_scale=100\n-->\n"
        "```bash\nexport TRAINLAB_DATA=~/data\npip install -e . && trainlab train --out runs/a   # comment\n"
        "trainlab train data.name=mnist \\\n    seed=1 --out runs/b\ntrainlab check model.head_scale=100\n"
        "for s in 1 2; do\n  trainlab train seed=$s --out runs/s$s\ndone\n```\n"
        "```\n$ trainlab lr-find; echo $?\nsuggested ...\ntrainlab monitor, step 0: output\n```\n"
        "```python\n# mine.py\ntrainlab.train()\n```\n")
    cmds = extract(page)
    assert [c.text for c in cmds] == [
        "trainlab train --out runs/a", "trainlab train data.name=mnist seed=1 --out runs/b",
        "trainlab check model.head_scale=100", "for s in 1 2; do\ntrainlab train seed=$s --out runs/s$s\ndone",
        "trainlab lr-find"]
    assert cmds[0].run == "trainlab train --out runs/a train.epochs=1"
    assert cmds[3].run.splitlines()[1] == "trainlab train seed=$s --out runs/s$s train.epochs=1"
    assert [c.expect for c in cmds] == [0, 0, 1, 0, 0]
    fast_train = " ".join(a for a in FAST_ARGS["train"] if not a.startswith("train.epochs="))
    assert cmds[0].fast == f"{cmds[0].run} {fast_train}"  # the block's train.epochs=1 stays the only one
    assert cmds[2].fast == cmds[2].run  # a documented failure runs with the page's budget
    assert cmds[3].fast.splitlines()[1] == f"{cmds[3].run.splitlines()[1]} {fast_train}"
    assert cmds[4].fast == "trainlab lr-find --steps 30"
    page.write_text("```python\n# mine.py\nx = 1\n```\n<!-- doc-test\nfiles: mine.py\n-->\n```bash\ntrainlab train\n```\n")
    assert extract(page)[0].sources == {"mine.py": "# mine.py\nx = 1\n"} and extract(page)[0].files == ["mine.py"]
    page.write_text("<!-- doc-test\nappend tune: --budget small\n-->\n```bash\ntrainlab train\n```\n")
    with pytest.raises(ValueError, match="does not have"):
        extract(page)


def test_fast_args():
    """Small budgets where a command leaves them out; what a command sets stays, but for CAPS."""
    assert fast_args("trainlab lr-find --steps 500") == []
    assert fast_args("trainlab lab list") == [] and fast_args("trainlab lab dropout") == FAST_ARGS["lab"]
    assert fast_args("trainlab --import m train model.name=tiny") == FAST_ARGS["train"]
    train = fast_args("trainlab train 'data.per_class=100' monitor.every=5 train.epochs=8 --out runs/a")
    assert not any(a.split("=")[0] in ("data.subset", "monitor.every", "train.epochs") for a in train)
    assert "data.subset=300" in fast_args("trainlab lab activations data.subset=5000 --out x")
    assert fast_args("trainlab tune data.subset=100 --out x") == [a for a in FAST_ARGS["tune"] if "subset" not in a]
    assert fast_args("trainlab search --trials 3 --out x") == [a for a in FAST_ARGS["search"] if "--trials " not in a]


def test_every_page_parses_and_documents_commands():
    """The directives on every page are well formed and name commands their block has."""
    found = {p.name: extract(p) for p in PAGES}
    assert found["README.md"], "the README's commands were not found"
    assert sum(len(v) for v in found.values()) >= 30


def _make_files(folder: Path, names: list[str], sources: dict[str, str]) -> None:
    from PIL import Image

    gen = np.random.default_rng(0)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name in sources:
            path.write_text(sources[name])
            continue
        Image.fromarray(gen.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)


# Fast mode runs `trainlab` in a warm interpreter: a server (one for the module) imports
# trainlab.cli, torch._dynamo (which torch's optimizers import on first use), tensorboard and optuna
# once, then forks a child per call (and logs the CPU time each one took). The child takes the caller's working directory, environment, stdin, stdout and
# stderr and runs trainlab.cli.main(argv), the function of the `trainlab` console script, ending as
# that process would (sys.exit: the exit status, atexit, a traceback for an uncaught exception).
# Each command so skips the ~3.5 s of CPU a fresh interpreter spends importing torch and matplotlib.
SERVER = r"""
import json, os, socket, sys
import optuna, torch._dynamo, torch.utils.tensorboard
from trainlab.cli import build_parser, main
build_parser()
server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
server.bind(sys.argv[1])
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        server.close()
        conn.close()
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(request["cwd"])
        sys.path[0] = os.getcwd()
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["trainlab", *request["argv"]]
        sys.exit(main(request["argv"]))
    for fd in fds:
        os.close(fd)
    _, status, usage = os.wait4(pid, 0)
    with open(sys.argv[2], "a") as log:
        log.write(f"{usage.ru_utime + usage.ru_stime}\n")
    conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
    conn.close()
"""
CLIENT = r"""
import json, os, socket, sys
conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
conn.connect(os.environ["TRAINLAB_DOC_SERVER"])
request = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}
socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
code = int(conn.recv(64))
sys.exit(code if code >= 0 else 128 - code)
"""
AS_WRITTEN = 'trainlab() { "$PY" -m trainlab "$@"; }'
WARM = 'trainlab() { "$PY" -c "$TRAINLAB_DOC_CLIENT" "$@"; }'


def _env() -> dict:
    env = {**os.environ, "TRAINLAB_DATA": str(SHARED), "PYTHONPATH": str(ROOT), "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("TRAINLAB_IMPORT", None)
    return env


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the process and everything it started (it leads its own session)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


class WarmTrainlab:
    """The SERVER process; ``env`` points the WARM bash function at it."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="trainlab-doc-"))  # short: a socket path has at most 107 bytes
        self.env = {"TRAINLAB_DOC_SERVER": str(self.folder / "socket"), "TRAINLAB_DOC_CLIENT": CLIENT}
        self.cpu_log = self.folder / "cpu.log"
        self.server = None
        self.start()

    def start(self) -> None:
        Path(self.env["TRAINLAB_DOC_SERVER"]).unlink(missing_ok=True)
        with open(self.folder / "server.err", "w+") as err:
            self.server = subprocess.Popen([sys.executable, "-c", SERVER, self.env["TRAINLAB_DOC_SERVER"], str(self.cpu_log)], env=_env(),
                                           stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
                                           cwd=self.folder)
            if self.server.stdout.readline().strip() != "ready":
                self.stop()
                err.seek(0)
                pytest.fail(f"the trainlab server did not start:\n{err.read()[-3000:]}")

    def stop(self) -> None:
        """The server, the command it runs and whatever that command started."""
        _kill_group(self.server)
        self.server.stdout.close()

    def cpu_seconds(self) -> float:
        """CPU time of the commands run so far."""
        return sum(map(float, self.cpu_log.read_text().split())) if self.cpu_log.exists() else 0.0

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def warm_trainlab():
    warm = WarmTrainlab()
    yield warm
    warm.stop()
    shutil.rmtree(warm.folder, ignore_errors=True)


def _cpu_seconds(warm: WarmTrainlab | None) -> float:
    """CPU time of this process's finished children (bash, `python -m trainlab`) and of ``warm``'s commands."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + (warm.cpu_seconds() if warm else 0.0)


def _run_page(page: Path, tmp_path: Path, warm: WarmTrainlab | None) -> None:
    """Run the page's commands in order: through ``warm`` the fast variants, without it as written."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (MNIST, Fashion-MNIST) is not beside the repository")
    commands = extract(page)
    if not commands:
        pytest.skip(f"{page.name} documents no trainlab command")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**_env(), **(warm.env if warm else {})}
    prelude = f"set -e; {WARM if warm else AS_WRITTEN}\n"
    timings = []
    for c in commands:
        if c.skip:
            continue
        _make_files(tmp_path, [f for f in c.files if not (tmp_path / f).exists()], c.sources)
        run = c.fast if warm else c.run
        where = f"{c.page}:{c.line}: {run}"
        start, cpu = time.perf_counter(), _cpu_seconds(warm)
        shell = subprocess.Popen(["bash", "-c", prelude + run], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = shell.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(shell)
            if warm:
                warm.restart()  # the server waits for the command it forked: stop both
            pytest.fail(f"{where}\ntook more than {TIMEOUT} s")
        timings.append((time.perf_counter() - start, _cpu_seconds(warm) - cpu, c.text.splitlines()[0]))
        assert shell.returncode == c.expect, (
            f"{where}\nexited {shell.returncode}, documented {c.expect}\n{out[-3000:]}\n{err[-3000:]}")
        assert "Traceback" not in err, f"{where}\n{err[-3000:]}"
    print(f"\n{page.name}: {len(timings)} commands in {sum(t[0] for t in timings):.0f} s "
          f"({sum(t[1] for t in timings):.0f} s of CPU)")
    for seconds, cpu, text in timings:
        print(f"  {seconds:6.1f} s {cpu:6.1f} s CPU  {text}")


@pytest.mark.slow
def test_warm_trainlab_ends_as_the_command_would(warm_trainlab, tmp_path):
    """Through the warm interpreter a command keeps its output, exit status and traceback."""
    (tmp_path / "boom.py").write_text("from trainlab.plugins import register_model\n\n\n@register_model('boom')\n"
                                      "def boom(cfg, input_shape, num_classes):\n    raise RuntimeError('boom')\n")
    env = {**_env(), **warm_trainlab.env}

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", f"{WARM}\n{command}"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    keys = run("trainlab config-keys")
    assert keys.returncode == 0 and "| `train.epochs` |" in keys.stdout and not keys.stderr
    bad_key = run("trainlab train no.such.key=1")
    assert bad_key.returncode == 2 and "trainlab: error" in bad_key.stderr and "no.such.key" in bad_key.stderr
    bad_option = run("trainlab train --no-such-option")
    assert bad_option.returncode == 2 and "unrecognized arguments: --no-such-option" in bad_option.stderr
    crash = run("trainlab --import boom train model.name=boom --out runs/boom")
    assert crash.returncode == 1 and "Traceback" in crash.stderr and "RuntimeError: boom" in crash.stderr
    assert run("mkdir sub && cd sub && trainlab config-keys > keys.md").returncode == 0  # the caller's files
    assert (tmp_path / "sub" / "keys.md").read_text() == keys.stdout


@pytest.mark.slow  # every documented command, end to end (a few minutes): in the default run, not in -m "not slow"
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_documented_commands_run(page, tmp_path, warm_trainlab):
    """Every command of the page runs, with small budgets (FAST_ARGS), in the warm interpreter."""
    _run_page(page, tmp_path, warm_trainlab)


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="the documented commands as written take 12-35 minutes: set TRAINLAB_DOC_FULL=1")
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_documented_commands_run_as_written(page, tmp_path):
    """Every command of the page runs as the page shows it (with only the page's own `append`s)."""
    _run_page(page, tmp_path, None)
