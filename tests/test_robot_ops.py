"""Running a robot as its users do (issue 20, actor side): control-period statistics, workspace
limits, teleop devices (keyboard over a pipe, a SpaceMouse over a fake HID device), the e-stop
exit status, TLS hints, the older-policy notice, per-step intervention flags, file modes and
the success rate of a recording."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import envs.sim_robot
from actor.loop import EXIT_EMERGENCY_STOP, ActorError, ActorLoop, ActorSettings, exit_status
from actor.record import Recorder
from actor.robot import RobotActor, format_period_stats, period_stats
from actor.teleop import KeyboardTeleop, SpaceMouseTeleop, make_teleop
from envs.robot import find_attribute
from envs.sim_robot import pointmass_teleop
from learner.cli import main
from tests.test_robot_actor import checkpoint, learner_config, robot_actor, run_in_thread, start_learner, wait_for  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]


# ---- control-period statistics --------------------------------------------------------------


def test_period_statistics_by_hand():
    periods = [0.05] * 99 + [0.1]
    work = [0.01] * 98 + [0.06, 0.07]
    stats = period_stats(periods, work, 0.05)
    assert stats["period_mean_ms"] == pytest.approx(50.5)  # (99 * 50 + 100) / 100
    assert stats["period_p99_ms"] == pytest.approx(50.5)  # linear: 50 + 0.01 * (100 - 50) at rank 98.01
    assert stats["period_max_ms"] == pytest.approx(100.0)
    assert stats["work_p99_ms"] == pytest.approx(60.1)  # 60 + 0.01 * (70 - 60) at rank 98.01
    assert stats["overruns"] == 2 and stats["steps"] == 100
    line = format_period_stats(stats, 0.05)
    assert "period mean 50.50 ms, p99 50.50 ms, max 100.00 ms (target 50.00 ms), work p99 60.10 ms, 2 overruns in 100 steps" == line


def test_status_lines_show_the_period_statistics_of_their_window(tmp_path, monkeypatch, checkpoint):
    server = start_learner(learner_config(checkpoint))
    actor = robot_actor(server.address, tmp_path, monkeypatch, control_hz=100.0)
    try:
        actor.run(30)
        line = actor.status_line()
        expected = format_period_stats(period_stats(list(actor.periods), list(actor.work_times), 0.01), 0.01)
        assert line.endswith("since the last line: " + expected) and "30 steps" in line
        assert actor.status_line().endswith("since the last line: no steps")  # the window restarts
        summary = actor.summary(True)
        assert summary["period_mean_ms"] == pytest.approx(1e3 * np.mean(actor.periods))
        assert summary["period_max_ms"] == pytest.approx(1e3 * max(actor.periods))
        assert summary["period_steps"] == 30
        assert actor.period_summary_line().startswith("[wsrl actor] robot: control at 100 Hz: period mean ")
    finally:
        actor.close()
        server.stop(grace=0)


# ---- e-stop exit status and the statistics of `wsrl actor --robot`, as a process -------------


def test_wsrl_actor_prints_period_statistics_and_an_estop_exits_with_status_3(tmp_path):
    from envs.tasks import get_task
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint
    from tests.conftest import tiny_config

    assert exit_status({"emergency_stopped": True, "delivered": True}) == EXIT_EMERGENCY_STOP == 3
    assert exit_status({"emergency_stopped": False, "delivered": False}) == 1
    assert exit_status({"emergency_stopped": False, "delivered": True}) == 0
    robot = "envs.sim_robot:SimulatedPointMassRobot"
    spec = {**get_task("pointmass-goal").spec(), "task": robot}
    config = tiny_config()
    pre = save_checkpoint(tmp_path / "pre.ckpt", make_agent("calql", config.agent, 2, 2, seed=3), config, spec)
    from learner.distributed.server import LearnerServer
    from learner.distributed.settings import DistributedSettings
    from learner.distributed.trainer import Trainer

    server = LearnerServer(Trainer(learner_config(pre), spec, DistributedSettings(mode="async")), "127.0.0.1:0").start()
    command = [sys.executable, "-m", "learner.cli", "actor", "--robot", "--env", robot, "--learner", server.address,
               "--actor-id", "arm-1", "--spool-dir", str(tmp_path / "spool"), "--status-every", "0.5"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "JAX_PLATFORMS": "cpu"})
    lines: list[str] = []
    try:
        for line in process.stdout:  # wait for a status line with the period statistics
            lines.append(line)
            if "since the last line: period mean" in line:
                break
        process.send_signal(signal.SIGQUIT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop(grace=0)
    text = "".join(lines) + out
    assert process.returncode == EXIT_EMERGENCY_STOP, text
    assert "EMERGENCY STOP: robot stopped" in text and "EMERGENCY STOP (exit status 3)" in text
    assert "arm-1: control at 20 Hz: period mean " in text and "(target 50.00 ms)" in text


# ---- workspace limits -----------------------------------------------------------------------


def full_speed_up_right(observation):
    """A "human" pushing the point mass up and right at full speed every step."""
    return np.array([1.0, 1.0], np.float32)


def test_workspace_projection_keeps_the_position_inside(tmp_path, monkeypatch, checkpoint):
    """The point mass moves MAX_SPEED (0.1) per unit action: the projection allows at most
    (high - position) / 0.1 per component, so the stored actions are min(1, that) exactly and
    no position ever leaves the box."""
    server = start_learner(learner_config(checkpoint))
    actor = robot_actor(server.address, tmp_path, monkeypatch, control_hz=200.0, robot={"workspace_action_scale": 0.1},
                        workspace_low=(-1.0, -1.0), workspace_high=(-0.5, -0.3), workspace_mode="project")
    actor.teleop = full_speed_up_right
    try:
        result = actor.run(12)
        assert result["safety_stops"] == 0 and result["interventions"] == 12 == result["teleop_steps"]
        assert server.trainer.wait_processed(12, 20)
        data = {k: np.asarray(server.trainer.replay.data[k][:12]) for k in ("observations", "actions", "next_observations")}
        expected = np.minimum(1.0, (np.array([-0.5, -0.3]) - data["observations"]) / 0.1)
        np.testing.assert_allclose(data["actions"], expected, atol=1e-5)
        assert np.all(data["next_observations"] <= np.array([-0.5, -0.3]) + 1e-6)
        np.testing.assert_allclose(data["next_observations"][-1], [-0.5, -0.3], atol=1e-6)  # it got to the corner
        assert result["projected_steps"] == int(np.sum(np.any(expected < 1.0, axis=1)))
    finally:
        actor.close()
        server.stop(grace=0)


def test_workspace_stop_is_a_safety_stop_with_the_envs_default_bounds(tmp_path, monkeypatch, checkpoint):
    server = start_learner(learner_config(checkpoint))
    bounds = ((-1.0, -1.0), (-0.5, -0.3))  # the env's `workspace_bounds` (no flags given)
    actor = robot_actor(server.address, tmp_path, monkeypatch, control_hz=200.0, robot={"workspace_bounds": bounds, "operator_reset_s": 0.01})
    actor.teleop = full_speed_up_right
    try:
        actor.connect()
        thread, result = run_in_thread(actor, 40)
        wait_for(lambda: actor.paused, 20, "the workspace stop to pause the actor")
        steps = actor.env_steps
        assert actor.workspace_stops == 1 == actor.safety_stops and actor.num_episodes == 1
        assert len(find_attribute(actor.env, "emergency_stops")) == 1
        actor.emergency_stop()
        thread.join(30)
        assert "error" not in result, result
        assert server.trainer.wait_processed(steps, 20)
        data = {k: np.asarray(server.trainer.replay.data[k][:steps]) for k in ("observations", "next_observations", "terminals")}
        outside = np.any(data["next_observations"] > np.array([-0.5, -0.3]) + 1e-6, axis=1)
        assert outside[-1] and not outside[:-1].any()  # stopped at the first step that left the box
        assert not data["terminals"].any()  # a truncation, not a terminal
    finally:
        actor.close()
        server.stop(grace=0)


def test_a_reset_outside_the_workspace_holds_the_robot_until_resumed(tmp_path, monkeypatch, checkpoint):
    """The point mass starts near (-0.7, -0.7), outside x, y in [0, 1]: no step is taken; each
    resume brings another operator reset first."""
    server = start_learner(learner_config(checkpoint))
    actor = robot_actor(server.address, tmp_path, monkeypatch, control_hz=200.0, workspace_low=(0.0, 0.0), workspace_high=(1.0, 1.0))
    try:
        actor.connect()
        thread, result = run_in_thread(actor, 10)
        wait_for(lambda: actor.paused, 20, "the reset outside the workspace to pause the actor")
        assert actor.env_steps == 0 and find_attribute(actor.env, "operator_resets") == 1
        actor.resume()
        wait_for(lambda: actor.paused and find_attribute(actor.env, "operator_resets") == 2, 20, "a second reset, outside again")
        assert actor.env_steps == 0 and actor.safety_stops == 0
        actor.emergency_stop()
        thread.join(30)
        assert "error" not in result and result["env_steps"] == 0
    finally:
        actor.close()
        server.stop(grace=0)


def test_a_pause_hands_off_the_partial_batch(tmp_path, monkeypatch, checkpoint):
    """Batches of 1000 steps and no latency deadline: without the hand-off at the pause the
    learner would see none of the steps taken before it for the whole pause."""
    server = start_learner(learner_config(checkpoint))
    actor = robot_actor(server.address, tmp_path, monkeypatch, control_hz=200.0, batch_size=1000, max_latency_s=1e6)
    try:
        actor.connect()
        thread, result = run_in_thread(actor, 0)
        wait_for(lambda: actor.env_steps >= 7, 20, "7 control steps")
        assert "steps not yet batched" in actor.status_line()
        actor.pause()
        wait_for(lambda: not actor._pending, 20, "the partial batch handed off")
        steps = actor.env_steps
        assert server.trainer.wait_processed(steps, 20) and len(server.trainer.replay) == steps
        assert actor.paused and "not yet batched" not in actor.status_line()
        actor.emergency_stop()
        thread.join(30)
        assert "error" not in result and result["env_steps"] == steps  # not a step during the pause
    finally:
        actor.close()
        server.stop(grace=0)


def test_workspace_settings_are_checked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="'workspace_high': got 1 values, expected as many as workspace_low"):
        ActorSettings(robot=True, spool_dir="x", workspace_low=(0.0, 0.0), workspace_high=(1.0,))
    with pytest.raises(ValueError, match="'workspace_low': got \\[2.0\\], expected each <= workspace_high"):
        ActorSettings(robot=True, spool_dir="x", workspace_low=(2.0,), workspace_high=(1.0,))
    with pytest.raises(ValueError, match="'workspace_mode': got 'clip'"):
        ActorSettings(robot=True, spool_dir="x", workspace_mode="clip")
    with pytest.raises(ValueError, match="robot mode only"):
        ActorSettings(teleop="keyboard")
    with pytest.raises(ValueError, match="'project' needs the env's 'workspace_action_scale'"):
        robot_actor("127.0.0.1:1", tmp_path, monkeypatch, workspace_low=(-1, -1), workspace_high=(0, 0), workspace_mode="project")


# ---- teleop devices -------------------------------------------------------------------------


def test_keyboard_teleop_over_a_pipe():
    read_end, write_end = os.pipe()
    try:
        keyboard = KeyboardTeleop(2, step=0.25, fd=read_end, require_tty=False)
        assert keyboard(None) is None
        os.write(write_end, b"dd")  # not taken over yet: presses do nothing
        assert keyboard(None) is None
        os.write(write_end, b" dd")  # take over, +0.5 on component 0
        np.testing.assert_array_equal(keyboard(None), [0.5, 0.0])
        os.write(write_end, b"w\x1b[A")  # 'w' and the up arrow: +0.25 twice on component 1
        np.testing.assert_array_equal(keyboard(None), [0.5, 0.5])
        os.write(write_end, b"\x1b[")  # an arrow key split between two reads
        np.testing.assert_array_equal(keyboard(None), [0.5, 0.5])
        os.write(write_end, b"C" + b"d" * 9)  # right arrow, then beyond the bound
        np.testing.assert_array_equal(keyboard(None), [1.0, 0.5])
        os.write(write_end, b"x")
        np.testing.assert_array_equal(keyboard(None), [0.0, 0.0])
        os.write(write_end, b"ss ")  # hand back to the policy
        assert keyboard(None) is None
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(ValueError, match="expected 1..7"):
        KeyboardTeleop(8, fd=0, require_tty=False)


def test_teleop_by_name(monkeypatch):
    assert make_teleop("envs.sim_robot:pointmass_teleop", 2) is pointmass_teleop
    with pytest.raises(ValueError, match="--teleop: got 'joystick', expected one of keyboard, spacemouse"):
        make_teleop("joystick", 2)
    read_end, write_end = os.pipe()  # standard input that is not a terminal
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end))
    try:
        with pytest.raises(ValueError, match="--teleop keyboard: standard input is not a terminal"):
            make_teleop("keyboard", 2)
    finally:
        os.close(write_end)


class FakeHID:
    """A HID device as pyspacemouse's easyhid sees one: reads return queued raw reports."""

    product_string, manufacturer_string, release_number, serial_number = "SpaceNavigator", "3Dconnexion", 1, "x"

    def __init__(self):
        self.reports: list[bytes] = []
        self.closed = False

    def open(self):
        pass

    def set_nonblocking(self, value):
        pass

    def read(self, size):
        return self.reports.pop(0) if self.reports else b""

    def close(self):
        self.closed = True


