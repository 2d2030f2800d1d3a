"""A fixed flattening order for dict observations, shared by the task envs and the dataset readers.

`flatten_observation(obs, keys)` concatenates `obs[k]` for `k` in `keys`, in that order; a
value that is itself a dict (e.g. FrankaKitchen's `achieved_goal`, one entry per subtask) is
flattened with its sub-keys sorted, recursively. Each leaf is raveled (C order). The same
function flattens a live env's observation (through `FlattenDictObservation`) and a Minari
dataset's dict observations, so a policy sees identical vectors offline and online.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import gymnasium as gym
import numpy as np


def _leaves(value) -> list[np.ndarray]:
    if isinstance(value, Mapping):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key])]
    return [np.asarray(value, np.float64).ravel()]


def flatten_observation(obs: Mapping, keys: Sequence[str]) -> np.ndarray:
    """The 1-D float64 vector of `obs[k]` for `k` in `keys` (nested dicts: sorted sub-keys)."""
    missing = [key for key in keys if key not in obs]
    if missing:
        raise KeyError(f"observation has no key(s) {missing}; it has {sorted(obs)}")
    return np.concatenate([leaf for key in keys for leaf in _leaves(obs[key])])


def flat_dim(space: gym.spaces.Space, keys: Sequence[str]) -> int:
    """The length of `flatten_observation` for observations of the Dict `space`."""

    def size(sub) -> int:
        if isinstance(sub, gym.spaces.Dict):
            return sum(size(sub[key]) for key in sub.spaces)
        return int(np.prod(sub.shape))

    return sum(size(space[key]) for key in keys)


class FlattenDictObservation(gym.ObservationWrapper):
    """Turns a Dict-observation env into a Box one with `flatten_observation(obs, keys)`."""

    def __init__(self, env: gym.Env, keys: Sequence[str]):
        super().__init__(env)
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise TypeError(f"FlattenDictObservation needs a Dict observation space, got {env.observation_space}")
        self.keys = tuple(keys)
        dim = flat_dim(env.observation_space, self.keys)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float64)

    def observation(self, observation):
        return flatten_observation(observation, self.keys)
