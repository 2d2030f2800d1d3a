"""Tasks: an environment, its training-reward convention, its offline data and its metrics.

Every task's env takes and returns actions in [-1, 1] (the policy's tanh range); the
training env applies the task's reward scale and bias (Appendix I conventions), the
evaluation env reports the environment's own rewards.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import gymnasium as gym
import numpy as np

from envs import pointmass
from envs.datasets import OfflineDataset, collect_dataset


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    make_raw_env: Callable[[], gym.Env]
    max_episode_steps: int
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # CalQL's sparse-reward convention: the (scaled) reward of a step without success.
    sparse_failure_reward: Optional[float] = None
    # Makes the embedded dataset: (num_episodes, seed) -> dataset with unscaled rewards.
    builtin_dataset: Optional[Callable[[int, int], OfflineDataset]] = None

    def make_env(self, seed: int = 0, training: bool = True) -> gym.Env:
        """The task env with actions rescaled to [-1, 1] and a time limit; training envs
        also transform the reward as r * reward_scale + reward_bias."""
        env = self.make_raw_env()
        env = gym.wrappers.TimeLimit(env, self.max_episode_steps)
        low, high = env.action_space.low, env.action_space.high
        if not (np.all(low == -1.0) and np.all(high == 1.0)):
            env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
        if training and (self.reward_scale != 1.0 or self.reward_bias != 0.0):
            env = gym.wrappers.TransformReward(env, self.scale_reward)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    def scale_reward(self, reward):
        return reward * self.reward_scale + self.reward_bias

    def spec(self) -> dict:
        """The observation/action spec stored in checkpoints and checked on load."""
        env = self.make_raw_env()
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        return {
            "task": self.name,
            "observation_dim": int(np.prod(obs_space.shape)),
            "action_dim": int(np.prod(act_space.shape)),
            "action_low": np.asarray(act_space.low, float).ravel().tolist(),
            "action_high": np.asarray(act_space.high, float).ravel().tolist(),
        }

    def training_rewards(self, dataset: OfflineDataset) -> OfflineDataset:
        """The dataset with the training reward convention applied."""
        return dataclasses.replace(dataset, rewards=self.scale_reward(dataset.rewards).astype(np.float32))


def _pointmass_dataset(num_episodes: int, seed: int) -> OfflineDataset:
    """D4RL-maze style data: a noisy waypoint controller (per-episode noise 0.2..1.5) that
    in a third of the episodes first wanders to a random point of the room, so the data
    covers the room and holds both successes and failures."""
    rng = np.random.default_rng(seed)
    env = gym.wrappers.TimeLimit(pointmass.PointMassGoalEnv(), TASKS["pointmass-goal"].max_episode_steps)

    def policy(observation, state):
        if "noise" not in state:
            state["noise"], state["waypoint"] = rng.uniform(0.2, 1.5), 0
            state["detour"] = rng.uniform(-1, 1, 2) if rng.random() < 1 / 3 else None
        if state["detour"] is not None:
            if np.linalg.norm(state["detour"] - observation) < 0.15:
                state["detour"] = None
            else:
                action = np.clip((state["detour"] - observation) / pointmass.MAX_SPEED, -1, 1)
                return np.clip(action + state["noise"] * rng.normal(size=2), -1.0, 1.0)
        action, state["waypoint"] = pointmass.waypoint_action(observation, state["waypoint"])
        return np.clip(action + state["noise"] * rng.normal(size=2), -1.0, 1.0)

    return collect_dataset(env, policy, num_episodes, seed)


TASKS: dict[str, Task] = {
    "pointmass-goal": Task(
        name="pointmass-goal",
        make_raw_env=pointmass.PointMassGoalEnv,
        max_episode_steps=100,
        reward_scale=10.0,  # antmaze convention: +5 at the goal, -5 per step otherwise
        reward_bias=-5.0,
        sparse_failure_reward=-5.0,
        builtin_dataset=_pointmass_dataset,
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"config field 'task': unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
