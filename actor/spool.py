"""On-disk copies of unacknowledged batches, so an actor restart loses nothing.

Each batch is the serialized TransitionBatch protobuf (no pickle) in
`<dir>/<run_id>-<sequence>.pb`, written atomically before it is sent and deleted once the
learner acknowledges it. Camera frames stay as they were sent (observation parts, raw or
zstd-compressed), so a resent batch is byte-identical and the learner recognises it.
"""

from __future__ import annotations

from pathlib import Path

from envs.atomic_files import atomic_write_bytes
from protos.wsrl.v1 import learner_pb2 as pb


class Spool:
    """A directory of pending batches for one actor id."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, run_id: str, sequence: int) -> Path:
        return self.dir / f"{run_id}-{sequence:012d}.pb"

    def put(self, batch: pb.TransitionBatch) -> None:
        """Writes the batch (temp file, fsync, rename: a kill leaves no partial file)."""
        atomic_write_bytes(self._path(batch.run_id, batch.sequence), batch.SerializeToString())

    def remove(self, run_id: str, sequence: int) -> None:
        self._path(run_id, sequence).unlink(missing_ok=True)

    def pending(self) -> list[pb.TransitionBatch]:
        """Every spooled batch, ordered by run then sequence; unreadable files are skipped."""
        batches = []
        for path in sorted(self.dir.glob("*.pb")):
            batch = pb.TransitionBatch()
            try:
                batch.ParseFromString(path.read_bytes())
            except Exception:  # a corrupt file cannot be resent; keep it for inspection
                continue
            batches.append(batch)
        return sorted(batches, key=lambda b: (b.run_id, b.sequence))
