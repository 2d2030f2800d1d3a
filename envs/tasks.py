"""Tasks: an environment, its training-reward convention, its offline data and its metrics.

Every task's env takes and returns actions in [-1, 1] (the policy's tanh range) and flat Box
observations, except the pixel task's, whose observations are a Dict of a camera image and a
state vector (envs/observations.py); the training env applies the task's reward scale and bias (Appendix I
conventions), the evaluation env reports the task's own (unscaled) rewards.

Families (D4RL names, gymnasium / gymnasium-robotics envs; see envs/d4rl_envs.py):

- builtin     `pointmass-goal`: the embedded point-mass room (envs/pointmass.py); `pixel-reach`:
  a MuJoCo point mass that reaches a goal only its 64x64 top-down camera shows
  (envs/pixel_reach.py; observation {"camera": uint8 (64, 64, 3), "state": float32 (4,)}; data
  from a noisy scripted controller, envs/pixel_data.py). Sparse +5 / -5 training reward.
- maze        `pointmaze-{umaze,medium,large}` -> PointMaze_*-v3, and
- antmaze     `antmaze-{umaze,umaze-diverse,medium-play,...,ultra-diverse}` -> AntMaze_*-v4 (ultra:
  AntMaze_Large-v4 with Jiang et al.'s ultra map): fixed start and
  goal cells per maze (envs/d4rl_envs.py), sparse reward 1 within 0.45 of the goal,
  `continuing_task=False` (the goal terminates the episode: a clean success signal). Training
  reward 10 r - 5: +5 at the goal, -5 per other step.
- kitchen     `kitchen-{complete,partial,mixed}` -> FrankaKitchen-v1 with D4RL's four subtasks.
  Reward = number of the four subtasks in their goal configuration at this step (D4RL's
  dataset reward, 0..4); training reward r - 4 = -(unfinished subtasks), -4..0.
- adroit      `{door,pen,relocate}-binary` -> AdroitHand*-v1 with CalQL's binary reward: 1 on
  success (which ends the episode) else 0; training reward 10 r - 5: +5 / -5.
- locomotion  `{hopper,halfcheetah,walker2d}-{random,medium,medium-replay,medium-expert,expert}`
  -> Hopper/HalfCheetah/Walker2d-v5, dense rewards unchanged.

Normalized score (D4RL): 100 * (score - ref_min_score) / (ref_max_score - ref_min_score), where an
episode's score is its return, except kitchen (subtasks completed in the episode, 0..4).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Optional

import gymnasium as gym
import numpy as np

from envs import d4rl_envs, kitchen_data, maze_data, pointmass
from envs.datasets import OfflineDataset, collect_dataset
from envs.observations import ObservationSpec
from envs.spaces import flatten_observation

FAMILIES = ("builtin", "maze", "antmaze", "kitchen", "adroit", "locomotion", "custom")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    make_raw_env: Callable[[], gym.Env]  # flat (or camera Dict) observations, unscaled rewards, no time limit
    max_episode_steps: int
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # CalQL's sparse-reward convention: the (scaled) reward of a step without success.
    sparse_failure_reward: Optional[float] = None
    # Makes the embedded dataset: (num_episodes, seed) -> dataset with unscaled rewards.
    builtin_dataset: Optional[Callable[[int, int], OfflineDataset]] = None
    family: str = "builtin"
    env_id: Optional[str] = None  # the gymnasium / gymnasium-robotics id the env is built from
    # Dict observations are flattened as flatten_observation(obs, observation_keys) (envs/spaces.py);
    # None: the env's observation is already a Box.
    observation_keys: Optional[tuple[str, ...]] = None
    # D4RL normalized score references, in units of `episode_score`.
    ref_min_score: Optional[float] = None
    ref_max_score: Optional[float] = None
    # When set, an episode's score is info[score_info_key] at its last step instead of its return.
    score_info_key: Optional[str] = None
    d4rl_dataset: Optional[str] = None  # the D4RL dataset id this task corresponds to
    minari_dataset: Optional[str] = None  # its Minari port, where one exists

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
        """The observation/action spec stored in checkpoints and checked on load:
        `observation_spec` (`ObservationSpec.to_json()`, every task) and `observation_dim`, the
        flat vector's length as before named parts existed; for a task with cameras the state
        vector's length (0 without one), as the actor's and the wire's specs have it."""
        env = self.make_raw_env()
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        observation_spec = ObservationSpec.from_space(obs_space)
        return {
            "task": self.name,
            "observation_spec": observation_spec.to_json(),
            "observation_dim": observation_spec.state_dim,
            "action_dim": int(np.prod(act_space.shape)),
            "action_low": np.asarray(act_space.low, float).ravel().tolist(),
            "action_high": np.asarray(act_space.high, float).ravel().tolist(),
        }

    def training_rewards(self, dataset: OfflineDataset) -> OfflineDataset:
        """The dataset with the training reward convention applied."""
        return dataclasses.replace(dataset, rewards=self.scale_reward(dataset.rewards).astype(np.float32))

    def flatten_observation(self, observation) -> np.ndarray:
        """A dataset's (dict) observation as the flat vector the task env produces."""
        if self.observation_keys is None:
            return np.asarray(observation, np.float64).ravel()
        return flatten_observation(observation, self.observation_keys)

    def episode_score(self, episode_return: float, final_info: Mapping) -> float:
        """The quantity D4RL normalizes: the return, or info[score_info_key] at the last step."""
        if self.score_info_key is None:
            return float(episode_return)
        return float(final_info[self.score_info_key])

    def normalized_score(self, raw_score: float) -> float:
        """D4RL's normalized score: 100 * (raw - ref_min_score) / (ref_max_score - ref_min_score)."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(
                f"task {self.name!r} has no normalized score: fields 'ref_min_score' and 'ref_max_score' "
                "are not set (expected the D4RL reference scores)"
            )
        return 100.0 * (raw_score - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    def episode_normalized_score(self, episode_return: float, final_info: Mapping) -> float:
        """`normalized_score(episode_score(...))`: pass this as `evaluate(..., normalize=...)`."""
        return self.normalized_score(self.episode_score(episode_return, final_info))

    @property
    def normalizer(self) -> Optional[Callable[[float, Mapping], float]]:
        """`episode_normalized_score` where the task has reference scores, else None."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return self.episode_normalized_score


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
        # The goal terminates the episode, so the return is the success (0 or 1).
        ref_min_score=0.0,
        ref_max_score=1.0,
    ),
}


