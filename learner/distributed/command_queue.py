"""Robot actors' state reports and the operator commands (pause / resume / e-stop) queued for them."""

from __future__ import annotations

import math
import time

from learner.distributed.ledger import ActorRecord


class UnknownActor(Exception):
    """No handshaken actor has this id (ActorCommand)."""


class NoStateReports(Exception):
    """The actor never reported its state, so it would never get a command (not a robot actor)."""


# A run that reported its state within this many seconds is live for operator commands (robot
# actors report every 0.5 s).
STATE_LIVE_S = 10.0


class CommandQueue:
    """The `Trainer`'s side of ReportActorState and ActorCommand (under its `cond`); the
    records are the ledger's `ActorRecord`s, the command ids count in `Trainer.__init__`'s
    `_command_id`."""

    def report_state(self, actor_id: str, run_id: str, state: dict, acked: int) -> list[tuple[int, int]]:
        """Records a robot actor's state (ReportActorState; the (actor, run) must have shaken
        hands, else UnknownRun) and returns the commands this run has not yet carried out,
        [(id, kind)], after dropping those that are done (see `ActorRecord`)."""
        self.check_run(actor_id, run_id)
        with self.cond:
            record = self.actors[actor_id]
            now = time.monotonic()
            record.state = {**state, "at": now}
            record.state_seen[run_id] = now
            mine = record.acked_by_run[run_id] = max(record.acked_by_run.get(run_id, 0), int(acked))
            record.acked = max(record.acked, mine)
            record.commands = [c for c in record.commands if not self._command_done(record, c, now)]
            self.cond.notify_all()
            return [(c[0], c[1]) for c in record.commands if c[0] > mine]

    @staticmethod
    def _command_done(record: ActorRecord, command: tuple, now: float) -> bool:
        """Whether every target run of `command` that still reports its state carried it out;
        when none does any more (a robot that restarted), whether a run that does carried it
        out."""
        command_id, _, targets, _ = command
        live = [r for r in targets if now - record.state_seen.get(r, -math.inf) <= STATE_LIVE_S]
        if live:
            return all(record.acked_by_run.get(r, 0) >= command_id for r in live)
        return any(record.acked_by_run.get(r, 0) >= command_id for r, seen in record.state_seen.items() if now - seen <= STATE_LIVE_S)

    def queue_command(self, actor_id: str, kind: int, exclusive: tuple = ()) -> tuple[int, str, float]:
        """Queues an operator command for `actor_id`: for the run that reported its state last
        (the robot; a run that only shook hands under its id gets nothing) and any run of that
        id reporting its state before the command is carried out (see `ActorRecord`); an
        earlier command whose kind is in `exclusive` is replaced (pause/resume: the latest
        wins). Returns (command id, the run id it targets, seconds since that run reported);
        raises UnknownActor when no actor of that id has shaken hands, NoStateReports when no
        run of it ever reported its state (it would never receive the command)."""
        with self.cond:
            record = self.actors.get(actor_id)
            if record is None or not record.run_id:
                raise UnknownActor(actor_id)
            if not record.state_seen:
                raise NoStateReports(actor_id)
            now = time.monotonic()
            target = max(record.state_seen, key=record.state_seen.get)
            self._command_id += 1
            if kind in exclusive:
                record.commands = [c for c in record.commands if c[1] not in exclusive]
            record.commands.append((self._command_id, kind, (target,), now))
            return self._command_id, target, now - record.state_seen[target]

    def wait_command(self, actor_id: str, command_id: int, timeout: float) -> bool:
        """Blocks until the run `command_id` targets (or, once it is gone, another run of
        `actor_id` reporting its state) carried it out (True), or `timeout` passed."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                record = self.actors.get(actor_id)
                if record is not None and not any(c[0] == command_id for c in record.commands) and record.acked >= command_id:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or record is None or self.stopping:
                    return False
                self.cond.wait(min(left, 0.1))
