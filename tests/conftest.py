"""Shared fixtures: tiny configs so every test compiles and runs in seconds on 2 CPU cores."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from learner.config import AgentConfig, Config, FinetuneConfig, LoggingConfig, PretrainConfig


def tiny_config(**sections) -> Config:
    """The built-in point-mass task with networks small enough to compile fast."""
    agent = AgentConfig(
        critic_ensemble_size=4,
        critic_subsample_size=2,
        critic_hidden_dims=(16,),
        actor_hidden_dims=(16,),
        batch_size=8,
        cql_num_actions=2,
    )
    config = Config(
        task="pointmass-goal",
        agent=agent,
        pretrain=PretrainConfig(dataset_episodes=6, num_steps=4, eval_every=0, eval_episodes=1, log_every=2, checkpoint_every=0),
        finetune=FinetuneConfig(warmup_steps=5, num_steps=8, utd_ratio=2, eval_every=0, eval_episodes=1, log_every=1, checkpoint_every=0),
        logging=LoggingConfig(tensorboard=False, progress=False),
    )
    for name, changes in sections.items():
        config = dataclasses.replace(config, **{name: dataclasses.replace(getattr(config, name), **changes)})
    return config


@pytest.fixture
def config() -> Config:
    return tiny_config()


def leaves_equal(a, b) -> bool:
    """Whether two pytrees have bit-identical leaves."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture
def pretrained(tmp_path):
    """(checkpoint path, agent): a tiny CalQL agent saved as a pre-trained checkpoint, so the
    pre-trained policy differs from a fresh SAC init."""
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint

    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=3)
    spec = {"task": "pointmass-goal", "observation_dim": 2, "action_dim": 2}
    return save_checkpoint(tmp_path / "pre.ckpt", agent, config, spec), agent
