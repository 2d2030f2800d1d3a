"""The learner's training thread: inserts accepted batches into the replay buffer and runs the fused UTD updates.

Handlers only validate, `submit` (exactly-once by actor id, run id and sequence number) and
answer; the `Trainer` thread moves accepted batches into the replay buffer and runs the
fused UTD updates (`agent.update` on a batch shaped (M, B, ...), as `learner.finetune`), so
JAX work never runs on a handler thread.

sync mode is Algorithm 1 spread over processes: transitions are inserted one at a time in
arrival order and, once more than K = `finetune.warmup_steps` have arrived, every insert is
followed by exactly one fused update (M = `finetune.utd_ratio` critic updates + 1 actor
update), as in `Finetuner.step`. An actor whose not-yet-processed transitions exceed
`max_lead` is held back (its push is answered only when the learner has caught up).

async mode never holds actors back: every accepted batch is inserted at once and the thread
updates as fast as it can, but never beyond `max_utd` critic updates per post-warmup env step;
the achieved UTD is reported (and a warning logged when it falls below `min_utd`).

Every `finetune.log_every` inserted env steps (and once at start) the thread logs its counters
to the `learner` group (`learner.csv`): accepted and inserted env steps, fused and critic
updates, policy version, buffer size, seconds since start. Rows are written on the training
thread between steps, so each is a consistent snapshot (in sync mode the step's update is done).
The forgetting diagnostics (`diagnostics.csv`) come at the steps `wsrl finetune` logs them: at
step 0, before any data, and every `finetune.diagnostics_every` inserted env steps.

Updates are dispatched asynchronously (JAX), at most DISPATCH_AHEAD ahead of the computation,
so the thread prepares the next update while one runs, and a policy pull, which serializes the
latest version, waits for at most that many updates.

The Trainer's other jobs are base classes of it, each in its own module and working on the
state `Trainer.__init__` sets up: `ledger` (exactly-once submission by actor id, run id and
sequence number; actor records and their eviction), `pacing` (sync backpressure, the async UTD
cap), `episode_reports`, `command_queue` (robot state, operator commands) and `learner_state`
(state saves, `--resume`); its knobs are `settings.DistributedSettings`.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import numpy as np

from envs.datasets import mc_returns
from envs.observations import index_observations
from learner.config import Config
from learner.distributed.command_queue import CommandQueue
from learner.distributed.episode_reports import EpisodeReports
from learner.distributed.ledger import ActorRecord, Ledger
from learner.distributed.learner_state import STATE_FILE, StateSaves
from learner.distributed.pacing import Pacing
from learner.distributed.settings import DistributedSettings

# Fused updates the training thread may have dispatched but not yet computed. 2 lets it
# prepare the next update (insert, sample, dispatch) while the previous one runs; more only
# lengthens the queue a policy pull waits behind.
DISPATCH_AHEAD = 2


class Trainer(Ledger, Pacing, EpisodeReports, CommandQueue, StateSaves):
    """Replay buffer + agent + the training thread; thread-safe entry points for handlers."""

    def __init__(self, config: Config, spec: dict, settings: DistributedSettings = DistributedSettings(), agent: Any = None, logger: Any = None):
        from envs.tasks import TASKS
        from learner.runs import initial_agent, online_replay

        f = config.finetune
        self.config, self.spec, self.settings = config, spec, settings
        self.agent = agent if agent is not None else initial_agent(config, spec)
        # As Finetuner: the online buffer (seeded with offline rows for dataset warmup), the
        # sampler (mixing offline data for retention / RLPD) and K, the warmup env steps.
        task = TASKS.get(config.task)
        self.replay, self.sampler, self.warmup_env_steps = online_replay(config, task, spec)
        # CalQL's MC returns of a failed sparse-reward episode (as Finetuner); None off the task table.
        self.sparse_failure_reward = task.sparse_failure_reward if task is not None else None
        # Reported episodes are checked against the task's time limit (ReportEpisodes).
        from learner.distributed.validation import DEFAULT_EPISODE_LIMIT

        self.episode_limit = task.max_episode_steps if task is not None else DEFAULT_EPISODE_LIMIT
        self.diagnostics = None
        if logger is not None and f.diagnostics_every:
            from learner.runs import make_diagnostics

            self.diagnostics = make_diagnostics(config, task, self.agent)
        # Same seeding as Finetuner, so one sync actor reproduces `wsrl finetune`.
        self.sample_rng = np.random.default_rng(config.seed)
        self.uses_mc_returns = f.algorithm == "calql"
        self.logger = logger
        self.log_lock = threading.Lock()
        self.cond = threading.Condition()
        # Everything below is guarded by `cond`.
        self.queue: collections.deque = collections.deque()  # (actor id, run id, arrays)
        self.queued = 0  # transitions in `queue`
        self.actors: dict[str, ActorRecord] = {}
        self.env_steps = 0  # transitions accepted
        self.processed = 0  # transitions inserted into the replay buffer
        self.updates = 0  # fused updates
        self.episodes = 0
        self.recent_returns: collections.deque = collections.deque(maxlen=20)
        self.rejected = 0
        self.duplicates = 0
        self.conflicts = 0
        self._command_id = 0  # the last operator command id handed out (ActorCommand)
        self.intervention_steps = 0  # inserted transitions whose action a human chose
        # Largest |reward| of any accepted transition: bounds a plausible episode return.
        self.max_abs_reward = float(np.max(np.abs(self.replay.data["rewards"][: len(self.replay)]))) if len(self.replay) else 0.0
        self.policy_version = 0
        # Version 0 is the pre-trained policy, served from start-up.
        self.policy_params = self.agent.policy_params()
        self.stopping = False
        # The env steps after which this learner stops (`wsrl learner` without --forever): the
        # acks tell actors then that they are done. 0: no such end (`--forever`, `wsrl run`,
        # which stops its own actors).
        self.budget_steps = 0
        self._told_finished: dict[str, float] = {}  # actor id -> when it was told
        self.error: Optional[str] = None
        self.last_info: dict = {}
        self._episodes: dict[tuple, tuple[list, list]] = {}  # (actor, run) -> (slots, rewards)
        # (actor, run) -> env steps at which its episodes ended / its reported episode stats,
        # matched in order so that each episode.csv row carries its exact step.
        self._episode_ends: dict[tuple, collections.deque] = {}
        self._episode_reports: dict[tuple, collections.deque] = {}
        self._utd_warned = False
        self._thread: Optional[threading.Thread] = None
        self._started = time.perf_counter()
        self._saved_at = 0  # `processed` at the last state save
        self._saved_time = time.monotonic()
        self._saved_env_steps = 0  # `env_steps` (accepted) at the last state save
        self._logged_at = -1  # `processed` at the last `learner` counters row
        self._diagnosed_at = 0  # `processed` at the last diagnostics row
        # Outputs of the updates dispatched but maybe not yet computed (see DISPATCH_AHEAD).
        self._inflight: collections.deque = collections.deque()
        # (actor id, run id) -> sequence numbers below this are in the last saved state.
        self.durable: dict[tuple[str, str], int] = {}
        # Policy snapshots for the evaluators at step 0, every eval_every steps and at num_steps.
        from learner.distributed.evaluations import Evaluations

        self.evaluations = Evaluations(f.eval_every, f.num_steps, f.eval_episodes, config.seed, logger, self.log_lock)

    # ---- handler side (cheap, under the lock) ---------------------------------------

    def latest_policy(self) -> tuple[int, Any]:
        with self.cond:
            return self.policy_version, self.policy_params

    def finished_for(self, actor_id: str) -> bool:
        """Whether this learner has its `budget_steps` (accepted env steps); notes that
        `actor_id` was told (`actors_not_told`)."""
        with self.cond:
            done = bool(self.budget_steps) and self.env_steps >= self.budget_steps
            if done:
                self._told_finished[actor_id] = time.monotonic()
            return done

    def actors_not_told(self, within_s: float = 10.0) -> list[str]:
        """Actors seen in the last `within_s` seconds that no answer has yet told the learner
        finished (a stopping learner waits a moment for them to ask once more)."""
        now = time.monotonic()
        with self.cond:
            return [a for a, r in self.actors.items() if now - r.last_seen <= within_s and a not in self._told_finished]

    def status(self) -> dict:
        """Counters for GetStatus and the progress display."""
        from learner.distributed.validation import run_label

        m, k = self.config.finetune.utd_ratio, self.warmup_env_steps
        now = time.monotonic()
        with self.cond:
            post_warmup = max(0, self.processed - k)
            return {
                "mode": self.settings.mode,
                "env_steps": self.env_steps,
                "processed_steps": self.processed,
                "updates": self.updates,
                "critic_updates": self.updates * m,
                "achieved_utd": self.updates * m / post_warmup if post_warmup else 0.0,
                "target_utd": float(m) if self.settings.mode == "sync" else float(self.settings.max_utd),
                "policy_version": self.policy_version,
                "buffer_size": len(self.replay),
                "warmup_steps": k,
                "episodes": self.episodes,
                "recent_return": float(np.mean(self.recent_returns)) if self.recent_returns else float("nan"),
                "training": self.processed > k,
                "rejected_batches": self.rejected,
                "duplicate_batches": self.duplicates,
                "conflicting_batches": self.conflicts,
                "intervention_steps": self.intervention_steps,
                "error": self.error,
                # The run id is the run's secret: only a label of it is shown.
                # A robot actor reports its state every 0.5 s, paused or not, so it stays listed.
                "actors": [
                    {"actor_id": a, "run_label": run_label(r.run_id), "env_steps": r.accepted, "pending": r.pending, "seconds_since_seen": now - r.last_seen,
                     **{k: r.state[k] for k in ("paused", "estopped", "pause_reason", "control") if k in r.state}}
                    for a, r in sorted(self.actors.items())
                    if now - r.last_seen < 60.0
                ],
            }

    # ---- the training thread ----------------------------------------------------------

    def start(self) -> None:
        self._started = time.perf_counter()
        # A state from the start on, so a learner killed before its first periodic save can
        # still be resumed (`--resume`), and the actors' durable watermark is defined.
        if self.settings.state_dir and not (Path(self.settings.state_dir) / STATE_FILE).exists():
            self._save_state()
        self._log_counters()  # where this learner starts (0, or the resumed counters)
        self._observe()  # step 0: the pre-trained policy is evaluated
        self._thread = threading.Thread(target=self._run, name="wsrl-trainer", daemon=True)
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stops the thread after it has inserted (sync: and trained on) what was accepted."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_processed(self, env_steps: int, timeout: float) -> bool:
        """Blocks until `env_steps` transitions have been inserted (tests and `wsrl run`)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.processed < env_steps and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return self.processed >= env_steps

    def _run(self) -> None:
        try:
            if self.diagnostics is not None and self.processed == 0:
                # Step 0, before any data, as `wsrl finetune` does (it also compiles the
                # diagnostics here rather than in the middle of training).
                self._diagnose()
            self._diagnosed_at = self.processed
            if self.settings.mode == "sync":
                self._run_sync()
            else:
                self._run_async()
        except Exception:  # surfaced through status/health; the handlers refuse new data
            with self.cond:
                self.error = traceback.format_exc()
                self.cond.notify_all()
            print(f"[wsrl learner] training thread failed:\n{self.error}", flush=True)

    def _run_sync(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping and not self._save_due():
                    self.cond.wait(self._save_wait())
                if not self.queue and self.stopping:
                    self._save_state(final=True)
                    self._log_unmatched_episodes()
                    return
                item = self.queue.popleft() if self.queue else None
            if item is None:  # idle, with accepted batches not yet saved: save them now
                self._maybe_save_state()
                continue
            actor_id, run_id, arrays = item
            for i in range(len(arrays["rewards"])):
                self._insert(actor_id, run_id, arrays, i)
                # Algorithm 1: one fused update per env step once K steps have arrived.
                if self.processed > self.warmup_env_steps:
                    self._update()
                with self.cond:
                    self.queued -= 1
                    self._record_inserted(actor_id, 1)
                    self.cond.notify_all()
                self._observe()
                self._maybe_log_counters()
                self._maybe_diagnose()
            self._maybe_save_state()

    def _run_async(self) -> None:
        f, s = self.config.finetune, self.settings
        while True:
            self._maybe_save_state()  # (also while idle: timed saves of what was accepted)
            with self.cond:
                items = list(self.queue)
                self.queue.clear()
                if not items and self.stopping:
                    self._save_state(final=True)
                    self._log_unmatched_episodes()
                    return
                if not items and not self._may_update():
                    self.cond.wait(0.05)
                    continue
            for actor_id, run_id, arrays in items:
                n = len(arrays["rewards"])
                for i in range(n):
                    self._insert(actor_id, run_id, arrays, i)
                with self.cond:
                    self.queued -= n
                    self._record_inserted(actor_id, n)
                    self.cond.notify_all()
            self._maybe_save_state()
            if self._may_update():
                self._update()
                post = self.processed - self.warmup_env_steps
                utd = self.updates * f.utd_ratio / post
                if s.min_utd and utd < s.min_utd and post >= 1000 and not self._utd_warned:
                    self._utd_warned = True
                    print(f"[wsrl learner] warning: achieved UTD {utd:.2f} is below min_utd={s.min_utd} (the learner cannot keep up with the actors)", flush=True)
            self._observe()
            self._maybe_log_counters()
            self._maybe_diagnose()

    def _record_inserted(self, actor_id: str, n: int) -> None:
        record = self.actors.get(actor_id)  # (never forgotten while it has pending transitions)
        if record is not None:
            record.pending -= n


    def _insert(self, actor_id: str, run_id: str, arrays: dict, i: int) -> None:
        end = bool(arrays["episode_ends"][i])
        intervention = bool(arrays["interventions"][i]) if "interventions" in arrays else False
        # Observations are arrays (flat tasks) or {part: array} (cameras): row i of each part.
        slot = self.replay.add(
            index_observations(arrays["observations"], i), arrays["actions"][i], arrays["rewards"][i],
            index_observations(arrays["next_observations"], i), bool(arrays["terminals"][i]), intervention,
        )
        if self.uses_mc_returns:
            # CalQL's MC return-to-go, filled in when the episode ends (as Finetuner does).
            slots, rewards = self._episodes.setdefault((actor_id, run_id), ([], []))
            slots.append(slot)
            rewards.append(float(arrays["rewards"][i]))
            if end:
                del self._episodes[(actor_id, run_id)]
                r = np.asarray(rewards, np.float32)
                ends = np.zeros(len(r), bool)
                ends[-1] = True
                returns = mc_returns(r, ends, self.config.agent.discount, self.sparse_failure_reward)
                self.replay.set_mc_returns(np.asarray(slots), returns)
        with self.cond:
            self.processed += 1
            self.intervention_steps += intervention
            if end:
                self._episode_ends.setdefault((actor_id, run_id), collections.deque()).append(self.processed)
        if end and self._episode_reports.get((actor_id, run_id)):
            self._log_episodes((actor_id, run_id))

    def _update(self) -> None:
        import jax  # (not at module level: `wsrl run`'s parent imports this module for its settings)

        f = self.config.finetune
        # Bounded run-ahead: JAX dispatches asynchronously, so without this the thread would
        # queue an update for every transition waiting (up to max_lead + a batch), and a policy
        # pull (which serializes the latest version) would wait for all of them, leaving the
        # actor blocked and, once the queue drained, the learner idle (docs: benchmarks/HISTORY.md, transport.py).
        while len(self._inflight) >= DISPATCH_AHEAD:
            jax.block_until_ready(self._inflight.popleft())
        batch = self.sampler.sample(self.sample_rng, f.utd_ratio, self.config.agent.batch_size)
        if self.updates < f.freeze_policy_steps:  # critics only at first (Appendix F), as Finetuner
            self.agent, info = self.agent.update_critics(batch)
        else:
            self.agent, info = self.agent.update(batch)
        # One output of this update's computation: ready when the update is done.
        self._inflight.append((jax.tree_util.tree_leaves(info) or jax.tree_util.tree_leaves(self.agent.critic.params))[0])
        with self.cond:
            self.updates += 1
            if self.updates % self.settings.publish_every == 0:
                self.policy_version, self.policy_params = self.updates, self.agent.policy_params()
        if self.logger is not None and f.log_every and self.processed % f.log_every == 0:
            elapsed = time.perf_counter() - self._started
            info = jax.device_get(info)  # (waits for the update: not while holding the log lock)
            with self.log_lock:
                self.logger.log("train", self.processed, {**info, "env_steps": self.processed, "updates": self.updates, "env_steps_per_s": self.processed / elapsed})

    def _maybe_diagnose(self) -> None:
        every = self.config.finetune.diagnostics_every
        if self.diagnostics is not None and every and self.processed // every > self._diagnosed_at // every:
            self._diagnose()

    def _diagnose(self) -> None:
        """One `diagnostics` row at the current inserted env step (as `wsrl finetune`: at step
        0 and every `finetune.diagnostics_every` env steps, warmup included)."""
        row = self.diagnostics.compute(self.agent, self.replay)  # (not under the log lock: handlers log too)
        self._diagnosed_at = self.processed
        with self.log_lock:
            self.logger.log("diagnostics", self.processed, row)

    def _observe(self) -> None:
        """Hands the policy current at this env step to the evaluation schedule (a reference)."""
        self.evaluations.observe(self.processed, self.policy_version, self.updates, self.policy_params)

    def _maybe_log_counters(self) -> None:
        every = self.config.finetune.log_every
        if self.logger is not None and every and self.processed // every > self._logged_at // every:
            self._log_counters()

    def _log_counters(self) -> None:
        """One `learner` row: a consistent snapshot of the counters (taken under the lock)."""
        if self.logger is None:
            return
        m = self.config.finetune.utd_ratio
        with self.cond:
            row = {
                "time_s": time.perf_counter() - self._started,
                "env_steps": self.env_steps,
                "processed_steps": self.processed,
                "updates": self.updates,
                "critic_updates": self.updates * m,
                "policy_version": self.policy_version,
                "buffer_size": len(self.replay),
            }
            self._logged_at = self.processed
        with self.log_lock:
            self.logger.log("learner", row["processed_steps"], row)
