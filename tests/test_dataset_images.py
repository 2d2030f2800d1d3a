"""Offline datasets with camera images (envs/datasets.py, envs/d4rl_reader.py, envs/minari_reader.py, envs/dataset_writers.py): dict observations
validated per part, D4RL HDF5 and Minari files round-trip bit for bit, frames compressed."""

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

from envs.dataset_card import card_path
from envs.dataset_checks import DatasetError
from envs.dataset_io import read_dataset
from envs.dataset_writers import write_d4rl_hdf5, write_minari
from envs.minari_reader import read_minari
from envs.datasets import OfflineDataset
from envs.observations import ObservationPart, ObservationSpec

SPEC = ObservationSpec((ObservationPart("cam", (8, 8, 3), "uint8"), ObservationPart("state", (3,), "float32")))


def image_dataset(lengths=(3, 4), terminal_last=True, seed=0):
    """Episodes where next_observations[i] == observations[i + 1] inside each episode."""
    rng = np.random.default_rng(seed)
    cams, states, next_cams, next_states, ends, terminals = [], [], [], [], [], []
    for k, length in enumerate(lengths):
        cam = rng.integers(0, 256, (length + 1, 8, 8, 3), dtype=np.uint8)
        state = rng.normal(size=(length + 1, 3)).astype(np.float32)
        cams.append(cam[:-1]), next_cams.append(cam[1:]), states.append(state[:-1]), next_states.append(state[1:])
        ends.append(np.arange(length) == length - 1)
        terminals.append((np.arange(length) == length - 1) & (terminal_last and k == 0))
    n = sum(lengths)
    return OfflineDataset(
        observations={"cam": np.concatenate(cams), "state": np.concatenate(states)},
        actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations={"cam": np.concatenate(next_cams), "state": np.concatenate(next_states)},
        terminals=np.concatenate(terminals).astype(np.float32),
        episode_ends=np.concatenate(ends),
    )