def int16(value: int) -> bytes:
    return int(value).to_bytes(2, "little", signed=True)


def test_spacemouse_teleop_through_pyspacemouse_with_a_fake_hid_device():
    pyspacemouse = pytest.importorskip("pyspacemouse")
    spec = pyspacemouse.apply_axis_convention(pyspacemouse.get_device_specs()["SpaceNavigator"], pyspacemouse.AxisConvention.HID_Z_UP)
    hid = FakeHID()
    device = pyspacemouse.SpaceMouseDevice(info=spec, device=hid)
    device.open()
    mouse = SpaceMouseTeleop(7, device=device, deadzone=0.05)
    assert mouse(None) is None  # at rest: the policy acts
    # SpaceNavigator reports (axis_scale 350): 1 = translation x, y, z; 2 = rotation; 3 = buttons.
    # Z-up frame: x = +raw / 350, y = -raw / 350, z = -raw / 350, roll = +raw / 350.
    hid.reports += [bytes([1]) + int16(175) + int16(-350) + int16(7),  # x 0.5, y 1.0, z -0.02 (in the deadzone)
                    bytes([2]) + int16(70) + int16(0) + int16(0),  # roll 0.2
                    bytes([3, 0b01])]  # the first button: gripper +1
    np.testing.assert_allclose(mouse(None), [0.5, 1.0, 0.0, 0.2, 0.0, 0.0, 1.0], atol=1e-6)
    hid.reports += [bytes([1]) + int16(0) * 3, bytes([2]) + int16(0) * 3, bytes([3, 0b10])]
    np.testing.assert_allclose(mouse(None), [0, 0, 0, 0, 0, 0, -1.0])  # the second button: gripper -1
    hid.reports += [bytes([3, 0])]
    assert mouse(None) is None  # released: back to the policy
    two = SpaceMouseTeleop(2, device=device)
    hid.reports += [bytes([1]) + int16(-700) + int16(35) + int16(0)]
    np.testing.assert_allclose(two(None), [-1.0, -0.1])  # clipped to [-1, 1]
    two.close()
    assert hid.closed


