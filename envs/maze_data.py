"""D4RL-style maze datasets made locally: a noisy waypoint controller on planned paths.

D4RL made its maze data by commanding a controller to a sequence of goals and following the
shortest path through the maze grid (maze2d: a PD controller on the ball; antmaze: a trained
goal-reaching ant policy steered by the same waypoints). This module does the first for the
point mazes, with the task's own env and physics:

- Each episode starts at a cell and the controller is commanded to a goal cell. When it gets
  within `COMMAND_RADIUS` of the commanded goal, a new goal is drawn, until the episode ends.
  `diverse`: start and goals are uniform over the free cells (D4RL maze2d, antmaze-*-diverse).
  `play`: start and goals are drawn from a fixed hand-picked set of cells per maze
  (`PLAY_CELLS`, D4RL antmaze-*-play's "hand-picked locations").
- The controller heads for the centre of the next cell on the shortest (BFS) path to the
  commanded goal cell, then for the goal point itself: action = clip(P (target - xy) - D v),
  with D4RL maze2d's gains (P = 10, D = 1), plus Gaussian action noise (D4RL: 0.5; here each
  episode draws its noise scale from `noise_range`, so the data holds clean and sloppy paths).
- Rewards are the task's: the env's sparse reward for its fixed goal (1 within 0.45 of it).
  Reaching the task goal ends the episode as a terminal, as the task env does (the goal is
  absorbing, `continuing_task=False`); otherwise the episode ends at the task's time limit.

antmaze needs a goal-reaching ant policy (D4RL trained one) to follow the waypoints; it is not
included, so antmaze tasks must be given a D4RL/Minari dataset file.
"""

from __future__ import annotations

from collections import deque
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from envs import d4rl_envs
from envs.datasets import OfflineDataset

MODES = ("diverse", "play")
P_GAIN, D_GAIN = 10.0, 1.0  # D4RL maze2d's waypoint controller (p_gain=10, d_gain=-1 on velocity)
COMMAND_RADIUS = 0.45  # the env's own success radius, used for the commanded goals too
# Hand-picked start/goal cells for `play` data: the maze's dead ends and junctions.
PLAY_CELLS: dict[str, tuple[tuple[int, int], ...]] = {
    "umaze": ((1, 1), (1, 3), (3, 1), (3, 3)),
    "medium": ((1, 1), (1, 6), (2, 4), (3, 2), (4, 4), (5, 1), (6, 3), (6, 6)),
    "large": ((1, 1), (1, 4), (1, 10), (3, 4), (3, 8), (5, 4), (5, 10), (7, 1), (7, 5), (7, 9)),
}
# A waypoint counts as passed within this distance of its cell centre (in cell units), so the
# ball cuts corners smoothly instead of stopping at every centre.
WAYPOINT_RADIUS = 0.5


