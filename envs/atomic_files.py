"""Atomic file writes: the one way this project writes a file that must never be half-written
(datasets, cards, checkpoints, learner state, actor spools, plots).

Files get the mode an ordinary `open(path, "w")` would give them (0666 less the umask: 0644
under the usual umask 022), not the 0600 of the temp file they are written through, so a
dataset or checkpoint made by one user can be read by the others the umask allows.

Lives in envs/, the bottom layer, so learner/ and actor/ share it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only set it, and setting it
    to read it back would race with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): read it by setting it, then restore it at once
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a newly created file gets: 0666 less the umask."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temp path in `path`'s directory; on success fsyncs it and renames it to
    `path` (then fsyncs the directory), on failure removes it. A kill at any moment
    leaves either the previous file or the complete new one under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())  # mkstemp's 0600 is for the temp file only
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: PathLike, payload: bytes) -> None:
    """Writes `payload` to `path` through a temp file, fsync and rename."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(payload)
