"""Rate control between the actors and the training thread: sync backpressure (`max_lead`) and the async UTD cap (`max_utd`).

sync mode holds an actor whose not-yet-processed transitions exceed `max_lead` (its push is
answered only when the learner has caught up); async mode never holds actors back, and the
training thread updates only while it stays within `max_utd` critic updates per post-warmup
env step (see `learner.distributed.trainer`).
"""

from __future__ import annotations

import time


class Pacing:
    """How far the `Trainer` lets actors run ahead of it (sync) and itself run ahead of the
    data (async); the state it reads is set up by `Trainer.__init__`."""

    def wait_for_lead(self, actor_id: str, timeout: float) -> bool:
        """sync mode backpressure: blocks until this actor has at most `max_lead` transitions
        waiting for the learner (or `timeout` passes, or the trainer stops). True if caught up."""
        if self.settings.mode != "sync":
            return True
        deadline = time.monotonic() + timeout
        with self.cond:
            record = self.actors.get(actor_id)
            if record is None:
                return True
            while record.pending > self.settings.max_lead and not self.stopping and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return record.pending <= self.settings.max_lead

    def _may_update(self) -> bool:
        f, s = self.config.finetune, self.settings
        post = self.processed - self.warmup_env_steps
        if post <= 0 or self.stopping:
            return False
        return s.max_utd == 0 or (self.updates + 1) * f.utd_ratio <= s.max_utd * post
