"""Holding and stopping the robot: pause, resume, e-stop and the backlog hold, from signals or the learner's commands.

Part of robot mode (actor/robot.py). `pause()` / `resume()` (SIGUSR1 / SIGUSR2 under `wsrl
actor`) hold the robot (no steps, no env calls) while the sender keeps sending;
`emergency_stop()` (SIGQUIT) makes the control loop stop stepping within one control period,
call the env's `emergency_stop()` and shut down cleanly. These only set events; the control
loop acts on them between steps. The robot also holds itself while the undelivered data passes
`max_backlog_mb` (`_check_backlog`). A background thread reports the actor's state to the
learner (ReportActorState: paused, e-stopped, control-period statistics) every STATE_EVERY_S
and at once when it changes; the answer carries the operator's remote commands (`wsrl
pause|resume|estop`), carried out as the signals are and acknowledged in the next report.
"""

from __future__ import annotations

import time

import grpc

from protos.wsrl.v1 import learner_pb2 as pb

STATE_EVERY_S = 0.5  # state reports (heartbeat; remote commands arrive with their answers)

BACKLOG_FULL = "backlog full"  # the pause reason of `RobotActor._check_backlog`


class RobotControls:
    """`RobotActor`'s operator controls and state reports (module docstring): a mixin of
    `RobotActor`, whose `__init__` sets the events and counters these methods use and whose
    `control_stats()` fills the reports."""

    # ---- operator controls (thread- and signal-safe: they only set events) ----------

    def pause(self, reason: str = "operator") -> None:
        """Hold the robot: no more steps (and no env calls) until `resume()`; data keeps flowing."""
        if not self._paused.is_set():
            self._hold(reason)
            print(f"[wsrl actor] {self.actor_id}: paused{' by the learner (wsrl pause)' if reason == 'remote' else ''} "
                  "(resume: SIGUSR2 or wsrl resume)", flush=True)

    def _hold(self, reason: str) -> None:
        self._pause_reason = reason
        self._paused.set()
        self._state_wake.set()  # the learner hears of it now, not at the next heartbeat

    def _check_backlog(self) -> None:
        """Holds the robot while the undelivered data passes `max_backlog_mb` (the learner is
        unreachable): collecting more would only grow the spool without bound. Lets it go on
        by itself once half of that has been delivered, unless someone paused it meanwhile."""
        cap = self.settings.max_backlog_mb * 1e6
        if not cap:
            return
        held = self._pause_reason == BACKLOG_FULL and self._paused.is_set()
        if not held and not self._paused.is_set() and self.sender.outbox_bytes > cap:
            self._hold(BACKLOG_FULL)
            print(f"[wsrl actor] {self.actor_id}: {self.sender.outbox_bytes / 1e6:.0f} MB not yet delivered (max_backlog_mb "
                  f"{self.settings.max_backlog_mb:g}): the robot holds still until the learner has taken half of it", flush=True)
        elif held and self.sender.outbox_bytes <= cap / 2:
            self.resume()

    def resume(self) -> None:
        """Continue stepping after `pause()` or a safety stop."""
        if self._paused.is_set():
            self._paused.clear()
            self._pause_reason = ""
            self._state_wake.set()
            print(f"[wsrl actor] {self.actor_id}: resumed", flush=True)

    def emergency_stop(self) -> None:
        """Stop stepping within one control period, call the env's `emergency_stop()`, then
        shut down cleanly (the data collected so far is flushed)."""
        self._estop.set()
        self._state_wake.set()

    def _call_emergency_stop(self, estop: bool = True) -> None:
        """The env's `emergency_stop()` hook, if any; `estop`: record when (the operator's e-stop)."""
        hook = self.hooks.get("emergency_stop")
        if hook is not None:
            hook()
        if estop and self.emergency_stop_at is None:
            self.emergency_stop_at = time.monotonic()

    # ---- state reports (their answers carry the learner's remote commands) -------

    def report_state(self, timeout_s: float = 2.0) -> bool:
        """One ReportActorState call; carries out the remote commands of its answer (each
        once, in order) and acknowledges them in the next report (sent at once). False when
        the learner could not be reached."""
        with self._state_lock:
            request = pb.ActorStateReport(actor_id=self.actor_id, run_id=self.run_id, paused=self.paused, estopped=self._estop.is_set(),
                                          pause_reason=self._pause_reason[:64], control=self.control_stats(),
                                          acked_command=self._acked_command, learner_id=self._command_source)
            try:
                answer = self.client.report_state(request, timeout_s)
            except grpc.RpcError:
                return False
            if answer.learner_id != self._command_source:  # a (restarted) learner counts its ids anew
                self._command_source, self._acked_command = answer.learner_id, 0
            if answer.learner_finished:
                self.learner_done()  # the control loop stops the robot as on Ctrl-C
            for command in answer.commands:
                if command.id > self._acked_command:
                    self._apply_command(command.kind)
                    self._acked_command = command.id
                    self._state_wake.set()
            return True

    def _apply_command(self, kind: int) -> None:
        self.remote_commands += 1
        if kind == pb.ACTOR_COMMAND_PAUSE:
            self.pause("remote")
        elif kind == pb.ACTOR_COMMAND_RESUME:
            self.resume()
        elif kind == pb.ACTOR_COMMAND_ESTOP:
            print(f"[wsrl actor] {self.actor_id}: EMERGENCY STOP from the learner (wsrl estop)", flush=True)
            self.emergency_stop()

    def _state_loop(self) -> None:
        """Reports the state every STATE_EVERY_S, and at once after a change."""
        while not self._closing.is_set():
            self._state_wake.wait(STATE_EVERY_S)
            self._state_wake.clear()
            if self._closing.is_set():
                return
            self.report_state()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()
