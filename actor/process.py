"""The `wsrl actor` process: picks the actor loop (simulated env or robot), installs its
signal handlers, connects and runs it. Kept apart from `actor/loop.py` so that the plain loop
and the robot loop, which builds on it, do not import each other.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

from actor.loop import EXIT_EMERGENCY_STOP, ActorLoop, ActorSettings
from actor.robot import RobotActor
from protos import codec


def run_actor(settings: ActorSettings, install_signal_handlers: bool = True, stop: Optional[threading.Event] = None) -> dict:
    """`wsrl actor`: runs one actor; SIGINT/SIGTERM stop it after flushing what it has. In
    robot mode also SIGUSR1 pauses, SIGUSR2 resumes and SIGQUIT is an emergency stop (the
    process then exits with EXIT_EMERGENCY_STOP: `exit_status`). A given `stop` event is the
    caller's (its SIGINT/SIGTERM handling too: `actor.interrupts`)."""
    own_stop = stop is None
    stop = stop if stop is not None else threading.Event()
    if settings.robot:
        from actor.robot import (
            RobotActor,  # imported only here: a sim actor never needs it
        )

        loop: ActorLoop = RobotActor(settings, stop)
    else:
        loop = ActorLoop(settings, stop)
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        if own_stop:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        if settings.robot:
            # Handlers only set events; the control loop acts on them between steps.
            signal.signal(signal.SIGUSR1, lambda *_: loop.pause())
            signal.signal(signal.SIGUSR2, lambda *_: loop.resume())
            signal.signal(signal.SIGQUIT, lambda *_: loop.emergency_stop())
    try:
        hello = loop.connect()
        print(f"[wsrl actor] {loop.actor_id} (run {codec.run_label(loop.run_id)}) connected to learner {hello.learner_id} at {settings.learner}: "
              f"{hello.mode} mode, warmup {hello.warmup_steps} steps, policy version {loop.version}", flush=True)
        result = loop.run()
        extra = ""
        if settings.robot:
            extra = (f", {result['interventions']} interventions ({result['teleop_steps']} by --teleop), {result['overruns']} overruns of the "
                     f"{result['control_hz']:g} Hz period, {result['safety_stops']} safety stops ({result['workspace_stops']} workspace), "
                     f"{result['projected_steps']} steps projected into the workspace"
                     + (f"; EMERGENCY STOP (exit status {EXIT_EMERGENCY_STOP})" if result["emergency_stopped"] else ""))
            print(loop.period_summary_line(), flush=True)
        print(f"[wsrl actor] {loop.actor_id} done: {result['env_steps']} env steps, {result['episodes']} episodes, last policy version {result['policy_version']}{extra}", flush=True)
        return result
    finally:
        loop.close()
