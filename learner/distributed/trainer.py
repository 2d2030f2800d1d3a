"""The learner's training thread and the bookkeeping it shares with the gRPC handlers.

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

Durability: the per-run sequence numbers stored in the last saved state are the "durable"
watermark answered with every push; an actor keeps acknowledged batches above it, so a learner
killed between two state saves gets them again after `--resume` (see `actor.loop`). The state
is saved at start, every `state_every` inserted env steps, every `state_every_s` seconds
(while something new arrived) and at stop.

Identity: a batch is stored under (actor id, run id, sequence) once; a later batch under the
same key is a duplicate only when its content digest equals the stored one (kept for the last
`digest_window` sequences of each run), otherwise it is refused (`Conflict`) and counted.
Records are bounded: at most `max_actors` actor ids and `max_runs_per_actor` runs each; ones
idle for `actor_ttl_s` (with nothing pending) are forgotten.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import numpy as np

from envs.datasets import mc_returns
from envs.observations import index_observations
from learner.config import Config

MODES = ("sync", "async")
# Fused updates the training thread may have dispatched but not yet computed. 2 lets it
# prepare the next update (insert, sample, dispatch) while the previous one runs; more only
# lengthens the queue a policy pull waits behind.
DISPATCH_AHEAD = 2


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """Knobs of the learner server (CLI flags of `wsrl learner` / `wsrl run`)."""

    mode: str = "sync"
    # sync: how many of its transitions an actor may have waiting for the learner (W).
    max_lead: int = 64
    # async: critic updates per post-warmup env step; max 0 means no cap.
    min_utd: float = 0.0
    max_utd: float = 0.0
    # Largest batch one PushTransitions may carry (bigger: RESOURCE_EXHAUSTED).
    max_batch_size: int = 1024
    # Accepted but not yet inserted transitions, all actors together (bounds memory).
    max_pending: int = 65536
    # Publish a new policy version every this many fused updates.
    publish_every: int = 1
    # Save the full learner state (agent, replay, counters, RNG, per-actor sequence numbers)
    # into `state_dir` every this many inserted env steps (0: only at stop); "" disables.
    state_dir: str = ""
    state_every: int = 0
    # ... and every this many seconds when something new was accepted since the last save
    # (0: by env steps only). `wsrl learner` saves every 60 s by default (--save-every).
    state_every_s: float = 0.0
    # Bounds on what the learner remembers of its actors: actor ids, runs per actor id, and the
    # idle time after which an actor's run (or the whole actor, with nothing pending) is forgotten.
    max_actors: int = 1024
    max_runs_per_actor: int = 64
    actor_ttl_s: float = 7 * 24 * 3600.0
    # A run of an actor id is made room for (forgotten for a new run's handshake) only when it
    # has been idle this long with nothing pending: a live run is never evicted, so a burst of
    # handshakes under its id cannot make the learner forget it (and then store its resent
    # batches twice); the handshake is refused instead.
    run_evict_idle_s: float = 300.0
    # Content digests kept per run (the last this many sequence numbers): a resent batch is
    # compared with what was stored; an older one is acknowledged unchecked.
    digest_window: int = 4096
    # PushTransitions calls being handled at once (more: UNAVAILABLE, retried by actors).
    max_inflight_pushes: int = 64

    def __post_init__(self):
        checks = [
            (self.mode in MODES, "mode", self.mode, f"one of {', '.join(MODES)}"),
            (self.max_lead >= 0, "max_lead", self.max_lead, "an integer >= 0"),
            (self.min_utd >= 0, "min_utd", self.min_utd, "a number >= 0"),
            (self.max_utd >= 0, "max_utd", self.max_utd, "a number >= 0 (0: no cap)"),
            (self.max_utd == 0 or self.max_utd >= self.min_utd, "max_utd", self.max_utd, f"0 or >= min_utd={self.min_utd}"),
            (self.max_batch_size >= 1, "max_batch_size", self.max_batch_size, "an integer >= 1"),
            (self.max_pending >= self.max_batch_size, "max_pending", self.max_pending, f">= max_batch_size={self.max_batch_size}"),
            (self.publish_every >= 1, "publish_every", self.publish_every, "an integer >= 1"),
            (self.state_every >= 0, "state_every", self.state_every, "an integer >= 0"),
            (self.state_every_s >= 0, "state_every_s", self.state_every_s, "a number of seconds >= 0"),
            (self.max_actors >= 1, "max_actors", self.max_actors, "an integer >= 1"),
            (self.max_runs_per_actor >= 1, "max_runs_per_actor", self.max_runs_per_actor, "an integer >= 1"),
            (self.actor_ttl_s > 0, "actor_ttl_s", self.actor_ttl_s, "a number of seconds > 0"),
            (self.digest_window >= 1, "digest_window", self.digest_window, "an integer >= 1"),
            (self.max_inflight_pushes >= 1, "max_inflight_pushes", self.max_inflight_pushes, "an integer >= 1"),
        ]
        for ok, name, value, expected in checks:
            if not ok:
                raise ValueError(f"distributed setting '{name}': got {value!r}, expected {expected}")


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


class UnknownActor(Exception):
    """No handshaken actor has this id (ActorCommand)."""


class NoStateReports(Exception):
    """The actor never reported its state, so it would never get a command (not a robot actor)."""


class TooManyActors(Exception):
    """`max_actors` actor ids are known and none is idle long enough to be forgotten."""


# A run that reported its state within this many seconds is live for operator commands (robot
# actors report every 0.5 s).
STATE_LIVE_S = 10.0


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


class Trainer:
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

    def latest_policy(self) -> tuple[int, Any]:
        with self.cond:
            return self.policy_version, self.policy_params

    def check_episode(self, episode: dict) -> Optional[str]:
        """Why a reported episode is implausible (None if it is not): its length must be within
        [1, the task's time limit] and its return finite, within length x the largest |reward|
        of any accepted transition (the episode's own transitions are pushed before it is
        reported)."""
        length, value = episode["length"], episode["return"]
        if not 1 <= length <= self.episode_limit:
            return f"'length': got {length}, expected 1..{self.episode_limit} (the task's time limit)"
        with self.cond:
            bound = length * self.max_abs_reward
        if not abs(value) <= bound * (1 + 1e-5) + 1e-6:
            return f"'episode_return': got {value:.6g}, expected a finite number within +-{bound:.6g} (length x the largest |reward| received)"
        return None

    def check_run(self, actor_id: str, run_id: str) -> None:
        """Raises UnknownRun unless (actor, run) has shaken hands with this learner."""
        with self.cond:
            record = self.actors.get(actor_id)
            if record is None or run_id not in record.next_sequence:
                raise UnknownRun(f"actor {actor_id!r} with this run id is unknown to this learner: call Handshake first")
            record.last_seen = record.run_seen[run_id] = time.monotonic()

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

    def report_episodes(self, actor_id: str, episodes: list[dict], run_id: Optional[str] = None) -> int:
        """Records episode stats reported by an actor; returns the total episode count.

        With `run_id`, the (actor, run) must have shaken hands (else UnknownRun), and each
        episode's `episode.csv` row is logged at the exact env step its last transition was
        inserted at (the k-th report of a run is its k-th episode end), with `warmup` 1 when
        that step is within the first K; a report that arrives before its transitions waits
        for them."""
        if run_id is not None:
            self.check_run(actor_id, run_id)
        with self.cond:
            self.episodes += len(episodes)
            self.recent_returns.extend(e["return"] for e in episodes)
            total, step = self.episodes, self.env_steps
            if run_id is not None:
                self._episode_reports.setdefault((actor_id, run_id), collections.deque()).extend(episodes)
        if run_id is not None:
            self._log_episodes((actor_id, run_id))
        elif self.logger is not None:
            with self.log_lock:
                for e in episodes:
                    self.logger.log("episode", step, {**e, "warmup": float(step <= self.warmup_env_steps)})
        return total

    def _log_episodes(self, key: tuple) -> None:
        """Logs the reported episodes of `key` whose last step has been inserted."""
        rows = []
        with self.cond:
            reports, ends = self._episode_reports.get(key), self._episode_ends.get(key)
            while reports and ends:
                rows.append((ends.popleft(), reports.popleft()))
        if self.logger is not None and rows:
            with self.log_lock:
                for step, e in rows:
                    self.logger.log("episode", step, {**e, "warmup": float(step <= self.warmup_env_steps)})

    def _log_unmatched_episodes(self) -> None:
        """At stop: reported episodes whose last transition never arrived, at the accepted count."""
        with self.cond:
            left = [e for reports in self._episode_reports.values() for e in reports]
            self._episode_reports.clear()
            step = self.env_steps
        if self.logger is not None and left:
            with self.log_lock:
                for e in left:
                    self.logger.log("episode", step, {**e, "warmup": float(step <= self.warmup_env_steps)})

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

    def _may_update(self) -> bool:
        f, s = self.config.finetune, self.settings
        post = self.processed - self.warmup_env_steps
        if post <= 0 or self.stopping:
            return False
        return s.max_utd == 0 or (self.updates + 1) * f.utd_ratio <= s.max_utd * post

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
        # actor blocked and, once the queue drained, the learner idle (docs: benchmarks/README).
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

    # ---- checkpoint / resume ------------------------------------------------------------

    def _save_due(self) -> bool:
        """Whether a periodic state save is due: `state_every` inserted env steps, or
        `state_every_s` seconds with something accepted since the last save."""
        s = self.settings
        if not s.state_dir:
            return False
        if s.state_every and self.processed - self._saved_at >= s.state_every:
            return True
        return bool(s.state_every_s) and self.env_steps != self._saved_env_steps and time.monotonic() - self._saved_time >= s.state_every_s

    def _save_wait(self) -> Optional[float]:
        """How long an idle training thread may sleep before a timed save may be due."""
        s = self.settings
        if not (s.state_dir and s.state_every_s):
            return None
        return max(0.01, min(1.0, self._saved_time + s.state_every_s - time.monotonic()))

    def _maybe_save_state(self) -> None:
        if self._save_due():
            self._save_state()

    def _save_state(self, final: bool = False) -> None:
        """Runs on the trainer thread between batches, so agent and replay are consistent
        with the ledger and the queue copied under the lock."""
        if self.settings.state_dir:
            with self.cond:
                env_steps = self.env_steps
            save_learner_state(self, self.settings.state_dir)
            self._saved_at, self._saved_time, self._saved_env_steps = self.processed, time.monotonic(), env_steps

    def resume(self, directory: str) -> None:
        """Loads a `save_learner_state` directory into this (not yet started) trainer."""
        load_learner_state(self, directory)
        self._saved_at, self._saved_env_steps, self._saved_time = self.processed, self.env_steps, time.monotonic()
        self.evaluations.resume_at(self.processed)


STATE_FORMAT = "wsrl-learner-state-v2"
# v1 (before the per-run digests) still loads; its batches get no duplicate check.
READABLE_STATE_FORMATS = ("wsrl-learner-state-v1", STATE_FORMAT)
STATE_FILE = "learner_state.msgpack"


def save_learner_state(trainer: Trainer, directory: str) -> Path:
    """Writes the agent (the checkpoint format, its own file per update count) and then, by
    atomic rename, `learner_state.msgpack` naming it: replay, counters, sample RNG, per-actor
    sequence numbers, accepted-but-not-inserted batches and open episodes. A kill at any
    point leaves the previous pair loadable; older agent files are removed afterwards. Only the
    filled rows of the replay buffer are written (a save early in a run is small)."""
    import json

    from flax import serialization

    from learner.checkpoint import atomic_write_bytes, save_checkpoint

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with trainer.cond:
        counters = {k: getattr(trainer, k) for k in ("env_steps", "processed", "updates", "episodes", "policy_version", "rejected", "duplicates", "conflicts",
                                                     "intervention_steps")}
        actors = {
            a: {"next_sequence": dict(r.next_sequence), "run_id": r.run_id, "accepted": r.accepted,
                "digests": {run: [[int(q), d.hex()] for q, d in table.items()] for run, table in r.digests.items()}}
            for a, r in trainer.actors.items()
        }
        queue = [{"actor_id": a, "run_id": r, "arrays": arrays} for a, r, arrays in trainer.queue]
    agent_file = f"agent-{counters['updates']:010d}.ckpt"
    save_checkpoint(path / agent_file, trainer.agent, trainer.config, trainer.spec, counters)
    replay = trainer.replay
    state = {
        "format": STATE_FORMAT,
        "agent_file": agent_file,
        "counters": json.dumps(counters),
        "actors": json.dumps(actors),
        "sample_rng": json.dumps(trainer.sample_rng.bit_generator.state),
        "replay": replay.state_dict(),  # (camera frames: each live frame once)
        "queue": {str(i): q for i, q in enumerate(queue)},
        "open_episodes": json.dumps([[a, r, [int(x) for x in slots], rewards] for (a, r), (slots, rewards) in trainer._episodes.items()]),
    }
    atomic_write_bytes(path / STATE_FILE, serialization.msgpack_serialize(state))
    # Only now (the state file renamed into place) are these batches safe from a learner kill.
    with trainer.cond:
        trainer.durable = {(a, run): int(seq) for a, r in actors.items() for run, seq in r["next_sequence"].items()}
    for old in path.glob("agent-*.ckpt"):
        if old.name != agent_file:
            old.unlink(missing_ok=True)
    return path / STATE_FILE


def load_learner_state(trainer: Trainer, directory: str) -> None:
    """Restores what `save_learner_state` wrote (agent with its RNG and optimizer states)."""
    import json

    from flax import serialization

    from learner.checkpoint import CheckpointError, check_compatible, read_checkpoint

    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"learner state {str(path)!r} does not exist")
    state = serialization.msgpack_restore(path.read_bytes())
    if not isinstance(state, dict) or state.get("format") not in READABLE_STATE_FORMATS:
        raise CheckpointError(f"learner state {str(path)!r}: format {state.get('format') if isinstance(state, dict) else None!r}, expected {STATE_FORMAT!r}")
    ckpt = read_checkpoint(Path(directory) / state["agent_file"])
    check_compatible(ckpt, trainer.config.agent, trainer.spec)
    if ckpt.algorithm != trainer.agent.algorithm:
        raise CheckpointError(f"learner state {str(path)!r}: algorithm {ckpt.algorithm!r}, this run has {trainer.agent.algorithm!r}")
    trainer.agent = serialization.from_state_dict(trainer.agent, ckpt.state)
    counters = json.loads(state["counters"])
    try:
        trainer.replay.load_state_dict(state["replay"])
    except ValueError as e:
        raise CheckpointError(f"learner state {str(path)!r}: {e} (finetune.replay_capacity / num_steps differ)") from None
    trainer.sample_rng.bit_generator.state = json.loads(state["sample_rng"])
    with trainer.cond:
        for key in ("env_steps", "processed", "updates", "episodes", "rejected", "duplicates", "conflicts", "intervention_steps"):
            setattr(trainer, key, int(counters.get(key, 0)))
        # The restored agent is served at once; versions keep counting fused updates.
        trainer.policy_version, trainer.policy_params = trainer.updates, trainer.agent.policy_params()
        now = time.monotonic()  # idle times restart with the resumed learner
        trainer.actors = {
            a: ActorRecord(next_sequence={k: int(v) for k, v in r["next_sequence"].items()}, run_id=r["run_id"], accepted=int(r["accepted"]),
                           last_seen=now, run_seen={k: now for k in r["next_sequence"]},
                           digests={run: {int(q): bytes.fromhex(d) for q, d in table} for run, table in r.get("digests", {}).items()})
            for a, r in json.loads(state["actors"]).items()
        }
        size = trainer.replay._size
        trainer.max_abs_reward = float(np.max(np.abs(trainer.replay.data["rewards"][:size]))) if size else 0.0
        trainer.queue.clear()
        trainer.queued = 0
        for i in range(len(state["queue"])):
            item = state["queue"][str(i)]
            trainer.queue.append((item["actor_id"], item["run_id"], item["arrays"]))
            n = len(item["arrays"]["rewards"])
            trainer.queued += n
            trainer.actors[item["actor_id"]].pending += n
        trainer._episodes = {(a, r): (list(slots), list(rewards)) for a, r, slots, rewards in json.loads(state["open_episodes"])}
        trainer.durable = {(a, run): seq for a, r in trainer.actors.items() for run, seq in r.next_sequence.items()}
