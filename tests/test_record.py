"""`wsrl record` (actor/record.py): episodes with teleop and robot interventions into a dataset."""

import json
import threading

import numpy as np
import pytest

from actor.envs import load_callable, to_policy_units
from actor.record import Recorder
from envs.dataset_card import card_path
from envs.dataset_io import read_dataset
from envs.sim_robot import pointmass_teleop
from learner.cli import main

ROBOT = "envs.sim_robot:SimulatedPointMassRobot"  # takeover for steps 0-4 of every 100


def test_robot_interventions_are_stored_in_place_of_the_policy_action(tmp_path, capsys):
    out = tmp_path / "demos.hdf5"
    # No policy (zero actions): episodes run to the 100-step limit, the "human" acts at 0..4.
    assert main(["record", "--env", ROBOT, "--out", str(out), "--episodes", "2"]) == 0
    data = read_dataset(out)
    card = json.loads(card_path(out).read_text())
    assert data.num_episodes == 2 and len(data) == 200
    human_rows = np.flatnonzero(np.any(data.actions != 0, axis=1))
    np.testing.assert_array_equal(human_rows, [0, 1, 2, 3, 4, 100, 101, 102, 103, 104])
    for row in human_rows:  # the stored action is what the human's controller chose there
        np.testing.assert_allclose(data.actions[row], pointmass_teleop(data.observations[row]), atol=1e-6)
    assert (card["interventions"], card["recorded_episodes"], card["generator"]) == (10, 2, "wsrl record")
    assert "2 episodes (200 transitions, 10 interventions)" in capsys.readouterr().out


def test_teleop_hook_and_policy_entry_points(tmp_path):
    calls = {"n": 0}

    def sometimes(observation):
        calls["n"] += 1
        return np.array([0.0, 0.125]) if calls["n"] % 3 == 0 else None

    recorder = Recorder("pointmass-goal", str(tmp_path / "d.hdf5"), policy=load_callable("envs.sim_robot:pointmass_teleop"), teleop=sometimes)
    stats = recorder.record_episode()
    data = read_dataset(tmp_path / "d.hdf5")
    assert stats["interventions"] == stats["length"] // 3 == np.count_nonzero(np.all(data.actions == [0.0, 0.125], axis=1))
    assert data.num_episodes == 1 and len(data) == stats["length"]
    with pytest.raises(ValueError, match="expected 'package.module:function'"):
        load_callable("nocolon")


def test_stopping_keeps_every_finished_episode_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "d"
    recorder = Recorder("pointmass-goal", str(out), policy=pointmass_teleop)
    first = recorder.record_episode()
    stop = threading.Event()
    stop.set()  # stopped during the second episode: it is dropped, the first stays saved
    assert recorder.record_episode(stop) == {"stopped": True}
    data = read_dataset(out)
    assert data.num_episodes == 1 and len(data) == first["length"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        Recorder("pointmass-goal", str(out))


def test_env_units_are_mapped_back_to_policy_units():
    low, high = np.array([-2.0, 0.0]), np.array([2.0, 10.0])
    np.testing.assert_allclose(to_policy_units(np.array([1.0, 7.5]), low, high), [0.5, 0.5])
    np.testing.assert_allclose(to_policy_units(np.array([-3.0, 10.0]), low, high), [-1.0, 1.0])


def test_recorded_robot_demos_pretrain_under_the_entry_point_task_name(tmp_path):
    from envs.tasks import get_task
    from learner.checkpoint import read_checkpoint

    demos = tmp_path / "demos.hdf5"
    assert main(["record", "--env", ROBOT, "--policy", "envs.sim_robot:pointmass_teleop", "--out", str(demos), "--episodes", "2"]) == 0
    task = get_task(ROBOT)
    assert (task.family, task.max_episode_steps, task.spec()["task"]) == ("custom", 1000, ROBOT)
    assert main([
        "pretrain", "--run-dir", str(tmp_path / "pre"), f"task={ROBOT}", f"pretrain.dataset={demos}", "pretrain.num_steps=3",
        "pretrain.eval_every=0", "agent.critic_hidden_dims=[8]", "agent.actor_hidden_dims=[8]", "agent.batch_size=4",
        "logging.progress=false", "logging.tensorboard=false",
    ]) == 0
    checkpoint = read_checkpoint(tmp_path / "pre" / "checkpoint.ckpt")
    assert checkpoint.spec["task"] == ROBOT and checkpoint.spec["observation_dim"] == 2
    with pytest.raises(ValueError, match="config field 'task': cannot load entry point 'no.such:Env'"):
        get_task("no.such:Env")
