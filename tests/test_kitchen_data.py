"""The scripted kitchen Franka (envs/kitchen_controller.py, envs/kitchen_script.py), its datasets (envs/kitchen_data.py) and
`wsrl dataset generate / inspect` for the kitchen tasks. Episodes are kept short (the kitchen
env steps at about 100/s on a loaded core)."""

import dataclasses
import json

import numpy as np
import pytest

from envs.d4rl_envs import count_done_subtasks
from envs.dataset_card import card_path
from envs.dataset_io import read_dataset
from envs.kitchen_data import episode_queue, generate_kitchen_dataset, subtasks_completed_per_episode, subtasks_done
from envs.kitchen_controller import CartesianController, hand_frame, rotation_about, rotation_error
from envs.kitchen_script import SUBTASKS, SubtaskRunner
from envs.tasks import KITCHEN_SUBTASKS, get_task
from learner.cli import main


@pytest.fixture(scope="module")
def kitchen_env():
    env = get_task("kitchen-mixed").make_raw_env()
    yield env
    env.close()


def test_rotation_helpers_agree():
    frame = hand_frame([0, 1, 0], [1, 0, 0])
    np.testing.assert_allclose(frame, [[0, 1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)  # x = y cross z
    turn = rotation_about([0, 0, 1], 0.3)
    np.testing.assert_allclose(rotation_error(turn @ frame, frame), [0, 0, 0.3], atol=1e-9)
    np.testing.assert_allclose(rotation_error(frame, frame), 0.0, atol=1e-9)


def test_controller_reaches_a_commanded_tool_pose(kitchen_env):
    kitchen_env.reset(seed=0)
    controller = CartesianController(kitchen_env)
    start, rotation = controller.tool_pose()
    target = start + np.array([0.08, 0.12, -0.06])
    target_rotation = rotation_about([0, 1, 0], 0.4) @ rotation
    for _ in range(35):
        action = controller.action(target, target_rotation, 1.0)
        assert action.shape == (9,) and np.all(np.abs(action) <= 1.0)
        kitchen_env.step(action)
    position, reached = controller.tool_pose()
    assert np.linalg.norm(position - target) < 0.01
    assert np.linalg.norm(rotation_error(target_rotation, reached)) < 0.05


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_each_subtask_script_completes_its_subtask_from_the_start(kitchen_env, subtask):
    kitchen_env.reset(seed=0)
    runner = SubtaskRunner(kitchen_env, [subtask])
    data = kitchen_env.unwrapped.data
    assert subtask not in subtasks_done(data.qpos)
    completed = False
    for _ in range(150):
        kitchen_env.step(runner.action())
        completed = completed or subtask in subtasks_done(data.qpos)
        if runner.current is None:
            break
    assert runner.current is None  # the script ran to its end within 150 steps
    assert completed


def test_episode_queues_follow_the_kinds():
    rng = np.random.default_rng(0)
    targets = KITCHEN_SUBTASKS["mixed"]
    assert episode_queue("complete", KITCHEN_SUBTASKS["complete"], rng) == list(KITCHEN_SUBTASKS["complete"])
    full_partial = 0
    for _ in range(200):
        mixed = episode_queue("mixed", targets, rng)
        assert len(mixed) == 4 and len(set(mixed)) == 4
        assert sum(name in targets for name in mixed) == 3  # never the whole target task
        partial = episode_queue("partial", KITCHEN_SUBTASKS["partial"], rng)
        assert len(set(partial)) == 4 and set(partial) <= set(SUBTASKS)
        for queue in (mixed, partial):  # the open hinge door would cover the slide's handle
            if "hinge cabinet" in queue and "slide cabinet" in queue:
                assert queue.index("slide cabinet") < queue.index("hinge cabinet")
        full_partial += partial == list(KITCHEN_SUBTASKS["partial"])
    assert 40 < full_partial < 100  # about a third of the partial episodes are the target task


def _short(task_name, steps):
    return dataclasses.replace(get_task(task_name), max_episode_steps=steps)


def test_data_follow_the_task_mdp():
    task = _short("kitchen-complete", 130)
    dataset, card = generate_kitchen_dataset(task, 2, seed=3, noise_range=(0.0, 0.05))
    targets = KITCHEN_SUBTASKS["complete"]
    ends = np.flatnonzero(dataset.episode_ends)
    lengths = np.diff(np.concatenate([[-1], ends]))
    assert len(ends) == 2 and np.all(lengths <= 130)
    assert [e["length"] for e in card["episodes"]] == lengths.tolist()
    # No transition crosses an episode; terminals only where all four targets were completed.
    inside = np.setdiff1d(np.arange(len(dataset) - 1), ends)
    np.testing.assert_array_equal(dataset.next_observations[inside], dataset.observations[inside + 1])
    assert not dataset.terminals[~dataset.episode_ends].any()
    # Reward = the target subtasks in their goal configuration after the step, read from the
    # next observation's object positions (robot qpos 9 + object qpos 21 = the env's qpos).
    goals = get_task("kitchen-complete").make_raw_env().unwrapped.goal
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_INDICES

    for row, reward in zip(dataset.next_observations, dataset.rewards):
        qpos = np.concatenate([row[:9], row[18:39]])
        achieved = {name: qpos[OBS_ELEMENT_INDICES[name]] for name in targets}
        assert reward == count_done_subtasks(achieved, goals)
    # The card's per-episode completions agree with what the observations show; the first
    # episode got at least the microwave done within 130 steps.
    from_observations = subtasks_completed_per_episode(dataset)
    for episode, seen in zip(card["episodes"], from_observations):
        assert episode["subtasks"] == list(targets)
        assert set(seen) == set(episode["completed"])
    assert "microwave" in card["episodes"][0]["completed"]
    microwave = card["subtask_success"]["microwave"]
    assert microwave["queued"] == microwave["started"] == 2 and microwave["successes"] >= 1


def test_generation_is_deterministic_for_a_seed():
    task = _short("kitchen-mixed", 30)
    first, card_a = generate_kitchen_dataset(task, 2, seed=7)
    second, card_b = generate_kitchen_dataset(task, 2, seed=7)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert card_a["episodes"] == card_b["episodes"]
    other, _ = generate_kitchen_dataset(task, 2, seed=8)
    assert not np.array_equal(other.actions[:10], first.actions[:10])


def test_generator_refuses_bad_arguments():
    with pytest.raises(ValueError, match="field 'task'.*'pointmaze-umaze' of family 'maze'"):
        generate_kitchen_dataset(get_task("pointmaze-umaze"), 1, seed=0)
    with pytest.raises(ValueError, match="field 'num_episodes'"):
        generate_kitchen_dataset(get_task("kitchen-mixed"), 0, seed=0)
    with pytest.raises(ValueError, match="field 'kind'"):
        generate_kitchen_dataset(get_task("kitchen-mixed"), 1, seed=0, kind="expert")
    with pytest.raises(ValueError, match="field 'subtasks'.*'oven'"):
        SubtaskRunner(get_task("kitchen-mixed").make_raw_env(), ["oven"])


def test_cli_generate_then_inspect_reports_subtasks(tmp_path, capsys, monkeypatch):
    # A short time limit keeps the round trip fast; the CLI reads the task from the table.
    import envs.tasks as tasks

    monkeypatch.setitem(tasks.TASKS, "kitchen-mixed", _short("kitchen-mixed", 60))
    out = tmp_path / "k.hdf5"
    assert main(["dataset", "generate", "--task", "kitchen-mixed", "--episodes", "2", "--out", str(out)]) == 0
    card = json.loads(card_path(out).read_text())
    assert card["generator"] == "kitchen-scripted-franka" and card["kind"] == "mixed"
    assert len(card["episodes"]) == 2 and card["num_transitions"] == len(read_dataset(out))
    capsys.readouterr()
    assert main(["dataset", "inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    k = summary["kitchen_subtasks"]
    assert k["target_subtasks"] == list(KITCHEN_SUBTASKS["mixed"])
    assert sum(k["target_completed_histogram"]) == 2
    assert k["target_completed_mean"] == pytest.approx(card["target_subtasks_completed_mean"])
    assert main(["dataset", "inspect", str(out)]) == 0
    assert "subtasks completed per episode" in capsys.readouterr().out