def test_a_teleop_takeover_in_the_robot_actor_is_stored_and_flagged(tmp_path, monkeypatch, checkpoint):
    """Steps 20..29: the teleop device acts; steps with step % 10 < 3: the env's own takeover
    hook (what the robot executed wins). Every human step carries the intervention flag."""
    server = start_learner(learner_config(checkpoint))
    robot = {"intervention_every": 10, "intervention_steps": 3, "intervention_policy": pointmass_teleop}
    actor = robot_actor(server.address, tmp_path, monkeypatch, robot=robot, control_hz=200.0)
    calls = {"n": 0}

    def device(observation):
        calls["n"] += 1
        return np.array([0.25, -0.5]) if 21 <= calls["n"] <= 30 else None

    actor.teleop = device
    flags = []
    columns = actor._batch_columns
    actor._batch_columns = lambda: (lambda c: flags.append(c["interventions"]) or c)(columns())
    try:
        result = actor.run(40)
        steps = np.arange(40)
        env_human, by_device = steps % 10 < 3, (steps >= 20) & (steps < 30)
        np.testing.assert_array_equal(np.concatenate(flags), env_human | by_device)
        assert result["interventions"] == 19 and result["teleop_steps"] == 10
        assert server.trainer.wait_processed(40, 20)
        actions = np.asarray(server.trainer.replay.data["actions"][:40])
        observations = np.asarray(server.trainer.replay.data["observations"][:40])
        for step in np.flatnonzero(by_device & ~env_human):
            np.testing.assert_array_equal(actions[step], [0.25, -0.5])
        for step in np.flatnonzero(env_human):
            np.testing.assert_allclose(actions[step], pointmass_teleop(observations[step]), atol=1e-6)
    finally:
        actor.close()
        server.stop(grace=0)


