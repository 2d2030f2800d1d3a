"""A simulated robot for tests and demos: a task env behind the robot env contract (envs/robot.py)
with what makes a robot different from a simulator.

- Real time: every `step` and `reset` takes `step_latency_s` (+- `latency_jitter_s`) of wall
  time, like sending a command and reading the sensors; the actor's control loop holds the rate.
- Operator resets: `wait_for_operator_reset` blocks for `operator_reset_s` (the operator
  putting the scene back) and counts the resets.
- Scripted interventions: for `intervention_steps` steps out of every `intervention_every`,
  a "human" takes over with the task's scripted controller (for the point mass, the waypoint
  controller): the robot executes that action, not the policy's, and reports it in
  `info["intervention_action"]`.
- A scripted safety stop at `safety_stop_at_step` (global step count; -1: never), and
  `emergency_stop` that records when it was called (the robot "halts": further steps are
  refused until the next reset).
- A workspace position: the first `workspace_dims` observation components (the point mass's
  position), reported in `info["workspace_position"]` by reset and step; optional default
  limits (`workspace_bounds`) and the position change per unit action
  (`workspace_action_scale`; the point mass moves MAX_SPEED per unit).

`wsrl actor --env envs.sim_robot:SimulatedPointMassRobot` runs it; tests build it with their own
settings via `SimulatedRobot(...)`.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import gymnasium as gym
import numpy as np

from envs import pointmass
from envs.robot import INTERVENTION_KEY, SAFETY_STOP_KEY, WORKSPACE_KEY


class SimulatedRobot(gym.Wrapper):
    """A task env made to behave like a robot (see the module docstring)."""

    def __init__(
        self,
        env: gym.Env,
        control_hz: float = 20.0,
        step_latency_s: float = 0.002,
        latency_jitter_s: float = 0.001,
        operator_reset_s: float = 0.0,
        intervention_every: int = 0,
        intervention_steps: int = 0,
        intervention_policy: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        safety_stop_at_step: int = -1,
        workspace_dims: int = 2,
        workspace_bounds: Optional[tuple] = None,
        workspace_action_scale: Optional[float] = None,
        seed: int = 0,
    ):
        super().__init__(env)
        if intervention_every and intervention_policy is None:
            raise ValueError("field 'intervention_policy': required when intervention_every > 0")
        if intervention_every and not 0 < intervention_steps <= intervention_every:
            raise ValueError(f"field 'intervention_steps': got {intervention_steps}, expected 1..intervention_every={intervention_every}")
        self.control_hz = float(control_hz)
        self.step_latency_s, self.latency_jitter_s = step_latency_s, latency_jitter_s
        self.operator_reset_s = operator_reset_s
        self.intervention_every, self.intervention_steps = intervention_every, intervention_steps
        self.intervention_policy = intervention_policy
        self.safety_stop_at_step = safety_stop_at_step
        self.workspace_dims = workspace_dims
        self.workspace_bounds = workspace_bounds  # None: no default limits (envs/robot.py)
        self.workspace_action_scale = workspace_action_scale
        self._rng = np.random.default_rng(seed)
        self.total_steps = 0
        self.interventions = 0
        self.operator_resets = 0
        self.emergency_stops: list[float] = []  # time.monotonic() of each call
        self.halted = False
        self._observation: Optional[np.ndarray] = None

    def _latency(self) -> None:
        delay = self.step_latency_s + self._rng.uniform(-1, 1) * self.latency_jitter_s
        if delay > 0:
            time.sleep(delay)

    def wait_for_operator_reset(self) -> None:
        """The operator puts the scene back (takes `operator_reset_s`)."""
        if self.operator_reset_s > 0:
            time.sleep(self.operator_reset_s)
        self.operator_resets += 1

    def emergency_stop(self) -> None:
        """Halt: record the call; steps are refused until the next reset."""
        self.emergency_stops.append(time.monotonic())
        self.halted = True

    def reset(self, **kwargs):
        self._latency()
        self.halted = False
        observation, info = self.env.reset(**kwargs)
        self._observation = np.asarray(observation)
        info = {**info, WORKSPACE_KEY: self._workspace_position()}
        return observation, info

    def _workspace_position(self) -> np.ndarray:
        return np.asarray(self._observation, np.float64).reshape(-1)[: self.workspace_dims].copy()

    def step(self, action):
        if self.halted:
            raise RuntimeError("simulated robot: step after emergency_stop (reset first)")
        self._latency()
        human = None
        if self.intervention_every and self.total_steps % self.intervention_every < self.intervention_steps:
            human = np.asarray(self.intervention_policy(self._observation), np.float32)
            action = human
            self.interventions += 1
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._observation = np.asarray(observation)
        self.total_steps += 1
        info = dict(info)
        info[WORKSPACE_KEY] = self._workspace_position()
        if human is not None:
            info[INTERVENTION_KEY] = human
        if self.total_steps == self.safety_stop_at_step:
            info[SAFETY_STOP_KEY] = True
        return observation, reward, terminated, truncated, info


def pointmass_teleop(observation: np.ndarray) -> np.ndarray:
    """The "human" of the simulated point-mass robot: up the left side, over the wall, down to
    the goal (the waypoints of the scripted controller, chosen from the position alone)."""
    x, y = float(observation[0]), float(observation[1])
    if x < 0 and y < pointmass.WAYPOINTS[0][1] - 0.1:
        index = 0
    elif x < pointmass.WAYPOINTS[1][0] - 0.15:
        index = 1
    else:
        index = 2
    action, _ = pointmass.waypoint_action(np.asarray(observation, np.float32), index)
    return action


class SimulatedPointMassRobot(SimulatedRobot):
    """The built-in point-mass task as a 20 Hz robot with 2 ms latency, a 0.05 s operator reset
    and a 5-step human takeover every 100 steps (the training reward convention included)."""

    def __init__(self):
        from envs.tasks import get_task

        super().__init__(
            get_task("pointmass-goal").make_env(0, training=True),
            control_hz=20.0,
            step_latency_s=0.002,
            latency_jitter_s=0.001,
            operator_reset_s=0.05,
            intervention_every=100,
            intervention_steps=5,
            intervention_policy=pointmass_teleop,
            workspace_action_scale=pointmass.MAX_SPEED,
        )
