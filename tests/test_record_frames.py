"""`wsrl record` with a camera (actor/record.py): a Dict-observation env's frames are stored
bit for bit in D4RL HDF5 and Minari outputs, and the recorded file seeds a frame-sharing replay."""

import gymnasium as gym
import h5py
import numpy as np
import pytest

from actor.record import Recorder
from envs.dataset_io import read_dataset
from envs.observations import ObservationSpec
from learner.cli import main
from learner.replay_buffer import ReplayBuffer

# the env reuses its frame buffer on purpose (gymnasium's env checker warns about that)
pytestmark = pytest.mark.filterwarnings("ignore:.*share an object:UserWarning")
ENV_ID = "WsrlTinyCamera-v0"
EPISODE_STEPS = 5


class TinyCameraEnv(gym.Env):
    """An 8x8 RGB frame and a 3-vector state. The frame encodes (reset seed, step, action) so a
    test can tell exactly which frame belongs where; it reuses one frame buffer between steps
    (as camera drivers do), so a recorder that kept references would store the wrong frames."""

    observation_space = gym.spaces.Dict({
        "cam": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
        "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
    })
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self):
        self._frame = np.zeros((8, 8, 3), np.uint8)
        self._seed, self._t = 0, 0

    def _observation(self, action):
        self._frame[...] = 0
        self._frame[0, 0] = (self._seed % 256, self._t, 0)
        self._frame[1:, :, 2] = np.uint8(round(float(action[0]) * 100) % 256)
        return {"cam": self._frame, "state": np.array([self._seed, self._t, action[1]], np.float64)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._seed, self._t = (seed or 0), 0
        return self._observation(np.zeros(2)), {}

    def step(self, action):
        self._t += 1
        return self._observation(action), float(self._t), False, self._t >= EPISODE_STEPS, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=TinyCameraEnv)


def policy(observation):
    """Acts on the frame: proves the policy sees the camera (action[0] = 0.01 * (t + 1))."""
    t = int(observation["cam"][0, 0, 1])
    return np.array([0.01 * (t + 1), -0.5], np.float32)


def expected_frame(seed, t, action0):
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[0, 0] = (seed, t, 0)
    frame[1:, :, 2] = round(action0 * 100) % 256
    return frame


@pytest.mark.parametrize("out_name", ["cams.hdf5", "cams_minari"])
def test_recorded_frames_round_trip_bit_exact(tmp_path, out_name):
    out = tmp_path / out_name
    recorder = Recorder(ENV_ID, str(out), policy=policy, seed=3)
    assert recorder.observation_spec == ObservationSpec.from_space(TinyCameraEnv.observation_space)
    for _ in range(2):
        recorder.record_episode()
    recorder.close()
    data = read_dataset(out, observation_spec=recorder.observation_spec)
    assert len(data) == 10 and data.num_episodes == 2 and data.observations["cam"].dtype == np.uint8
    for row in range(10):
        seed, t = 3 + row // EPISODE_STEPS, row % EPISODE_STEPS
        action0 = 0.0 if t == 0 else 0.01 * t  # the action that produced step t's frame
        np.testing.assert_array_equal(data.observations["cam"][row], expected_frame(seed, t, action0))
        np.testing.assert_array_equal(data.next_observations["cam"][row], expected_frame(seed, t + 1, 0.01 * (t + 1)))
        np.testing.assert_array_equal(data.observations["state"][row], [seed, t, 0.0 if t == 0 else -0.5])
    np.testing.assert_allclose(data.actions[:5, 0], [0.01, 0.02, 0.03, 0.04, 0.05], rtol=1e-6)
    # the recorded file seeds the replay: 5 + 1 frames per episode, each stored once
    replay = ReplayBuffer.from_dataset(data)
    assert replay.frames["cam"].live == 12
    np.testing.assert_array_equal(replay.rows(np.arange(10))["next_observations"]["cam"], data.next_observations["cam"])


def test_record_command_writes_compressed_camera_frames(tmp_path, capsys):
    out = tmp_path / "demo.hdf5"
    assert main(["record", "--env", ENV_ID, "--out", str(out), "--episodes", "3"]) == 0
    assert "3 episodes (15 transitions" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f["observations/cam"].shape == (15, 8, 8, 3) and f["observations/cam"].compression == "gzip"
        assert f["observations/state"].dtype == np.float32
    assert read_dataset(out).observation_spec.names == ("cam", "state")
    assert main(["dataset", "inspect", str(out)]) == 0
    assert "transitions 15, episodes 3 (0 ending in a terminal), obs cam (8, 8, 3) uint8, state (3,) float32" in capsys.readouterr().out


def test_collect_dataset_keeps_each_frame_of_a_buffer_reusing_env():
    from envs.datasets import collect_dataset

    data = collect_dataset(TinyCameraEnv(), lambda observation, _: policy(observation), num_episodes=2, seed=3)
    assert len(data) == 10 and data.observation_spec.names == ("cam", "state")
    for row in (0, 4, 7):
        seed, t = 3 + row // EPISODE_STEPS, row % EPISODE_STEPS
        np.testing.assert_array_equal(data.observations["cam"][row], expected_frame(seed, t, 0.0 if t == 0 else 0.01 * t))
        np.testing.assert_array_equal(data.next_observations["cam"][row], expected_frame(seed, t + 1, 0.01 * (t + 1)))
