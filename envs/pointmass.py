"""A tiny built-in goal-reaching task: a point in a walled room, sparse success.

It exists so the full pipeline (dataset -> CalQL pre-training -> WSRL fine-tuning) runs in a
few minutes on a laptop CPU with nothing downloaded. The room is [-1, 1]^2 with a wall along
x = 0 from the bottom up to y = WALL_TOP, so the straight line from start to goal is blocked
and the agent must go up through the gap and back down (a small maze, D4RL-style).
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np

START = np.array([-0.7, -0.7], np.float32)
GOAL = np.array([0.7, -0.7], np.float32)
WALL_TOP = 0.5
GOAL_RADIUS = 0.1
MAX_SPEED = 0.1  # distance moved per step at full action
# Waypoints of the path around the wall, used by the scripted data-collection controller.
WAYPOINTS = np.array([[-0.5, 0.75], [0.5, 0.75], GOAL], np.float32)


class PointMassGoalEnv(gym.Env):
    """Observation (x, y); action a velocity in [-1, 1]^2; reward 1 and termination at the goal."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._position = START.copy()

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self._position = (START + self.np_random.uniform(-0.05, 0.05, 2)).astype(np.float32)
        return self._position.copy(), {"success": False}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        old = self._position
        new = np.clip(old + MAX_SPEED * action, -1.0, 1.0)
        crosses_wall = np.sign(new[0]) != np.sign(old[0]) and min(old[1], new[1]) < WALL_TOP
        if crosses_wall:
            new[0] = old[0]  # blocked: slide along the wall
        self._position = new.astype(np.float32)
        success = bool(np.linalg.norm(self._position - GOAL) < GOAL_RADIUS)
        return self._position.copy(), float(success), success, False, {"success": success}


def waypoint_action(position: np.ndarray, waypoint_index: int) -> tuple[np.ndarray, int]:
    """The scripted controller: head for the current waypoint, advance when close to it."""
    target = WAYPOINTS[waypoint_index]
    if waypoint_index < len(WAYPOINTS) - 1 and np.linalg.norm(target - position) < 0.15:
        waypoint_index += 1
        target = WAYPOINTS[waypoint_index]
    delta = (target - position) / MAX_SPEED
    return np.clip(delta, -1.0, 1.0).astype(np.float32), waypoint_index
