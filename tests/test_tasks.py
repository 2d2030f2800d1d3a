"""The D4RL-named task registry: reward conventions, observation layout, limits, scores.

Env construction is kept to one or two envs per family (ant/kitchen/adroit take 0.1-1 s).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from actor.evaluation import evaluate
from envs import d4rl_envs
from envs.spaces import FlattenDictObservation, flat_dim, flatten_observation
from envs.tasks import KITCHEN_SUBTASKS, TASKS, get_task

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    # mujoco writes MUJOCO_LOG.TXT into the working directory on compiler warnings.
    monkeypatch.chdir(tmp_path)


class ScriptedEnv(gym.Env):
    """Replays fixed (reward, info) steps; the last one terminates the episode."""

    def __init__(self, steps, observation_space=None):
        self.steps = steps
        self.observation_space = observation_space or gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._t = 0

    def _obs(self):
        if isinstance(self.observation_space, gym.spaces.Dict):
            return self.observation_space.sample()
        return np.zeros(1, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        reward, info = self.steps[self._t]
        self._t += 1
        return self._obs(), reward, self._t == len(self.steps), False, dict(info)


# --- registry ------------------------------------------------------------------------------
def test_registry_names_families_envs_and_datasets():
    expected = {
        "pointmaze-medium": ("maze", "PointMaze_Medium-v3", "maze2d-medium-v1", "D4RL/pointmaze/medium-v2"),
        "antmaze-umaze": ("antmaze", "AntMaze_UMaze-v4", "antmaze-umaze-v2", "D4RL/antmaze/umaze-v1"),
        "antmaze-large-diverse": (
            "antmaze", "AntMaze_Large-v4", "antmaze-large-diverse-v2", "D4RL/antmaze/large-diverse-v1"
        ),
        "kitchen-partial": ("kitchen", "FrankaKitchen-v1", "kitchen-partial-v0", "D4RL/kitchen/partial-v2"),
        "relocate-binary": ("adroit", "AdroitHandRelocate-v1", "relocate-binary-v0", None),
        "walker2d-medium-replay": ("locomotion", "Walker2d-v5", "walker2d-medium-replay-v2", None),
    }
    for name, (family, env_id, d4rl, minari) in expected.items():
        task = get_task(name)
        assert (task.family, task.env_id, task.d4rl_dataset, task.minari_dataset) == (family, env_id, d4rl, minari)
        # The point and ant mazes and kitchen (and the built-in task) make their own data without training.
        assert (task.builtin_dataset is not None) == (family in ("maze", "antmaze", "kitchen"))
    # 2 builtin (pointmass-goal, pixel-reach) + 3 pointmaze + 8 antmaze (ultra included) + 3 kitchen
    # + 3 adroit + 3 robots x 5 datasets
    assert len(TASKS) == 2 + 3 + 8 + 3 + 3 + 15
    # D4RL's KitchenMicrowaveKettleLightSliderV0 / KitchenMicrowaveKettleBottomBurnerLightV0
    assert KITCHEN_SUBTASKS["complete"] == KITCHEN_SUBTASKS["partial"] == (
        "microwave", "kettle", "light switch", "slide cabinet"
    )
    assert KITCHEN_SUBTASKS["mixed"] == ("microwave", "kettle", "bottom burner", "light switch")


def test_time_limits_follow_d4rl_and_calql():
    limits = {
        "pointmaze-umaze": 300, "pointmaze-medium": 600, "pointmaze-large": 800,
        "antmaze-umaze": 700, "antmaze-umaze-diverse": 700, "antmaze-medium-play": 1000,
        "antmaze-large-diverse": 1000, "kitchen-mixed": 280,
        "pen-binary": 100, "door-binary": 200, "relocate-binary": 200, "hopper-expert": 1000,
    }
    assert {name: get_task(name).max_episode_steps for name in limits} == limits
    # The limit is a truncation: a ball that never moves reaches step 300 without success.
    env = get_task("pointmaze-umaze").make_env(seed=0, training=False)
    steps, done = 0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(np.zeros(2))
        steps, done = steps + 1, terminated or truncated
    assert steps == 300 and truncated and not terminated and reward == 0.0 and not info["success"]


def test_unknown_task_error_names_the_field_and_lists_tasks():
    with pytest.raises(ValueError) as error:
        get_task("antmaze-huge")
    message = str(error.value)
    assert "config field 'task'" in message and "'antmaze-huge'" in message
    for name in ("pointmass-goal", "antmaze-large-diverse", "kitchen-mixed", "pen-binary", "hopper-medium-expert"):
        assert name in message


def test_importing_tasks_does_not_import_mujoco():
    code = (
        "import sys, envs.tasks; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('mujoco', 'gymnasium_robotics')]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env={"PYTHONPATH": str(REPO)})


# --- observations ---------------------------------------------------------------------------
def test_flatten_observation_uses_the_given_key_order_and_sorted_sub_keys():
    obs = {
        "observation": np.array([1.0, 2.0, 3.0]),
        "achieved_goal": np.array([10.0, 11.0]),
        "desired_goal": np.array([99.0, 99.0]),
    }
    np.testing.assert_array_equal(flatten_observation(obs, ("achieved_goal", "observation")), [10, 11, 1, 2, 3])
    nested = {"goal": {"kettle": np.array([[5.0, 6.0]]), "burner": np.array([7.0])}, "x": np.float64(4.0)}
    np.testing.assert_array_equal(flatten_observation(nested, ("x", "goal")), [4, 7, 5, 6])  # burner < kettle
    with pytest.raises(KeyError, match="desired"):
        flatten_observation({"observation": np.zeros(2)}, ("desired_goal",))


def test_flatten_wrapper_space_and_dims():
    space = gym.spaces.Dict(
        {
            "observation": gym.spaces.Box(-1, 1, (3,)),
            "achieved_goal": gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)), "b": gym.spaces.Box(-1, 1, (1,))}),
        }
    )
    assert flat_dim(space, ("observation",)) == 3 and flat_dim(space, ("achieved_goal", "observation")) == 6
    env = FlattenDictObservation(ScriptedEnv([(0.0, {})], space), ("achieved_goal", "observation"))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (6,) and obs.shape == (6,)


def test_spec_reports_flattened_dims():
    dims = {
        "pointmaze-umaze": (4, 2),  # x, y, vx, vy
        "antmaze-umaze": (29, 8),  # D4RL antmaze's 29
        "kitchen-complete": (59, 9),
        "door-binary": (39, 28),
        "hopper-medium": (11, 3),
    }
    for name, (obs_dim, act_dim) in dims.items():
        spec = get_task(name).spec()
        assert (spec["observation_dim"], spec["action_dim"]) == (obs_dim, act_dim), name
        assert spec["observation_spec"] == [{"name": "state", "shape": [obs_dim], "dtype": "float32"}], name
        assert spec["action_low"] == [-1.0] * act_dim and spec["action_high"] == [1.0] * act_dim


def test_antmaze_observation_is_xy_then_the_rest_like_d4rl():
    task = get_task("antmaze-medium-play")
    env = task.make_env(seed=3, training=False)
    obs, _ = env.step(env.action_space.sample())[:2]
    data = env.unwrapped.ant_env.data
    # D4RL antmaze: qpos (15, x and y first) then qvel (14).
    np.testing.assert_allclose(obs, np.concatenate([data.qpos, data.qvel]))
    dict_obs = {"observation": obs[2:], "achieved_goal": obs[:2], "desired_goal": np.zeros(2)}
    np.testing.assert_array_equal(task.flatten_observation(dict_obs), obs)  # what dataset readers use


@pytest.mark.parametrize("name", ["antmaze-umaze", "pointmaze-umaze"])
def test_maze_envs_leave_no_generated_model_file_behind(name):
    """gymnasium-robotics writes each maze's generated MuJoCo model to the temp directory and
    never deletes it; making the env removes it, and the env still resets and steps."""
    env = get_task(name).make_env(seed=0, training=False)
    generated = Path(env.unwrapped.tmp_xml_file_path)
    assert generated.name.endswith(".xml") and not generated.exists()
    env.reset(seed=0)
    assert np.isfinite(env.step(env.action_space.sample())[0]).all()
    env.close()


# --- mazes ----------------------------------------------------------------------------------
def test_maze_layouts_match_gymnasium_robotics_and_cells_are_fixed():
    from gymnasium_robotics.envs.maze import maps

    layouts = dict(d4rl_envs.MAZE_LAYOUTS)
    layouts.pop("ultra")  # Jiang et al.'s maze; gymnasium-robotics has none (tests/test_fidelity.py)
    assert layouts == {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE, "large": maps.LARGE_MAZE}
    grid = d4rl_envs.maze_map("umaze", (3, 1), (1, 1))
    assert grid[3][1] == "r" and grid[1][1] == "g" and sum(row.count("g") for row in grid) == 1
    with pytest.raises(ValueError, match="wall"):
        d4rl_envs.maze_map("umaze", (2, 1), (1, 1))

    # pointmaze-umaze: 5x5 grid, cell (r, c) -> x = c + 0.5 - 2.5, y = 2.5 - (r + 0.5); noise <= 0.25.
    env = get_task("pointmaze-umaze").make_env(seed=0, training=False)
    for seed in (1, 2):
        obs, _ = env.reset(seed=seed)
        assert np.all(np.abs(obs[:2] - [-1.0, -1.0]) <= 0.25)  # start cell (3, 1)
        assert np.all(np.abs(env.unwrapped.goal - [-1.0, 1.0]) <= 0.25)  # goal cell (1, 1)
    # antmaze-large: 12x9 grid scaled by 4, goal cell (7, 9) -> (9.5 * 4 - 24, 18 - 7.5 * 4); noise <= 1.
    env = get_task("antmaze-large-diverse").make_env(seed=0, training=False)
    assert np.all(np.abs(env.unwrapped.goal - [14.0, -12.0]) <= 1.0)


def test_pointmaze_goal_terminates_with_success_and_sparse_rewards():
    task = get_task("pointmaze-medium")
    for training, at_goal, elsewhere in ((True, 5.0, -5.0), (False, 1.0, 0.0)):
        env = task.make_env(seed=0, training=training)
        _, reward, terminated, _, info = env.step(np.zeros(2))
        assert (reward, terminated, info["success"]) == (elsewhere, False, False)
        maze = env.unwrapped
        qpos = maze.point_env.data.qpos.copy()
        qpos[:2] = maze.goal  # place the ball on the goal
        maze.point_env.set_state(qpos, np.zeros_like(maze.point_env.data.qvel))
        _, reward, terminated, _, info = env.step(np.zeros(2))
        assert (reward, terminated, info["success"]) == (at_goal, True, True)
    assert task.sparse_failure_reward == -5.0


# --- kitchen --------------------------------------------------------------------------------
KITCHEN_GOALS = {  # D4RL's OBS_ELEMENT_GOALS for kitchen-mixed's subtasks
    "microwave": np.array([-0.75]),
    "kettle": np.array([-0.23, 0.75, 1.62, 0.99, 0.0, 0.0, -0.06]),
    "bottom burner": np.array([-0.88, -0.01]),
    "light switch": np.array([-0.69, -0.05]),
}


def test_kitchen_reward_is_minus_unfinished_subtasks():
    task = get_task("kitchen-mixed")
    far = {name: goal + 1.0 for name, goal in KITCHEN_GOALS.items()}
    order = list(KITCHEN_GOALS)
    training_rewards = []
    for done in range(5):
        achieved = {name: (KITCHEN_GOALS[name] if name in order[:done] else far[name]) for name in order}
        raw = d4rl_envs.count_done_subtasks(achieved, KITCHEN_GOALS)
        assert raw == done
        training_rewards.append(task.scale_reward(float(raw)))
    assert training_rewards == [-4.0, -3.0, -2.0, -1.0, 0.0]
    # D4RL's threshold: a subtask is done strictly within 0.3 of its goal.
    near = {**far, "microwave": np.array([-0.75 + 0.29])}
    assert d4rl_envs.count_done_subtasks(near, KITCHEN_GOALS) == 1
    near["microwave"] = np.array([-0.75 + 0.31])
    assert d4rl_envs.count_done_subtasks(near, KITCHEN_GOALS) == 0
    assert get_task("kitchen-complete").observation_keys == ("observation",)


def test_kitchen_resets_and_steps_under_new_mujoco():
    """FrankaKitchen-v1 cannot be built with mujoco >= 3.12 without envs.mujoco_compat."""
    env = get_task("kitchen-mixed").make_env(seed=0, training=True)
    kitchen = env.unwrapped
    assert set(kitchen.goal) == set(KITCHEN_GOALS)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (59,)
    obs, reward, terminated, truncated, info = env.step(np.zeros(9))
    assert obs.shape == (59,) and reward == -4.0 and not (terminated or truncated)
    assert (info["completed_subtasks"], info["success"]) == (0, False)
    kitchen.data.qpos[22] = -0.75  # open the microwave door (qpos index 22, D4RL's layout)
    _, reward, _, _, info = env.step(np.zeros(9))
    assert reward == -3.0 and (info["completed_subtasks"], info["success"]) == (1, False)


def test_patched_joint_helpers_handle_every_joint_type():
    import mujoco
    from gymnasium_robotics.utils import mujoco_utils

    from envs import mujoco_compat

    xml = """<mujoco><worldbody>
      <body><freejoint name="free"/><geom size=".1"/>
        <body><joint name="ball" type="ball"/><geom size=".1"/>
          <body><joint name="hinge" type="hinge"/><geom size=".1"/>
            <body><joint name="slide" type="slide"/><geom size=".1"/></body></body></body></body>
    </worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    data.qpos[:] = np.arange(model.nq)  # free 0..6, ball 7..10, hinge 11, slide 12
    data.qvel[:] = 100 + np.arange(model.nv)  # free 100..105, ball 106..108, hinge 109, slide 110
    mujoco_compat.patch_gymnasium_robotics()
    get_qpos, get_qvel = mujoco_utils.get_joint_qpos, mujoco_utils.get_joint_qvel
    np.testing.assert_array_equal(get_qpos(model, data, "free"), np.arange(7))
    np.testing.assert_array_equal(get_qpos(model, data, "ball"), [7, 8, 9, 10])
    np.testing.assert_array_equal(get_qpos(model, data, "slide"), [12])
    np.testing.assert_array_equal(get_qvel(model, data, "ball"), [106, 107, 108])
    np.testing.assert_array_equal(get_qvel(model, data, "hinge"), [109])
    mujoco_utils.set_joint_qpos(model, data, "hinge", 0.5)
    mujoco_utils.set_joint_qvel(model, data, "free", np.ones(6))
    assert data.qpos[11] == 0.5 and np.all(data.qvel[:6] == 1) and data.qvel[6] == 106
    with pytest.raises(ValueError, match="'elbow'"):
        get_qpos(model, data, "elbow")


