import numpy as np
import pytest

from envs.datasets import OfflineDataset
from learner.replay_buffer import MixedSampler, ReplayBuffer


def fill(buffer, values):
    for v in values:
        buffer.add(np.full(2, v), np.full(1, v), v, np.full(2, v + 0.5), terminal=(v == 3))


def test_ring_overwrites_oldest_and_tracks_size():
    buffer = ReplayBuffer(capacity=4, observation_dim=2, action_dim=1)
    fill(buffer, [0, 1, 2])
    assert len(buffer) == 3
    fill(buffer, [3, 4, 5])
    assert len(buffer) == 4
    # slots 0 and 1 now hold 4 and 5; 2 and 3 still hold 2 and 3
    np.testing.assert_array_equal(buffer.data["rewards"], [4, 5, 2, 3])
    np.testing.assert_array_equal(buffer.data["terminals"], [0, 0, 0, 1])
    np.testing.assert_array_equal(buffer.data["next_observations"][:, 0], [4.5, 5.5, 2.5, 3.5])


def test_sample_shapes_and_only_stored_rows():
    buffer = ReplayBuffer(capacity=100, observation_dim=2, action_dim=1)
    fill(buffer, [10, 11, 12])
    batch = buffer.sample(np.random.default_rng(0), num_batches=4, batch_size=64)
    assert batch["observations"].shape == (4, 64, 2)
    assert batch["actions"].shape == (4, 64, 1)
    assert batch["rewards"].shape == (4, 64)
    assert set(np.unique(batch["rewards"])) == {10.0, 11.0, 12.0}  # never the empty slots
    # each row is one consistent transition
    np.testing.assert_array_equal(batch["observations"][..., 0], batch["rewards"])
    np.testing.assert_array_equal(batch["next_observations"][..., 0], batch["rewards"] + 0.5)


def test_empty_and_invalid():
    with pytest.raises(ValueError, match="empty replay buffer"):
        ReplayBuffer(4, 2, 1).sample(np.random.default_rng(0), 1, 1)
    with pytest.raises(ValueError, match="replay capacity: got 0"):
        ReplayBuffer(0, 2, 1)


def test_mc_returns_start_unbounded_and_are_backfilled():
    buffer = ReplayBuffer(capacity=8, observation_dim=2, action_dim=1)
    slots = [buffer.add(np.zeros(2), np.zeros(1), 0.0, np.zeros(2), False) for _ in range(3)]
    assert np.all(np.isneginf(buffer.data["mc_returns"][:3]))
    buffer.set_mc_returns(np.array(slots), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(buffer.data["mc_returns"][:3], [1, 2, 3])


def test_mixed_sampler_takes_the_configured_share():
    online = ReplayBuffer(100, 2, 1)
    fill(online, [1.0] * 10)
    dataset = OfflineDataset(
        observations=np.zeros((5, 2), np.float32), actions=np.zeros((5, 1), np.float32),
        rewards=np.full(5, -7.0, np.float32), next_observations=np.zeros((5, 2), np.float32),
        terminals=np.zeros(5, np.float32), episode_ends=np.array([0, 0, 0, 0, 1], bool),
    )
    offline = ReplayBuffer.from_dataset(dataset, mc_returns=np.arange(5, dtype=np.float32))
    assert len(offline) == 5
    for ratio, expected in ((0.5, 32), (0.25, 16)):
        batch = MixedSampler(online, offline, ratio).sample(np.random.default_rng(1), 3, 64)
        assert batch["rewards"].shape == (3, 64)
        assert np.all((batch["rewards"] == -7.0).sum(axis=1) == expected)
    with pytest.raises(ValueError, match="offline_mixing_ratio: got 1.0"):
        MixedSampler(online, offline, 1.0)
