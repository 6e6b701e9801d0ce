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
../shared/data beside the repository; without that folder the run is skipped.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = ("bash", "sh")
TIMEOUT = 900


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
    run: str              # what the test runs: with the block's `append` arguments
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
            run = text
            for inv in invocations:
                extra = [v for k, v in d.append.items() if _words_match(inv.removeprefix("trainlab "), k)]
                used |= {k for k in d.append if _words_match(inv.removeprefix("trainlab "), k)}
                if extra:
                    run = run.replace(inv, inv + " " + " ".join(extra), 1)
            expect = next((code for prefix, code in d.exits.items()
                           if any(_words_match(inv.removeprefix("trainlab "), prefix) for inv in invocations)), 0)
            out.append(DocCommand(page.name, n, text, run, expect, d.files, d.skip, dict(sources)))
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
    page.write_text("```python\n# mine.py\nx = 1\n```\n<!-- doc-test\nfiles: mine.py\n-->\n```bash\ntrainlab train\n```\n")
    assert extract(page)[0].sources == {"mine.py": "# mine.py\nx = 1\n"} and extract(page)[0].files == ["mine.py"]
    page.write_text("<!-- doc-test\nappend tune: --budget small\n-->\n```bash\ntrainlab train\n```\n")
    with pytest.raises(ValueError, match="does not have"):
        extract(page)


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


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_documented_commands_run_as_written(page, tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (MNIST, Fashion-MNIST) is not beside the repository")
    commands = extract(page)
    if not commands:
        pytest.skip(f"{page.name} documents no trainlab command")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "TRAINLAB_DATA": str(SHARED), "PYTHONPATH": str(ROOT), "PY": sys.executable}
    env.pop("TRAINLAB_IMPORT", None)
    prelude = 'set -e; trainlab() { "$PY" -m trainlab "$@"; }\n'
    timings = []
    for c in commands:
        if c.skip:
            continue
        _make_files(tmp_path, [f for f in c.files if not (tmp_path / f).exists()], c.sources)
        start = time.perf_counter()
        result = subprocess.run(["bash", "-c", prelude + c.run], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=TIMEOUT)
        timings.append((time.perf_counter() - start, c.text.splitlines()[0]))
        where = f"{c.page}:{c.line}: {c.run}"
        assert result.returncode == c.expect, (
            f"{where}\nexited {result.returncode}, documented {c.expect}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        assert "Traceback" not in result.stderr, f"{where}\n{result.stderr[-3000:]}"
    print(f"\n{page.name}: {len(timings)} commands in {sum(t for t, _ in timings):.0f} s")
    for seconds, text in timings:
        print(f"  {seconds:6.1f} s  {text}")
