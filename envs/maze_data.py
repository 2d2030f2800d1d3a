"""D4RL-style maze datasets made locally: a noisy waypoint controller on planned paths.

D4RL made its maze data by commanding a controller to a sequence of goals and following the
shortest path through the maze grid (maze2d: a PD controller on the ball; antmaze: a trained
goal-reaching ant policy steered by the same waypoints). This module does both, with the
task's own env and physics; the ant walks with tuned gaits instead of a trained policy:

- Each episode starts at a cell and the controller is commanded to a goal cell. When it gets
  within `COMMAND_RADIUS` of the commanded goal, a new goal is drawn, until the episode ends.
  `diverse`: start and goals are uniform over the free cells (D4RL maze2d, antmaze-*-diverse).
  `play`: start and goals are drawn from a fixed hand-picked set of cells per maze
  (`PLAY_CELLS`, D4RL antmaze-*-play's "hand-picked locations").
- `WaypointController.target` is where to head: the centre of the next cell on the shortest
  (BFS) path to the commanded goal cell, then the goal point itself.
- Point mazes: action = clip(P (target - xy) - D v), with D4RL maze2d's gains (P = 10, D = 1).
- antmaze: `envs.ant_gait.GaitController` walks the ant towards the target (CPG gaits with
  PD joint tracking, 8 directions, chosen every step in the torso's frame). In the task's goal
  cell the command is the task goal itself (the goal noise of the 4 m cells is wide against
  the 0.45 m success radius).
- Gaussian action noise on top; each episode draws its scale from `noise_range` (default
  `NOISE_RANGES`: around D4RL's 0.5 for maze2d and 0.2 for antmaze), so the data holds clean
  and sloppy paths.
- Rewards are the task's: the env's sparse reward for its fixed goal (1 within 0.45 of it).
  Reaching the task goal ends the episode as a terminal, as the task env does (the goal is
  absorbing, `continuing_task=False`); otherwise the episode ends at the task's time limit.

Measured (seed 0, 50 episodes, one core): point mazes 7.5k env steps/s; antmaze 1.6k-2k env
steps/s (D4RL's 1M transitions in about 9 minutes), task-goal success rate 0.52 (umaze),
0.22 / 0.10 (medium play / diverse), 0.12 / 0.06 (large play / diverse), 1-2.5 commanded goals
reached per episode (docs/datasets.md).
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
COMMAND_RADIUS = 0.45  # the env's own success radius (m, any maze scale), used for the commanded goals too
# Hand-picked start/goal cells for `play` data: the maze's dead ends and junctions.
PLAY_CELLS: dict[str, tuple[tuple[int, int], ...]] = {
    "umaze": ((1, 1), (1, 3), (3, 1), (3, 3)),
    "medium": ((1, 1), (1, 6), (2, 4), (3, 2), (4, 4), (5, 1), (6, 3), (6, 6)),
    "large": ((1, 1), (1, 4), (1, 10), (3, 4), (3, 8), (5, 4), (5, 10), (7, 1), (7, 5), (7, 9)),
    # antmaze-ultra: the start and the 'G' cells of the map Jiang et al. generated their data
    # on (ULTRA_MAZE in their d4rl fork).
    "ultra": (
        (1, 1), (1, 4), (1, 11), (1, 14), (2, 5), (2, 9), (3, 7), (4, 3), (4, 12), (5, 1), (5, 7), (5, 10),
        (5, 14), (6, 5), (7, 3), (7, 11), (8, 1), (8, 7), (8, 13), (9, 5), (10, 9), (10, 14),
    ),
}
# A waypoint counts as passed within this distance of its cell centre (in cell units), so the
# ball cuts corners smoothly instead of stopping at every centre.
WAYPOINT_RADIUS = 0.5
GENERATORS = {"maze": "maze-waypoint-controller", "antmaze": "antmaze-waypoint-gait-controller"}
# Per-episode action-noise scale range (Gaussian, on actions in [-1, 1]). Point mazes: around
# D4RL maze2d's 0.5. Ant: around D4RL antmaze's 0.2; at 0.3 the ant falls over about twice as
# often (a fallen ant lies on its back for the rest of the episode).
NOISE_RANGES = {"maze": (0.1, 1.0), "antmaze": (0.05, 0.25)}


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
    """Where to head in a maze: the next cell centre on the shortest path to the goal cell, and
    in the goal cell the goal point (`target`); for the point mazes also the noiseless PD
    action towards it (`action`)."""

    def __init__(self, maze, layout: Sequence[Sequence[int]]):
        self.maze = maze  # gymnasium-robotics Maze: cell <-> xy conversion
        self.layout = layout
        self._plans: dict = {}

    def target(self, xy: np.ndarray, goal_cell, goal_xy: np.ndarray) -> np.ndarray:
        """The point to head for from `xy` on the way to `goal_xy` in `goal_cell`."""
        goal_cell = tuple(goal_cell)
        if goal_cell not in self._plans:
            self._plans[goal_cell] = next_cell_towards(self.layout, goal_cell)
        towards = self._plans[goal_cell]
        cell = tuple(int(v) for v in self.maze.cell_xy_to_rowcol(xy))
        if cell == goal_cell or cell not in towards:
            return goal_xy
        waypoint = towards[cell]
        target = self.maze.cell_rowcol_to_xy(waypoint)
        # Close to the next centre already: aim one waypoint further to keep moving.
        if waypoint != goal_cell and np.linalg.norm(target - xy) < WAYPOINT_RADIUS * self.maze.maze_size_scaling:
            beyond = towards[waypoint]
            target = goal_xy if beyond == goal_cell else self.maze.cell_rowcol_to_xy(beyond)
        return target

    def action(self, xy: np.ndarray, velocity: np.ndarray, goal_cell, goal_xy: np.ndarray) -> np.ndarray:
        """The point mass's PD action towards `target`."""
        target = self.target(xy, goal_cell, goal_xy)
        return np.clip(P_GAIN * (target - xy) - D_GAIN * velocity, -1.0, 1.0)


