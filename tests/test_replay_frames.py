"""Replay with camera frames (learner/replay_buffer.py): each frame stored once, batches equal
to what was inserted, at episode boundaries, after wrap-around and with interleaved actors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.datasets import OfflineDataset
from envs.observations import ObservationPart, ObservationSpec
from learner.replay_buffer import InterventionSampler, MixedSampler, ReplayBuffer, take_rows

SPEC = ObservationSpec((ObservationPart("cam", (4, 4, 3), "uint8"), ObservationPart("state", (2,), "float32")))


class NaiveReplay:
    """The reference: every transition's observations copied whole into a ring of slots."""

    def __init__(self, capacity):
        self.capacity, self.slots, self.next = capacity, [None] * capacity, 0

    def add(self, *transition):
        self.slots[self.next] = transition
        self.next = (self.next + 1) % self.capacity


def frame(rng):
    return rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)


def observation(rng):
    return {"cam": frame(rng), "state": rng.normal(size=2).astype(np.float32)}


def episode(rng, length):
    """(obs, action, reward, next_obs, terminal) steps where next_obs[t] is obs[t + 1]."""
    obs = observation(rng)
    steps = []
    for t in range(length):
        nxt = observation(rng)
        steps.append((obs, rng.normal(size=1).astype(np.float32), float(rng.normal()), nxt, t == length - 1 and bool(rng.integers(2))))
        obs = nxt
    return steps


def insert_interleaved(rng, buffers, streams):
    """Steps of several actors' episodes (each in its own order) inserted in a random interleaving."""
    cursors = [0] * len(streams)
    while any(c < len(s) for c, s in zip(cursors, streams)):
        k = rng.choice([i for i, s in enumerate(streams) if cursors[i] < len(s)])
        for buffer in buffers:
            buffer.add(*streams[k][cursors[k]])
        cursors[k] += 1


def check_equal_to_naive(buffer, naive):
    rows = buffer.rows(np.arange(len(buffer)))
    for slot in range(len(buffer)):
        obs, action, reward, nxt, terminal = naive.slots[slot]
        for field, expected in (("observations", obs), ("next_observations", nxt)):
            for part in ("cam", "state"):
                np.testing.assert_array_equal(rows[field][part][slot], expected[part], err_msg=f"slot {slot} {field}[{part}]")
        np.testing.assert_array_equal(rows["actions"][slot], action)
        assert rows["rewards"][slot] == np.float32(reward) and rows["terminals"][slot] == float(terminal)
    # no leak, no early free: the pool holds exactly the frames live slots refer to
    pool = buffer.frames["cam"]
    refs = np.concatenate([buffer.frame_refs[f]["cam"][: len(buffer)] for f in ("observations", "next_observations")])
    assert pool.live == len(np.unique(refs))
    np.testing.assert_array_equal(np.bincount(refs, minlength=pool.top), pool.refcount[: pool.top])


def test_one_frame_per_step_plus_one_per_episode():
    rng = np.random.default_rng(0)
    buffer, naive = ReplayBuffer(20, SPEC, 1), NaiveReplay(20)
    for length in (3, 5):
        for step in episode(rng, length):
            buffer.add(*step)
            naive.add(*step)
    # 3 + 1 and 5 + 1 frames: each next frame is the following step's observation frame
    assert buffer.frames["cam"].live == 10
    rows = buffer.rows(np.arange(8))
    np.testing.assert_array_equal(rows["next_observations"]["cam"][:2], rows["observations"]["cam"][1:3])
    np.testing.assert_array_equal(buffer.frame_refs["next_observations"]["cam"][:2], buffer.frame_refs["observations"]["cam"][1:3])
    # the episode's last next frame is kept on its own, not the next episode's first frame
    assert buffer.frame_refs["next_observations"]["cam"][2] != buffer.frame_refs["observations"]["cam"][3]
    check_equal_to_naive(buffer, naive)


def test_wrap_around_never_pairs_frames_of_another_episode():
    rng = np.random.default_rng(1)
    buffer, naive = ReplayBuffer(5, SPEC, 1), NaiveReplay(5)
    for length in (4, 4, 4, 2):
        for step in episode(rng, length):
            buffer.add(*step)
            naive.add(*step)
        check_equal_to_naive(buffer, naive)
    assert len(buffer) == 5 and buffer._next == 4
    # slots 0-3: the third episode (5 frames, one of them its last next frame); slot 4:
    # the second episode's last step; slots 0-1 then the fourth episode
    assert buffer.frames["cam"].live <= 5 + 3


