"""Exactly-once submission bookkeeping: per-actor records, handshakes, sequence numbers, content digests, eviction.

Identity: a batch is stored under (actor id, run id, sequence) once; a later batch under the
same key is a duplicate only when its content digest equals the stored one (kept for the last
`digest_window` sequences of each run), otherwise it is refused (`Conflict`) and counted.
Records are bounded: at most `max_actors` actor ids and `max_runs_per_actor` runs each; ones
idle for `actor_ttl_s` (with nothing pending) are forgotten.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np


class UnknownRun(Exception):
    """A push from an (actor id, run id) that never shook hands with this learner."""


class SequenceGap(Exception):
    """A push whose sequence number skips ahead; `expected` is where the actor must resume."""

    def __init__(self, expected: int, got: int):
        super().__init__(f"field 'sequence': got {got}, expected {expected} (resend from there)")
        self.expected = expected


class QueueFull(Exception):
    """Too many accepted transitions wait for the learner; the actor should retry later."""


class Conflict(Exception):
    """A batch under a (actor, run, sequence) already stored with other content."""


class TooManyActors(Exception):
    """`max_actors` actor ids are known and none is idle long enough to be forgotten."""


@dataclasses.dataclass
class ActorRecord:
    """What the learner knows of one actor id across its runs (restarts)."""

    next_sequence: dict = dataclasses.field(default_factory=dict)  # run id -> next expected seq
    run_id: str = ""  # latest run seen
    accepted: int = 0  # transitions accepted from this actor (all runs)
    pending: int = 0  # of which not yet inserted into the replay buffer
    last_seen: float = 0.0
    run_seen: dict = dataclasses.field(default_factory=dict)  # run id -> last seen (monotonic)
    # run id -> {sequence: content digest} of its last `digest_window` stored batches
    digests: dict = dataclasses.field(default_factory=dict)
    # A robot actor's latest ReportActorState (paused, estopped, pause_reason, control stats)
    # and the operator commands queued for it: [(id, kind, run id, queued at)], at most one
    # pause/resume (the latest wins) and one e-stop; `acked`: the highest id carried out.
    # Commands are [(id, kind, target run ids, queued at)]: the targets are the runs that had
    # reported their state when it was queued (the robot, not a later handshake under its id),
    # and any run of this id that reports its state gets every command it has not acknowledged
    # (a robot that restarted included). A command is done when every target acknowledged it
    # or was forgotten, or any run that reported state acknowledged it after its targets went.
    state: dict = dataclasses.field(default_factory=dict)
    commands: list = dataclasses.field(default_factory=list)
    acked: int = 0  # the highest command id some run carried out
    acked_by_run: dict = dataclasses.field(default_factory=dict)  # run id -> highest id it carried out
    state_seen: dict = dataclasses.field(default_factory=dict)  # run id -> when it last reported its state

    def forget_run(self, run_id: str) -> None:
        for table in (self.next_sequence, self.run_seen, self.digests, self.acked_by_run, self.state_seen):
            table.pop(run_id, None)


class Ledger:
    """The `Trainer`'s handler-side bookkeeping of what each actor's runs sent (cheap, under
    the trainer's `cond`); the state it keeps is set up by `Trainer.__init__`."""

    def register(self, actor_id: str, run_id: str, next_sequence: int) -> int:
        """Handshake bookkeeping; returns the sequence number the run must send next. Forgets
        runs and actors idle for `actor_ttl_s`, and the least recently seen run of an actor
        beyond `max_runs_per_actor`; raises TooManyActors when `max_actors` are all in use."""
        s = self.settings
        now = time.monotonic()
        with self.cond:
            record = self.actors.get(actor_id)
            if record is None:
                if len(self.actors) >= s.max_actors:
                    self._expire(now)
                if len(self.actors) >= s.max_actors:
                    raise TooManyActors(f"{len(self.actors)} actors are known (max_actors={s.max_actors}); an actor is forgotten after "
                                        f"{s.actor_ttl_s:.0f} s idle with nothing pending")
                record = self.actors[actor_id] = ActorRecord()
            if run_id not in record.next_sequence:
                for old in [r for r, seen in record.run_seen.items() if now - seen > s.actor_ttl_s]:
                    self._forget_run(actor_id, record, old)
                while len(record.next_sequence) >= s.max_runs_per_actor:
                    oldest = min(record.run_seen, key=record.run_seen.get)
                    if now - record.run_seen[oldest] < s.run_evict_idle_s or (record.run_id == oldest and record.pending):
                        raise TooManyActors(f"actor {actor_id!r} has {len(record.next_sequence)} runs seen in the last "
                                            f"{s.run_evict_idle_s:.0f} s (max_runs_per_actor={s.max_runs_per_actor}); "
                                            "a live run is never forgotten for a new one: retry later")
                    self._forget_run(actor_id, record, oldest)
            expected = record.next_sequence.setdefault(run_id, int(next_sequence))
            record.run_id, record.last_seen = run_id, now
            record.run_seen[run_id] = now
            return expected

    def _forget_run(self, actor_id: str, record: ActorRecord, run_id: str) -> None:
        record.forget_run(run_id)
        self.durable.pop((actor_id, run_id), None)

    def _expire(self, now: float) -> None:
        """Forgets actors idle for longer than `actor_ttl_s` with nothing pending (under cond)."""
        for actor_id in [a for a, r in self.actors.items() if now - r.last_seen > self.settings.actor_ttl_s and r.pending == 0]:
            record = self.actors.pop(actor_id)
            for run_id in list(record.next_sequence):
                self.durable.pop((actor_id, run_id), None)

    def submit(self, actor_id: str, run_id: str, sequence: int, arrays: Optional[dict], digest: bytes = b"") -> tuple[bool, int]:
        """Accepts a validated batch exactly once. Returns (stored, next expected sequence):
        stored False means a duplicate (acknowledged, not stored again): the batch's content
        `digest` equals the one stored under `sequence` (or that one is older than the last
        `digest_window` and no longer kept); a different one raises Conflict. `arrays` may be
        None to only classify (the caller then validates and calls again)."""
        with self.cond:
            record = self.actors.get(actor_id)
            if record is None or run_id not in record.next_sequence:
                raise UnknownRun(f"actor {actor_id!r} with this run id is unknown to this learner: call Handshake first")
            record.last_seen = record.run_seen[run_id] = time.monotonic()
            expected = record.next_sequence[run_id]
            if sequence < expected:
                stored = record.digests.get(run_id, {}).get(sequence)
                if stored is not None and stored != digest:
                    self.conflicts += 1
                    raise Conflict(f"field 'sequence': batch {sequence} of this run was stored with other content; this one is refused "
                                   f"(another client pushed under this actor's run id, or the actor resent a changed batch)")
                self.duplicates += 1
                return False, expected
            if sequence > expected:
                raise SequenceGap(expected, sequence)
            if arrays is None:
                return True, expected
            n = len(arrays["rewards"])
            if self.queued + n > self.settings.max_pending:
                raise QueueFull(f"{self.queued} transitions are waiting for the learner (max_pending={self.settings.max_pending}); retry later")
            self.queue.append((actor_id, run_id, arrays))
            self.queued += n
            record.next_sequence[run_id] = expected + 1
            digests = record.digests.setdefault(run_id, {})
            digests[sequence] = digest
            if len(digests) > self.settings.digest_window:
                del digests[next(iter(digests))]  # insertion order = sequence order: the oldest
            record.accepted += n
            record.pending += n
            self.env_steps += n
            self.max_abs_reward = max(self.max_abs_reward, float(np.max(np.abs(arrays["rewards"]))))
            self.cond.notify_all()
            return True, expected + 1

    def durable_sequence(self, actor_id: str, run_id: str) -> int:
        """Batches of this run below the returned sequence are in the last saved learner state
        (without a state directory: everything acknowledged, as nothing is ever saved)."""
        with self.cond:
            if not self.settings.state_dir:
                record = self.actors.get(actor_id)
                return record.next_sequence.get(run_id, 0) if record is not None else 0
            return self.durable.get((actor_id, run_id), 0)

    def note_rejected(self) -> None:
        with self.cond:
            self.rejected += 1

    def check_run(self, actor_id: str, run_id: str) -> None:
        """Raises UnknownRun unless (actor, run) has shaken hands with this learner."""
        with self.cond:
            record = self.actors.get(actor_id)
            if record is None or run_id not in record.next_sequence:
                raise UnknownRun(f"actor {actor_id!r} with this run id is unknown to this learner: call Handshake first")
            record.last_seen = record.run_seen[run_id] = time.monotonic()
