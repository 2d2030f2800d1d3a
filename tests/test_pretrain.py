"""The device-resident pre-training loop: chunk length, equivalence with one update per
dispatch, and the command's files."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from learner.agents import make_agent
from learner.checkpoint import read_checkpoint
from learner.pretrain import device_dataset, make_train_chunk, pretrain, steps_per_dispatch
from learner.replay_buffer import ReplayBuffer


def test_chunk_length_ends_a_chunk_at_every_event_step():
    assert steps_per_dispatch(250_000, (1_000, 25_000, 50_000)) == 1_000
    assert steps_per_dispatch(10, (4, 0, 0)) == 2  # gcd(10, 4)
    assert steps_per_dispatch(6, (0, 0, 0)) == 6
    assert steps_per_dispatch(7, (0, 3, 0)) == 1
    assert steps_per_dispatch(5_000, (0,), limit=64) == 50  # largest divisor of 5000 <= 64
    with pytest.raises(ValueError, match="pretrain.num_steps: got 0"):
        steps_per_dispatch(0, (1,))


def _buffer(n: int, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(n, 2, 2)
    for _ in range(n):
        buffer.add(rng.normal(size=2), rng.uniform(-1, 1, size=2), rng.normal(), rng.normal(size=2), rng.random() < 0.1)
    buffer.set_mc_returns(np.arange(n), rng.normal(size=n).astype(np.float32))
    return buffer


def test_a_chunk_is_k_updates_on_the_batches_its_key_draws():
    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=1)
    buffer = _buffer(37)
    dataset = device_dataset(buffer)
    key = jax.random.key(7)
    chunked, key_after, info = make_train_chunk(config.agent.batch_size, 3)(agent, dataset, key)
    # The same three updates, one dispatch each, on batches gathered on the host.
    expected, k = agent, key
    for _ in range(3):
        k, k_sample = jax.random.split(k)
        idx = np.asarray(jax.random.randint(k_sample, (1, config.agent.batch_size), 0, len(buffer)))
        assert idx.min() >= 0 and idx.max() < len(buffer)
        expected, expected_info = expected.update({name: jnp.asarray(a[idx]) for name, a in buffer.data.items()})
    for a, b in zip(jax.tree_util.tree_leaves(chunked), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-5, atol=2e-6)
    assert np.array_equal(jax.random.key_data(key_after), jax.random.key_data(k))
    assert float(info["critic_loss"]) == pytest.approx(float(expected_info["critic_loss"]), rel=1e-4)


def test_pretrain_logs_on_chunk_boundaries_and_is_deterministic(tmp_path):
    config = tiny_config(pretrain={"num_steps": 6, "log_every": 2, "checkpoint_every": 3})
    first = read_checkpoint(pretrain(config, str(tmp_path / "a")))
    second = read_checkpoint(pretrain(config, str(tmp_path / "b")))
    assert first.counters["pretrain_steps"] == 6 and first.counters["interrupted"] is False
    assert first.counters["sample_key"] == second.counters["sample_key"]  # what a resume continues from
    with open(tmp_path / "a" / "train.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4, 6]
    for a, b in zip(jax.tree_util.tree_leaves(first.state), jax.tree_util.tree_leaves(second.state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_dispatches_fit_the_time_target_and_do_not_change_the_result(tmp_path, monkeypatch, capsys):
    """A dispatch is as long as TARGET_DISPATCH_S allows at the measured update time (a stop
    waits at most that long): 0.5 s per update -> 4 updates per 2 s dispatch; a fast machine
    gets the whole 48-step period. The chunking changes no bit of the result."""
    import learner.pretrain as pretrain_module

    config = tiny_config(pretrain={"num_steps": 96, "log_every": 48})
    states = []
    for seconds, expected in ((0.5, 4), (0.001, 48)):
        monkeypatch.setattr(pretrain_module, "time_per_step", lambda *args, s=seconds: s)
        path = pretrain(config, str(tmp_path / f"t{expected}"))
        assert f"96 steps ({expected} per dispatch)" in capsys.readouterr().out
        states.append(read_checkpoint(path).state)
    for a, b in zip(jax.tree_util.tree_leaves(states[0]), jax.tree_util.tree_leaves(states[1])):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # The probe itself: a positive time, and the agent it measured is left as it was.
    from learner.agents import make_agent

    agent = make_agent("calql", config.agent, 2, 2, seed=1)
    dataset = device_dataset(_buffer(37))
    before = jax.tree_util.tree_leaves(agent)
    monkeypatch.undo()
    assert pretrain_module.time_per_step(agent, dataset, jax.random.key(0), config.agent.batch_size) > 0
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(before, jax.tree_util.tree_leaves(agent)))
