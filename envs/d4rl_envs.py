"""Env factories for the D4RL-named tasks, built on gymnasium / gymnasium-robotics ids.

Every factory returns the task's *raw* env: a Box observation (dict observations flattened in
the task's documented key order), the task's unscaled reward convention and `info["success"]`
where the task has one. `Task.make_env` adds the time limit and the training reward scale.

gymnasium_robotics (and with it mujoco) is imported only inside `make_gym`, so importing this
module or `envs.tasks` stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

from envs.spaces import FlattenDictObservation

# --- mazes --------------------------------------------------------------------------------
# Wall layouts (1 = wall) of D4RL's maze2d / antmaze mazes; gymnasium-robotics' U_MAZE,
# MEDIUM_MAZE and LARGE_MAZE are the same grids. Cells are (row, col) into these lists.
MAZE_LAYOUTS: dict[str, list[list[int]]] = {
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
    # antmaze-ultra (Jiang et al. 2022): the walls of ULTRA_MAZE_TEST in their d4rl fork
    # (d4rl/locomotion/maze_env.py, github.com/ZhengyaoJiang/d4rl), 4 m cells like the others.
    "ultra": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1],
        [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1],
        [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1],
        [1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1],
        [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 1],
        [1, 1, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}

# Fixed (reset_cell, goal_cell) per maze, one start and one goal per task like D4RL's eval envs.
# antmaze: D4RL's U_MAZE_TEST / BIG_MAZE_TEST / HARDEST_MAZE_TEST 'r' and 'g' cells
#   (d4rl/locomotion/maze_env.py).
# pointmaze: the goal is D4RL maze2d's 'G' cell (d4rl/pointmaze/maze_model.py). D4RL maze2d
#   resets the ball to a uniformly random free cell; we fix the start (the far end of the maze
#   from the goal) so every episode is the same long-horizon problem, as in antmaze.
# How the gymnasium-robotics ids spell each maze (PointMaze_UMaze-v3, AntMaze_Large-v4, ...).
# gymnasium-robotics has no ultra maze: antmaze-ultra builds AntMaze_Large-v4 (the same ant,
# maze_size_scaling 4) with the ultra map as its `maze_map`.
MAZE_ID_NAMES = {"umaze": "UMaze", "medium": "Medium", "large": "Large", "ultra": "Large"}
# ultra: ULTRA_MAZE_TEST's 'R' (1, 1) and 'G' (10, 14).
ANTMAZE_CELLS = {"umaze": ((1, 1), (3, 1)), "medium": ((1, 1), (6, 6)), "large": ((1, 1), (7, 9)), "ultra": ((1, 1), (10, 14))}
POINTMAZE_CELLS = {"umaze": ((3, 1), (1, 1)), "medium": ((1, 1), (6, 6)), "large": ((1, 1), (7, 9))}


def maze_map(layout: str, reset_cell: tuple[int, int], goal_cell: tuple[int, int]) -> list[list]:
    """The gymnasium-robotics `maze_map` of `layout` with a single 'r' and a single 'g' cell, so
    every reset uses that start and that goal (plus the env's own small position noise)."""
    grid = [list(row) for row in MAZE_LAYOUTS[layout]]
    for cell, mark in ((reset_cell, "r"), (goal_cell, "g")):
        row, col = cell
        if grid[row][col] != 0:
            raise ValueError(f"maze {layout!r}: {mark!r} cell {cell} is a wall, expected a free cell")
        grid[row][col] = mark
    return grid


# --- kitchen ------------------------------------------------------------------------------
# A subtask counts as done while its joints are within this distance of the goal (D4RL and
# gymnasium-robotics both use 0.3).
KITCHEN_SUBTASK_THRESHOLD = 0.3


def count_done_subtasks(achieved: Mapping[str, np.ndarray], desired: Mapping[str, np.ndarray]) -> int:
    """How many subtasks of `desired` are in their goal configuration in `achieved`."""
    return sum(
        bool(np.linalg.norm(np.asarray(achieved[name]) - np.asarray(goal)) < KITCHEN_SUBTASK_THRESHOLD)
        for name, goal in desired.items()
    )


class KitchenSubtaskReward(gym.Wrapper):
    """FrankaKitchen with D4RL's dataset reward: the number of the task's subtasks that are in
    their goal configuration at this step (0..4), instead of the env's "subtasks newly completed
    in this step". D4RL relabelled its kitchen HDF5 files this way ("Markovian reward",
    scripts/generation/generate_kitchen_datasets.py), so online and offline rewards agree.

    info["completed_subtasks"]: subtasks completed at some step of this episode (D4RL's kitchen
    score, 0..4); info["success"]: all of them completed. The episode terminates then (the env's
    own `terminate_on_tasks_completed`).
    """

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "completed_subtasks": 0, "success": False}

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        goal = self.env.unwrapped.goal
        reward = float(count_done_subtasks(obs["achieved_goal"], goal))
        completed = len(info["episode_task_completions"])
        info = {**info, "completed_subtasks": completed, "success": completed == len(goal)}
        return obs, reward, terminated, truncated, info


