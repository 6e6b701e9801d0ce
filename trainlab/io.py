"""Small file helpers shared by every command: strict JSON (no NaN), JSON lines."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from trainlab.errors import UserError


def json_safe(value):
    """NaN and inf are not JSON: a diverged run's losses are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj) -> None:
    """Write strict JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False))
    os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    with Path(path).open("a") as f:
        f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file, one object per line.

    A torn last line (the machine lost power while it was being appended) is dropped: every
    record before it is intact. A bad line anywhere else is corruption, and a UserError names it.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_bytes().split(b"\n"), 1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif i < len(lines) - 1:
            raise UserError(f"{path} is damaged at line {n} (not a JSON object; only a torn last line is "
                            "tolerated). Restore the file from a copy, or start the run again in a new directory")
    return records


def ensure_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Check, before any work, that ``path`` is (or can be made) a folder trainlab may write in;
    a UserError names it otherwise. Nothing is created here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a file, not a folder; choose a folder (or a new name) for it")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {str(path)!r} cannot be made: {str(existing)!r} is a file, not a folder")
    try:  # the one sure test of permission (root, read-only mounts, ACLs): make a file and let it vanish
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UserError(f"{what} {str(path)!r} is not writable ({e.strerror or e} in {str(existing)!r}); "
                        "choose a folder you can write to") from None
    return path
