"""Robot mode of the actor (`wsrl actor --robot`): a fixed-rate control loop the learner never blocks.

A robot runs in real time: a control step cannot wait for a slow or unreachable learner. So
`RobotActor` (an `ActorLoop` with the same acting: random warmup, JSRL roll-ins, `Policy.sample`
and the same RNG streams) only *hands off* each full batch to a bounded in-memory queue and
keeps stepping. Two background threads do the rest (actor/robot_sender.py): a spooler that
writes every handed-off batch to disk before it may be sent, and a sender that pushes the
spooled batches in order and drops each once the learner reports it durable.

A third thread fetches new policy versions; the control loop adopts them only when an episode
starts (unless `switch_mid_episode`). Safety, per step: the action is clipped to the action
bounds, limited to `max_action_change` from the previous executed action and, with workspace
limits in 'project' mode, limited so the position the env reports stays inside them (limits in
'stop' mode make a position outside them a safety stop). A human takeover, through a teleop
device polled before acting (`teleop`: keyboard, SpaceMouse, a callable; actor/teleop.py) or
reported by the env in `info["intervention_action"]`, is stored in place of the policy's
action and flagged as an intervention.
Robot hooks (envs/robot.py): `wait_for_operator_reset()` before every reset, `emergency_stop()`
on e-stop, safety stop and shutdown; `info["safety_stop"]` ends the episode and pauses.

Control: `pause()` / `resume()` (SIGUSR1 / SIGUSR2 under `wsrl actor`) hold the robot (no steps,
no calls) while the sender keeps sending; `emergency_stop()` (SIGQUIT) stops stepping within
one control period, calls the env's `emergency_stop()`, then shuts down cleanly (flushing).
A fourth thread reports the actor's state to the learner (ReportActorState: paused, e-stopped,
control-period statistics) every STATE_EVERY_S and at once when it changes, so `wsrl status`
shows a paused robot as paused; the answer carries the operator's remote commands (`wsrl
pause|resume|estop`), carried out as the signals are and acknowledged in the next report.

Timing statistics (period = step start to step start; work = act + env step + hand-off): the
status line shows those of the steps since the previous line, the summary those of the run.

Files: this one holds `RobotActor`'s control loop (stepping, episodes, hand-off, policy
adoption, timing statistics); `robot_sender.py` the spooler and sender threads,
`robot_controls.py` pause/resume/e-stop, the backlog hold and the state reports with their
remote commands, `robot_workspace.py` the workspace limits, `teleop.py` the teleop devices.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Optional

import grpc
import jax
import numpy as np

from actor.envs import to_policy_units
from actor.interrupts import SignalSafeEvent
from actor.loop import ActorLoop, ActorSettings
from actor.robot_controls import RobotControls
from actor.robot_sender import BatchSender
from actor.robot_workspace import RobotWorkspace
from actor.teleop import close_teleop, make_teleop
from envs.robot import (
    INTERVENTION_KEY, SAFETY_STOP_KEY, SUCCESS_KEY, check_robot_env, find_attribute, intervention_action, workspace_position,
)
from protos.wsrl.v1 import learner_pb2 as pb

PULL_INTERVAL_S = 2.0  # background policy polls between episode-end requests
RECENT_STEPS = 1000  # the p99 of the reported control-period statistics is over these steps


def period_stats(periods, work, target_s: float) -> dict:
    """Control-period statistics in ms: mean, p99 and max period, p99 and max work time, and
    the overruns (work > target) among these steps."""
    p = np.asarray(periods, np.float64) if len(periods) else np.zeros(1)
    w = np.asarray(work, np.float64) if len(work) else np.zeros(1)
    return {
        "steps": len(work), "period_mean_ms": 1e3 * float(p.mean()), "period_p99_ms": 1e3 * float(np.percentile(p, 99)),
        "period_max_ms": 1e3 * float(p.max()), "period_median_ms": 1e3 * float(np.median(p)),
        "work_p99_ms": 1e3 * float(np.percentile(w, 99)), "work_max_ms": 1e3 * float(w.max()),
        "overruns": int(np.count_nonzero(w > target_s)) if len(work) else 0,
    }


def format_period_stats(stats: dict, target_s: float) -> str:
    """`period_stats` as one phrase for the status line and the summary."""
    return (f"period mean {stats['period_mean_ms']:.2f} ms, p99 {stats['period_p99_ms']:.2f} ms, max {stats['period_max_ms']:.2f} ms "
            f"(target {1e3 * target_s:.2f} ms), work p99 {stats['work_p99_ms']:.2f} ms, {stats['overruns']} overruns in {stats['steps']} steps")


class RobotActor(RobotControls, RobotWorkspace, ActorLoop):
    """`ActorLoop` for a real-time robot (module docstring). `run()` holds `control_hz`."""

    def __init__(self, settings: ActorSettings, stop: Optional[threading.Event] = None):
        if not settings.robot:
            raise ValueError("actor setting 'robot': RobotActor needs robot=True (wsrl actor --robot)")
        super().__init__(settings, stop)
        info = check_robot_env(self.env)
        control_hz = settings.control_hz or info["control_hz"]
        if not control_hz:
            raise ValueError(f"actor setting 'control_hz': env {settings.env!r} has no 'control_hz' attribute; "
                             "give --control-hz HZ (a number > 0: robot mode runs at a fixed rate)")
        self.control_hz = float(control_hz)
        self.period = 1.0 / self.control_hz
        self.hooks = {name: find_attribute(self.env, name) for name in info["hooks"]}
        # Policy units (what the policy outputs and what is stored): the outer action space.
        self._low = np.asarray(self.env.action_space.low, np.float32)
        self._high = np.asarray(self.env.action_space.high, np.float32)
        # Interventions arrive in the robot's own units: those of the unwrapped env.
        self._base_space = self.env.unwrapped.action_space
        self._base_low = np.asarray(self._base_space.low, np.float64)
        self._base_high = np.asarray(self._base_space.high, np.float64)
        self.sender = BatchSender(self, settings.queue_batches)
        # Set from signal handlers (SIGUSR1/SIGUSR2/SIGQUIT) while the control loop may be in
        # `_estop.wait`: a threading.Event's lock is not reentrant, so a handler landing while the
        # loop holds it would deadlock the robot. These flags take no lock; a wait polls every
        # 2 ms and ends exactly at its timeout, so the control period keeps its precision.
        self._paused = SignalSafeEvent(poll_s=0.002)
        self._estop = SignalSafeEvent(poll_s=0.002)
        self._closing = threading.Event()
        self._pause_reason = ""
        # State reports: woken (from signal handlers too) when the state changes.
        self._state_wake = SignalSafeEvent(poll_s=0.01)
        self._state_lock = threading.Lock()
        self._state_thread: Optional[threading.Thread] = None
        self._acked_command = 0  # the highest remote command id carried out
        self._command_source = ""  # the learner_id those ids count in
        self.remote_commands = 0
        self._pull_request = threading.Event()
        self._fresh_lock = threading.Lock()
        self._fresh: Optional[tuple] = None  # (version, params, learner id) not yet adopted
        self._episodes_lock = threading.Lock()
        self._puller: Optional[threading.Thread] = None
        self._prev_action: Optional[np.ndarray] = None
        self._prev_tick: Optional[float] = None
        self._handoff_full_warned = False
        self._ep_counts = {"interventions": 0, "overruns": 0}
        self.workspace = self._workspace_limits()
        self._workspace_position: Optional[np.ndarray] = None
        self.teleop = make_teleop(settings.teleop, self.spec["action_dim"]) if settings.teleop else None
        # Counters (read by tests, the status line and the summary).
        self.overruns = 0
        self.interventions = 0  # steps a human acted in (teleop device or the env's hook)
        self.teleop_steps = 0  # of which through the teleop device
        self.safety_stops = 0  # the env's and the workspace's
        self.workspace_stops = 0
        self.projected_steps = 0  # steps whose action the workspace projection changed
        self.emergency_stop_at: Optional[float] = None  # monotonic time of the e-stop hook call
        self.periods: collections.deque = collections.deque(maxlen=100_000)  # step start to step start, s
        self.work_times: collections.deque = collections.deque(maxlen=100_000)  # step work, s
        self.handoff_times: collections.deque = collections.deque(maxlen=100_000)  # batch build + queue put, s
        self.period_max = 0.0  # over the whole run (the deques keep the last 100,000 steps)
        # For the state reports (read by another thread: under _stats_lock).
        self._stats_lock = threading.Lock()
        self._period_sum, self._period_count, self._control_steps = 0.0, 0, 0
        self._recent_periods: collections.deque = collections.deque(maxlen=RECENT_STEPS)
        self._recent_work: collections.deque = collections.deque(maxlen=RECENT_STEPS)
        self._window = self._new_window()  # since the last status line

    @staticmethod
    def _new_window() -> dict:
        # Bounded: with status lines off (status_every_s=0) nothing ever empties it.
        return {"periods": collections.deque(maxlen=100_000), "work": collections.deque(maxlen=100_000)}

    def control_stats(self) -> pb.ControlStats:
        """The run's control-period statistics for the learner: mean and max period and the
        overruns over the run, p99 of period and work over the last RECENT_STEPS steps."""
        with self._stats_lock:
            periods, work = list(self._recent_periods), list(self._recent_work)
            total, count, steps = self._period_sum, self._period_count, self._control_steps
        recent = period_stats(periods, work, self.period)
        return pb.ControlStats(control_hz=self.control_hz, steps=steps, period_mean_ms=1e3 * total / count if count else 0.0,
                               period_p99_ms=recent["period_p99_ms"] if periods else 0.0, period_max_ms=1e3 * self.period_max,
                               work_p99_ms=recent["work_p99_ms"] if work else 0.0, overruns=min(self.overruns, steps))

    # ---- learner side ------------------------------------------------------------------

    def connect(self) -> pb.HandshakeResponse:
        """As `ActorLoop.connect`, then compiles the policy (so the first control step is not
        an overrun) and starts the background threads."""
        hello = super().connect()
        if hello.mode != "async":
            print(f"[wsrl actor] {self.actor_id}: the learner runs in {hello.mode} mode, which holds pushes back; the robot keeps "
                  "its rate but batches pile up in the spool. Start the learner with --mode async for robots.", flush=True)
        # A throwaway key: the actor's own key stream stays as in ActorLoop.
        self.policy.sample(self.params, self.observation_spec.zeros(), jax.random.PRNGKey(0))
        self.sender.start()
        self._puller = threading.Thread(target=self._pull_loop, name="wsrl-robot-puller", daemon=True)
        self._puller.start()
        self._state_wake.set()  # the first report at once: the learner knows this actor takes commands
        self._state_thread = threading.Thread(target=self._state_loop, name="wsrl-robot-state", daemon=True)
        self._state_thread.start()
        return hello

    def _pull_loop(self) -> None:
        """Fetches newer policies in the background; the control loop adopts them at episode starts."""
        while not self._closing.is_set():
            self._pull_request.wait(PULL_INTERVAL_S)
            self._pull_request.clear()
            if self._closing.is_set():
                return
            with self._fresh_lock:
                have = self._fresh or (self.version, None, self.version_source)
            try:
                version, params, source = self.client.pull(self.actor_id, have[0], have[2])
            except grpc.RpcError:
                continue  # learner unreachable: keep acting with what we have
            except Exception as e:  # a corrupt policy must not kill the robot's loop
                print(f"[wsrl actor] {self.actor_id}: policy pull failed: {e}", flush=True)
                continue
            if params is not None:
                with self._fresh_lock:
                    self._fresh = (version, params, source)

    def _adopt_policy(self) -> None:
        with self._fresh_lock:
            fresh, self._fresh = self._fresh, None
        if fresh is not None:
            self._switch_policy(*fresh)

    def report_episodes(self) -> None:
        """Sends episode stats from the sender thread (best effort: one attempt)."""
        with self._episodes_lock:
            episodes, self.episodes = self.episodes, []
        if not episodes:
            return
        request = pb.ReportEpisodesRequest(actor_id=self.actor_id, run_id=self.run_id, episodes=episodes)
        try:
            self.client.report(request)
        except grpc.RpcError:
            with self._episodes_lock:
                self.episodes = episodes + self.episodes  # again next time

    def status_line(self) -> str:
        """One line for the operator: progress, timing (of the steps since the previous line),
        interventions, data in flight."""
        window, self._window = self._window, self._new_window()
        timing = format_period_stats(period_stats(window["periods"], window["work"], self.period), self.period) if window["work"] else "no steps"
        return (f"[wsrl actor] {self.actor_id}: {self.env_steps} steps, {self.num_episodes} episodes at {self.control_hz:g} Hz, "
                f"{self.overruns} overruns, {self.interventions} interventions, {self.safety_stops} safety stops, policy version "
                f"{self.version}, {self.sender.backlog()} batch(es) unsent" + (f" (+{len(self._pending)} steps not yet batched)" if self._pending else "")
                + f", learner {'up' if self.sender.learner_up else 'UNREACHABLE'}"
                + (", PAUSED" if self.paused else "") + f"; since the last line: {timing}")

    # ---- control loop ------------------------------------------------------------------

    def _begin_episode(self) -> None:
        """Operator reset, env reset, then (only here, by default) a new policy version."""
        wait = self.hooks.get("wait_for_operator_reset")
        if wait is not None:
            wait()
        first = self.num_episodes == 0 and self.env_steps == 0
        observation, info = self.env.reset(seed=self.settings.seed) if first else self.env.reset()
        if self.workspace is not None:
            self._workspace_position = workspace_position(info, len(self.workspace.low), "reset")
            if self.workspace.mode == "stop" and not self.workspace.contains(self._workspace_position):
                # No step from outside: hold, and reset again (operator first) once resumed.
                print(f"[wsrl actor] {self.actor_id}: WORKSPACE LIMIT: the reset left the position "
                      f"{np.round(self._workspace_position, 4).tolist()} outside [{self.workspace.low.tolist()}, {self.workspace.high.tolist()}]; "
                      "actor paused (resume with SIGUSR2 once the robot is back inside)", flush=True)
                self._hold("workspace limit")
                return
        self._observation = self.as_observation(observation)
        self._adopt_policy()
        self.rollin_steps_left = self._draw_rollin()
        self._prev_action = None
        self._ep_counts = {"interventions": 0, "overruns": 0}

    def _robot_step(self) -> bool:
        """One control step: act (or the human, through the teleop device), make it safe,
        execute, store. True on a safety stop."""
        s = self.settings
        if s.switch_mid_episode:
            self._adopt_policy()
        observation = self._observation
        command = self.teleop(observation) if self.teleop is not None else None
        if command is not None:
            command = np.asarray(command, np.float32).reshape(-1)
            if command.shape != self._low.shape:
                raise ValueError(f"--teleop {s.teleop}: returned {command.shape[0]} action components, expected {self._low.shape[0]}")
        by_teleop = command is not None
        action = np.clip(command if by_teleop else np.asarray(self.act(observation), np.float32), self._low, self._high)
        if s.max_action_change and self._prev_action is not None:
            action = np.clip(action, self._prev_action - s.max_action_change, self._prev_action + s.max_action_change)
        if self.workspace is not None and self.workspace.mode == "project":
            projected = self._project(action)  # last: the workspace outranks the change limit
            if not np.array_equal(projected, action):
                self.projected_steps += 1
            action = projected
        next_observation, reward, terminated, truncated, info = self.env.step(action)
        next_observation = self.as_observation(next_observation)
        stored = action
        human = intervention_action(info, self._base_space) if INTERVENTION_KEY in info else None
        if human is not None:  # the robot executed the human's action: that is the data
            stored = to_policy_units(human, self._base_low, self._base_high)
        intervened = by_teleop or human is not None
        if intervened:
            self.interventions += 1
            self.teleop_steps += int(by_teleop)
            self._ep_counts["interventions"] += 1
        safety = bool(info.get(SAFETY_STOP_KEY, False))
        if self.workspace is not None:
            self._workspace_position = workspace_position(info, len(self.workspace.low), "step")
            if self.workspace.mode == "stop" and not self.workspace.contains(self._workspace_position):
                safety = True
                self.workspace_stops += 1
                print(f"[wsrl actor] {self.actor_id}: WORKSPACE LIMIT: position {np.round(self._workspace_position, 4).tolist()} outside "
                      f"[{self.workspace.low.tolist()}, {self.workspace.high.tolist()}]", flush=True)
        done = bool(terminated or truncated or safety)  # a safety stop is a truncation, not a terminal
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((observation, stored, float(reward), next_observation, bool(terminated), done, self.version, self.version_source, intervened))
        self._prev_action = stored
        self.env_steps += 1
        ep = self._episode
        ep["return"] += float(reward)
        ep["length"] += 1
        ep["success"] = ep["success"] or bool(info.get(SUCCESS_KEY, False))
        if done:
            self._end_episode(safety)
        else:
            self._observation = next_observation
        t0 = time.perf_counter()
        if self._pending and (len(self._pending) >= s.batch_size or done or time.monotonic() - self._pending_since > s.max_latency_s):
            self._hand_off()
        self.handoff_times.append(time.perf_counter() - t0)
        return safety

    def _end_episode(self, safety: bool) -> None:
        ep, counts = self._episode, self._ep_counts
        with self._episodes_lock:
            self.episodes.append(pb.Episode(episode_return=ep["return"], length=ep["length"], success=ep["success"], policy_version=max(self.version, 0)))
        self.num_episodes += 1
        print(f"[wsrl actor] {self.actor_id}: episode {self.num_episodes}: return {ep['return']:.3g}, {ep['length']} steps, "
              f"{counts['interventions']} interventions, {counts['overruns']} overruns, policy version {self.version}"
              + (", success" if ep["success"] else "") + (", SAFETY STOP" if safety else ""), flush=True)
        self._episode = {"return": 0.0, "length": 0, "success": False}
        self._observation = None  # the next episode starts (operator reset) before the next step
        self._pull_request.set()

    def _hand_off(self) -> None:
        """Pending transitions -> the sender's queue, without ever waiting for it."""
        if self.sender.submit(self._make_batch()):
            self.sequence += 1
            self._pending = []
        elif not self._handoff_full_warned:
            self._handoff_full_warned = True  # the disk cannot keep up; keep collecting, retry next step
            print(f"[wsrl actor] {self.actor_id}: the spool queue is full ({self.settings.queue_batches} batches); is the spool disk stalled?", flush=True)

    def run(self, num_steps: Optional[int] = None) -> dict:
        """Steps at `control_hz` until `num_steps` (default: the setting; 0: until stopped),
        `stop` or an e-stop; then flushes. Call once per RobotActor. Returns counters."""
        target = self.settings.num_steps if num_steps is None else num_steps
        if self.policy is None:
            self.connect()
        period = self.period
        next_tick: Optional[float] = None
        try:
            while not self.stop.is_set() and (target == 0 or self.env_steps < target):
                if self._estop.is_set():
                    break
                self._check_backlog()
                if self._paused.is_set():
                    if self._pending:  # the learner gets what was collected, not after the pause
                        self._hand_off()
                    self._estop.wait(min(period, 0.05))  # hold; re-check stop/resume often
                    next_tick = self._prev_tick = None  # the clock restarts on resume
                    continue
                if self._observation is None:
                    self._begin_episode()
                    next_tick = self._prev_tick = None  # a reset is not a control step
                    continue
                now = time.monotonic()
                if next_tick is None:
                    next_tick = now
                elif now < next_tick:
                    self._estop.wait(next_tick - now)  # an e-stop wakes us at once
                    continue
                started = time.monotonic()
                window = self._window
                if self._prev_tick is not None:
                    self.periods.append(started - self._prev_tick)
                    window["periods"].append(started - self._prev_tick)
                    self.period_max = max(self.period_max, started - self._prev_tick)
                    with self._stats_lock:
                        self._recent_periods.append(started - self._prev_tick)
                        self._period_sum += started - self._prev_tick
                        self._period_count += 1
                self._prev_tick = started
                safety = self._robot_step()
                work = time.monotonic() - started
                self.work_times.append(work)
                window["work"].append(work)
                with self._stats_lock:
                    self._recent_work.append(work)
                    self._control_steps += 1
                if work > period:
                    self.overruns += 1
                    self._ep_counts["overruns"] += 1
                # Late: start the next step at once and keep the period from there; never a
                # burst of quick steps to catch up with the schedule.
                next_tick = max(next_tick + period, time.monotonic())
                if safety:
                    self.safety_stops += 1
                    self._call_emergency_stop(estop=False)
                    print(f"[wsrl actor] {self.actor_id}: SAFETY STOP: robot stopped, actor paused "
                          "(resume with SIGUSR2 once the scene is safe)", flush=True)
                    self._hold("safety stop")
            if self._estop.is_set():
                self._call_emergency_stop()
                print(f"[wsrl actor] {self.actor_id}: EMERGENCY STOP: robot stopped; flushing and exiting", flush=True)
        finally:
            if self._pending:
                self._hand_off()
            delivered = self.sender.finish(self.settings.flush_timeout_s)
            if self._state_thread is not None:
                self.report_state(timeout_s=1.0)  # the last state (e.g. e-stopped), best effort
            self._closing.set()
            self._pull_request.set()
        self.report()
        if self.sender.error is not None:  # e.g. ActorError: the learner refused a batch
            raise self.sender.error
        return self.summary(delivered)

    def summary(self, delivered: bool) -> dict:
        """Counters of the run (ActorLoop.run's keys plus the robot's). Period statistics over
        the last 100,000 steps (period_max_ms: the whole run)."""
        stats = period_stats(self.periods, self.work_times, self.period)
        return {
            "env_steps": self.env_steps, "episodes": self.num_episodes, "sequence": self.sequence, "policy_version": self.version,
            "delivered": delivered, "resent_batches": self._resent, "control_hz": self.control_hz, "overruns": self.overruns,
            "interventions": self.interventions, "teleop_steps": self.teleop_steps, "safety_stops": self.safety_stops,
            "workspace_stops": self.workspace_stops, "projected_steps": self.projected_steps, "older_policies": self.older_policies,
            "emergency_stopped": self._estop.is_set(),
            **{k: v for k, v in stats.items() if k not in ("steps", "overruns")},
            "period_max_ms": 1e3 * self.period_max, "period_steps": stats["steps"],
        }

    def period_summary_line(self) -> str:
        """The run's control-period statistics, for the exit summary."""
        stats = period_stats(self.periods, self.work_times, self.period)
        stats["period_max_ms"], stats["overruns"], stats["steps"] = 1e3 * self.period_max, self.overruns, self.env_steps
        return f"[wsrl actor] {self.actor_id}: control at {self.control_hz:g} Hz: " + format_period_stats(stats, self.period)

    def close(self) -> None:
        """Shutdown: the robot is stopped (`emergency_stop` is safe to call again), threads end."""
        self._closing.set()
        self._pull_request.set()
        try:
            self._call_emergency_stop(estop=False)
        finally:
            close_teleop(self.teleop)
            super().close()
