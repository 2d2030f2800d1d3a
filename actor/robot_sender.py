"""Robot mode's hand-off side: the spooler and sender threads between the control loop and the learner.

`RobotActor` (actor/robot.py) hands each full batch to `BatchSender.submit` and keeps stepping;
nothing here ever blocks the control loop:

- the spooler writes every handed-off batch to the spool directory (fsync, rename) before it
  may be sent, so a crash after the hand-off loses nothing;
- the sender pushes the spooled batches in order, one in flight, retrying with capped backoff
  while the learner is unreachable (batches pile up in the spool meanwhile), and drops each
  from the spool once the learner reports it durable (as `ActorLoop` does). The learner's
  per-run sequence numbers make a resend after a lost acknowledgement a no-op.

`backlog()` and `outbox_bytes` tell the robot how much is undelivered (its status line and its
`max_backlog_mb` hold: actor/robot_controls.py).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Optional

from actor.loop import ActorLoop
from protos.wsrl.v1 import learner_pb2 as pb


class BatchSender:
    """Spooler + sender threads between the control loop and the learner (module docstring)."""

    # `actor`: the RobotActor this sender serves (typed as its base class: actor/robot.py
    # imports this module, so importing RobotActor here would close a cycle).
    def __init__(self, actor: ActorLoop, queue_batches: int):
        self.actor = actor
        self.queue: queue.Queue = queue.Queue(maxsize=queue_batches)
        self.outbox: collections.deque = collections.deque()  # spooled, not yet acknowledged
        self.outbox_bytes = 0  # their serialized size (what the spool holds for this run)
        self.cond = threading.Condition()
        self.finishing = threading.Event()
        self.deadline = float("inf")  # while finishing: give up sending after this
        self.spooler_done = threading.Event()
        self.error: Optional[BaseException] = None
        self.learner_up = True
        self.sent_batches = 0
        self.failed_attempts = 0
        self._threads = [
            threading.Thread(target=self._guard(self._spool_loop), name="wsrl-robot-spooler", daemon=True),
            threading.Thread(target=self._guard(self._send_loop), name="wsrl-robot-sender", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, batch: pb.TransitionBatch) -> bool:
        """Hands a batch off without blocking; False if the queue is full (the caller keeps it)."""
        try:
            self.queue.put_nowait(batch)
            return True
        except queue.Full:
            return False

    def backlog(self) -> int:
        """Batches handed off and not yet acknowledged by the learner."""
        return self.queue.qsize() + len(self.outbox)

    def _guard(self, target):
        def run():
            try:
                target()
            except BaseException as e:  # a refused batch or a full disk: stop the actor, say why
                self.error = e
                print(f"[wsrl actor] {self.actor.actor_id}: {threading.current_thread().name} failed: {e}", flush=True)
                self.actor.stop.set()
            finally:
                if target == self._spool_loop:
                    self.spooler_done.set()
                with self.cond:
                    self.cond.notify_all()
        return run

    def _spool_loop(self) -> None:
        """Queue -> spool (on disk) -> outbox. Never touches the network."""
        last_status = time.monotonic()
        every = self.actor.settings.status_every_s
        while True:
            try:
                batch = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.finishing.is_set():
                    return
                batch = None
            if batch is not None:
                self.actor.spool.put(batch)  # on disk before it can be sent
                with self.cond:
                    self.outbox.append(batch)
                    self.outbox_bytes += batch.ByteSize()
                    self.cond.notify_all()
            if every and time.monotonic() - last_status >= every:
                last_status = time.monotonic()
                print(self.actor.status_line(), flush=True)

    def _send_loop(self) -> None:
        """Outbox -> learner, in order, one batch in flight; capped exponential backoff."""
        a, s = self.actor, self.actor.settings
        backoff = 0.0
        last_report = time.monotonic()
        while True:
            with self.cond:
                while not self.outbox and not (self.finishing.is_set() and self.spooler_done.is_set()):
                    self.cond.wait(0.2)
                    if a.episodes and time.monotonic() - last_report > s.report_every_s:
                        break
                batch = self.outbox[0] if self.outbox else None
            if batch is None and self.finishing.is_set() and self.spooler_done.is_set():
                return
            if batch is not None:
                # One attempt (give_up_s=0): on failure the batch stays first in line and we
                # wait here, so the spooler keeps writing new batches to disk meanwhile.
                ack = a._send(batch, spooled=True, give_up_s=0)
                if ack is None:
                    self.failed_attempts += 1
                    if self.learner_up:
                        self.learner_up = False
                        print(f"[wsrl actor] {a.actor_id}: learner at {s.learner} unreachable; keeping batches in the spool "
                              f"and retrying (every {s.max_backoff_s:g} s at most)", flush=True)
                    if self.finishing.is_set() and time.monotonic() > self.deadline:
                        return
                    backoff = min(s.max_backoff_s, max(0.05, backoff * 2))
                    with self.cond:
                        self.cond.wait(backoff)
                    continue
                backoff = 0.0
                with self.cond:
                    self.outbox_bytes -= self.outbox.popleft().ByteSize()
                self.sent_batches += 1
                if not self.learner_up:
                    self.learner_up = True
                    print(f"[wsrl actor] {a.actor_id}: learner back; sending {self.backlog()} spooled batch(es) in order", flush=True)
            if a.episodes and time.monotonic() - last_report > s.report_every_s:
                a.report_episodes()
                last_report = time.monotonic()

    def finish(self, timeout_s: float) -> bool:
        """Spools what is queued and sends for at most `timeout_s`; True if all was acknowledged
        (what was not stays in the spool and goes out when the actor starts again)."""
        self.deadline = time.monotonic() + timeout_s
        self.finishing.set()
        with self.cond:
            self.cond.notify_all()
        for t in self._threads:
            t.join(max(0.1, self.deadline - time.monotonic() + 5.0))
        return self.error is None and self.queue.empty() and not self.outbox
