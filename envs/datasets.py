"""The in-memory offline dataset type, Monte-Carlo returns-to-go, and rollout collection."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np


@dataclasses.dataclass
class OfflineDataset:
    """Flat arrays of N transitions. `episode_ends[i]` marks the last transition of a
    trajectory (terminal or time limit); `terminals[i]` only true terminals."""

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32, in [-1, 1]
    rewards: np.ndarray  # (N,) float32, in the environment's own convention (unscaled)
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) float32 0/1
    episode_ends: np.ndarray  # (N,) bool

    def __post_init__(self):
        n = len(self.observations)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if len(value) != n:
                raise ValueError(
                    f"dataset field '{field.name}' has {len(value)} rows, expected {n} (as 'observations')"
                )
        for name in ("observations", "actions", "rewards", "next_observations"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"dataset field '{name}' contains NaN or inf")
        if n and not self.episode_ends[-1]:
            # A trailing partial trajectory still ends where the data ends.
            self.episode_ends = self.episode_ends.copy()
            self.episode_ends[-1] = True

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())

    def episode_returns(self) -> np.ndarray:
        starts = np.concatenate([[0], np.flatnonzero(self.episode_ends)[:-1] + 1])
        return np.add.reduceat(self.rewards, starts) if len(self) else np.zeros(0)


def mc_returns(
    rewards: np.ndarray,
    episode_ends: np.ndarray,
    discount: float,
    sparse_failure_reward: Optional[float] = None,
) -> np.ndarray:
    """Discounted return-to-go of every step within its own trajectory (CalQL's bound).

    A trajectory's tail after its last step counts as 0, whether it ended in a terminal or a
    time limit. With `sparse_failure_reward` set
    (sparse-reward tasks), a trajectory whose rewards all equal it never reached the goal and
    is treated as if that reward repeated forever: every step gets r / (1 - discount).
    """
    returns = np.zeros(len(rewards), np.float32)
    end_indices = np.flatnonzero(episode_ends)
    start = 0
    for end in end_indices:
        segment = rewards[start : end + 1]
        if sparse_failure_reward is not None and np.all(segment == sparse_failure_reward):
            returns[start : end + 1] = sparse_failure_reward / (1.0 - discount)
        else:
            running = 0.0
            for i in range(end, start - 1, -1):
                running = rewards[i] + discount * running
                returns[i] = running
        start = end + 1
    return returns


def collect_dataset(
    env, policy: Callable[[np.ndarray, dict], np.ndarray], num_episodes: int, seed: int,
    on_episode: Optional[Callable[[float], None]] = None,
) -> OfflineDataset:
    """Rolls `policy(observation, episode_state)` in `env` for `num_episodes` episodes.

    `episode_state` is a fresh dict per episode the policy may use for its own memory.
    """
    columns: dict[str, list] = {f.name: [] for f in dataclasses.fields(OfflineDataset)}
    for episode in range(num_episodes):
        observation, _ = env.reset(seed=seed + episode)
        state: dict = {}
        done, total = False, 0.0
        while not done:
            action = np.asarray(policy(observation, state), np.float32)
            next_observation, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            for name, value in (
                ("observations", observation),
                ("actions", action),
                ("rewards", reward),
                ("next_observations", next_observation),
                ("terminals", float(terminated)),
                ("episode_ends", done),
            ):
                columns[name].append(value)
            observation, total = next_observation, total + float(reward)
        if on_episode is not None:
            on_episode(total)
    return OfflineDataset(
        observations=np.asarray(columns["observations"], np.float32),
        actions=np.asarray(columns["actions"], np.float32),
        rewards=np.asarray(columns["rewards"], np.float32),
        next_observations=np.asarray(columns["next_observations"], np.float32),
        terminals=np.asarray(columns["terminals"], np.float32),
        episode_ends=np.asarray(columns["episode_ends"], bool),
    )
