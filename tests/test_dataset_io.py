"""Dataset readers and writers (envs/dataset_io.py and the readers and writers behind it) on small hand-made files, and mc_returns."""

import json
import os

import h5py
import numpy as np
import pytest

from envs import dataset_checks, datasets
from envs.d4rl_reader import read_d4rl_hdf5
from envs.dataset_card import card_path
from envs.dataset_checks import DatasetError
from envs.dataset_io import read_dataset
from envs.dataset_writers import write_d4rl_hdf5, write_minari
from envs.minari_files import read_minari_metadata
from envs.minari_reader import read_minari
from envs.atomic_files import atomic_path
from envs.datasets import OfflineDataset, mc_returns


def write_h5(path, groups=None, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        for name, sub in (groups or {}).items():
            g = f.create_group(name)
            for key, value in sub.items():
                g.create_dataset(key, data=value)
    return path


def d4rl_arrays(n=7, obs_dim=2, act_dim=3):
    """obs[i] = (i, 10 i), action[i] = (i, i, i), reward[i] = i: rows are easy to recognise."""
    i = np.arange(n, dtype=np.float32)
    return dict(
        observations=np.stack([i, 10 * i] + [i] * (obs_dim - 2), axis=1),
        actions=np.repeat(i[:, None], act_dim, axis=1),
        rewards=i.copy(),
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
    )


def assert_datasets_equal(a: OfflineDataset, b: OfflineDataset):
    for field in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype, field
        np.testing.assert_array_equal(x, y, err_msg=field)


def random_dataset(rng, lengths=(5, 3, 4), terminal=(True, False, True), continuous=True, obs_dim=3, act_dim=2):
    obs, next_obs, acts, rews, terms, ends = [], [], [], [], [], []
    for length, term in zip(lengths, terminal):
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        obs.append(states[:-1])
        next_obs.append(states[1:] if continuous else rng.normal(size=(length, obs_dim)).astype(np.float32))
        acts.append(rng.uniform(-1, 1, size=(length, act_dim)).astype(np.float32))
        rews.append(rng.normal(size=length).astype(np.float32))
        t = np.zeros(length, np.float32)
        t[-1] = float(term)
        terms.append(t)
        e = np.zeros(length, bool)
        e[-1] = True
        ends.append(e)
    return OfflineDataset(*(np.concatenate(x) for x in (obs, acts, rews, next_obs, terms, ends)))


# --- D4RL reader -------------------------------------------------------------------------------


def test_d4rl_without_next_observations_drops_timeouts_and_the_last_step(tmp_path):
    # episodes: [0 1 2(timeout)] [3 4(terminal)] [5 6(last step of the file, no flag)]
    arrays = d4rl_arrays(7)
    arrays["timeouts"][2] = True
    arrays["terminals"][4] = True
    data = read_d4rl_hdf5(write_h5(tmp_path / "d.hdf5", **arrays))
    kept = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(data.observations[:, 0], kept)
    np.testing.assert_array_equal(data.rewards, kept)
    np.testing.assert_array_equal(data.actions[:, 2], kept)
    # step 1's successor is the timeout step's observation (same episode); the terminal step 4
    # points at itself, never at step 5 of the next episode; step 5's successor is step 6
    np.testing.assert_array_equal(data.next_observations[:, 0], [1, 2, 4, 4, 6])
    np.testing.assert_array_equal(data.next_observations[:, 1], [10, 20, 40, 40, 60])
    np.testing.assert_array_equal(data.terminals, [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(data.episode_ends, [0, 1, 0, 1, 1])
    assert data.observations.dtype == np.float32 and data.terminals.dtype == np.float32
    # no transition crosses an episode: next_obs[i] == obs[i + 1] unless i ends an episode
    inner = ~data.episode_ends[:-1]
    np.testing.assert_array_equal(data.next_observations[:-1][inner], data.observations[1:][inner])


def test_d4rl_keeps_a_terminal_last_step_and_small_blocks_give_the_same_result(tmp_path, monkeypatch):
    arrays = d4rl_arrays(9)
    arrays["timeouts"][[3, 6]] = True
    arrays["terminals"][8] = True
    path = write_h5(tmp_path / "d.hdf5", **arrays)
    whole = read_d4rl_hdf5(path)
    np.testing.assert_array_equal(whole.observations[:, 0], [0, 1, 2, 4, 5, 7, 8])
    np.testing.assert_array_equal(whole.next_observations[:, 0], [1, 2, 3, 5, 6, 8, 8])
    np.testing.assert_array_equal(whole.episode_ends, [0, 0, 1, 0, 1, 0, 1])
    monkeypatch.setattr(dataset_checks, "BLOCK_BYTES", 16)  # two rows per block: every code path of the gather
    assert_datasets_equal(read_d4rl_hdf5(path), whole)


def test_d4rl_with_next_observations_keeps_every_step(tmp_path):
    arrays = d4rl_arrays(6)
    arrays["next_observations"] = arrays["observations"] + 100
    arrays["timeouts"][1] = True
    arrays["terminals"][3] = True
    data = read_d4rl_hdf5(write_h5(tmp_path / "d.hdf5", **arrays))
    assert len(data) == 6
    np.testing.assert_array_equal(data.next_observations, arrays["next_observations"])
    np.testing.assert_array_equal(data.episode_ends, [0, 1, 0, 1, 0, 1])  # timeout, terminal, end of data
    np.testing.assert_array_equal(data.terminals, [0, 0, 0, 1, 0, 0])


def test_d4rl_without_timeouts(tmp_path):
    # with next_observations: a step whose next_obs is not the following obs ends an episode
    arrays = d4rl_arrays(6)
    del arrays["timeouts"]
    next_obs = np.roll(arrays["observations"], -1, axis=0)
    next_obs[2] = -1.0  # an unflagged time limit after step 2
    data = read_d4rl_hdf5(write_h5(tmp_path / "a.hdf5", next_observations=next_obs, **arrays))
    np.testing.assert_array_equal(data.episode_ends, [0, 0, 1, 0, 0, 1])
    # without next_observations only terminals split (and the last step is dropped)
    arrays["terminals"][2] = True
    data = read_d4rl_hdf5(write_h5(tmp_path / "b.hdf5", **arrays))
    np.testing.assert_array_equal(data.observations[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(data.episode_ends, [0, 0, 1, 0, 1])


def test_d4rl_accepts_column_vectors_and_ignores_infos(tmp_path):
    arrays = d4rl_arrays(4)
    arrays["rewards"] = arrays["rewards"][:, None]
    arrays["terminals"] = arrays["terminals"].astype(np.float32)[:, None]
    path = write_h5(tmp_path / "d.hdf5", groups={"infos": {"goal": np.zeros((4, 2))}}, **arrays)
    data = read_d4rl_hdf5(path, observation_dim=2, action_dim=3)
    np.testing.assert_array_equal(data.rewards, [0, 1, 2])


@pytest.mark.parametrize(
    "change, key, message",
    [
        (lambda a: a.pop("actions"), "actions", "missing required key(s) 'actions'"),
        (lambda a: a.update(rewards=a["rewards"][:-1]), "rewards", "has 6 rows, expected 7"),
        (lambda a: a.update(actions=a["actions"][:5]), "actions", "has 5 rows, expected 7"),
        (lambda a: a["observations"].__setitem__((3, 1), np.nan), "observations", "NaN or inf (first at row 3)"),
        (lambda a: a["actions"].__setitem__((5, 0), np.inf), "actions", "NaN or inf (first at row 5)"),
        (lambda a: a["rewards"].__setitem__(2, np.nan), "rewards", "NaN or inf (first at row 2)"),
        (lambda a: a.update(observations=a["observations"][:, 0]), "observations", "has shape (7,), expected (steps, dim)"),
        (lambda a: a.update(terminals=np.full(7, 2.0)), "terminals", "has value 2.0 at row 0"),
        (lambda a: a.update(next_observations=np.zeros((7, 5))), "next_observations", "has dim 5, 'observations' has 2"),
    ],
)
def test_d4rl_malformed_files_name_the_file_and_key(tmp_path, change, key, message):
    arrays = d4rl_arrays(7)
    change(arrays)
    path = write_h5(tmp_path / "bad.hdf5", **arrays)
    with pytest.raises(DatasetError) as error:
        read_d4rl_hdf5(path)
    text = str(error.value)
    assert f"file {path}" in text and f"'{key}'" in text and message in text, text


def test_d4rl_dims_must_match_the_task(tmp_path):
    path = write_h5(tmp_path / "d.hdf5", **d4rl_arrays(5, obs_dim=27, act_dim=8))
    with pytest.raises(DatasetError, match=rf"file {path}: key 'observations' has dim 27, the task expects 29"):
        read_d4rl_hdf5(path, observation_dim=29)
    with pytest.raises(DatasetError, match=rf"file {path}: key 'actions' has dim 8, the task expects 6"):
        read_d4rl_hdf5(path, observation_dim=27, action_dim=6)


def test_d4rl_unreadable_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        read_d4rl_hdf5(tmp_path / "nope.hdf5")
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="text.hdf5: not a readable HDF5 file"):
        read_d4rl_hdf5(tmp_path / "text.hdf5")
    minari_file = write_h5(tmp_path / "main_data.hdf5", groups={"episode_0": {"rewards": np.zeros(2)}})
    with pytest.raises(DatasetError, match="looks like a Minari main_data.hdf5"):
        read_d4rl_hdf5(minari_file)


# --- D4RL writer -------------------------------------------------------------------------------


def test_write_then_read_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    for i, continuous in enumerate((True, False)):
        data = random_dataset(rng, lengths=(5, 1, 4, 3), terminal=(True, False, False, True), continuous=continuous)
        path = write_d4rl_hdf5(data, tmp_path / f"d{i}.hdf5", {})
        assert_datasets_equal(read_d4rl_hdf5(path), data)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["terminals"][()], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])
        np.testing.assert_array_equal(f["timeouts"][()], [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0])


def test_card_holds_the_callers_entries_and_the_statistics(tmp_path):
    # returns 1+2 = 3 (terminal), 10 (time limit), -1-1-1 = -3 (end of data)
    data = OfflineDataset(
        observations=np.zeros((6, 2), np.float32), actions=np.zeros((6, 1), np.float32),
        rewards=np.array([1, 2, 10, -1, -1, -1], np.float32), next_observations=np.zeros((6, 2), np.float32),
        terminals=np.array([0, 1, 0, 0, 0, 0], np.float32), episode_ends=np.array([0, 1, 1, 0, 0, 1], bool),
    )
    path = write_d4rl_hdf5(data, tmp_path / "demos.hdf5", {"task": "pointmass-goal", "success_threshold": 3.0})
    assert card_path(path) == tmp_path / "demos.card.json"
    card = json.loads(card_path(path).read_text())
    assert card["task"] == "pointmass-goal" and card["format"] == "d4rl-hdf5" and card["file"] == "demos.hdf5"
    assert card["file_bytes"] == os.path.getsize(path)
    assert (card["num_transitions"], card["num_episodes"], card["num_terminal_episodes"]) == (6, 3, 1)
    assert (card["observation_dim"], card["action_dim"]) == (2, 1)
    assert (card["episode_length_min"], card["episode_length_max"], card["episode_length_mean"]) == (1, 3, 2.0)
    assert card["return_mean"] == pytest.approx(10 / 3)
    assert card["return_std"] == pytest.approx(np.std([3, 10, -3]))
    assert (card["return_min"], card["return_max"]) == (-3.0, 10.0)
    assert card["success_rate"] == pytest.approx(2 / 3)  # returns 3 and 10 reach the threshold
    with pytest.raises(ValueError, match=r"\['num_episodes'\] are computed by the writer"):
        write_d4rl_hdf5(data, tmp_path / "other.hdf5", {"num_episodes": 1})
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_d4rl_hdf5(data, tmp_path / "other.hdf5", {"policy": object()})
    assert not (tmp_path / "other.hdf5").exists()
    assert "success_rate" not in json.loads(card_path(write_d4rl_hdf5(data, tmp_path / "x.h5")).read_text())


def test_writes_are_atomic_and_refuse_to_overwrite(tmp_path):
    data = random_dataset(np.random.default_rng(1))
    path = write_d4rl_hdf5(data, tmp_path / "d.hdf5", {"version": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.card.json", "d.hdf5"]  # no temp file left
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_d4rl_hdf5(data, path, {"version": 2})
    assert json.loads(card_path(path).read_text())["version"] == 1
    smaller = OfflineDataset(*(getattr(data, f)[:5] for f in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")))
    write_d4rl_hdf5(smaller, path, {"version": 2}, overwrite=True)
    assert len(read_d4rl_hdf5(path)) == 5 and json.loads(card_path(path).read_text())["version"] == 2
    # a write that fails half-way removes its temp file and leaves the old file as it was
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.card.json", "d.hdf5"]
    assert len(read_d4rl_hdf5(path)) == 5


def test_writer_refuses_a_terminal_inside_a_trajectory(tmp_path):
    data = random_dataset(np.random.default_rng(2))
    data.terminals[1] = 1.0
    with pytest.raises(ValueError, match=r"terminals\[1\] is set but episode_ends\[1\] is not"):
        write_d4rl_hdf5(data, tmp_path / "d.hdf5")
    assert not any(tmp_path.iterdir())


# --- Minari ------------------------------------------------------------------------------------


def make_minari(directory, episodes, metadata=None):
    """episodes: dicts of arrays (observations may be a nested dict)."""
    data_dir = directory / "data"
    data_dir.mkdir(parents=True)
    with h5py.File(data_dir / "main_data.hdf5", "w") as f:
        for i, episode in enumerate(episodes):
            group = f.create_group(f"episode_{i}")
            for key, value in episode.items():
                _h5_put(group, key, value)
            group.create_group("infos").create_dataset("success", data=np.zeros(len(episode["rewards"]), bool))
    meta = {"dataset_id": "test/toy-v0", "data_format": "hdf5", "total_episodes": len(episodes),
            "total_steps": sum(len(e["rewards"]) for e in episodes), "ref_min_score": 0.0, "ref_max_score": 1.0}
    (data_dir / "metadata.json").write_text(json.dumps({**meta, **(metadata or {})}))
    return directory


def _h5_put(group, key, value):
    if isinstance(value, dict):
        sub = group.create_group(key)
        for k, v in value.items():
            _h5_put(sub, k, v)
    else:
        group.create_dataset(key, data=value)


def box_episode(first, steps, terminated):
    obs = np.arange(first, first + steps + 1, dtype=np.float64)[:, None] * [1.0, -1.0]
    last, never = np.zeros(steps, bool), np.zeros(steps, bool)
    last[-1] = True
    return dict(
        observations=obs, actions=np.full((steps, 1), first, np.float32), rewards=np.arange(steps, dtype=np.float64),
        terminations=last if terminated else never, truncations=never if terminated else last,
    )


def test_minari_box_observations(tmp_path):
    directory = make_minari(tmp_path / "toy", [box_episode(0, 3, terminated=True), box_episode(10, 2, terminated=False)])
    data = read_minari(directory, observation_dim=2, action_dim=1)
    np.testing.assert_array_equal(data.observations[:, 0], [0, 1, 2, 10, 11])
    np.testing.assert_array_equal(data.next_observations[:, 0], [1, 2, 3, 11, 12])
    np.testing.assert_array_equal(data.next_observations[:, 1], [-1, -2, -3, -11, -12])
    np.testing.assert_array_equal(data.terminals, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(data.episode_ends, [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(data.rewards, [0, 1, 2, 0, 1])
    assert data.observations.dtype == np.float32
    meta = read_minari_metadata(directory)
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (0.0, 1.0)
    # the data/ directory itself works too, and read_dataset dispatches a directory to Minari
    assert_datasets_equal(read_minari(directory / "data"), data)
    assert_datasets_equal(read_dataset(directory), data)


def test_minari_episode_order_is_numeric(tmp_path):
    episodes = [box_episode(10 * i, 1, terminated=False) for i in range(12)]
    data = read_minari(make_minari(tmp_path / "toy", episodes))
    np.testing.assert_array_equal(data.observations[:, 0], np.arange(12) * 10)  # episode_10 after episode_9


def test_minari_dict_observations_are_flattened_in_key_order(tmp_path):
    steps = 2
    t = np.arange(steps + 1, dtype=np.float64)[:, None]
    episode = dict(box_episode(0, steps, terminated=False))
    episode["observations"] = {
        "observation": np.concatenate([t, t + 0.5], axis=1),  # (3, 2)
        "achieved_goal": 100 + t,  # (3, 1)
        "desired_goal": {"b": 300 + t, "a": np.concatenate([200 + t, 250 + t], axis=1)},  # nested: a before b
    }
    directory = make_minari(tmp_path / "toy", [episode])
    data = read_minari(directory, observation_keys=("achieved_goal", "observation"))
    np.testing.assert_array_equal(data.observations, [[100, 0, 0.5], [101, 1, 1.5]])
    np.testing.assert_array_equal(data.next_observations, [[101, 1, 1.5], [102, 2, 2.5]])
    data = read_minari(directory, observation_keys=["desired_goal", "achieved_goal"])
    np.testing.assert_array_equal(data.observations[0], [200, 250, 300, 100])
    with pytest.raises(DatasetError, match=r"is a dict with keys \['achieved_goal', 'desired_goal', 'observation'\]; pass observation_keys"):
        read_minari(directory)
    with pytest.raises(DatasetError, match=r"has no key\(s\) \['goal'\]"):
        read_minari(directory, observation_keys=["goal"])
    with pytest.raises(DatasetError, match="observations' has dim 3, the task expects 4"):
        read_minari(directory, observation_keys=("achieved_goal", "observation"), observation_dim=4)


def test_minari_ids_resolve_under_minari_datasets_path(tmp_path, monkeypatch):
    root = tmp_path / "root"
    make_minari(root / "D4RL" / "toy" / "maze-v0", [box_episode(0, 2, terminated=False)])
    make_minari(root / "D4RL" / "toy" / "maze-v1", [box_episode(5, 2, terminated=False)], {"ref_max_score": 7.0})
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    assert read_minari("D4RL/toy/maze-v0").observations[0, 0] == 0
    assert read_minari("D4RL/toy/maze").observations[0, 0] == 5  # no version: the newest
    assert read_dataset("D4RL/toy/maze-v1").observations[0, 0] == 5
    assert read_minari_metadata("D4RL/toy/maze-v1")["ref_max_score"] == 7.0
    with pytest.raises(FileNotFoundError, match=rf"'D4RL/toy/other-v0' not found.*{root}"):
        read_minari("D4RL/toy/other-v0")
    monkeypatch.delenv("MINARI_DATASETS_PATH")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    make_minari(tmp_path / "home" / ".minari" / "datasets" / "toy-v2", [box_episode(9, 1, terminated=True)])
    assert read_minari("toy-v2").observations[0, 0] == 9


@pytest.mark.parametrize(
    "change, key, message",
    [
        (lambda e: e.pop("truncations"), "truncations", "missing required key(s) 'truncations'"),
        (lambda e: e.update(observations=e["observations"][:-1]), "observations", "has 3 rows, expected 4"),
        (lambda e: e.update(actions=e["actions"][:2]), "actions", "expected (3, action_dim)"),
        (lambda e: e.update(terminations=np.zeros(2, bool)), "terminations", "has 2 rows, expected 3"),
        (lambda e: e["actions"].__setitem__((1, 0), np.nan), "actions", "contains NaN or inf"),
        (lambda e: e["observations"].__setitem__((3, 1), np.inf), "observations", "contains NaN or inf"),
    ],
)
def test_minari_malformed_episodes_name_the_file_episode_and_key(tmp_path, change, key, message):
    bad = box_episode(10, 3, terminated=False)
    change(bad)
    directory = make_minari(tmp_path / "toy", [box_episode(0, 3, terminated=False), bad])
    with pytest.raises(DatasetError) as error:
        read_minari(directory)
    text = str(error.value)
    main = directory / "data" / "main_data.hdf5"
    assert f"file {main}: episode 'episode_1'" in text and f"'{key}'" in text and message in text, text


def test_minari_metadata_problems(tmp_path):
    directory = make_minari(tmp_path / "toy", [box_episode(0, 2, terminated=False)], {"total_episodes": 3})
    with pytest.raises(DatasetError, match="total_episodes=3, the data holds 1 episodes"):
        read_minari(directory)
    meta = directory / "data" / "metadata.json"
    meta.write_text(json.dumps({"data_format": "parquet"}))
    with pytest.raises(DatasetError, match=rf"file {meta}: key 'data_format' is 'parquet'"):
        read_minari(directory)
    with pytest.raises(DatasetError, match="no Minari data"):
        read_minari(tmp_path)  # a directory without data/
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        read_dataset(other)


def test_write_minari_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    data = random_dataset(rng, lengths=(4, 1, 3), terminal=(False, True, False))
    directory = write_minari(data, tmp_path / "robot" / "demos-v0", metadata={"ref_min_score": 0.0, "ref_max_score": 1.0})
    assert_datasets_equal(read_minari(directory), data)
    meta = read_minari_metadata(directory)
    assert (meta["dataset_id"], meta["total_episodes"], meta["total_steps"], meta["data_format"]) == ("demos-v0", 3, 8, "hdf5")
    assert json.loads(meta["observation_space"])["shape"] == [3] and meta["ref_max_score"] == 1.0
    with h5py.File(directory / "data" / "main_data.hdf5") as f:
        assert f["episode_0/observations"].shape == (5, 3) and f["episode_1"].attrs["total_steps"] == 1
        np.testing.assert_array_equal(f["episode_0/truncations"][()], [0, 0, 0, 1])
        np.testing.assert_array_equal(f["episode_1/terminations"][()], [1])
    assert sorted(p.name for p in (directory / "data").iterdir()) == ["main_data.hdf5", "metadata.json"]
    with pytest.raises(FileExistsError):
        write_minari(data, directory)
    write_minari(data, directory, overwrite=True)
    broken = random_dataset(rng, continuous=False)
    with pytest.raises(ValueError, match="differs from observations"):
        write_minari(broken, tmp_path / "broken")


# --- Minari, Arrow layout ----------------------------------------------------------------------


def test_minari_arrow_without_pyarrow_says_to_install_it(tmp_path):
    try:
        import pyarrow  # noqa: F401

        pytest.skip("pyarrow is installed")
    except ImportError:
        pass
    data_dir = tmp_path / "toy" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "metadata.json").write_text(json.dumps({"data_format": "arrow", "total_episodes": 1}))
    with pytest.raises(ImportError, match="needs pyarrow: pip install pyarrow"):
        read_minari(tmp_path / "toy")


def write_arrow_episode(data_dir, episode_id, observations, actions, rewards, terminations, truncations):
    """One episode the way Minari's ArrowStorage writes it: T + 1 rows, step columns padded."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    def fixed(values):
        values = np.asarray(values).reshape(len(values), -1)
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])

    def encode(value):
        if isinstance(value, dict):
            return pa.StructArray.from_arrays([encode(v) for v in value.values()], names=list(value))
        return fixed(value)

    pad = lambda x: np.concatenate([x, np.zeros_like(x[:1])])  # noqa: E731
    batch = pa.RecordBatch.from_pydict({
        "episode_id": np.full(len(rewards) + 1, episode_id, np.int32),
        "observations": encode(observations),
        "actions": fixed(pad(actions)),
        "rewards": pad(rewards),
        "terminations": pad(terminations),
        "truncations": pad(truncations),
    })
    ds.write_dataset(batch, data_dir, format="arrow", partitioning=["episode_id"], existing_data_behavior="overwrite_or_ignore")


def test_minari_arrow_layout(tmp_path):
    pytest.importorskip("pyarrow")
    data_dir = tmp_path / "toy" / "data"
    data_dir.mkdir(parents=True)
    for i, (first, steps, terminated) in enumerate([(0, 3, True), (10, 2, False)]):
        e = box_episode(first, steps, terminated)
        t = e["observations"][:, :1]
        obs = {"observation": e["observations"], "achieved_goal": 100 + t}
        write_arrow_episode(data_dir, i, obs, e["actions"], e["rewards"], e["terminations"], e["truncations"])
    (data_dir / "metadata.json").write_text(json.dumps({"data_format": "arrow", "total_episodes": 2, "total_steps": 5}))
    data = read_minari(tmp_path / "toy", observation_keys=["achieved_goal", "observation"], observation_dim=3)
    np.testing.assert_array_equal(data.observations[:, 0], [100, 101, 102, 110, 111])
    np.testing.assert_array_equal(data.observations[:, 1:], [[0, 0], [1, -1], [2, -2], [10, -10], [11, -11]])
    np.testing.assert_array_equal(data.next_observations[:, 1], [1, 2, 3, 11, 12])
    np.testing.assert_array_equal(data.actions[:, 0], [0, 0, 0, 10, 10])
    np.testing.assert_array_equal(data.rewards, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(data.terminals, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(data.episode_ends, [0, 0, 1, 0, 1])
    with pytest.raises(DatasetError, match="is a dict with keys"):
        read_minari(tmp_path / "toy")


# --- mc_returns --------------------------------------------------------------------------------


def mc_returns_loop(rewards, ends, discount, failure=None):
    """The straightforward per-step definition."""
    out = np.zeros(len(rewards))
    end_rows = np.flatnonzero(ends)
    start = 0
    for end in end_rows:
        segment = rewards[start : end + 1]
        if failure is not None and np.all(segment == failure):
            out[start : end + 1] = failure / (1 - discount)
        else:
            running = 0.0
            for i in range(end, start - 1, -1):
                running = float(rewards[i]) + discount * running
                out[i] = running
        start = end + 1
    return out


@pytest.mark.parametrize("piece_steps", [None, 1, 7])
def test_mc_returns_matches_the_per_step_definition(monkeypatch, piece_steps):
    if piece_steps is not None:  # trajectories split over several pieces of work
        monkeypatch.setattr(datasets, "MC_PIECE_STEPS", piece_steps)
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 70))
        if trial % 2:
            rewards = rng.choice([-5.0, 5.0], size=n, p=[0.9, 0.1]).astype(np.float32)
        else:
            rewards = rng.normal(size=n).astype(np.float32)
        ends = rng.random(n) < rng.choice([0.0, 0.05, 0.3, 1.0])
        discount = float(rng.choice([0.0, 0.5, 0.99]))
        failure = -5.0 if trial % 4 == 1 else None
        got = mc_returns(rewards, ends, discount, failure)
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_allclose(got, mc_returns_loop(rewards, ends, discount, failure), rtol=1e-5, atol=1e-5)
    # steps after the last episode end belong to no trajectory: 0
    np.testing.assert_array_equal(mc_returns(np.ones(4, np.float32), np.array([0, 1, 0, 0], bool), 0.5), [1.5, 1, 0, 0])
    # a long trajectory (many doubling rounds)
    rewards = rng.normal(size=3000).astype(np.float32)
    ends = np.zeros(3000, bool)
    ends[[1499, 2999]] = True
    np.testing.assert_allclose(mc_returns(rewards, ends, 0.99), mc_returns_loop(rewards, ends, 0.99), rtol=1e-4, atol=1e-4)