def _register(task: Task) -> None:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    if task.family not in FAMILIES:
        raise ValueError(f"task {task.name!r}: field 'family' is {task.family!r}, expected one of {FAMILIES}")
    TASKS[task.name] = task


# Sparse goal tasks (maze, antmaze, adroit-binary): raw reward 1 at success else 0, trained as
# 10 r - 5 = +5 / -5 (CalQL / Appendix I).
_SPARSE = dict(reward_scale=10.0, reward_bias=-5.0, sparse_failure_reward=-5.0)

# The target subtasks of each kitchen task (D4RL's; envs/kitchen_data.py).
KITCHEN_SUBTASKS = kitchen_data.KITCHEN_SUBTASKS


def generated_dataset(generate: Callable, task_name: str, num_episodes: int, seed: int) -> OfflineDataset:
    """`Task.builtin_dataset` of a family with a generator (maze_data, kitchen_data):
    `generate(task, num_episodes, seed)` on the registered task, in its default mode. The
    generators take the task; only this table looks tasks up by name."""
    dataset, _ = generate(get_task(task_name), num_episodes, seed, progress=True)
    return dataset

# D4RL's locomotion reference returns (d4rl/infos.py, the same for every dataset of a robot).
LOCOMOTION_REF_SCORES = {
    "hopper": ("Hopper-v5", -20.272305, 3234.3),
    "halfcheetah": ("HalfCheetah-v5", -280.178953, 12135.0),
    "walker2d": ("Walker2d-v5", 1.629008, 4592.3),
}


def _pointmaze_tasks():
    """maze2d-{umaze,medium,large}-v1 with D4RL's limits (300 / 600 / 800 steps).

    PointMaze's `observation` is (x, y, vx, vy), D4RL maze2d's 4-dim state. D4RL's maze2d
    reference scores (e.g. umaze 23.85 / 161.86) count the steps spent at the goal of an episode
    that never ends; here the goal ends the episode, so the return is the success (0 or 1) and
    the references are 0 / 1, like antmaze.
    """
    for maze, limit in (("umaze", 300), ("medium", 600), ("large", 800)):
        env_id = f"PointMaze_{d4rl_envs.MAZE_ID_NAMES[maze]}-v3"
        keys = ("observation",)
        yield Task(
            name=f"pointmaze-{maze}",
            make_raw_env=functools.partial(
                d4rl_envs.make_maze_env, env_id, maze, d4rl_envs.POINTMAZE_CELLS[maze], keys
            ),
            max_episode_steps=limit,
            **_SPARSE,
            family="maze",
            env_id=env_id,
            observation_keys=keys,
            builtin_dataset=functools.partial(generated_dataset, maze_data.generate_maze_dataset, f"pointmaze-{maze}"),
            ref_min_score=0.0,
            ref_max_score=1.0,
            d4rl_dataset=f"maze2d-{maze}-v1",
            minari_dataset=f"D4RL/pointmaze/{maze}-v2",
        )