def free_cells(layout: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """The (row, col) of every non-wall cell, row by row."""
    return [(r, c) for r, row in enumerate(layout) for c, value in enumerate(row) if value != 1]


def next_cell_towards(layout: Sequence[Sequence[int]], goal_cell: tuple[int, int]) -> dict:
    """For every free cell reachable from `goal_cell`, the neighbouring cell one step closer to
    it on a shortest 4-connected path (BFS from the goal); the goal maps to itself."""
    goal_cell = tuple(goal_cell)
    if layout[goal_cell[0]][goal_cell[1]] == 1:
        raise ValueError(f"goal cell {goal_cell} is a wall, expected a free cell")
    towards = {goal_cell: goal_cell}
    queue = deque([goal_cell])
    while queue:
        cell = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            neighbour = (cell[0] + dr, cell[1] + dc)
            if layout[neighbour[0]][neighbour[1]] != 1 and neighbour not in towards:
                towards[neighbour] = cell
                queue.append(neighbour)
    return towards


def planned_path(layout: Sequence[Sequence[int]], start_cell, goal_cell) -> list[tuple[int, int]]:
    """The cells of a shortest path from `start_cell` to `goal_cell`, both included."""
    towards = next_cell_towards(layout, goal_cell)
    cell = tuple(start_cell)
    if cell not in towards:
        raise ValueError(f"cell {cell} cannot reach goal cell {tuple(goal_cell)}")
    path = [cell]
    while cell != tuple(goal_cell):
        cell = towards[cell]
        path.append(cell)
    return path


class WaypointController:
    """The noiseless PD controller of a point maze: towards the next cell centre on the shortest
    path to the goal cell, and in the goal cell towards the goal point."""

    def __init__(self, maze, layout: Sequence[Sequence[int]]):
        self.maze = maze  # gymnasium-robotics Maze: cell <-> xy conversion
        self.layout = layout
        self._plans: dict = {}

    def action(self, xy: np.ndarray, velocity: np.ndarray, goal_cell, goal_xy: np.ndarray) -> np.ndarray:
        goal_cell = tuple(goal_cell)
        if goal_cell not in self._plans:
            self._plans[goal_cell] = next_cell_towards(self.layout, goal_cell)
        towards = self._plans[goal_cell]
        cell = tuple(int(v) for v in self.maze.cell_xy_to_rowcol(xy))
        target = goal_xy
        if cell != goal_cell and cell in towards:
            waypoint = towards[cell]
            target = self.maze.cell_rowcol_to_xy(waypoint)
            # Close to the next centre already: aim one waypoint further to keep moving.
            if waypoint != goal_cell and np.linalg.norm(target - xy) < WAYPOINT_RADIUS * self.maze.maze_size_scaling:
                beyond = towards[waypoint]
                target = goal_xy if beyond == goal_cell else self.maze.cell_rowcol_to_xy(beyond)
        return np.clip(P_GAIN * (target - xy) - D_GAIN * velocity, -1.0, 1.0)


def maze_mode_of(task) -> str:
    """The generator mode D4RL used for the task's dataset: play for `*-play`, else diverse."""
    return "play" if task.name.endswith("-play") else "diverse"


def generate_maze_dataset(
    task,
    num_episodes: int,
    seed: int,
    mode: Optional[str] = None,
    noise_range: tuple[float, float] = (0.1, 1.0),
    progress: bool = False,
) -> tuple[OfflineDataset, dict]:
    """`num_episodes` episodes of the noisy waypoint controller in the point-maze `task`'s env.

    Returns the dataset (raw task rewards: 1 at the task goal, which is a terminal, else 0)
    and card facts: generator, mode, seed, commanded goals reached, task-goal success rate.
    Deterministic under `seed`.
    """
    if task.family != "maze":
        raise ValueError(
            f"field 'task': the waypoint maze generator runs point mazes (family 'maze'), got "
            f"{task.name!r} of family {task.family!r}"
            + ("; antmaze needs a goal-reaching ant policy, which is not included: give a D4RL/Minari file"
               if task.family == "antmaze" else "")
        )
    mode = mode or maze_mode_of(task)
    if mode not in MODES:
        raise ValueError(f"field 'mode': got {mode!r}, expected one of {MODES}")
    if num_episodes < 1:
        raise ValueError(f"field 'num_episodes': got {num_episodes}, expected >= 1")
    layout_name = task.name.split("-", 1)[1]
    layout = d4rl_envs.MAZE_LAYOUTS[layout_name]
    cells = free_cells(layout) if mode == "diverse" else list(PLAY_CELLS[layout_name])
    # An episode that starts in the task's goal cell ends at once: start elsewhere.
    task_goal_cell = d4rl_envs.POINTMAZE_CELLS[layout_name][1]
    start_cells = [cell for cell in cells if cell != task_goal_cell]
    rng = np.random.default_rng(seed)
    env = task.make_raw_env()  # flat (x, y, vx, vy) observation, sparse reward for the task goal
    maze_env = env.unwrapped
    controller = WaypointController(maze_env.maze, layout)

    columns = {name: [] for name in ("observations", "actions", "rewards", "terminals", "episode_ends")}
    next_observations = []
    commands_reached = successes = 0
    for episode in tqdm(range(num_episodes), desc=f"{task.name} {mode} data", unit="ep", disable=not progress):
        start_cell = start_cells[rng.integers(len(start_cells))]
        observation, _ = env.reset(seed=int(rng.integers(2**31)), options={"reset_cell": np.array(start_cell)})
        noise = rng.uniform(*noise_range)

        def new_command(current_cell):
            choices = [c for c in cells if c != current_cell] or cells
            cell = choices[rng.integers(len(choices))]
            # Goal point: the cell centre plus the env's own kind of position noise.
            jitter = rng.uniform(-0.25, 0.25, 2) * maze_env.maze.maze_size_scaling
            return cell, maze_env.maze.cell_rowcol_to_xy(np.array(cell)) + jitter

        goal_cell, goal_xy = new_command(start_cell)
        for step in range(task.max_episode_steps):
            xy, velocity = observation[:2], observation[2:4]
            if np.linalg.norm(goal_xy - xy) <= COMMAND_RADIUS * maze_env.maze.maze_size_scaling:
                commands_reached += 1
                goal_cell, goal_xy = new_command(goal_cell)
            action = controller.action(xy, velocity, goal_cell, goal_xy)
            action = np.clip(action + noise * rng.normal(size=2), -1.0, 1.0).astype(np.float32)
            next_observation, reward, terminated, _, _ = env.step(action)
            done = terminated or step == task.max_episode_steps - 1
            columns["observations"].append(observation)
            columns["actions"].append(action)
            columns["rewards"].append(reward)
            columns["terminals"].append(float(terminated))
            columns["episode_ends"].append(done)
            next_observations.append(next_observation)
            observation = next_observation
            if terminated:
                successes += 1
                break
    env.close()
    dataset = OfflineDataset(
        observations=np.asarray(columns["observations"], np.float32),
        actions=np.asarray(columns["actions"], np.float32),
        rewards=np.asarray(columns["rewards"], np.float32),
        next_observations=np.asarray(next_observations, np.float32),
        terminals=np.asarray(columns["terminals"], np.float32),
        episode_ends=np.asarray(columns["episode_ends"], bool),
    )
    card = {
        "task": task.name,
        "generator": "maze-waypoint-controller",
        "mode": mode,
        "seed": seed,
        "action_noise_range": list(noise_range),
        "commanded_goals_reached": commands_reached,
        "task_goal_success_rate": successes / num_episodes,
        "success_threshold": 1.0,  # an episode with return >= 1 reached the task goal
    }
    return dataset, card


def builtin_maze_dataset(task_name: str, num_episodes: int, seed: int) -> OfflineDataset:
    """`Task.builtin_dataset` of the point mazes: the generator in its default mode."""
    from envs.tasks import get_task  # the task table imports this module

    dataset, _ = generate_maze_dataset(get_task(task_name), num_episodes, seed, progress=True)
    return dataset