# --- adroit -------------------------------------------------------------------------------
class BinarySuccessReward(gym.Wrapper):
    """CalQL's binary Adroit convention: reward 1 on a step where info["success"] holds, else 0,
    and the episode terminates at the first success (JaxCQL/sampler.py: "terminate the episode
    when goal is achieved in Adroit envs"). The env's own (dense) reward is discarded."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "success": False}

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        success = bool(info["success"])
        return obs, float(success), terminated or success, truncated, {**info, "success": success}


# --- construction -------------------------------------------------------------------------
def make_gym(env_id: str, **kwargs) -> gym.Env:
    """`gym.make(env_id, **kwargs)` without gymnasium's own wrappers (the task adds its time
    limit). gymnasium-robotics ids are registered on first use, with the mujoco fix installed."""
    if env_id not in gym.registry:
        from envs.mujoco_compat import import_gymnasium_robotics

        gym.register_envs(import_gymnasium_robotics())
    if env_id not in gym.registry:
        raise ValueError(f"env id {env_id!r} is not registered by gymnasium or gymnasium_robotics")
    entry_point = gym.registry[env_id].entry_point
    if isinstance(entry_point, str) and entry_point.startswith("gymnasium_robotics"):
        from envs.mujoco_compat import patch_gymnasium_robotics

        patch_gymnasium_robotics()
    with warnings.catch_warnings():
        # The tasks pin the env versions D4RL's data was made with (e.g. AntMaze_UMaze-v4):
        # gymnasium's "is out of date" notice on each of them tells the user nothing to do.
        warnings.filterwarnings("ignore", message=r".*is out of date")
        env = gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped
    # gymnasium-robotics' mazes write the model they generate to a new file in the temp
    # directory (`ant_maze<time>.xml`) and never delete it: one per env made. MuJoCo has
    # compiled it by now, so it goes.
    generated_model = getattr(env, "tmp_xml_file_path", None)
    if generated_model:
        with contextlib.suppress(OSError):
            os.remove(generated_model)
    return env


def make_maze_env(env_id: str, layout: str, cells: tuple, observation_keys: Sequence[str]) -> gym.Env:
    """A PointMaze/AntMaze with a fixed start and goal, sparse reward (1 within 0.45 of the goal)
    and `continuing_task=False`: reaching the goal terminates the episode, which gives a clean
    success signal and an absorbing goal for the +5/-5 training rewards."""
    reset_cell, goal_cell = cells
    env = make_gym(
        env_id,
        maze_map=maze_map(layout, reset_cell, goal_cell),
        reward_type="sparse",
        continuing_task=False,
        reset_target=False,
    )
    return FlattenDictObservation(env, observation_keys)


def make_kitchen_env(subtasks: Sequence[str], observation_keys: Sequence[str]) -> gym.Env:
    """FrankaKitchen-v1 with the task's subtasks, the D4RL reward and a flat observation."""
    env = make_gym("FrankaKitchen-v1", tasks_to_complete=list(subtasks))
    return FlattenDictObservation(KitchenSubtaskReward(env), observation_keys)


def make_adroit_env(env_id: str) -> gym.Env:
    """An Adroit hand env with the binary success reward."""
    return BinarySuccessReward(make_gym(env_id))


def make_plain_env(env_id: str, observation_keys: Optional[Sequence[str]] = None) -> gym.Env:
    """The env as registered (dense reward, Box observation) - the locomotion tasks."""
    env = make_gym(env_id)
    return FlattenDictObservation(env, observation_keys) if observation_keys else env
