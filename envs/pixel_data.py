"""The pixel reach task's offline data, made locally: a scripted controller with noise and detours.

The controller (`pixel_reach.scripted_action`, a PD velocity command) is told where the goal
is; the dataset is not: it holds what the camera and the state showed, the executed actions
and the sparse rewards, like any recording. Each episode draws

- an action-noise scale, uniform in `noise_range` (default `NOISE_RANGE`; Gaussian noise on
  actions in [-1, 1], clipped), so the data holds clean and sloppy paths;
- a kind: with probability `wrong_goal_probability` the controller drives to the centre of
  another quadrant than the one the image shows the goal in and stays there (a failure); with
  probability `detour_probability` it goes there first and then to the goal (a long success,
  or a time-out); otherwise it drives straight to the goal. So part of the data goes the wrong
  way: offline RL has to tell from the image which moves lead to the goal, while behaviour
  cloning copies the wrong ones too, and a learner blind to the image cannot tell them apart.

Rewards are the env's (1 on reaching the goal, which ends the episode as a terminal, else 0);
an episode that does not reach it ends at the time limit (50 steps).

Measured (seed 0, the 2-core machine shared with other work, load average 13):
100 episodes = 3,369 transitions in 5.5 s, success rate 0.67, 41.5 MB of observations (and as
much again of next observations); 200 episodes = 6,944 transitions, 0.655
(`python benchmarks/pixel_task.py`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from tqdm import tqdm

from envs import pixel_reach
from envs.datasets import OfflineDataset, append_transition, empty_columns

GENERATOR = "pixel-reach-scripted-controller"
NOISE_RANGE = (0.1, 1.0)
DETOUR_PROBABILITY = 0.3
WRONG_GOAL_PROBABILITY = 0.3
DETOUR_RADIUS = 0.15  # the detour's waypoint counts as reached within this distance


def generate_pixel_dataset(
    task,
    num_episodes: int,
    seed: int,
    noise_range: Optional[tuple[float, float]] = None,
    detour_probability: float = DETOUR_PROBABILITY,
    wrong_goal_probability: float = WRONG_GOAL_PROBABILITY,
    progress: bool = False,
) -> tuple[OfflineDataset, dict]:
    """`num_episodes` episodes of the noisy scripted controller in `task`'s env (the pixel
    reach task, `envs/pixel_reach.py`).

    Returns the dataset, whose observations / next_observations are dicts {"camera": uint8
    (N, S, S, 3), "state": float32 (N, 4)}, with raw task rewards (1 at the goal, a terminal,
    else 0), and card facts: generator, seed, noise range, episode kinds, success rate.
    Deterministic under `seed`.
    """
    if num_episodes < 1:
        raise ValueError(f"field 'num_episodes': got {num_episodes}, expected >= 1")
    noise_range = tuple(noise_range or NOISE_RANGE)
    if len(noise_range) != 2 or not 0 <= noise_range[0] <= noise_range[1]:
        raise ValueError(f"field 'noise_range': got {noise_range}, expected (low, high) with 0 <= low <= high")
    for name, value in (("detour_probability", detour_probability), ("wrong_goal_probability", wrong_goal_probability)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"field '{name}': got {value}, expected a probability in [0, 1]")
    if detour_probability + wrong_goal_probability > 1.0:
        raise ValueError(
            f"fields 'detour_probability' + 'wrong_goal_probability': got {detour_probability} + "
            f"{wrong_goal_probability}, expected a sum <= 1"
        )
    env = task.make_raw_env()
    if not isinstance(env.unwrapped, pixel_reach.PixelReachEnv):
        env.close()
        raise ValueError(f"field 'task': the pixel generator runs the pixel reach task, got {task.name!r}")
    rng = np.random.default_rng(seed)
    columns = empty_columns()
    successes = detours = wrong_goals = 0
    try:
        for _ in tqdm(range(num_episodes), desc=f"{task.name} data", unit="ep", disable=not progress):
            observation, _ = env.reset(seed=int(rng.integers(2**31)))
            goal = env.unwrapped.goal.copy()
            noise = rng.uniform(*noise_range)
            others = [i for i in range(len(pixel_reach.GOAL_CENTRES)) if i != env.unwrapped.goal_index]
            elsewhere = pixel_reach.GOAL_CENTRES[others[rng.integers(len(others))]]
            kind = rng.random()
            waypoint = None
            if kind < wrong_goal_probability:
                goal, wrong_goals = elsewhere, wrong_goals + 1
            elif kind < wrong_goal_probability + detour_probability:
                waypoint, detours = elsewhere, detours + 1
            for step in range(task.max_episode_steps):
                state = observation[pixel_reach.STATE]
                if waypoint is not None and np.linalg.norm(waypoint - state[:2]) < DETOUR_RADIUS:
                    waypoint = None
                action = pixel_reach.scripted_action(state, goal if waypoint is None else waypoint)
                action = np.clip(action + noise * rng.normal(size=2), -1.0, 1.0).astype(np.float32)
                next_observation, reward, terminated, _, _ = env.step(action)
                done = terminated or step == task.max_episode_steps - 1
                append_transition(columns, observation, action, reward, next_observation, terminated, done)
                observation = next_observation
                if terminated:
                    successes += 1
                    break
    finally:
        env.close()
    dataset = OfflineDataset.from_columns(columns)
    card = {
        "task": task.name,
        "generator": GENERATOR,
        "seed": seed,
        "action_noise_range": list(noise_range),
        "detour_probability": detour_probability,
        "detour_episodes": detours,
        "wrong_goal_probability": wrong_goal_probability,
        "wrong_goal_episodes": wrong_goals,
        "task_goal_success_rate": successes / num_episodes,
        "success_threshold": 1.0,  # an episode with return >= 1 reached the goal
    }
    return dataset, card
