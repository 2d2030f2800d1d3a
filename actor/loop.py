"""The actor loop: act, batch transitions, push them until acknowledged, pull new policies.

One `ActorLoop` per process. During warmup the learner serves only version 0 (the frozen
pre-trained policy), so the actor acts with it until the learner publishes updates; it asks
for a newer version every `pull_every` env steps and at episode ends. Transitions go out in
batches of `batch_size` or after `max_latency_s`, one batch in flight at a time, each kept
(in memory and, with a spool directory, on disk) until the learner acknowledges it, and
after that until the learner reports it checkpointed (the `durable_sequence` of its answers):
a learner killed between two state saves resumes from the last one and answers OUT_OF_RANGE
("expected N"), and the actor resends its batches from N on.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import socket
import sys
import threading
import time
import types
import uuid
from typing import Optional

import grpc
import jax
import numpy as np

from actor.client import LearnerClient, connection_hint, wait_for_learner, with_retries
from actor.envs import make_actor_env
from actor.policy import Policy, jsrl_rollin_steps
from actor.spool import Spool
from envs.observations import observation_spec_of
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb


@dataclasses.dataclass(frozen=True)
class ActorSettings:
    """Everything `wsrl actor` takes on its command line."""

    learner: str = "127.0.0.1:50051"
    env: str = "pointmass-goal"  # task name, gymnasium id or 'module:Class' entry point
    actor_id: str = ""  # stable across restarts of the same actor; default: hostname
    seed: int = 0
    num_steps: int = 0  # env steps this actor takes; 0: until stopped
    batch_size: int = 32
    max_latency_s: float = 0.5  # a partial batch goes out once its oldest step is this old
    pull_every: int = 10  # env steps between policy pulls; 0: only at episode ends
    pull_at_episode_end: bool = True
    max_episode_steps: int = 0  # time limit for gymnasium envs (tasks bring their own)
    token: str = ""
    tls_ca: str = ""
    spool_dir: str = ""
    connect_timeout_s: float = 120.0  # give up waiting for the learner after this long; 0: never
    flush_timeout_s: float = 30.0
    report_every_s: float = 2.0
    # At least this many seconds per env step (a robot's control period; 0: as fast as possible).
    step_period_s: float = 0.0
    # Longest wait between retries, and between the channel's reconnection attempts, so the
    # actor is back within this long after a restarted learner comes up.
    max_backoff_s: float = 5.0
    # Acknowledged transitions kept until the learner has checkpointed them; beyond this many
    # the oldest are forgotten (a learner kill may then lose them).
    retain_transitions: int = 100_000
    # ---- robot mode (actor/robot.py; docs/robot.md) ----
    # A fixed-rate control loop that the learner never blocks: batches go to a background
    # sender (spooled first, so `spool_dir` is required), policies switch at episode ends.
    robot: bool = False
    control_hz: float = 0.0  # robot mode: steps per second; 0: the env's `control_hz`
    max_action_change: float = 0.0  # robot mode: per-step limit on |a_t - a_{t-1}| (policy units); 0: none
    switch_mid_episode: bool = False  # robot mode: adopt a new policy version at any step
    queue_batches: int = 1024  # robot mode: batches handed off but not yet spooled, at most
    # robot mode: the most undelivered data (spooled, not yet acknowledged) the actor holds, in
    # MB; past it the robot holds still (paused, "backlog full") rather than collect data it
    # cannot deliver or keep. 0: no limit.
    max_backlog_mb: float = 1024.0
    status_every_s: float = 10.0  # robot mode: seconds between status lines; 0: none
    # robot mode: a human takeover device polled every step (actor/teleop.py): 'keyboard',
    # 'spacemouse' or 'package.module:function'; '' (default): none (the env's own hook only).
    teleop: str = ""
    # Camera frames (uint8 observation parts) on the wire: '' raw, or 'zstd' (needs the
    # zstandard package here and on the learner, which lists what it decodes in the handshake).
    compress: str = ""
    # robot mode: workspace limits on the position the env reports in info["workspace_position"]
    # (envs/robot.py); empty: the env's `workspace_bounds` attribute, if any. 'stop': a position
    # outside them is a safety stop; 'project': actions are limited so it stays inside.
    workspace_low: tuple = ()
    workspace_high: tuple = ()
    workspace_mode: str = "stop"

    def __post_init__(self):
        for name in ("batch_size", "retain_transitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"actor setting '{name}': got {getattr(self, name)}, expected an integer >= 1")
        for name in ("num_steps", "pull_every", "max_episode_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"actor setting '{name}': got {getattr(self, name)}, expected an integer >= 0")
        for name in ("step_period_s", "max_latency_s", "control_hz", "max_action_change", "status_every_s", "connect_timeout_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"actor setting '{name}': got {getattr(self, name)}, expected a number >= 0")
        if not self.max_backoff_s > 0:
            raise ValueError(f"actor setting 'max_backoff_s': got {self.max_backoff_s}, expected a number > 0")
        codec.check_encoding(self.compress, "actor setting 'compress'")
        if self.queue_batches < 1:
            raise ValueError(f"actor setting 'queue_batches': got {self.queue_batches}, expected an integer >= 1")
        if not self.max_backlog_mb >= 0:
            raise ValueError(f"actor setting 'max_backlog_mb': got {self.max_backlog_mb}, expected a number >= 0 (0: no limit)")
        if self.robot and self.step_period_s:
            raise ValueError(f"actor setting 'step_period_s': got {self.step_period_s}, expected 0 in robot mode (set the rate with control_hz / --control-hz)")
        if len(self.workspace_low) != len(self.workspace_high):
            raise ValueError(f"actor setting 'workspace_high': got {len(self.workspace_high)} values, expected as many as "
                             f"workspace_low ({len(self.workspace_low)}) (--workspace-low and --workspace-high go together)")
        if not all(lo <= hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
            raise ValueError(f"actor setting 'workspace_low': got {list(self.workspace_low)}, expected each <= workspace_high {list(self.workspace_high)}")
        if self.workspace_mode not in ("stop", "project"):
            raise ValueError(f"actor setting 'workspace_mode': got {self.workspace_mode!r}, expected 'stop' or 'project'")
        if not self.robot and (self.teleop or self.workspace_low):
            raise ValueError("actor settings 'teleop' / 'workspace_low': robot mode only (add --robot)")
        if self.robot and not self.spool_dir:
            raise ValueError("actor setting 'spool_dir': required in robot mode (--robot needs --spool-dir DIR: robot data is kept on disk until the learner has it)")


def stack_observations(observations) -> np.ndarray | dict:
    """Per-step observations (flat vectors, or dicts of parts) as one batch: a float32 array
    (N, d), or {part: array (N, *shape)} in each part's dtype (images stay uint8)."""
    if isinstance(observations[0], dict):
        return {name: np.stack([o[name] for o in observations]) for name in observations[0]}
    return np.stack(observations).astype(np.float32)


