"""Small file helpers shared by every command: strict JSON (no NaN), JSON lines."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


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
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