def assert_same(a: OfflineDataset, b: OfflineDataset):
    for field in ("observations", "next_observations"):
        assert set(getattr(a, field)) == set(getattr(b, field)) == {"cam", "state"}
        for part in ("cam", "state"):
            x, y = getattr(a, field)[part], getattr(b, field)[part]
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
    for field in ("actions", "rewards", "terminals", "episode_ends"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_dataset_with_parts_has_a_spec_and_length():
    data = image_dataset()
    assert len(data) == 7 and data.num_episodes == 2
    assert data.observation_spec == SPEC
    assert image_dataset().observations["cam"].dtype == np.uint8


def test_dataset_validation_names_the_part():
    good = image_dataset()
    fields = {f: getattr(good, f) for f in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")}
    bad = dict(fields, observations={"cam": good.observations["cam"].astype(np.float32), "state": good.observations["state"]})
    with pytest.raises(ValueError, match=r"'observations\['cam'\]': dtype float32, expected uint8"):
        OfflineDataset(**bad)
    bad = dict(fields, next_observations={"cam": good.next_observations["cam"][:5], "state": good.next_observations["state"]})
    with pytest.raises(ValueError, match=r"'next_observations\['cam'\]' has 5 rows, expected 7"):
        OfflineDataset(**bad)
    state = good.observations["state"].copy()
    state[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"'observations\['state'\]' contains NaN or inf"):
        OfflineDataset(**dict(fields, observations={"cam": good.observations["cam"], "state": state}))
    with pytest.raises(ValueError, match=r"next_observations.*keys \['cam'\], expected \['cam', 'state'\]"):
        OfflineDataset(**dict(fields, next_observations={"cam": good.next_observations["cam"]}))
    with pytest.raises(ValueError, match="a dict and an array mixed"):
        OfflineDataset(**dict(fields, next_observations=np.zeros((7, 3), np.float32)))


def test_from_columns_stacks_dict_steps():
    rng = np.random.default_rng(1)
    steps = [{"cam": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "state": rng.normal(size=3)} for _ in range(3)]
    data = OfflineDataset.from_columns({
        "observations": steps[:2], "next_observations": steps[1:], "actions": np.zeros((2, 1)), "rewards": [0, 1],
        "terminals": [0, 1], "episode_ends": [0, 1],
    })
    assert data.observations["cam"].dtype == np.uint8 and data.observations["state"].dtype == np.float32
    np.testing.assert_array_equal(data.next_observations["cam"][0], steps[1]["cam"])


def test_d4rl_round_trip_is_bit_exact_and_frames_are_compressed(tmp_path):
    data = image_dataset()
    path = write_d4rl_hdf5(data, tmp_path / "pix.hdf5", card={"env": "test"})
    assert_same(read_dataset(path, observation_spec=SPEC), data)
    assert_same(read_dataset(path), data)  # the spec is in the file itself
    with h5py.File(path) as f:
        cam = f["observations/cam"]
        assert (cam.dtype, cam.compression, cam.chunks[1:]) == (np.uint8, "gzip", (8, 8, 3))
        assert f["next_observations/state"].dtype == np.float32 and f["observations/state"].compression is None
    card = json.loads(card_path(path).read_text())
    assert card["observation_spec"] == SPEC.to_json() and "observation_dim" not in card


def test_d4rl_parts_without_next_observations_follow_the_d4rl_rules(tmp_path):
    data = image_dataset(lengths=(3, 4), terminal_last=True)
    path = tmp_path / "old_style.hdf5"
    with h5py.File(path, "w") as f:  # D4RL's own layout: no next_observations, timeouts flagged
        for part in ("cam", "state"):
            f[f"observations/{part}"] = data.observations[part]
        f["actions"], f["rewards"] = data.actions, data.rewards
        f["terminals"] = data.terminals.astype(bool)
        f["timeouts"] = data.episode_ends & (data.terminals == 0)
    got = read_dataset(path)
    # episode 1 ends in a terminal (kept, next = its own row); episode 2's timeout step is dropped
    assert len(got) == 6 and list(np.flatnonzero(got.episode_ends)) == [2, 5]
    np.testing.assert_array_equal(got.next_observations["cam"][:2], data.observations["cam"][1:3])
    np.testing.assert_array_equal(got.next_observations["cam"][2], data.observations["cam"][2])
    np.testing.assert_array_equal(got.next_observations["cam"][3:5], data.observations["cam"][4:6])


def test_minari_round_trip_is_bit_exact_and_stores_each_frame_once(tmp_path):
    data = image_dataset()
    write_minari(data, tmp_path / "pix", metadata={"author": "test"})
    assert_same(read_minari(tmp_path / "pix", observation_spec=SPEC), data)
    assert_same(read_dataset(tmp_path / "pix"), data)
    with h5py.File(tmp_path / "pix/data/main_data.hdf5") as f:
        cam = f["episode_1/observations/cam"]
        assert cam.shape == (5, 8, 8, 3) and cam.compression == "gzip"  # T + 1 frames
    metadata = json.loads((tmp_path / "pix/data/metadata.json").read_text())
    space = json.loads(metadata["observation_space"])
    assert space["type"] == "Dict" and space["subspaces"]["cam"]["dtype"] == "uint8"
    # Minari's own deserializer builds Boxes from these fields: the bounds have the image's shape
    cam_box = gym.spaces.Box(np.array(space["subspaces"]["cam"]["low"]), np.array(space["subspaces"]["cam"]["high"]),
                             tuple(space["subspaces"]["cam"]["shape"]), np.uint8)
    assert ObservationSpec.from_space(gym.spaces.Dict({"cam": cam_box, "state": gym.spaces.Box(-np.inf, np.inf, (3,))})) == SPEC


def test_spec_mismatches_are_refused(tmp_path):
    data = image_dataset()
    write_d4rl_hdf5(data, tmp_path / "pix.hdf5")
    write_minari(data, tmp_path / "pix")
    other = ObservationSpec((ObservationPart("cam", (16, 16, 3), "uint8"),))
    for source in (tmp_path / "pix.hdf5", tmp_path / "pix"):
        with pytest.raises(DatasetError, match=r"has parts .*'cam'.*\[8, 8, 3\].*the task expects .*\[16, 16, 3\]"):
            read_dataset(source, observation_spec=other)
        with pytest.raises(DatasetError, match="holds named parts .* the task expects flat observations of dim 3"):
            read_dataset(source, observation_dim=3)
    flat = OfflineDataset(np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32), np.zeros(2, np.float32),
                          np.zeros((2, 3), np.float32), np.zeros(2, np.float32), np.array([0, 1], bool))
    write_d4rl_hdf5(flat, tmp_path / "flat.hdf5")
    with pytest.raises(DatasetError, match="is a flat array, the task expects named parts"):
        read_dataset(tmp_path / "flat.hdf5", observation_spec=SPEC)
    assert len(read_dataset(tmp_path / "flat.hdf5", observation_spec=ObservationSpec.flat(3))) == 2


def test_minari_refuses_a_next_frame_that_is_not_the_following_observation(tmp_path):
    data = image_dataset()
    data.next_observations["cam"][0, 0, 0, 0] ^= 1
    with pytest.raises(ValueError, match=r"next_observations\[0\] differs from observations\[1\]"):
        write_minari(data, tmp_path / "x")


def test_observation_spec_of_a_spec_dict():
    from envs.observations import observation_spec_of

    assert observation_spec_of({"observation_dim": 4, "action_dim": 2}) == ObservationSpec.flat(4)
    assert observation_spec_of({"observation_dim": 3, "observation_spec": SPEC.to_json()}) == SPEC
    with pytest.raises(ValueError, match="expected 'observation_spec' or 'observation_dim'"):
        observation_spec_of({"action_dim": 2})