class ActorError(RuntimeError):
    """The learner refused something a retry cannot fix (bad batch, spec mismatch)."""


# `wsrl actor` exit status (docs/robot.md): 0 all delivered, 1 an error or data left in the
# spool, 3 an emergency stop (the data is flushed either way; 2 is argparse's usage error).
EXIT_OK, EXIT_ERROR, EXIT_EMERGENCY_STOP = 0, 1, 3


def exit_status(result: dict) -> int:
    """The process exit status for `run()`'s result: an e-stop is never a normal finish."""
    if result.get("emergency_stopped"):
        return EXIT_EMERGENCY_STOP
    return EXIT_OK if result["delivered"] else EXIT_ERROR


class ActorLoop:
    """One actor: env + policy + client. `run()` until `num_steps` or `stop` is set."""

    def __init__(self, settings: ActorSettings, stop: Optional[threading.Event] = None):
        self.settings = settings
        self.stop = stop or threading.Event()
        self.actor_id = settings.actor_id or socket.gethostname()
        self.run_id = uuid.uuid4().hex  # fresh at every start: (actor, run, seq) is unique
        self.sequence = 0
        self.env, self.spec = make_actor_env(settings.env, settings.seed, settings.max_episode_steps)
        # The env's observations: a flat float vector, or named parts (state + cameras).
        self.observation_spec = observation_spec_of(self.spec)
        self.client = LearnerClient(settings.learner, settings.token or None, settings.tls_ca or None, max_backoff_s=settings.max_backoff_s)
        self.spool = Spool(f"{settings.spool_dir}/{self.actor_id}") if settings.spool_dir else None
        # Same RNG use as Finetuner: PRNGKey(seed + 1), split once per action.
        self.action_rng = jax.random.PRNGKey(settings.seed + 1)
        # Random warmup actions and JSRL draws (as Finetuner's schedule_rng).
        self.schedule_rng = np.random.default_rng(settings.seed + 3)
        self.behaviour: dict = {}  # from the handshake: warmup mode, JSRL settings
        self.pretrained_params = None  # version 0, kept for JSRL roll-ins
        self.rollin_steps_left = 0
        self.policy: Optional[Policy] = None
        self.params = None
        self.version = -1
        self.version_source = ""  # learner_id that served `version`
        self.env_steps = 0
        self.last_ack: Optional[pb.PushResponse] = None
        # Acknowledged batches of this run that the learner has not checkpointed yet.
        self._unconfirmed: collections.deque = collections.deque()
        self._unconfirmed_n = 0
        self._warned_retain = False
        self._resent = 0  # batches resent because the learner lost them (a restart)
        self.learner_finished = False  # the learner said it has all its env steps
        self.older_policies = 0  # times a (restarted) learner served an older version than we had
        self._last_step_at = 0.0
        self.episodes: list[pb.Episode] = []
        self._pending: list[tuple] = []
        self._pending_since = 0.0
        self._last_report = time.monotonic()
        self._observation: Optional[np.ndarray] = None
        self._episode = {"return": 0.0, "length": 0, "success": False}
        self.num_episodes = 0

    # ---- learner interaction ---------------------------------------------------------

    def connect(self) -> pb.HandshakeResponse:
        """Waits for the learner, resends spooled batches of earlier runs, shakes hands."""
        s = self.settings
        try:
            self.client.wait_ready(2.0)
        except grpc.FutureTimeoutError:
            # Up but unreachable: TLS on one side only, or an untrusted certificate.
            hint = connection_hint(s.learner, s.tls_ca or None)
            if hint:
                raise ActorError(hint) from None
            if not wait_for_learner(self.client, s.learner, self.stop, s.connect_timeout_s):
                if self.stop.is_set():
                    raise ActorError(f"stopped while waiting for the learner at {s.learner}")
                raise ActorError(f"learner at {s.learner} not reachable within {s.connect_timeout_s:g} s (--connect-timeout)")
        if self.spool is not None:
            self._resend_spooled()
        hello = self._handshake(self.run_id, self.sequence)
        self.sequence = hello.next_sequence
        if s.compress and s.compress not in hello.encodings:
            raise ActorError(f"--compress {s.compress}: the learner decodes only {list(hello.encodings) or 'raw tensors'} "
                             f"(install zstandard on the learner's machine, or drop --compress)")
        self.policy = Policy(types.SimpleNamespace(**json.loads(hello.agent_config_json)), self.spec["action_dim"], self.observation_spec)
        self.behaviour = json.loads(hello.actor_behaviour_json or "{}")
        self._pull(force=True)
        if self.version == 0:
            self.pretrained_params = self.params  # JSRL rolls in with it
        elif self.behaviour.get("jsrl"):
            print(f"[wsrl actor] {self.actor_id}: joined after version 0 was replaced; no JSRL roll-ins from this actor", flush=True)
        return hello

    def _handshake(self, run_id: str, next_sequence: int) -> pb.HandshakeResponse:
        request = pb.HandshakeRequest(
            protocol_version=codec.PROTOCOL_VERSION,
            spec=codec.spec_to_proto(self.spec),
            actor_id=self.actor_id,
            run_id=run_id,
            next_sequence=next_sequence,
        )
        try:
            return with_retries(lambda: self.client.handshake(request), self.stop, what="handshake", cap_s=self.settings.max_backoff_s)
        except grpc.RpcError as e:
            raise ActorError(f"handshake refused: {e.code().name}: {e.details()}") from None

    def _resend_spooled(self) -> None:
        """Batches of earlier runs that were never acknowledged, or not yet checkpointed by the
        learner: it stores the ones it lacks and acknowledges the rest as duplicates."""
        batches = self.spool.pending()
        runs = sorted({b.run_id for b in batches})
        for run_id in runs:
            run_batches = [b for b in batches if b.run_id == run_id]
            self._handshake(run_id, run_batches[0].sequence)
            for batch in run_batches:
                self._send(batch, spooled=True)
        if batches:
            print(f"[wsrl actor] {self.actor_id}: resent {len(batches)} spooled batches from {len(runs)} earlier run(s)", flush=True)

    def _send(self, batch: pb.TransitionBatch, spooled: bool = False, give_up_s: Optional[float] = None, resend: bool = False) -> Optional[pb.PushResponse]:
        """Pushes one batch until acknowledged (stored or duplicate). Returns None if it had
        to give up (the batch then stays in the spool, if any). `resend`: a batch the learner
        lost in a restart, already kept (and spooled); it is only pushed again."""
        if self.spool is not None and not spooled and not resend:
            self.spool.put(batch)
        stop = threading.Event() if give_up_s is not None else self.stop
        while True:
            try:
                ack = with_retries(lambda: self.client.push(batch), stop, give_up_s, what=f"push seq {batch.sequence}", cap_s=self.settings.max_backoff_s)
                break
            except grpc.RpcError as e:
                code = e.code()
                unknown_run = code == grpc.StatusCode.FAILED_PRECONDITION and "Handshake" in (e.details() or "")
                if unknown_run or code == grpc.StatusCode.OUT_OF_RANGE:
                    # The learner restarted: from a state that lacks this run (unknown_run) or
                    # lacks its latest batches (OUT_OF_RANGE). Ask where it stands; resend.
                    kept = self._kept(batch.run_id)
                    start = min([b.sequence for b in kept if b.sequence < batch.sequence], default=batch.sequence)
                    expected = self._handshake(batch.run_id, start).next_sequence
                    if expected > batch.sequence:  # already stored earlier
                        ack = pb.PushResponse(duplicate=True, next_sequence=expected)
                        break
                    missing = [b for b in kept if expected <= b.sequence < batch.sequence]
                    if [b.sequence for b in missing] != list(range(expected, batch.sequence)):
                        raise ActorError(f"learner expects sequence {expected} of run {codec.run_label(batch.run_id)}, which this actor no longer holds "
                                         f"(it keeps acknowledged batches from {start}; raise retain_transitions or use a spool)") from None
                    if missing:
                        print(f"[wsrl actor] {self.actor_id}: the learner lost batches {expected}..{batch.sequence - 1} of run {codec.run_label(batch.run_id)} "
                              f"(it restarted from a checkpoint); resending them", flush=True)
                    for b in missing:
                        if self._send(b, give_up_s=give_up_s, resend=True) is None:
                            return None
                        self._resent += 1
                    continue
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED):
                    return None  # gave up (stopping); kept in the spool if there is one
                if code == grpc.StatusCode.ALREADY_EXISTS:
                    # Someone else stored a batch under this run's sequence number: the run id
                    # (its secret) leaked, or this actor resent a changed batch. Never silent.
                    message = (f"[wsrl actor] {self.actor_id}: CONFLICT: the learner holds OTHER data under batch {batch.sequence} of run "
                               f"{codec.run_label(batch.run_id)}; this batch was refused and the run cannot go on ({e.details()}). "
                               f"Check who else can reach the learner with this actor's id and token; the batch stays in the spool, if any.")
                    print(message, file=sys.stderr, flush=True)
                    print(message, flush=True)
                    raise ActorError(f"conflicting batch {batch.sequence}: {e.details()}") from None
                raise ActorError(f"learner refused batch {batch.sequence}: {code.name}: {e.details()}") from None
        if not resend:
            self._confirm(batch, ack)
        self.last_ack = ack
        if ack.learner_finished:
            self.learner_done()
        return ack

    def learner_done(self) -> None:
        """The learner has the env steps it was started for and is stopping (its ack or state
        answer said so): this actor stops too, once, with a line; `run()` flushes and returns
        normally (exit status 0)."""
        if not self.learner_finished:
            self.learner_finished = True
            print(f"[wsrl actor] {self.actor_id}: the learner has trained all its env steps and is stopping; stopping too", flush=True)
        self.stop.set()

    def _kept(self, run_id: str) -> list[pb.TransitionBatch]:
        """Acknowledged batches of `run_id` still held (memory for this run, else the spool)."""
        if run_id == self.run_id:
            return list(self._unconfirmed)
        return [b for b in self.spool.pending() if b.run_id == run_id] if self.spool is not None else []

    def _confirm(self, batch: pb.TransitionBatch, ack: pb.PushResponse) -> None:
        """Keeps an acknowledged batch until the learner's durable watermark passes it; drops
        (from memory and spool) what the learner has checkpointed."""
        durable = ack.durable_sequence
        if batch.run_id != self.run_id:  # a spooled batch of an earlier run
            if durable > batch.sequence and self.spool is not None:
                self.spool.remove(batch.run_id, batch.sequence)
            return
        self._unconfirmed.append(batch)
        self._unconfirmed_n += batch.rewards.shape[0]
        while self._unconfirmed and (self._unconfirmed[0].sequence < durable or self._unconfirmed_n > self.settings.retain_transitions):
            old = self._unconfirmed.popleft()
            self._unconfirmed_n -= old.rewards.shape[0]
            if old.sequence >= durable and not self._warned_retain:
                self._warned_retain = True
                print(f"[wsrl actor] {self.actor_id}: more than {self.settings.retain_transitions} acknowledged transitions wait for a learner "
                      f"checkpoint; forgetting the oldest (a learner kill now loses them)", flush=True)
            if self.spool is not None:
                self.spool.remove(old.run_id, old.sequence)

    def _pull(self, force: bool = False) -> None:
        try:
            version, params, source = with_retries(lambda: self.client.pull(self.actor_id, -1 if force else self.version, self.version_source),
                                                   self.stop, what="pull", cap_s=self.settings.max_backoff_s)
        except grpc.RpcError:
            if force:
                raise
            return  # keep acting with the current policy; try again at the next pull
        if params is not None:
            self._switch_policy(version, params, source)

    def _switch_policy(self, version: int, params, source: str) -> None:
        """Acts with `version` from now on; says so when it is older than the one we had (a
        learner killed between saves comes back with the version of its last save)."""
        if 0 <= version < self.version:
            self.older_policies += 1
            print(f"[wsrl actor] {self.actor_id}: learner {source[:8]} serves policy version {version}, OLDER than version "
                  f"{self.version} this actor had from learner {self.version_source[:8]} (it restarted from its last save); "
                  f"acting with version {version} from now on", flush=True)
        self.version, self.params, self.version_source = version, params, source

    def flush(self, give_up_s: Optional[float] = None) -> bool:
        """Sends the partial batch, if any. False if it could not be delivered."""
        if not self._pending:
            return True
        ack = self._send(self._make_batch(), give_up_s=give_up_s)
        if ack is None:
            return False
        self.sequence += 1
        self._pending = []
        return True

    def _batch_columns(self) -> dict:
        """The pending transitions as arrays, one per column of a batch. `interventions`: the
        steps a human acted in (robot mode; sent as TransitionBatch.interventions)."""
        columns = list(zip(*self._pending))
        return {
            "observations": stack_observations(columns[0]),
            "actions": np.stack(columns[1]).astype(np.float32),
            "rewards": np.asarray(columns[2], np.float32),
            "next_observations": stack_observations(columns[3]),
            "terminals": np.asarray(columns[4], bool),
            "episode_ends": np.asarray(columns[5], bool),
            "policy_versions": np.asarray(columns[6], np.int64),
            "policy_learner_ids": list(columns[7]),
            "interventions": np.asarray(columns[8], bool),
        }

    def _make_batch(self) -> pb.TransitionBatch:
        """The pending transitions as the next batch (sequence `self.sequence`). Each pending
        row is (obs, action, reward, next_obs, terminal, episode_end, version, learner id,
        intervention)."""
        c = self._batch_columns()
        versions = c["policy_versions"]
        if isinstance(c["observations"], dict):  # named parts: one tensor each, frames maybe compressed
            observations = {"observation_parts": codec.encode_parts(c["observations"], self.settings.compress),
                            "next_observation_parts": codec.encode_parts(c["next_observations"], self.settings.compress)}
        else:
            observations = {"observations": codec.encode_tensor(c["observations"]), "next_observations": codec.encode_tensor(c["next_observations"])}
        batch = pb.TransitionBatch(
            actor_id=self.actor_id,
            run_id=self.run_id,
            sequence=self.sequence,
            policy_version=max(0, int(versions.min())),
            policy_learner_id=c["policy_learner_ids"][int(np.argmin(versions))],
            actions=codec.encode_tensor(c["actions"]),
            rewards=codec.encode_tensor(c["rewards"]),
            terminals=codec.encode_tensor(c["terminals"]),
            episode_ends=codec.encode_tensor(c["episode_ends"]),
            **observations,
        )
        if c["interventions"].any():  # optional on the wire: sent only when a human acted
            batch.interventions.CopyFrom(codec.encode_tensor(c["interventions"]))
        return batch

    def report(self, give_up_s: float = 5.0) -> None:
        """Sends episode stats (best effort: statistics, not training data). Waits while the
        last step of an episode is still in the unsent batch: the learner checks a reported
        return against the rewards it has received."""
        if not self.episodes or any(p[5] for p in self._pending):
            return
        request = pb.ReportEpisodesRequest(actor_id=self.actor_id, run_id=self.run_id, episodes=self.episodes)
        try:
            with_retries(lambda: self.client.report(request), threading.Event(), give_up_s, what="report")
            self.episodes = []
        except grpc.RpcError as e:
            print(f"[wsrl actor] episode report failed: {e.code().name}", flush=True)
        self._last_report = time.monotonic()

    # ---- acting ----------------------------------------------------------------------

    def as_observation(self, observation):
        """An env observation as the actor keeps it: a flat float32 vector, or for named parts
        a dict {part: array} checked against the spec (images uint8, copied: an env may hand
        out the same render buffer at every step)."""
        if self.observation_spec.is_flat:
            return np.asarray(observation, np.float32).reshape(-1)
        checked = self.observation_spec.check(observation, batch_ndim=0, where="env observation")
        return {name: np.array(array, copy=True) for name, array in checked.items()}

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The action for `observation`: the current policy's sample, or as the learner's
        fine-tuning asks (`actor_behaviour_json`): uniform random while version 0 is all there
        is (`warmup: random`), the version-0 policy during a JSRL roll-in."""
        b = self.behaviour
        if b.get("warmup") == "random" and self.version == 0:
            return self.schedule_rng.uniform(-1.0, 1.0, self.spec["action_dim"]).astype(np.float32)
        params = self.params
        if self.rollin_steps_left > 0:
            self.rollin_steps_left -= 1
            params = self.pretrained_params
        # Same key stream as Finetuner: split once per action (inside the one compiled call).
        action, self.action_rng = self.policy.sample(params, observation, self.action_rng)
        return action

    def _draw_rollin(self) -> int:
        """JSRL roll-in steps for the episode starting now, on the learner's env-step clock."""
        b = self.behaviour
        if not b.get("jsrl") or self.pretrained_params is None:
            return 0
        env_steps = self.last_ack.env_steps if self.last_ack is not None else self.env_steps
        return jsrl_rollin_steps(self.schedule_rng, env_steps, b["jsrl_initial_prob"], b["jsrl_decay_steps"], b["jsrl_rollin_discount"])

    def step(self) -> None:
        """One env step: maybe pull, act, record the transition, maybe push a batch."""
        s = self.settings
        if self._observation is None:
            observation, _ = self.env.reset(seed=s.seed)
            self._observation = self.as_observation(observation)
            self.rollin_steps_left = self._draw_rollin()
        if s.step_period_s:
            wait = self._last_step_at + s.step_period_s - time.monotonic()
            if wait > 0:
                self.stop.wait(wait)
            self._last_step_at = time.monotonic()
        if s.pull_every and self.env_steps and self.env_steps % s.pull_every == 0:
            self._pull()
        observation = self._observation
        action = self.act(observation)
        next_observation, reward, terminated, truncated, info = self.env.step(action)
        next_observation = self.as_observation(next_observation)
        done = bool(terminated or truncated)
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((observation, action, float(reward), next_observation, bool(terminated), done, self.version, self.version_source, False))
        self.env_steps += 1
        ep = self._episode
        ep["return"] += float(reward)
        ep["length"] += 1
        ep["success"] = ep["success"] or bool(info.get("success", False))
        if done:
            self.episodes.append(pb.Episode(episode_return=ep["return"], length=ep["length"], success=ep["success"], policy_version=max(self.version, 0)))
            self.num_episodes += 1
            self._episode = {"return": 0.0, "length": 0, "success": False}
            observation, _ = self.env.reset()
            self._observation = self.as_observation(observation)
            self.rollin_steps_left = self._draw_rollin()
        else:
            self._observation = next_observation
        if len(self._pending) >= s.batch_size or time.monotonic() - self._pending_since > s.max_latency_s:
            if not self.flush():
                self.stop.set()  # the learner is gone and we were asked to stop: wind down
        if done and s.pull_at_episode_end:
            self._pull()
        if time.monotonic() - self._last_report > s.report_every_s:
            self.report()

    def run(self, num_steps: Optional[int] = None) -> dict:
        """Acts until this actor's env steps reach `num_steps` (default: the setting; 0 means
        until `stop`), then flushes and reports. Calling it again continues the same episode,
        RNG stream and sequence. Returns counters."""
        target = self.settings.num_steps if num_steps is None else num_steps
        if self.policy is None:
            self.connect()
        while not self.stop.is_set() and (target == 0 or self.env_steps < target):
            self.step()
        delivered = self.flush(give_up_s=self.settings.flush_timeout_s)
        self.report()
        return {"env_steps": self.env_steps, "episodes": self.num_episodes, "sequence": self.sequence, "policy_version": self.version,
                "delivered": delivered, "resent_batches": self._resent}

    def close(self) -> None:
        self.client.close()
        self.env.close()
