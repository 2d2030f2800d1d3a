"""Atomic file writes: the one way this project writes a file that must never be half-written
(datasets, cards, checkpoints, learner state, actor spools).

Lives in envs/, the bottom layer, so learner/ and actor/ share it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


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