def test_interleaved_actors_share_frames_within_each_stream():
    rng = np.random.default_rng(2)
    buffer, naive = ReplayBuffer(64, SPEC, 1), NaiveReplay(64)
    streams = [episode(rng, 10) for _ in range(4)]
    insert_interleaved(rng, [buffer, naive], streams)
    check_equal_to_naive(buffer, naive)
    assert buffer.frames["cam"].live == 4 * 11  # as if each actor had inserted alone


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    capacity=st.integers(1, 12),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    actors=st.integers(1, 3),
)
def test_batches_equal_a_copy_everything_buffer(seed, capacity, lengths, actors):
    rng = np.random.default_rng(seed)
    buffer, naive = ReplayBuffer(capacity, SPEC, 1), NaiveReplay(capacity)
    streams = [[] for _ in range(actors)]
    for k, length in enumerate(lengths):
        streams[k % actors].extend(episode(rng, length))
    insert_interleaved(rng, [buffer, naive], streams)
    check_equal_to_naive(buffer, naive)
    assert buffer.frames["cam"].live <= 2 * len(buffer)
    batch = buffer.sample(rng, 2, 3)
    assert batch["observations"]["cam"].shape == (2, 3, 4, 4, 3) and batch["observations"]["cam"].dtype == np.uint8
    assert batch["next_observations"]["state"].shape == (2, 3, 2) and batch["actions"].shape == (2, 3, 1)


def test_repeated_frames_are_shared_too():
    rng = np.random.default_rng(3)
    still = observation(rng)  # a robot that does not move: every step sees the same frame
    buffer = ReplayBuffer(10, SPEC, 1)
    for _ in range(10):
        buffer.add(still, np.zeros(1), 0.0, still, False)
    assert buffer.frames["cam"].live == 1 and buffer.frames["cam"].refcount[0] == 20


