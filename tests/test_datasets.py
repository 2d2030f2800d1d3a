import numpy as np
import pytest

from envs import pointmass
from envs.datasets import OfflineDataset, mc_returns
from envs.tasks import get_task


def test_mc_returns_dense_per_trajectory():
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 20.0], np.float32)
    ends = np.array([0, 0, 1, 0, 1], bool)
    g = 0.5
    expected = [1 + g * 2 + g * g * 3, 2 + g * 3, 3, 10 + g * 20, 20]
    np.testing.assert_allclose(mc_returns(rewards, ends, g), expected, rtol=1e-6)


def test_mc_returns_sparse_success_and_failure():
    g = 0.9
    # success: -5, -5, +5 (terminal at goal); failure: -5 for all 3 steps (time limit)
    rewards = np.array([-5, -5, 5, -5, -5, -5], np.float32)
    ends = np.array([0, 0, 1, 0, 0, 1], bool)
    got = mc_returns(rewards, ends, g, sparse_failure_reward=-5.0)
    success = [-5 + g * -5 + g * g * 5, -5 + g * 5, 5]
    failure = [-5 / (1 - g)] * 3  # the failure reward repeated forever
    np.testing.assert_allclose(got, success + failure, rtol=1e-5)
    # without the sparse convention the failed trajectory is a plain truncated sum
    plain = mc_returns(rewards, ends, g)
    np.testing.assert_allclose(plain[3:], [-5 - 4.5 - 4.05, -5 - 4.5, -5], rtol=1e-5)


def test_dataset_validation_names_the_field():
    ok = dict(
        observations=np.zeros((3, 2), np.float32), actions=np.zeros((3, 2), np.float32),
        rewards=np.zeros(3, np.float32), next_observations=np.zeros((3, 2), np.float32),
        terminals=np.zeros(3, np.float32), episode_ends=np.array([0, 0, 0], bool),
    )
    dataset = OfflineDataset(**ok)
    assert dataset.episode_ends[-1]  # a trailing partial trajectory is closed
    with pytest.raises(ValueError, match="'rewards' has 2 rows, expected 3"):
        OfflineDataset(**{**ok, "rewards": np.zeros(2, np.float32)})
    bad = ok["actions"].copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="'actions' contains NaN"):
        OfflineDataset(**{**ok, "actions": bad})


def test_pointmass_wall_blocks_the_straight_line():
    env = pointmass.PointMassGoalEnv()
    obs, _ = env.reset(seed=0)
    for _ in range(30):  # push straight right, toward the goal, through the wall
        obs, reward, terminated, _, _ = env.step(np.array([1.0, 0.0]))
    assert obs[0] < 0 and reward == 0.0 and not terminated
    env._position = np.array([0.65, -0.7], np.float32)
    obs, reward, terminated, _, info = env.step(np.zeros(2))
    assert reward == 1.0 and terminated and info["success"]


def test_task_reward_convention_and_time_limit():
    task = get_task("pointmass-goal")
    env = task.make_env(seed=0, training=True)
    env.reset(seed=0)
    _, reward, _, truncated, _ = env.step(np.zeros(2))
    assert reward == -5.0 and not truncated  # 10 * 0 - 5
    eval_env = task.make_env(seed=0, training=False)
    eval_env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, reward, terminated, truncated, _ = eval_env.step(np.zeros(2))
        steps, done = steps + 1, terminated or truncated
    assert reward == 0.0 and truncated and steps == task.max_episode_steps
    with pytest.raises(ValueError, match="unknown task 'nope'; expected one of pointmass-goal"):
        get_task("nope")


def test_builtin_dataset_is_deterministic_and_reaches_the_goal():
    task = get_task("pointmass-goal")
    a, b = task.builtin_dataset(20, 3), task.builtin_dataset(20, 3)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.num_episodes == 20
    success = a.episode_returns() > 0
    assert 0.3 < success.mean() < 1.0  # both successes and failures
    # episodes end exactly at terminals or time limits
    assert np.all(a.episode_ends[a.terminals == 1])
    assert np.all(np.abs(a.actions) <= 1.0)
