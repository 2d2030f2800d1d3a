import os

import jax
import numpy as np
import pytest
from flax import serialization

from learner.agents import make_agent
from learner.checkpoint import CheckpointError, read_checkpoint, restore_agent, save_checkpoint

SPEC = {"task": "pointmass-goal", "observation_dim": 2, "action_dim": 2}


def batch(m=2, b=8, seed=0):
    r = np.random.default_rng(seed)
    return {
        "observations": r.normal(size=(m, b, 2)).astype(np.float32),
        "actions": r.uniform(-1, 1, (m, b, 2)).astype(np.float32),
        "rewards": r.normal(size=(m, b)).astype(np.float32),
        "next_observations": r.normal(size=(m, b, 2)).astype(np.float32),
        "terminals": np.zeros((m, b), np.float32),
        "mc_returns": r.normal(size=(m, b)).astype(np.float32),
    }


def leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_round_trip_same_actions_q_values_and_optimizer_state(tmp_path, config):
    agent = make_agent("sac", config.agent, 2, 2, seed=1)
    agent, _ = agent.update(batch())
    path = save_checkpoint(tmp_path / "a.ckpt", agent, config, SPEC, {"env_steps": 7})
    loaded = read_checkpoint(path)
    assert loaded.counters == {"env_steps": 7} and loaded.algorithm == "sac" and loaded.config == config
    restored = restore_agent(loaded)
    obs = np.random.default_rng(2).normal(size=(5, 2)).astype(np.float32)
    act = np.random.default_rng(3).uniform(-1, 1, (5, 2)).astype(np.float32)
    np.testing.assert_array_equal(restored.q_values(obs, act), agent.q_values(obs, act))
    means, _ = restored.actor.apply_fn({"params": restored.actor.params}, obs)
    means0, _ = agent.actor.apply_fn({"params": agent.actor.params}, obs)
    np.testing.assert_array_equal(means, means0)
    for name in ("actor", "critic", "temperature"):
        assert leaves_equal(getattr(restored, name).opt_state, getattr(agent, name).opt_state)
        assert int(getattr(restored, name).step) == int(getattr(agent, name).step)
    assert leaves_equal(restored.critic.target_params, agent.critic.target_params)
    # the restored agent keeps training from the same optimizer state
    a1, _ = agent.update(batch(seed=5))
    a2, _ = restored.replace(rng=agent.rng).update(batch(seed=5))
    assert leaves_equal(a1.critic.params, a2.critic.params)


def test_calql_into_sac_keeps_networks_and_optimizer_state(tmp_path, config):
    calql = make_agent("calql", config.agent.__class__(**{**config.agent.__dict__, "cql_lagrange": True}), 2, 2)
    calql, _ = calql.update(batch(m=1))
    path = save_checkpoint(tmp_path / "calql.ckpt", calql, config, SPEC)
    sac = restore_agent(read_checkpoint(path), "sac", config.agent, SPEC)
    assert type(sac).__name__ == "SACAgent"
    for name in ("actor", "critic", "temperature"):
        assert leaves_equal(serialization.to_state_dict(getattr(sac, name)), serialization.to_state_dict(getattr(calql, name)))
    assert int(sac.critic.opt_state[0].count) == 1


def test_iql_into_sac_starts_a_fresh_temperature(tmp_path, config):
    iql = make_agent("iql", config.agent, 2, 2)
    iql, _ = iql.update(batch(m=1))
    path = save_checkpoint(tmp_path / "iql.ckpt", iql, config, SPEC)
    sac = restore_agent(read_checkpoint(path), "sac", config.agent, SPEC)
    assert leaves_equal(sac.actor.params, iql.actor.params)
    assert leaves_equal(sac.critic.opt_state, iql.critic.opt_state)
    assert float(sac.temperature_value) == pytest.approx(config.agent.initial_temperature)


def test_mismatches_name_both_sides(tmp_path, config):
    agent = make_agent("sac", config.agent, 2, 2)
    path = save_checkpoint(tmp_path / "a.ckpt", agent, config, SPEC)
    ckpt = read_checkpoint(path)
    with pytest.raises(CheckpointError, match="observation_dim: checkpoint has 2, this run expects 5"):
        restore_agent(ckpt, "sac", config.agent, {**SPEC, "observation_dim": 5})
    other = config.agent.__class__(**{**config.agent.__dict__, "critic_ensemble_size": 10})
    with pytest.raises(CheckpointError, match="agent.critic_ensemble_size: checkpoint has 4, this run has 10"):
        restore_agent(ckpt, "sac", other, SPEC)


def test_unreadable_files_and_atomic_writes(tmp_path, config):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"\x00\x01not msgpack")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        read_checkpoint(tmp_path / "junk.ckpt")
    agent = make_agent("sac", config.agent, 2, 2)
    path = save_checkpoint(tmp_path / "a.ckpt", agent, config, SPEC, {"n": 1})
    before = path.read_bytes()

    class Boom(Exception):
        pass

    real_fsync = os.fsync

    def failing_fsync(fd):
        raise Boom()

    os.fsync = failing_fsync
    try:
        with pytest.raises(Boom):
            save_checkpoint(path, agent, config, SPEC, {"n": 2})
    finally:
        os.fsync = real_fsync
    assert path.read_bytes() == before  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # no temp left behind