def _make_pixel_reach_env() -> gym.Env:
    # Imported here, not at the top: the module sets MUJOCO_GL's default, which should happen
    # only in processes that render.
    from envs.pixel_reach import PixelReachEnv

    return PixelReachEnv()


def _pixel_reach_dataset(num_episodes: int, seed: int) -> OfflineDataset:
    """The scripted-controller data of `pixel-reach` (envs/pixel_data.py)."""
    from envs.pixel_data import generate_pixel_dataset

    return generated_dataset(generate_pixel_dataset, "pixel-reach", num_episodes, seed)


def _pixel_tasks():
    """`pixel-reach`: the goal is visible only in the camera image (envs/pixel_reach.py); 50
    steps at 20 Hz; the goal ends the episode, so the return is the success (references 0 / 1)."""
    yield Task(
        name="pixel-reach",
        make_raw_env=_make_pixel_reach_env,
        max_episode_steps=50,
        **_SPARSE,
        builtin_dataset=_pixel_reach_dataset,
        env_id="envs.pixel_reach:PixelReachEnv",
        ref_min_score=0.0,
        ref_max_score=1.0,
    )


# Episode limits: D4RL's antmaze-*-v2 (umaze 700, medium/large 1000) and Jiang et al.'s
# antmaze-ultra-*-v0 (2000).
ANTMAZE_EPISODE_STEPS = {"umaze": 700, "medium": 1000, "large": 1000, "ultra": 2000}


def _antmaze_tasks():
    """The eight antmazes: D4RL's antmaze-*-v2 and Jiang et al. (2022)'s antmaze-ultra-*-v0
    (their d4rl fork's ULTRA_MAZE_TEST, maze_size_scaling 4, 2000 steps), references 0 / 1.

    Observation = achieved_goal (x, y) then observation (27): D4RL's 29-dim order. The goal is
    fixed per task, so desired_goal is left out, as in D4RL. Builtin data: the waypoint
    generator with the tuned ant gaits (envs/maze_data.py, envs/ant_gait.py).
    """
    datasets = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse", "ultra-play", "ultra-diverse")
    for dataset in datasets:
        maze = dataset.split("-")[0]
        ultra = maze == "ultra"
        env_id = f"AntMaze_{d4rl_envs.MAZE_ID_NAMES[maze]}-v4"
        keys = ("achieved_goal", "observation")
        yield Task(
            name=f"antmaze-{dataset}",
            make_raw_env=functools.partial(
                d4rl_envs.make_maze_env, env_id, maze, d4rl_envs.ANTMAZE_CELLS[maze], keys
            ),
            max_episode_steps=ANTMAZE_EPISODE_STEPS[maze],
            **_SPARSE,
            family="antmaze",
            env_id=env_id,
            observation_keys=keys,
            builtin_dataset=functools.partial(generated_dataset, maze_data.generate_maze_dataset, f"antmaze-{dataset}"),
            ref_min_score=0.0,
            ref_max_score=1.0,
            d4rl_dataset=f"antmaze-{dataset}-v0" if ultra else f"antmaze-{dataset}-v2",
            minari_dataset=None if ultra else f"D4RL/antmaze/{dataset}-v1",  # no Minari port of ultra
        )


