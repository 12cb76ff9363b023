"""Files written whole or not at all: a temporary file beside the destination, then an atomic rename."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path


@functools.cache
def _umask() -> int:
    """The process's umask, read once (from /proc where it can be read without changing it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # elsewhere: read it by setting it (and put it back at once)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:  # mkstemp makes the file private (0600): give it the mode a plain open() would
        try:
            mode = path.stat().st_mode & 0o777  # replacing a file keeps its mode
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