def test_record_takes_a_teleop_device(tmp_path):
    read_end, write_end = os.pipe()
    try:
        keyboard = KeyboardTeleop(2, fd=read_end, require_tty=False)
        os.write(write_end, b" wwww")  # take over: full speed up (component 1 = +1)
        recorder = Recorder("pointmass-goal", str(tmp_path / "d.hdf5"), teleop=keyboard)
        stats = recorder.record_episode()
    finally:
        os.close(read_end)
        os.close(write_end)
    card = json.loads((tmp_path / "d.card.json").read_text())
    assert stats["interventions"] == stats["length"] == card["interventions"]
    from envs.dataset_io import read_dataset

    np.testing.assert_array_equal(read_dataset(tmp_path / "d.hdf5").actions, np.tile([0.0, 1.0], (stats["length"], 1)))


# ---- connection hints, older policies -------------------------------------------------------


def test_a_tls_learner_without_tls_ca_names_the_flag(tmp_path, capsys):
    from learner.distributed.server import LearnerServer
    from learner.distributed.trainer import Trainer
    from tests.conftest import tiny_config
    from tests.test_distributed import SPEC, _self_signed

    cert, key = _self_signed(tmp_path, "learner")
    server = LearnerServer(Trainer(tiny_config(), SPEC), "127.0.0.1:0", token="s3cret", status_token="st", tls_cert=cert, tls_key=key).start()
    plain = LearnerServer(Trainer(tiny_config(), SPEC), "127.0.0.1:0").start()
    address = f"localhost:{server.port}"
    try:
        assert main(["status", address, "--token", "st"]) == 1
        assert "serves TLS and this client connects in plaintext: pass --tls-ca CERT" in capsys.readouterr().err
        loop = ActorLoop(ActorSettings(learner=address, token="s3cret", connect_timeout_s=60))
        started = time.monotonic()
        with pytest.raises(ActorError, match="pass --tls-ca CERT"):
            loop.connect()
        assert time.monotonic() - started < 30  # told at the first failed attempt, not after the timeout
        loop.close()
        assert main(["status", plain.address, "--tls-ca", cert]) == 1
        assert "does not serve TLS (plaintext) and this client connects with --tls-ca: drop --tls-ca" in capsys.readouterr().err
    finally:
        server.stop(grace=0)
        plain.stop(grace=0)