def _kitchen_tasks():
    """kitchen-*-v0: D4RL's subtasks, 280 steps, references 0 / 4 subtasks.

    Observation = FrankaKitchen-v1's 59-dim `observation` (robot qpos 9, robot qvel 9, object
    qpos 21, object qvel 20). D4RL's kitchen HDF5 files hold a different 60-dim vector (robot
    qpos 9, object qpos 21, goal 30), so they do not load as-is; the Minari D4RL/kitchen ports
    store this dict observation. Builtin data: the scripted Franka doing queues of subtasks
    (envs/kitchen_data.py, envs/kitchen_script.py).
    """
    for dataset, subtasks in KITCHEN_SUBTASKS.items():
        keys = kitchen_data.KITCHEN_OBSERVATION_KEYS
        yield Task(
            name=f"kitchen-{dataset}",
            make_raw_env=functools.partial(d4rl_envs.make_kitchen_env, subtasks, keys),
            max_episode_steps=280,
            reward_scale=1.0,
            reward_bias=-4.0,  # -(number of unfinished subtasks), -4..0 (Appendix I)
            family="kitchen",
            env_id="FrankaKitchen-v1",
            observation_keys=keys,
            ref_min_score=0.0,
            ref_max_score=4.0,
            score_info_key="completed_subtasks",
            builtin_dataset=functools.partial(generated_dataset, kitchen_data.generate_kitchen_dataset, f"kitchen-{dataset}"),
            d4rl_dataset=f"kitchen-{dataset}-v0",
            minari_dataset=f"D4RL/kitchen/{dataset}-v2",
        )


def _adroit_tasks():
    """CalQL's {pen,door,relocate}-binary-v0, with mj_envs' limits (pen 100, door/relocate 200).

    The first success ends the episode, so the return is the success (0 or 1) and the references
    are 0 / 1: the normalized score is the success rate in percent (D4RL's adroit references are
    for the dense reward and do not apply). CalQL stores these rewards as -1 / 0 and adds +5; the
    training rewards (+5 / -5) are the same. The data (AWAC's offpolicy_hand_data) is not on Minari.
    """
    for name, env_id, limit in (
        ("door", "AdroitHandDoor-v1", 200),
        ("pen", "AdroitHandPen-v1", 100),
        ("relocate", "AdroitHandRelocate-v1", 200),
    ):
        yield Task(
            name=f"{name}-binary",
            make_raw_env=functools.partial(d4rl_envs.make_adroit_env, env_id),
            max_episode_steps=limit,
            **_SPARSE,
            family="adroit",
            env_id=env_id,
            ref_min_score=0.0,
            ref_max_score=1.0,
            d4rl_dataset=f"{name}-binary-v0",
        )


def _locomotion_tasks():
    """{hopper,halfcheetah,walker2d}-*-v2 with dense rewards and 1000 steps.

    D4RL's v2 data came from the mujoco-py v2 envs; we run the v5 envs (same observation layout
    and reward terms, newer simulator). Minari's mujoco/* datasets are new data, not ports of
    D4RL's, so none is named.
    """
    for robot, (env_id, ref_min, ref_max) in LOCOMOTION_REF_SCORES.items():
        for dataset in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            yield Task(
                name=f"{robot}-{dataset}",
                make_raw_env=functools.partial(d4rl_envs.make_plain_env, env_id),
                max_episode_steps=1000,
                family="locomotion",
                env_id=env_id,
                ref_min_score=ref_min,
                ref_max_score=ref_max,
                d4rl_dataset=f"{robot}-{dataset}-v2",
            )


for _task in (*_pixel_tasks(), *_pointmaze_tasks(), *_antmaze_tasks(), *_kitchen_tasks(), *_adroit_tasks(), *_locomotion_tasks()):
    _register(_task)


def get_task(name: str) -> Task:
    """The registered task `name`, or for 'package.module:EnvClass' (a user's robot or custom
    env, see envs/robot.py) a task built from that entry point (`entry_point_task`)."""
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        return entry_point_task(name)
    raise ValueError(
        f"config field 'task': unknown task {name!r}; expected one of {', '.join(TASKS)} "
        "or a 'package.module:EnvClass' entry point"
    )


@functools.lru_cache(maxsize=None)
def entry_point_task(entry_point: str) -> Task:
    """A task whose env is `entry_point` ('package.module:EnvClass', no arguments) as it is:
    rewards unchanged (the env brings its own convention), time limit from the env's
    `max_episode_steps` attribute or its gymnasium spec, else 1000 steps. The same string names
    the task in `wsrl pretrain`, `wsrl learner` and `wsrl actor --env`, so demos recorded with
    `wsrl record --env ENTRY_POINT` pre-train the policy the robot's actor then runs."""
    from gymnasium.envs.registration import load_env_creator

    try:
        creator = load_env_creator(entry_point)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"config field 'task': cannot load entry point {entry_point!r} ({e})") from None
    limit = getattr(creator, "max_episode_steps", None)
    return Task(
        name=entry_point,
        make_raw_env=creator,
        max_episode_steps=int(limit) if limit else 1000,
        family="custom",
        env_id=entry_point,
    )
