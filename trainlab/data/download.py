"""Download one file from its official URL, atomically and checked against its SHA-256.

    download_file("https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
                  Path("~/.cache/trainlab/mnist/train-labels-idx1-ubyte.gz").expanduser(),
                  sha256="3552534a...")

Nothing half-written is ever left under the final name: the bytes go to a temporary file beside
``dest`` and are renamed only after the checksum matches, so an interrupted or corrupted download
can never be mistaken for a good file on the next run.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from trainlab.errors import UserError

CHUNK = 1 << 20  # 1 MiB: large enough to stream at full speed, small enough to stay flat in memory


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large archives do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _manual_hint(url: str, dest: Path) -> str:
    """What to do by hand when trainlab cannot fetch a file itself."""
    return (
        f"Download {url} on a machine that is online and put it in {dest.parent}/ as {dest.name}, "
        "or set data.root (or the TRAINLAB_DATA environment variable) to a folder that already holds it."
    )


def _stream(url: str, tmp, timeout: float) -> str:
    """Copy the response body of ``url`` into the open file ``tmp``; returns its SHA-256."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "trainlab"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        for block in iter(lambda: response.read(CHUNK), b""):
            digest.update(block)
            tmp.write(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, sha256: str | None, timeout: float = 30, hint: str | None = None) -> Path:
    """Fetch ``url`` to ``dest`` (atomic rename), verifying ``sha256`` when one is known.

    ``hint`` replaces the default "put the file there yourself" advice in the offline message,
    so a caller fetching several files can name all of them at once. Raises :class:`UserError`
    when the machine is offline, the server refuses, or the checksum does not match.
    """
    dest = Path(dest)
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # deepest first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data folder {dest.parent}/ ({e.strerror}); set data.root to a writable folder") from None
    try:
        return _download(url, dest, sha256, timeout, hint)
    except BaseException:
        for folder in created:  # a failed download leaves no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _download(url: str, dest: Path, sha256: str | None, timeout: float, hint: str | None) -> Path:
    print(f"trainlab: downloading {url} -> {dest}", file=sys.stderr)
    tmp = tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False)
    try:
        with tmp:
            got = _stream(url, tmp, timeout)
        if sha256 is not None and got != sha256.lower():
            raise UserError(
                f"the file downloaded from {url} is not the official one: its SHA-256 is {got}, "
                f"expected {sha256}. It was not kept. Try again later (the download may have been "
                f"cut or altered), or fetch it by hand. {hint or _manual_hint(url, dest)}"
            )
        os.replace(tmp.name, dest)
    except urllib.error.HTTPError as e:
        raise UserError(f"could not download {url}: the server answered {e.code} {e.reason}. {hint or _manual_hint(url, dest)}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"could not download {url} ({reason}): this machine seems to be offline. "
            f"{hint or _manual_hint(url, dest)}"
        ) from None
    finally:
        # Reached on success too, where the rename already moved the file away.
        Path(tmp.name).unlink(missing_ok=True)
    return dest