def test_memory_per_transition_with_and_without_sharing():
    spec = ObservationSpec((ObservationPart("cam", (16, 16, 3), "uint8"),))
    rng = np.random.default_rng(4)
    capacity, length = 400, 20
    buffer = ReplayBuffer(capacity, spec, 2)
    for _ in range(capacity // length * 2):  # twice round the ring
        obs = {"cam": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)}
        for _ in range(length):
            nxt = {"cam": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)}
            buffer.add(obs, np.zeros(2), 0.0, nxt, False)
            obs = nxt
    pool = buffer.frames["cam"]
    frame_bytes = 16 * 16 * 3
    assert pool.live == capacity + capacity // length  # 1 + 1/T frames per transition
    assert pool.frames.nbytes == (capacity + capacity // 16 + 2) * frame_bytes  # never grew
    copy_everything = 2 * capacity * frame_bytes
    assert pool.frames.nbytes < 0.54 * copy_everything
    assert buffer.nbytes < pool.frames.nbytes + capacity * 64  # refs, actions, rewards, ... are small


def test_pool_grows_when_nothing_is_shared():
    rng = np.random.default_rng(5)
    buffer, naive = ReplayBuffer(16, SPEC, 1), NaiveReplay(16)
    for _ in range(40):  # every transition its own one-step episode: 2 frames each
        step = episode(rng, 1)[0]
        buffer.add(*step)
        naive.add(*step)
    assert buffer.frames["cam"].live == 32 and len(buffer.frames["cam"].frames) >= 32
    check_equal_to_naive(buffer, naive)


def test_bad_observations_are_refused_before_anything_is_written():
    buffer = ReplayBuffer(4, SPEC, 1)
    good = {"cam": np.zeros((4, 4, 3), np.uint8), "state": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match=r"replay next_observation\['cam'\]: dtype float64, expected uint8"):
        buffer.add(good, np.zeros(1), 0.0, {"cam": np.zeros((4, 4, 3)), "state": np.zeros(2)}, False)
    with pytest.raises(ValueError, match=r"replay observation: keys \['cam'\], expected \['cam', 'state'\]"):
        buffer.add({"cam": good["cam"]}, np.zeros(1), 0.0, good, False)
    assert len(buffer) == 0 and buffer.frames["cam"].live == 0
    with pytest.raises(ValueError, match="replay observation_dim: got 'x'"):
        ReplayBuffer(4, "x", 1)


def image_dataset(rng, lengths):
    steps = [s for length in lengths for s in episode(rng, length)]
    ends = np.concatenate([[t == length - 1 for t in range(length)] for length in lengths])
    stack = lambda k, part: np.stack([s[k][part] for s in steps])  # noqa: E731
    return OfflineDataset(
        observations={"cam": stack(0, "cam"), "state": stack(0, "state")},
        actions=np.stack([s[1] for s in steps]),
        rewards=np.array([s[2] for s in steps], np.float32),
        next_observations={"cam": stack(3, "cam"), "state": stack(3, "state")},
        terminals=np.array([s[4] for s in steps], np.float32),
        episode_ends=ends,
    ), steps


def test_from_dataset_add_from_and_samplers_with_images():
    rng = np.random.default_rng(6)
    dataset, steps = image_dataset(rng, [3, 4])
    offline = ReplayBuffer.from_dataset(dataset, mc_returns=np.arange(7, dtype=np.float32))
    assert len(offline) == 7 and offline.frames["cam"].live == 9
    again, naive = ReplayBuffer.from_dataset(dataset), NaiveReplay(7)
    for step in steps:
        naive.add(*step)
    for step in episode(rng, 4):  # inserts after a bulk load overwrite its slots correctly
        again.add(*step)
        naive.add(*step)
    check_equal_to_naive(again, naive)
    rows = offline.rows(np.arange(7))
    np.testing.assert_array_equal(rows["next_observations"]["cam"], dataset.next_observations["cam"])
    np.testing.assert_array_equal(rows["observations"]["state"], dataset.observations["state"])
    online = ReplayBuffer(4, SPEC, 1)
    slots = online.add_from(offline, np.array([5, 6, 0]))
    np.testing.assert_array_equal(slots, [0, 1, 2])
    got = online.rows(slots)
    np.testing.assert_array_equal(got["observations"]["cam"], dataset.observations["cam"][[5, 6, 0]])
    np.testing.assert_array_equal(got["mc_returns"], [5, 6, 0])
    assert online.frames["cam"].live == 5  # steps 5 and 6 share a frame; step 0 brings two
    online.add(*steps[1], intervention=True)
    batch = MixedSampler(online, offline, 0.5).sample(rng, 2, 8)
    assert batch["observations"]["cam"].shape == (2, 8, 4, 4, 3) and batch["rewards"].shape == (2, 8)
    batch = InterventionSampler(online, online, 0.25).sample(rng, 3, 8)
    np.testing.assert_array_equal(batch["observations"]["cam"][:, 6:], np.broadcast_to(steps[1][0]["cam"], (3, 2, 4, 4, 3)))


def test_state_dict_round_trip_keeps_frames_and_sharing():
    rng = np.random.default_rng(7)
    buffer, naive = ReplayBuffer(6, SPEC, 1), NaiveReplay(6)
    insert_interleaved(rng, [buffer, naive], [episode(rng, 4), episode(rng, 5)])
    buffer.set_mc_returns(np.arange(6), np.arange(6, dtype=np.float32))
    from flax import serialization

    # through the learner state file's msgpack, as save_learner_state / load_learner_state do
    state = serialization.msgpack_restore(serialization.msgpack_serialize(buffer.state_dict()))
    assert len(state["frames"]["cam"]) == buffer.frames["cam"].live  # only the live frames travel
    restored = ReplayBuffer(6, SPEC, 1)
    restored.load_state_dict(state)
    check_equal_to_naive(restored, naive)
    np.testing.assert_array_equal(restored.data["mc_returns"], np.arange(6))
    for step in episode(rng, 3):  # keeps working (and sharing) after the restore
        restored.add(*step)
        naive.add(*step)
    check_equal_to_naive(restored, naive)
    with pytest.raises(ValueError, match="replay state: capacity 6"):
        ReplayBuffer(7, SPEC, 1).load_state_dict(state)
    flat = ReplayBuffer(3, 2, 1)
    flat.add(np.ones(2), np.ones(1), 1.0, np.ones(2), True)
    flat_state = flat.state_dict()
    assert set(flat_state) == {"data", "interventions", "next", "size", "capacity"}
    with pytest.raises(ValueError, match="replay state"):
        ReplayBuffer(3, SPEC, 1).load_state_dict(flat_state)


def test_take_rows_gathers_on_the_device_inside_jit():
    import jax

    rng = np.random.default_rng(8)
    buffer = ReplayBuffer(8, SPEC, 1)
    for step in episode(rng, 6):
        buffer.add(*step)
    idx = rng.integers(0, 6, (2, 3))
    on_device = jax.jit(take_rows)(jax.device_put(buffer.storage(len(buffer))), idx)
    expected = buffer.rows(idx)
    for field in ("observations", "next_observations"):
        for part in ("cam", "state"):
            np.testing.assert_array_equal(np.asarray(on_device[field][part]), expected[field][part])
    flat = ReplayBuffer(4, 2, 1)
    flat.add(np.ones(2), np.ones(1), 1.0, np.ones(2), True)
    np.testing.assert_array_equal(take_rows(flat.storage(1), np.zeros((1, 2), int))["observations"], np.ones((1, 2, 2)))


def test_held_out_sample_of_an_image_buffer_keeps_frames_uint8():
    from learner.diagnostics import held_out_sample

    rng = np.random.default_rng(9)
    dataset, _ = image_dataset(rng, [3, 4])
    sample = held_out_sample(ReplayBuffer.from_dataset(dataset), 4, seed=0)
    from_dataset = held_out_sample(dataset, 4, seed=0)  # the same rows drawn from the dataset itself
    for got in (sample, from_dataset):
        assert got["observations"]["cam"].dtype == np.uint8 and got["observations"]["cam"].shape == (4, 4, 4, 3)
        assert got["actions"].dtype == np.float32 and got["rewards"].shape == (4,)
    np.testing.assert_array_equal(sample["next_observations"]["cam"], from_dataset["next_observations"]["cam"])