# --- adroit ---------------------------------------------------------------------------------
def test_adroit_binary_reward_and_termination_on_success():
    steps = [(-0.3, {"success": False}), (2.0, {"success": False}), (7.5, {"success": True}), (9.0, {"success": True})]
    task = dataclasses.replace(
        get_task("door-binary"), make_raw_env=lambda: d4rl_envs.BinarySuccessReward(ScriptedEnv(steps))
    )
    for training, expected in ((False, [0.0, 0.0, 1.0]), (True, [-5.0, -5.0, 5.0])):
        env = task.make_env(seed=0, training=training)
        rewards, done = [], False
        while not done:  # the dense rewards are discarded; the first success ends the episode
            _, reward, terminated, truncated, info = env.step(np.zeros(1))
            rewards.append(reward)
            done = terminated or truncated
        assert rewards == expected and terminated and info["success"]
    # The real env: no success at the start, so -5.
    env = get_task("pen-binary").make_env(seed=0, training=True)
    _, reward, terminated, _, info = env.step(np.zeros(24))
    assert (reward, terminated, info["success"]) == (-5.0, False, False)


# --- locomotion -----------------------------------------------------------------------------
def test_locomotion_rewards_are_the_dense_env_rewards():
    task = get_task("hopper-medium")
    assert (task.reward_scale, task.reward_bias, task.sparse_failure_reward) == (1.0, 0.0, None)
    train, evaluation = task.make_env(seed=5, training=True), task.make_env(seed=5, training=False)
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 3))
    for action in actions:
        _, r_train, *_ , info = train.step(action)
        _, r_eval, *_ = evaluation.step(action)
        assert r_train == r_eval == pytest.approx(info["reward_forward"] + info["reward_ctrl"] + info["reward_survive"])
        assert "success" not in info


