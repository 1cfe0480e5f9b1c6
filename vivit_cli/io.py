"""File reads and writes, for local paths and object stores (gs://, s3://) alike.

Locally every write is atomic (temp file + fsync + rename): nothing already written is left half-replaced by
a crash or a kill. On an object store one object write is atomic by itself (an object appears whole or not at
all), so there is no temp file to rename. Remote paths go through etils epath (fsspec + gcsfs for gs://, or
tf.io.gfile where TensorFlow is installed); local paths stay pathlib, so commands that only read local files
(`report`, `status`, `sweep --dry-run`) never import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from vivit_cli.errors import VivitError


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Calls `write(file)` on a temp file in the same folder, fsyncs it and renames it over `path`:
    readers (and concurrent writers of the same content) only ever see a whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """An exclusive flock on a local folder itself (no lock file is left behind), released on exit, and by the
    kernel if the holder dies: a killed writer never leaves the folder locked."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases its flock


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Local paths only; `write_json` takes either."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def is_remote(path) -> bool:
    return "://" in str(path)


def as_path(path, absolute: bool = False):
    """pathlib for a local path (made absolute if asked), an etils epath for a URL. A URL is never made
    absolute: epath would turn gs://b/x into ./gs:/b/x."""
    if is_remote(path):
        return _remote_path(str(path))
    p = Path(path).expanduser()
    return p.absolute() if absolute else p


def _remote_path(url: str):
    import importlib.util

    if url.startswith("gs://") and not (importlib.util.find_spec("gcsfs") or importlib.util.find_spec("tensorflow")):
        raise VivitError(f"{url}: gs:// paths need gcsfs (pip install 'vivit-cli[gcs]')")
    if importlib.util.find_spec("fsspec"):
        import fsspec.config

        # fsspec caches folder listings for the life of the process and then reports files that another
        # process wrote since as missing: a sweep would never see its trainers' summary.json.
        for protocol in ("gs", "gcs", "s3"):
            fsspec.config.conf.setdefault(protocol, {}).setdefault("use_listings_cache", False)
    from etils import epath

    return epath.Path(url)


def write_text(path, text: str) -> None:
    p = as_path(path)
    if isinstance(p, Path):
        atomic_write_text(p, text)
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path) -> Any | None:
    """The parsed file, or None when it is missing or not (yet) valid JSON."""
    try:
        return json.loads(as_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None


def read_tail(path, n: int = 4096) -> str:
    """The last `n` bytes of a file as text ("" when it cannot be read): cheap enough to poll a growing log.
    A local file is read from its end; a remote one (gs://) is fetched whole, in one request."""
    try:
        p = as_path(path)
        if not isinstance(p, Path):
            return p.read_bytes()[-n:].decode("utf-8", "replace")
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def rmtree(path) -> None:
    """Removes a folder and everything in it; nothing when it is missing."""
    p = as_path(path)
    if isinstance(p, Path):
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.rmtree()
