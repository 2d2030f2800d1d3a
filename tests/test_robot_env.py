"""The robot env contract (envs/robot.py) and the simulated robot (envs/sim_robot.py)."""

import time

import gymnasium as gym
import numpy as np
import pytest

from envs import pointmass
from envs.robot import INTERVENTION_KEY, SAFETY_STOP_KEY, check_robot_env, find_attribute, intervention_action
from envs.sim_robot import SimulatedPointMassRobot, SimulatedRobot, pointmass_teleop
from envs.tasks import get_task


class Minimal(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-2, 2, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_contract_check_reports_hooks_through_wrappers_and_names_bad_fields():
    assert check_robot_env(Minimal()) == {"hooks": [], "control_hz": None}
    robot = gym.wrappers.RescaleAction(gym.wrappers.TimeLimit(SimulatedPointMassRobot(), 50), -1.0, 1.0)
    assert check_robot_env(robot) == {"hooks": ["wait_for_operator_reset", "emergency_stop"], "control_hz": 20.0}
    assert find_attribute(robot, "emergency_stop").__self__ is robot.unwrapped or callable(find_attribute(robot, "emergency_stop"))

    discrete = Minimal()
    discrete.action_space = gym.spaces.Discrete(3)
    with pytest.raises(ValueError, match="field 'action_space'.*expected a gymnasium Box"):
        check_robot_env(discrete)
    unbounded = Minimal()
    unbounded.action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    with pytest.raises(ValueError, match="field 'action_space' has infinite bounds"):
        check_robot_env(unbounded)
    bad_rate = Minimal()
    bad_rate.control_hz = 0
    with pytest.raises(ValueError, match="field 'control_hz' is 0, expected a number > 0"):
        check_robot_env(bad_rate)


def test_intervention_action_is_checked_and_clipped_to_the_space():
    space = gym.spaces.Box(-2, 2, (2,), np.float32)
    assert intervention_action({}, space) is None
    np.testing.assert_array_equal(intervention_action({INTERVENTION_KEY: [3.0, -0.5]}, space), [2.0, -0.5])
    with pytest.raises(ValueError, match=r"intervention_action'\]: shape \(3,\), expected \(2,\)"):
        intervention_action({INTERVENTION_KEY: [0, 0, 0]}, space)
    with pytest.raises(ValueError, match="not finite"):
        intervention_action({INTERVENTION_KEY: [np.nan, 0]}, space)


def test_teleop_reaches_the_goal():
    env = get_task("pointmass-goal").make_env(0, training=False)
    observation, _ = env.reset(seed=0)
    for _ in range(100):
        observation, reward, terminated, truncated, _ = env.step(pointmass_teleop(observation))
        if terminated or truncated:
            break
    assert terminated and reward == 1.0


def test_simulated_robot_interventions_replace_the_action_on_schedule():
    env = SimulatedRobot(
        get_task("pointmass-goal").make_env(0, training=False), step_latency_s=0.0, latency_jitter_s=0.0,
        intervention_every=10, intervention_steps=3, intervention_policy=pointmass_teleop,
    )
    observation, _ = env.reset(seed=0)
    flagged = []
    for step in range(20):
        before = observation.copy()
        observation, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        human = info.get(INTERVENTION_KEY)
        flagged.append(human is not None)
        moved = observation - before
        if human is None:
            np.testing.assert_allclose(moved, 0.0, atol=1e-7)  # the policy's zero action
        else:
            # the human's action was executed: displacement = MAX_SPEED * action (no wall here)
            np.testing.assert_allclose(moved, pointmass.MAX_SPEED * np.clip(human, -1, 1), atol=1e-6)
        assert not (terminated or truncated)
    assert flagged == [s % 10 < 3 for s in range(20)] and env.interventions == 6


def test_simulated_robot_latency_safety_stop_emergency_stop_and_operator_reset():
    env = SimulatedRobot(
        get_task("pointmass-goal").make_env(0), step_latency_s=0.01, latency_jitter_s=0.0,
        operator_reset_s=0.02, safety_stop_at_step=3,
    )
    env.reset(seed=0)
    started = time.perf_counter()
    infos = [env.step(np.zeros(2))[-1] for _ in range(4)]
    assert time.perf_counter() - started >= 4 * 0.01
    assert [bool(i.get(SAFETY_STOP_KEY)) for i in infos] == [False, False, True, False]
    env.emergency_stop()
    with pytest.raises(RuntimeError, match="after emergency_stop"):
        env.step(np.zeros(2))
    started = time.perf_counter()
    env.wait_for_operator_reset()
    assert time.perf_counter() - started >= 0.02 and env.operator_resets == 1
    env.reset()
    env.step(np.zeros(2))  # moving again after the reset
    assert len(env.emergency_stops) == 1


def test_simulated_robot_refuses_inconsistent_settings():
    base = get_task("pointmass-goal").make_env(0)
    with pytest.raises(ValueError, match="field 'intervention_policy'"):
        SimulatedRobot(base, intervention_every=5, intervention_steps=1)
    with pytest.raises(ValueError, match="field 'intervention_steps'"):
        SimulatedRobot(base, intervention_every=5, intervention_steps=6, intervention_policy=pointmass_teleop)
