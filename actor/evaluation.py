"""Deterministic policy evaluation on the evaluation env (unscaled rewards)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np


def evaluate(
    act: Callable[[np.ndarray], np.ndarray],
    env,
    num_episodes: int,
    seed: int = 0,
    normalize: Optional[Callable[[float, dict], float]] = None,
) -> dict:
    """Runs `num_episodes` episodes; returns mean/std return, success rate and mean length.

    With `normalize(episode_return, final_info)` (e.g. `Task.episode_normalized_score`), also
    the mean D4RL normalized score as "normalized_score".
    """
    returns, lengths, successes, scores = [], [], [], []
    for episode in range(num_episodes):
        observation, _ = env.reset(seed=seed + episode)
        done, total, length, success = False, 0.0, 0, False
        while not done:
            observation, reward, terminated, truncated, info = env.step(act(observation))
            done = terminated or truncated
            total, length = total + float(reward), length + 1
            success = success or bool(info.get("success", False))
        returns.append(total)
        lengths.append(length)
        successes.append(success)
        if normalize is not None:
            scores.append(normalize(total, info))
    result = {
        "return": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "success_rate": float(np.mean(successes)),
        "episode_length": float(np.mean(lengths)),
    }
    if normalize is not None:
        result["normalized_score"] = float(np.mean(scores))
    return result
