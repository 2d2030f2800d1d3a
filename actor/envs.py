"""The actor's environment: a built-in task name or any gymnasium env (id or entry point);
entry points of user code; actions between the env's units and the policy's [-1, 1]."""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import numpy as np

from envs.observations import ObservationSpec


def make_actor_env(name: str, seed: int, max_episode_steps: int = 0) -> tuple[gym.Env, dict]:
    """(env, spec) for `name`: a task of `envs.tasks` (training reward convention included),
    a registered gymnasium id, or an entry point 'package.module:EnvClass' (a user's robot
    env). Actions are rescaled to [-1, 1] (the policy's range) when the env's differ."""
    from envs.tasks import TASKS

    if name in TASKS:
        task = TASKS[name]
        return task.make_env(seed, training=True), task.spec()
    if ":" in name:
        from gymnasium.envs.registration import load_env_creator

        env = load_env_creator(name)()
    else:
        try:
            env = gym.make(name)
        except gym.error.Error as e:
            raise ValueError(f"env: {name!r} is neither a task ({', '.join(sorted(TASKS))}) nor a gymnasium id or 'module:Class' entry point ({e})") from None
    if max_episode_steps:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"env {name!r}: action space {space}, expected a continuous Box")
    if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    observations = env.observation_space
    named = isinstance(observations, gym.spaces.Dict)  # camera images + state (envs/observations.py)
    spec = {
        "task": name,
        "observation_dim": ObservationSpec.from_space(observations).state_dim if named else int(np.prod(observations.shape)),
        "action_dim": int(np.prod(space.shape)),
        "action_low": np.asarray(space.low, float).ravel().tolist(),
        "action_high": np.asarray(space.high, float).ravel().tolist(),
    }
    if named:
        spec["observation_spec"] = ObservationSpec.from_space(observations).to_json()
    return env, spec


def load_callable(entry_point: str) -> Callable:
    """'package.module:function' -> the function."""
    import importlib

    if ":" not in entry_point:
        raise ValueError(f"entry point {entry_point!r}: expected 'package.module:function'")
    module_name, attribute = entry_point.split(":", 1)
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"entry point {entry_point!r} is not callable")
    return target


def to_policy_units(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """An action in the env's units as the policy's [-1, 1] (the inverse of RescaleAction)."""
    return np.clip(2.0 * (np.asarray(action, np.float64) - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)
