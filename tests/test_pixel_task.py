"""The pixel task (envs/pixel_reach.py) and its scripted dataset (envs/pixel_data.py).

Rendering is headless MuJoCo (MUJOCO_GL=egl); a 64 x 64 frame takes well under a millisecond,
so each test steps at most a few hundred times.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs import pixel_reach
from envs.observations import ObservationSpec
from envs.pixel_data import generate_pixel_dataset
from envs.pixel_reach import CAMERA, GOAL_CENTRES, PixelReachEnv, scripted_action
from envs.tasks import get_task

S = pixel_reach.IMAGE_SIZE


def _rendering_unavailable():
    try:
        PixelReachEnv().close()
    except pixel_reach.RenderingUnavailable as e:
        return str(e)
    return None


# As tests/test_diagnostics.py does for videos: a machine without a headless GL library skips,
# saying why (on this project's machines MUJOCO_GL=egl renders through Mesa).
_UNAVAILABLE = _rendering_unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"headless rendering unavailable: {_UNAVAILABLE}")


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mujoco may write MUJOCO_LOG.TXT into the working directory


@pytest.fixture(scope="module")
def env():
    env = PixelReachEnv()
    yield env
    env.close()


def pixel_of(xy) -> tuple[float, float]:
    """(row, col) of the image point above arena point (x, y): the camera sees
    [-1.05, 1.05]^2 on S pixels, +y up (row 0 at the top)."""
    half = pixel_reach.ARENA + 0.05
    col = (xy[0] + half) / (2 * half) * S - 0.5
    row = (half - xy[1]) / (2 * half) * S - 0.5
    return row, col


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def red(image):
    return (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)


def blue(image):
    return (image[..., 2] > 150) & (image[..., 0] < 80) & (image[..., 1] < 120)


def test_spaces_and_observations(env):
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict) and set(space.spaces) == {"camera", "state"}
    assert space["camera"].shape == (S, S, 3) and space["camera"].dtype == np.uint8
    assert space["state"].shape == (4,) and space["state"].dtype == np.float32
    assert env.action_space.shape == (2,) and np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=0)
    assert space.contains(obs) and not info["success"]
    # State = (x, y, vx, vy): at rest at the start; the goal is nowhere in it.
    assert np.all(obs["state"][2:] == 0) and np.all(np.abs(obs["state"][:2]) <= pixel_reach.START_RANGE)
    spec = ObservationSpec.from_space(space)
    assert spec.names == ("camera", "state") and spec.state_dim == 4 and not spec.is_flat
    assert spec.nbytes == S * S * 3 + 16
    spec.check({k: v[None] for k, v in obs.items()})
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0]))
    assert space.contains(obs) and (reward, terminated, truncated) == (0.0, False, False)
    assert obs["state"][2] > 0  # moving right


def test_task_spec_carries_the_observation_spec():
    task = get_task("pixel-reach")
    spec = task.spec()
    assert spec["observation_spec"] == [
        {"name": "camera", "shape": [S, S, 3], "dtype": "uint8"},
        {"name": "state", "shape": [4], "dtype": "float32"},
    ]
    assert spec["observation_dim"] == 4  # with cameras: the state vector's length (the actor's and the wire's convention)
    assert (spec["action_dim"], spec["action_low"], spec["action_high"]) == (2, [-1.0, -1.0], [1.0, 1.0])
    raw = task.make_raw_env()
    assert ObservationSpec.from_json(spec["observation_spec"]) == ObservationSpec.from_space(raw.observation_space)
    raw.close()
    # The registry's limit is the env's own (entry_point_task reads the attribute).
    assert task.max_episode_steps == PixelReachEnv.max_episode_steps == 50
    assert get_task("pointmass-goal").spec()["observation_spec"] == ObservationSpec.flat(2).to_json()


def test_training_env_rewards_and_time_limit():
    task = get_task("pixel-reach")
    env = task.make_env(seed=1, training=True)
    env.reset(seed=1)
    steps, done = 0, False
    while not done:
        _, reward, terminated, truncated, _ = env.step(np.zeros(2))  # stays near the centre: never reaches a goal
        steps, done = steps + 1, terminated or truncated
    assert steps == 50 and truncated and not terminated and reward == -5.0  # 10 * 0 - 5
    obs, _ = env.reset(seed=1)
    for _ in range(50):
        obs, reward, terminated, truncated, info = env.step(scripted_action(obs["state"], env.unwrapped.goal))
        if terminated:
            break
    assert terminated and reward == 5.0 and info["success"]
    env.close()


def test_same_seed_same_episode_and_different_seed_different_goal():
    a, b = PixelReachEnv(), PixelReachEnv()
    try:
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, (20, 2))
        obs_a, _ = a.reset(seed=7)
        obs_b, _ = b.reset(seed=7)
        for action in actions:
            np.testing.assert_array_equal(obs_a["camera"], obs_b["camera"])
            np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
            obs_a, *_ = a.step(action)
            obs_b, *_ = b.step(action)
        goals = set()
        for s in range(8):
            a.reset(seed=s)
            goals.add(tuple(np.round(a.goal, 4)))
        assert len(goals) == 8
        # Every goal lies in its quadrant, within the jitter of the quadrant's centre.
        for s in range(20):
            a.reset(seed=s)
            assert np.max(np.abs(a.goal - GOAL_CENTRES[a.goal_index])) <= pixel_reach.GOAL_JITTER + 1e-6
    finally:
        a.close()
        b.close()


def test_the_goal_is_seen_only_by_the_camera(env):
    start = np.array([-0.1, 0.2])
    first, _ = env.reset(seed=0, options={"start": start, "goal": GOAL_CENTRES[0]})
    second, _ = env.reset(seed=0, options={"start": start, "goal": GOAL_CENTRES[2]})
    np.testing.assert_array_equal(first["state"], second["state"])  # the state cannot tell them apart
    assert np.any(first["camera"] != second["camera"])
    # The red disc is drawn where the goal is, the blue ball where the state says it is.
    for obs, goal in ((first, GOAL_CENTRES[0]), (second, GOAL_CENTRES[2])):
        np.testing.assert_allclose(centroid(red(obs["camera"])), pixel_of(goal), atol=0.75)
        np.testing.assert_allclose(centroid(blue(obs["camera"])), pixel_of(start), atol=0.75)
        # A disc of radius 0.15 on a 64-pixel view of 2.1 units: about pi (0.15 * 64 / 2.1)^2 = 66 pixels.
        assert 50 <= red(obs["camera"]).sum() <= 85


def test_scripted_controller_reaches_every_goal(env):
    lengths = []
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        for step in range(50):
            obs, reward, terminated, _, info = env.step(scripted_action(obs["state"], env.goal))
            if terminated:
                break
        assert terminated and reward == 1.0 and info["success"], seed
        assert np.linalg.norm(obs["state"][:2] - env.goal) < pixel_reach.GOAL_RADIUS
        lengths.append(step + 1)
    # About 0.8 m at up to 1 m/s and 20 Hz, less the 0.15 radius: 10-20 steps.
    assert 8 <= min(lengths) and max(lengths) <= 20


def test_rendering_unavailable_names_mujoco_gl(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "nonsense")
    with pytest.raises(pixel_reach.RenderingUnavailable, match="MUJOCO_GL='nonsense'"):
        PixelReachEnv()
    with pytest.raises(ValueError, match="field 'image_size'"):
        PixelReachEnv(image_size=8)


def test_image_size_is_a_parameter():
    env = PixelReachEnv(image_size=32)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["camera"].shape == (32, 32, 3) and env.observation_space["camera"].shape == (32, 32, 3)
    finally:
        env.close()


def test_dataset_shapes_links_and_card():
    task = get_task("pixel-reach")
    dataset, card = generate_pixel_dataset(task, 6, seed=3)
    n = len(dataset)
    assert set(dataset.observations) == set(dataset.next_observations) == {"camera", "state"}
    for obs in (dataset.observations, dataset.next_observations):
        assert obs["camera"].shape == (n, S, S, 3) and obs["camera"].dtype == np.uint8
        assert obs["state"].shape == (n, 4) and obs["state"].dtype == np.float32
    assert dataset.actions.shape == (n, 2) and dataset.actions.dtype == np.float32
    assert np.all(np.abs(dataset.actions) <= 1)
    assert dataset.num_episodes == 6
    ends = np.flatnonzero(dataset.episode_ends)
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert np.all(lengths <= 50)
    # Within an episode the next observation is the following step's observation.
    inside = np.setdiff1d(np.arange(n - 1), ends)
    for key in ("camera", "state"):
        np.testing.assert_array_equal(dataset.next_observations[key][inside], dataset.observations[key][inside + 1])
    # Reward 1 exactly at the terminals, which end episodes; other episodes run the full 50 steps.
    np.testing.assert_array_equal(dataset.rewards, dataset.terminals)
    assert np.all(dataset.episode_ends[dataset.terminals == 1])
    assert np.all(lengths[dataset.terminals[ends] == 0] == 50)
    assert card["task_goal_success_rate"] == pytest.approx(np.mean(dataset.episode_returns() >= 1))
    assert card["generator"] == "pixel-reach-scripted-controller" and card["seed"] == 3
    # Deterministic under the seed.
    again, _ = generate_pixel_dataset(task, 2, seed=3)
    m = len(again)
    np.testing.assert_array_equal(again.observations["camera"], dataset.observations["camera"][:m])
    np.testing.assert_array_equal(again.actions, dataset.actions[:m])


def test_dataset_episode_kinds():
    task = get_task("pixel-reach")
    # Straight to the goal without noise: every episode succeeds.
    clean, card = generate_pixel_dataset(task, 4, seed=0, noise_range=(0, 0), detour_probability=0, wrong_goal_probability=0)
    assert card["task_goal_success_rate"] == 1.0 and clean.num_episodes == 4
    # Always to another quadrant: no episode succeeds, each runs out of time.
    wrong, card = generate_pixel_dataset(task, 3, seed=0, noise_range=(0, 0), detour_probability=0, wrong_goal_probability=1)
    assert card["task_goal_success_rate"] == 0.0 and card["wrong_goal_episodes"] == 3 and len(wrong) == 150
    with pytest.raises(ValueError, match="'detour_probability' \\+ 'wrong_goal_probability'"):
        generate_pixel_dataset(task, 1, seed=0, detour_probability=0.6, wrong_goal_probability=0.6)
    with pytest.raises(ValueError, match="field 'num_episodes'"):
        generate_pixel_dataset(task, 0, seed=0)
    with pytest.raises(ValueError, match="field 'task'"):
        generate_pixel_dataset(get_task("pointmass-goal"), 1, seed=0)


def test_builtin_dataset_is_the_generator():
    task = get_task("pixel-reach")
    dataset = task.builtin_dataset(2, 5)
    expected, _ = generate_pixel_dataset(task, 2, seed=5)
    np.testing.assert_array_equal(dataset.observations["camera"], expected.observations["camera"])
    scaled = task.training_rewards(dataset)
    assert set(np.unique(scaled.rewards)) <= {-5.0, 5.0}


def test_pixels_config_family_runs_the_pixel_task_on_builtin_data():
    from learner.config import load_config

    config = load_config("pixels", "wsrl")
    assert config.task == "pixel-reach" and config.pretrain.dataset == "builtin"
    assert config.pretrain.algorithm == "calql" and config.finetune.utd_ratio == 4
    assert get_task(config.task).builtin_dataset is not None


def test_env_made_in_one_thread_steps_in_another(env):
    # The robot actor steps its env in a control thread; a GL context is current in one thread at a time.
    import threading

    first, _ = env.reset(seed=4)
    out = {}

    def step():
        try:
            out["obs"] = env.step(np.zeros(2))[0]
        except Exception as e:  # reported below with its message
            out["error"] = e

    thread = threading.Thread(target=step)
    thread.start()
    thread.join()
    assert "error" not in out, out.get("error")
    np.testing.assert_array_equal(out["obs"]["camera"], first["camera"])  # at rest: the same picture
    np.testing.assert_array_equal(env.step(np.zeros(2))[0]["camera"], first["camera"])  # and back in this thread


def test_entry_point_names_the_same_env():
    task = get_task("envs.pixel_reach:PixelReachEnv")
    assert task.family == "custom" and task.max_episode_steps == 50
    assert task.spec()["observation_spec"] == get_task("pixel-reach").spec()["observation_spec"]


def test_dataset_generate_command_gives_the_generator_card():
    import argparse

    from lab.dataset_commands import generate_dataset

    args = argparse.Namespace(episodes=2, seed=1, mode=None)
    dataset, card = generate_dataset(get_task("pixel-reach"), args)
    assert card["generator"] == "pixel-reach-scripted-controller" and card["seed"] == 1
    assert dataset.num_episodes == 2 and dataset.observations["camera"].dtype == np.uint8
