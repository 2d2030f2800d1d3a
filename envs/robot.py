"""The robot env contract: what `wsrl actor --env package.module:YourRobotEnv` runs.

A robot env is a plain `gymnasium.Env` the user writes for their robot:

- `observation_space`: a 1-D Box (a state vector), or a gymnasium `Dict` of named parts for a
  robot with cameras: at most one 1-D float Box named "state" (proprioception) plus any number
  of camera images, each a uint8 Box of shape (H, W, C) with C in 1, 3, 4, fixed per camera
  (e.g. `Dict({"state": Box(-inf, inf, (7,)), "wrist": Box(0, 255, (64, 64, 3), uint8)})`;
  part names are 1-64 characters of [A-Za-z0-9_]). Observations are then dicts with exactly
  those keys; frames travel to the learner as uint8 (optionally compressed, `--compress zstd`)
  and are cast to float only on the learner's device (envs/observations.py).
- `action_space`: a Box with finite bounds (the actor rescales the policy's [-1, 1] actions to
  it and clips every action to it).
- `reset(seed=None, options=None) -> (observation, info)`, `step(action) -> (observation,
  reward, terminated, truncated, info)`, `close()`. `step` should return as soon as the command
  is sent and the next observation read: the actor holds the control rate, not the env.

Optional hooks, looked up by name; none is required and nothing in the project needs editing:

- `info["intervention_action"]` (array, action-space shape, in the env's own units): a human
  took over this step (teleop, spacemouse, ...) and the robot executed this action instead of
  the policy's. The actor stores it in the transition in place of the policy's action and
  counts the step as an intervention.
- `info["success"]` (bool): the task succeeded at this step (sparse-reward tasks; it is
  reported in the episode statistics).
- `info["safety_stop"]` (bool): the env detected an unsafe state. The actor ends the episode
  (as a truncation: no terminal), calls `emergency_stop()` if the env has it, and pauses until
  the operator resumes.
- `wait_for_operator_reset(self) -> None`: called before every reset; blocks until the operator
  has reset the scene (a keyboard prompt, a foot pedal). Without it the actor resets at once.
- `emergency_stop(self) -> None`: bring the robot to a safe halt now (called on e-stop, on a
  safety stop and on shutdown). It must return quickly and be safe to call more than once.
- `control_hz` (attribute): the robot's control rate, the actor's default `--control-hz`.

Workspace limits (optional; the actor enforces them, docs/robot.md):

- `info["workspace_position"]` (array of k floats, from `reset` and every `step`): the
  quantity the limits bound, e.g. the end-effector position. Required once limits are set.
- `workspace_bounds` (attribute): `(low, high)`, k floats each: the default limits
  (`--workspace-low/--workspace-high` override them).
- `workspace_action_scale` (attribute; a float or k floats): for `--workspace-mode project`,
  how far one step moves position component i per unit of action component i in the env's
  own units (a delta-position controller: next ~= position + scale * action[:k]).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import gymnasium as gym
import numpy as np

from envs.observations import ObservationSpec

INTERVENTION_KEY = "intervention_action"
SUCCESS_KEY = "success"
SAFETY_STOP_KEY = "safety_stop"
WORKSPACE_KEY = "workspace_position"
HOOKS = ("wait_for_operator_reset", "emergency_stop")


def check_robot_env(env: gym.Env) -> dict[str, Any]:
    """Checks `env` against the contract; returns what it offers: the optional hooks it
    implements and its `control_hz` (None if it has none). Raises ValueError naming the field."""
    base = env.unwrapped
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(f"robot env {type(base).__name__}: field 'action_space' is {env.action_space}, expected a gymnasium Box")
    if not isinstance(env.observation_space, (gym.spaces.Box, gym.spaces.Dict)):
        raise ValueError(f"robot env {type(base).__name__}: field 'observation_space' is {env.observation_space}, expected a gymnasium Box "
                         "(a state vector) or Dict (a 'state' vector and uint8 camera images)")
    try:
        ObservationSpec.from_space(env.observation_space)
    except ValueError as e:
        raise ValueError(f"robot env {type(base).__name__}: field 'observation_space': {e}") from None
    if not (np.all(np.isfinite(env.action_space.low)) and np.all(np.isfinite(env.action_space.high))):
        raise ValueError(
            f"robot env {type(base).__name__}: field 'action_space' has infinite bounds, expected finite low/high "
            "(the actor clips every action to them)"
        )
    control_hz = find_attribute(env, "control_hz")
    if control_hz is not None and not (isinstance(control_hz, (int, float)) and control_hz > 0):
        raise ValueError(f"robot env {type(base).__name__}: field 'control_hz' is {control_hz!r}, expected a number > 0")
    return {"hooks": [name for name in HOOKS if callable(find_attribute(env, name))], "control_hz": control_hz}


def find_attribute(env: gym.Env, name: str) -> Optional[Any]:
    """`name` on the env or any wrapper around it (gymnasium's `get_wrapper_attr`), else None:
    wrappers such as TimeLimit or RescaleAction do not hide a hook of the env they wrap."""
    try:
        return env.get_wrapper_attr(name)
    except AttributeError:
        return None


def intervention_action(info: Mapping, action_space: gym.spaces.Box) -> Optional[np.ndarray]:
    """The human's action of this step, checked against the action space, or None."""
    value = info.get(INTERVENTION_KEY)
    if value is None:
        return None
    action = np.asarray(value, np.float32)
    if action.shape != action_space.shape:
        raise ValueError(
            f"robot env info['{INTERVENTION_KEY}']: shape {action.shape}, expected {action_space.shape} (the action space's)"
        )
    if not np.all(np.isfinite(action)):
        raise ValueError(f"robot env info['{INTERVENTION_KEY}']: {action.tolist()} is not finite")
    return np.clip(action, action_space.low, action_space.high)


def workspace_position(info: Mapping, dims: int, where: str) -> np.ndarray:
    """`info["workspace_position"]` as k=`dims` finite floats; ValueError naming the field if
    the env does not report it (it must, once workspace limits are set)."""
    value = info.get(WORKSPACE_KEY)
    if value is None:
        raise ValueError(f"robot env info['{WORKSPACE_KEY}']: missing from {where}; expected the {dims} values the workspace limits "
                         "bound (e.g. the end-effector position), reported by reset and every step")
    position = np.asarray(value, np.float64).reshape(-1)
    if position.shape != (dims,) or not np.all(np.isfinite(position)):
        raise ValueError(f"robot env info['{WORKSPACE_KEY}'] from {where}: got {np.asarray(value).tolist()}, expected {dims} finite values "
                         "(as many as the workspace limits)")
    return position