def test_adopting_an_older_policy_version_is_announced(tmp_path, monkeypatch, capsys):
    loop = ActorLoop(ActorSettings(learner="127.0.0.1:1", actor_id="sim"))
    loop.version, loop.version_source = 7, "aaaaaaaaaaaa"
    loop._switch_policy(3, {"p": 1}, "bbbbbbbbbbbb")
    assert (loop.version, loop.params, loop.older_policies) == (3, {"p": 1}, 1)
    assert "learner bbbbbbbb serves policy version 3, OLDER than version 7 this actor had from learner aaaaaaaa" in capsys.readouterr().out
    loop._switch_policy(4, {"p": 2}, "bbbbbbbbbbbb")
    assert loop.older_policies == 1 and "OLDER" not in capsys.readouterr().out
    loop.close()
    actor = robot_actor("127.0.0.1:1", tmp_path, monkeypatch)  # the robot adopts at episode starts, through the same path
    actor.version, actor.version_source, actor._fresh = 5, "cccccccc", (2, {"p": 3}, "dddddddd")
    actor._adopt_policy()
    assert actor.version == 2 and actor.older_policies == 1 and "serves policy version 2, OLDER than version 5" in capsys.readouterr().out
    actor.close()


# ---- files and datasets ---------------------------------------------------------------------


