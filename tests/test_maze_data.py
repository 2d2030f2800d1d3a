"""The maze dataset generator (point mazes and antmaze, with the ant's tuned gaits),
`wsrl dataset generate / inspect`, and dataset paths in `pretrain.dataset`."""

import json

import numpy as np
import pytest

from envs import d4rl_envs
from envs.ant_gait import GAITS, AntJoints, AntSim, GaitController, torso_uprightness, walk
from envs.dataset_card import card_path
from envs.dataset_io import read_dataset
from envs.maze_data import (
    PLAY_CELLS,
    WaypointController,
    free_cells,
    generate_maze_dataset,
    next_cell_towards,
    planned_path,
)
from envs.tasks import get_task
from learner.cli import main
from learner.config import ConfigError, load_config
from learner.runs import load_offline_dataset

UMAZE = d4rl_envs.MAZE_LAYOUTS["umaze"]


def test_planned_path_goes_around_the_u():
    # U-maze: free cells (1,1..3), (2,3), (3,1..3); from the bottom-left to the top-left
    # the only way is along the U.
    assert free_cells(UMAZE) == [(1, 1), (1, 2), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)]
    assert planned_path(UMAZE, (3, 1), (1, 1)) == [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    towards = next_cell_towards(UMAZE, (1, 1))
    assert towards[(2, 3)] == (1, 3) and towards[(1, 1)] == (1, 1)
    with pytest.raises(ValueError, match=r"goal cell \(0, 0\) is a wall"):
        next_cell_towards(UMAZE, (0, 0))


def test_noiseless_controller_reaches_the_goal_of_every_point_maze():
    for maze in ("umaze", "medium", "large"):
        task = get_task(f"pointmaze-{maze}")
        env = task.make_env(seed=0, training=False)
        maze_env = env.unwrapped
        controller = WaypointController(maze_env.maze, d4rl_envs.MAZE_LAYOUTS[maze])
        goal_cell = d4rl_envs.POINTMAZE_CELLS[maze][1]
        observation, _ = env.reset(seed=0)
        for _ in range(task.max_episode_steps):
            action = controller.action(observation[:2], observation[2:4], goal_cell, maze_env.goal)
            observation, reward, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        assert terminated and reward == 1.0, f"{maze}: the controller did not reach the goal"


@pytest.fixture(scope="module")
def umaze_data():
    return generate_maze_dataset(get_task("pointmaze-umaze"), 30, seed=3)


def test_generator_is_deterministic_under_its_seed(umaze_data):
    dataset, card = umaze_data
    again, card_again = generate_maze_dataset(get_task("pointmaze-umaze"), 30, seed=3)
    other, _ = generate_maze_dataset(get_task("pointmaze-umaze"), 30, seed=4)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends"):
        np.testing.assert_array_equal(getattr(dataset, name), getattr(again, name))
    assert card == card_again
    assert len(other) != len(dataset) or not np.array_equal(other.actions, dataset.actions)


def test_generated_episodes_follow_the_task_mdp(umaze_data):
    dataset, card = umaze_data
    task = get_task("pointmaze-umaze")
    ends = np.flatnonzero(dataset.episode_ends)
    lengths = np.diff(np.concatenate([[-1], ends]))
    # An episode ends at the task goal (reward 1, terminal) or at the time limit, never else.
    np.testing.assert_array_equal(dataset.rewards, dataset.terminals)
    assert np.all(dataset.episode_ends[dataset.terminals == 1])
    assert np.all((dataset.terminals[ends] == 1) | (lengths == task.max_episode_steps))
    # No transition crosses an episode; inside one, next_obs is the next row's obs.
    inside = ~dataset.episode_ends[:-1]
    np.testing.assert_array_equal(dataset.next_observations[:-1][inside], dataset.observations[1:][inside])
    assert dataset.observations.shape[1] == 4 and np.all(np.abs(dataset.actions) <= 1)
    # The data reaches its commanded goals and the task goal in a meaningful share of episodes.
    assert card["commanded_goals_reached"] >= len(lengths)
    assert 0.2 <= card["task_goal_success_rate"] < 1.0
    assert card["task_goal_success_rate"] == pytest.approx(dataset.terminals.sum() / 30)


def test_play_mode_starts_only_from_the_hand_picked_cells():
    task = get_task("pointmaze-medium")
    dataset, card = generate_maze_dataset(task, 8, seed=0, mode="play")
    maze = task.make_raw_env().unwrapped.maze
    starts = np.concatenate([[0], np.flatnonzero(dataset.episode_ends)[:-1] + 1])
    start_cells = {tuple(int(v) for v in maze.cell_xy_to_rowcol(dataset.observations[i, :2])) for i in starts}
    assert card["mode"] == "play"
    assert start_cells <= set(PLAY_CELLS["medium"]) - {d4rl_envs.POINTMAZE_CELLS["medium"][1]}


def test_generator_refuses_other_families_and_bad_arguments():
    with pytest.raises(ValueError, match="field 'task'.*'kitchen-mixed' of family 'kitchen'"):
        generate_maze_dataset(get_task("kitchen-mixed"), 1, seed=0)
    with pytest.raises(ValueError, match="field 'noise_range'"):
        generate_maze_dataset(get_task("antmaze-umaze"), 1, seed=0, noise_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="field 'mode'"):
        generate_maze_dataset(get_task("pointmaze-umaze"), 1, seed=0, mode="random")
    with pytest.raises(ValueError, match="field 'num_episodes'"):
        generate_maze_dataset(get_task("pointmaze-umaze"), 0, seed=0)


def test_cli_generate_then_inspect_round_trips_in_both_formats(tmp_path, capsys):
    out = tmp_path / "umaze.hdf5"
    assert main(["dataset", "generate", "--task", "pointmaze-umaze", "--out", str(out), "--episodes", "12", "--seed", "5"]) == 0
    expected, expected_card = generate_maze_dataset(get_task("pointmaze-umaze"), 12, seed=5)
    loaded = read_dataset(out)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(expected, name))
    card = json.loads(card_path(out).read_text())
    assert card["generator"] == "maze-waypoint-controller" and card["seed"] == 5
    assert card["success_rate"] == pytest.approx(expected_card["task_goal_success_rate"])

    minari_dir = tmp_path / "umaze-minari"
    assert main(["dataset", "generate", "--task", "pointmaze-umaze", "--out", str(minari_dir), "--episodes", "12", "--seed", "5"]) == 0
    # A flat (Box) Minari dataset loads with or without the task's dict keys.
    from_minari = read_dataset(minari_dir, observation_keys=("observation",), observation_dim=4, action_dim=2)
    np.testing.assert_array_equal(from_minari.observations, expected.observations)
    np.testing.assert_array_equal(from_minari.episode_ends, expected.episode_ends)

    capsys.readouterr()
    assert main(["dataset", "inspect", str(minari_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_episodes"] == 12 and summary["num_transitions"] == len(expected)
    assert summary["success_rate"] == pytest.approx(expected_card["task_goal_success_rate"])
    assert summary["card"]["mode"] == "diverse"
    assert main(["dataset", "inspect", str(out), "--task", "pointmaze-umaze"]) == 0
    text = capsys.readouterr().out
    assert f"transitions {len(expected)}, episodes 12" in text and "success rate" in text


def test_cli_refuses_to_overwrite_and_names_unsupported_families(tmp_path, capsys):
    out = tmp_path / "d.hdf5"
    out.write_bytes(b"keep me")
    assert main(["dataset", "generate", "--task", "pointmaze-umaze", "--out", str(out), "--episodes", "2"]) == 2
    assert out.read_bytes() == b"keep me"
    assert "--overwrite" in capsys.readouterr().err
    assert main(["dataset", "generate", "--task", "door-binary", "--out", str(tmp_path / "door.hdf5")]) == 2
    assert "family 'adroit'" in capsys.readouterr().err
    assert main(["dataset", "inspect", str(tmp_path / "missing.hdf5")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pretrain_dataset_path_is_read_with_the_task_reward_convention(tmp_path):
    out = tmp_path / "umaze.hdf5"
    raw, _ = generate_maze_dataset(get_task("pointmaze-umaze"), 5, seed=1)
    from envs.dataset_writers import write_d4rl_hdf5

    write_d4rl_hdf5(raw, out)
    config = load_config("pointmaze", "wsrl", [f"pretrain.dataset={out}"])
    loaded = load_offline_dataset(config, get_task("pointmaze-umaze"))
    np.testing.assert_allclose(loaded.rewards, 10.0 * raw.rewards - 5.0)  # +5 at the goal, -5 per step
    # The point-mass task has 2-dim observations: the 4-dim file is refused, naming both.
    config = load_config("pointmass", "wsrl", [f"pretrain.dataset={out}"])
    with pytest.raises(ConfigError, match=r"pretrain.dataset.*observations.*4.*2|pretrain.dataset.*2.*4"):
        load_offline_dataset(config, get_task("pointmass-goal"))
    config = load_config("pointmaze", "wsrl", ["task=door-binary"])
    with pytest.raises(ConfigError, match="pretrain.dataset.*no builtin dataset.*door-binary-v0.hdf5"):
        load_offline_dataset(config, get_task("door-binary"))


def test_cli_generates_locomotion_data_through_the_behaviour_generator(tmp_path, capsys):
    out = tmp_path / "hopper-random.hdf5"
    assert main(["dataset", "generate", "--task", "hopper-random", "--out", str(out), "--transitions", "300"]) == 0
    loaded = read_dataset(out, observation_dim=11, action_dim=3)
    card = json.loads(card_path(out).read_text())
    assert len(loaded) == 300 and card["kind"] == "random" and card["generator"] == "locomotion-behaviour-sac"
    assert np.all(loaded.episode_ends[loaded.terminals == 1])
    capsys.readouterr()
    assert main(["dataset", "generate", "--task", "hopper-medium-replay", "--out", str(tmp_path / "mr.hdf5"), "--transitions", "10"]) == 2
    assert "'num_transitions'" in capsys.readouterr().err


# --- antmaze: the ant's gaits and its data ---------------------------------------------------
def test_ant_layout_is_read_from_the_antmaze_model():
    model = get_task("antmaze-umaze").make_raw_env().unwrapped.model
    joints = AntJoints.from_model(model)
    # Legs counter-clockwise from +x; each action index drives that leg's joint.
    for leg, (hip, ankle) in enumerate(zip(joints.hip_action, joints.ankle_action), start=1):
        assert model.joint(model.actuator_trnid[hip, 0]).name == f"hip_{leg}"
        assert model.joint(model.actuator_trnid[ankle, 0]).name == f"ankle_{leg}"
    assert list(joints.hip_action) != sorted(joints.hip_action)  # the actuators are not in leg order
    np.testing.assert_array_equal(joints.ankle_sign, [1, -1, -1, 1])
    # The maze model and the bare ant the gaits were tuned in hold the same ant.
    bare = AntSim().joints
    for name in ("hip_qpos", "ankle_qpos", "hip_action", "ankle_action", "ankle_sign"):
        np.testing.assert_array_equal(getattr(joints, name), getattr(bare, name))


def test_turned_gait_hands_each_leg_the_previous_legs_part():
    gait = GAITS[0]
    hip, ankle = gait.targets(0.3)
    hip_turned, ankle_turned = gait.targets(0.3, quarter_turns=1)
    np.testing.assert_allclose(hip_turned, np.roll(hip, 1))
    np.testing.assert_allclose(ankle_turned, np.roll(ankle, 1))


@pytest.mark.parametrize("direction", [0, 90, 135, 250])
def test_gaits_walk_the_ant_where_it_is_sent(direction):
    # Closed loop from a jittered start: 5 s towards `direction` (250: between two gaits).
    sim = AntSim()
    result = walk(sim, GaitController(sim.joints), direction, 100, np.random.default_rng(direction))
    assert result["fell_at"] is None and result["lowest_uprightness"] > 0.5
    assert result["progress"] > 3.0, result  # > 0.6 m/s; the tuned gaits do 1.3-2 m/s
    assert result["sideways"] < 0.5 * result["progress"], result
    assert torso_uprightness(sim.data.qpos[3:7]) > 0.8


def test_gait_controller_refuses_an_empty_gait_table():
    with pytest.raises(ValueError, match="field 'gaits'"):
        GaitController(AntSim().joints, ())


@pytest.fixture(scope="module")
def antmaze_data():
    return generate_maze_dataset(get_task("antmaze-umaze"), 6, seed=0)


def test_antmaze_data_follows_the_task_mdp_and_reaches_goals(antmaze_data):
    dataset, card = antmaze_data
    task = get_task("antmaze-umaze")
    ends = np.flatnonzero(dataset.episode_ends)
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert dataset.observations.shape[1] == 29 and dataset.actions.shape[1] == 8
    assert np.all(np.abs(dataset.actions) <= 1)
    np.testing.assert_array_equal(dataset.rewards, dataset.terminals)
    assert np.all((dataset.terminals[ends] == 1) | (lengths == task.max_episode_steps))
    inside = ~dataset.episode_ends[:-1]
    np.testing.assert_array_equal(dataset.next_observations[:-1][inside], dataset.observations[1:][inside])
    assert card["generator"] == "antmaze-waypoint-gait-controller" and card["mode"] == "diverse"
    # The ant gets around: it reaches commanded goals (about 3 per episode measured) and the
    # task goal in some episodes, and mostly stays on its feet.
    assert card["commanded_goals_reached"] >= len(lengths)
    assert card["task_goal_success_rate"] > 0
    assert card["task_goal_success_rate"] == pytest.approx(dataset.terminals.sum() / 6)
    uprightness = 1 - 2 * (dataset.observations[:, 4] ** 2 + dataset.observations[:, 5] ** 2)
    assert np.mean(uprightness > 0.3) > 0.9
    # It travels: the torso covers ground in every episode.
    for start, end in zip(np.concatenate([[0], ends[:-1] + 1]), ends):
        path = np.linalg.norm(np.diff(dataset.observations[start:end + 1, :2], axis=0), axis=1).sum()
        assert path > 5.0


def test_antmaze_generator_is_deterministic_and_round_trips_through_the_cli(antmaze_data, tmp_path):
    out = tmp_path / "antmaze.hdf5"
    args = ["dataset", "generate", "--task", "antmaze-umaze-diverse", "--out", str(out), "--episodes", "2", "--seed", "4"]
    assert main(args) == 0
    expected, expected_card = generate_maze_dataset(get_task("antmaze-umaze-diverse"), 2, seed=4)
    loaded = read_dataset(out, observation_dim=29, action_dim=8)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(expected, name))
    card = json.loads(card_path(out).read_text())
    assert card["generator"] == "antmaze-waypoint-gait-controller" and card["seed"] == 4
    assert card["commanded_goals_reached"] == expected_card["commanded_goals_reached"]
    # Another seed: other data.
    first, _ = antmaze_data
    assert not np.array_equal(expected.observations[:100], first.observations[:100])


def test_antmaze_tasks_have_builtin_data():
    dataset = get_task("antmaze-medium-play").builtin_dataset(1, 0)
    assert dataset.observations.shape == (len(dataset), 29) and dataset.num_episodes == 1