# --- normalized scores ----------------------------------------------------------------------
def test_normalized_score_arithmetic():
    hopper = get_task("hopper-random")
    assert hopper.normalized_score(-20.272305) == 0.0
    assert hopper.normalized_score(3234.3) == pytest.approx(100.0)
    assert hopper.normalized_score(1607.0138475) == pytest.approx(50.0)  # midpoint
    walker = get_task("walker2d-expert")  # 1.629008 + 0.25 * (4592.3 - 1.629008) -> 25
    assert walker.normalized_score(1149.296756) == pytest.approx(25.0)
    assert get_task("halfcheetah-medium").normalized_score(12135.0) == pytest.approx(100.0)
    assert get_task("antmaze-large-play").normalized_score(1.0) == 100.0
    assert get_task("door-binary").normalized_score(0.0) == 0.0
    kitchen = get_task("kitchen-complete")  # scored by subtasks completed, not the return
    assert kitchen.episode_normalized_score(512.0, {"completed_subtasks": 3}) == 75.0
    no_refs = dataclasses.replace(hopper, ref_min_score=None)
    with pytest.raises(ValueError, match="ref_min_score"):
        no_refs.normalized_score(1.0)


def test_evaluate_reports_normalized_score():
    # Two identical episodes: rewards 0, 1, 3 (return 4), ending with 3 of 4 subtasks completed.
    steps = [(0.0, {}), (1.0, {}), (3.0, {"success": False, "completed_subtasks": 3})]
    env = ScriptedEnv(steps)
    act = lambda observation: np.zeros(1)
    kitchen = evaluate(act, env, 2, normalize=get_task("kitchen-mixed").episode_normalized_score)
    assert kitchen["return"] == 4.0 and kitchen["normalized_score"] == 75.0 and kitchen["success_rate"] == 0.0
    hopper = evaluate(act, env, 2, normalize=get_task("hopper-medium").episode_normalized_score)
    assert hopper["normalized_score"] == pytest.approx(100 * (4 + 20.272305) / (3234.3 + 20.272305))
    assert "normalized_score" not in evaluate(act, env, 1)