def test_written_files_get_the_umask_mode(tmp_path):
    from envs.atomic_files import atomic_write_bytes
    from envs.dataset_card import card_path
    from envs.dataset_writers import write_d4rl_hdf5
    from envs.datasets import OfflineDataset
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint
    from learner.runs import prepare_run_dir
    from tests.conftest import tiny_config

    data = OfflineDataset(observations=np.zeros((2, 2), np.float32), actions=np.zeros((2, 2), np.float32), rewards=np.zeros(2, np.float32),
                          next_observations=np.zeros((2, 2), np.float32), terminals=np.zeros(2, np.float32), episode_ends=np.array([False, True]))
    config = tiny_config()
    previous = os.umask(0o022)
    try:
        write_d4rl_hdf5(data, tmp_path / "d.hdf5", {"task": "x"})
        ckpt = save_checkpoint(tmp_path / "a.ckpt", make_agent("calql", config.agent, 2, 2, seed=0), config,
                               {"task": "pointmass-goal", "observation_dim": 2, "action_dim": 2})
        run = prepare_run_dir(config, "pretrain", str(tmp_path / "run"))
        atomic_write_bytes(tmp_path / "plot.png", b"png")
        for path in (tmp_path / "d.hdf5", card_path(tmp_path / "d.hdf5"), Path(ckpt), run / "config.yaml", tmp_path / "plot.png"):
            assert oct(path.stat().st_mode & 0o777) == oct(0o644), path
        os.umask(0o077)  # a private umask is respected
        atomic_write_bytes(tmp_path / "private.bin", b"x")
        assert oct((tmp_path / "private.bin").stat().st_mode & 0o777) == oct(0o600)
    finally:
        os.umask(previous)


def test_dataset_inspect_reports_a_recordings_success_rate(tmp_path, capsys):
    out = tmp_path / "demos.hdf5"
    recorder = None

    def policy(observation):  # the scripted "human" reaches the goal, except in episode 2
        return np.zeros(2) if recorder.episodes == 1 else pointmass_teleop(observation)

    recorder = Recorder("pointmass-goal", str(out), policy=policy)
    assert [recorder.record_episode()["success"] for _ in range(3)] == [True, False, True]
    capsys.readouterr()
    assert main(["dataset", "inspect", str(out)]) == 0
    assert "success rate 0.667 (2 of 3 episodes reported success while recording, from the card)" in capsys.readouterr().out
    assert main(["dataset", "inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["success_rate"] == pytest.approx(2 / 3) and report["success_source"] == "card"