def maze_mode_of(task) -> str:
    """The generator mode D4RL used for the task's dataset: play for `*-play`, else diverse."""
    return "play" if task.name.endswith("-play") else "diverse"


def generate_maze_dataset(
    task,
    num_episodes: int,
    seed: int,
    mode: Optional[str] = None,
    noise_range: Optional[tuple[float, float]] = None,
    progress: bool = False,
) -> tuple[OfflineDataset, dict]:
    """`num_episodes` episodes of the noisy waypoint controller in the point-maze or antmaze
    `task`'s env (`noise_range`: the per-episode action-noise scale, default per family in
    `NOISE_RANGES`).

    Returns the dataset (raw task rewards: 1 at the task goal, which is a terminal, else 0)
    and card facts: generator, mode, seed, commanded goals reached, task-goal success rate.
    Deterministic under `seed`.
    """
    if task.family not in GENERATORS:
        raise ValueError(
            f"field 'task': the waypoint maze generator runs the families {tuple(GENERATORS)}, got "
            f"{task.name!r} of family {task.family!r}"
        )
    mode = mode or maze_mode_of(task)
    if mode not in MODES:
        raise ValueError(f"field 'mode': got {mode!r}, expected one of {MODES}")
    if num_episodes < 1:
        raise ValueError(f"field 'num_episodes': got {num_episodes}, expected >= 1")
    noise_range = tuple(noise_range or NOISE_RANGES[task.family])
    if not 0 <= noise_range[0] <= noise_range[1]:
        raise ValueError(f"field 'noise_range': got {noise_range}, expected (low, high) with 0 <= low <= high")
    ant = task.family == "antmaze"
    layout_name = task.name.split("-")[1]  # pointmaze-umaze, antmaze-medium-play, ...
    layout = d4rl_envs.MAZE_LAYOUTS[layout_name]
    cells = free_cells(layout) if mode == "diverse" else list(PLAY_CELLS[layout_name])
    # An episode that starts in the task's goal cell ends at once: start elsewhere.
    task_goal_cell = (d4rl_envs.ANTMAZE_CELLS if ant else d4rl_envs.POINTMAZE_CELLS)[layout_name][1]
    start_cells = [cell for cell in cells if cell != task_goal_cell]
    rng = np.random.default_rng(seed)
    env = task.make_raw_env()  # flat observation, sparse reward for the task goal
    maze_env = env.unwrapped
    maze = maze_env.maze
    controller = WaypointController(maze, layout)
    if ant:
        # The ant's flat observation is qpos (x, y first, as achieved_goal) then qvel.
        from envs.ant_gait import AntJoints, GaitController

        nq = maze_env.model.nq
        walker = GaitController(AntJoints.from_model(maze_env.model))

    columns = {name: [] for name in ("observations", "actions", "rewards", "terminals", "episode_ends")}
    next_observations = []
    commands_reached = successes = 0
    for episode in tqdm(range(num_episodes), desc=f"{task.name} {mode} data", unit="ep", disable=not progress):
        start_cell = start_cells[rng.integers(len(start_cells))]
        observation, _ = env.reset(seed=int(rng.integers(2**31)), options={"reset_cell": np.array(start_cell)})
        noise = rng.uniform(*noise_range)
        if ant:
            walker.reset(phase=rng.uniform())
            if not np.allclose(observation[:nq], maze_env.data.qpos):
                raise ValueError(
                    f"task {task.name!r}: field 'observation_keys' gives an observation that does not start "
                    "with the ant's qpos; expected ('achieved_goal', 'observation')"
                )

        def new_command(current_cell):
            choices = [c for c in cells if c != current_cell] or cells
            cell = choices[rng.integers(len(choices))]
            # Goal point: the cell centre plus the env's own kind of position noise.
            jitter = rng.uniform(-0.25, 0.25, 2) * maze.maze_size_scaling
            if ant and cell == task_goal_cell:
                # The ant's cells are 4 m wide and the env's goal noise +-1 m, against a 0.45 m
                # success radius: a jittered point there would seldom lead through the task
                # goal, so the command is the task goal itself (D4RL antmaze-umaze's data was
                # commanded to it).
                return cell, maze_env.goal.copy()
            return cell, maze.cell_rowcol_to_xy(np.array(cell)) + jitter

        goal_cell, goal_xy = new_command(start_cell)
        for step in range(task.max_episode_steps):
            xy = observation[:2]
            if np.linalg.norm(goal_xy - xy) <= COMMAND_RADIUS:
                commands_reached += 1
                goal_cell, goal_xy = new_command(goal_cell)
            if ant:
                target = controller.target(xy, goal_cell, goal_xy)
                action = walker.action(observation[:nq], observation[nq:], target - xy)
            else:
                action = controller.action(xy, observation[2:4], goal_cell, goal_xy)
            action = np.clip(action + noise * rng.normal(size=action.shape), -1.0, 1.0).astype(np.float32)
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
        "generator": GENERATORS[task.family],
        "mode": mode,
        "seed": seed,
        "action_noise_range": list(noise_range),
        "commanded_goals_reached": commands_reached,
        "task_goal_success_rate": successes / num_episodes,
        "success_threshold": 1.0,  # an episode with return >= 1 reached the task goal
    }
    return dataset, card
