"""Shared fixtures: tiny configs so every test compiles and runs in seconds on 2 CPU cores."""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile


def _share_compilations_across_the_session() -> None:
    """JAX's persistent compilation cache in a directory of this test session (set before jax
    is imported): the same tiny networks are compiled by many tests and by the learner, actor
    and evaluator processes they start (which inherit the environment), and by all the xdist
    workers, so each computation is compiled once per session. A session's own directory, so
    every `python -m pytest` measures cold compilations, as CI sees them; it is removed at exit
    by the process that made it. A JAX_COMPILATION_CACHE_DIR set by the user is kept."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    directory = tempfile.mkdtemp(prefix="wsrl-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the tiny test networks compile in < 1 s
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


_share_compilations_across_the_session()
# XLA's optimizations off: the test networks are tiny, so compiling dominates every test, and
# it is a third faster this way. `JAX_DISABLE_MOST_OPTIMIZATIONS=0 python -m pytest` runs the
# suite on the production compilation (it passes both ways).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402  (after the cache directory is set)
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


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject addopts): one worker more than the cores. Many tests spend seconds
    waiting on the learner, actor and evaluator processes they start, and the spare worker
    fills that time (7.3 min against 7.6-7.9 min with one per core on 2 cores)."""
    return (os.cpu_count() or 1) + 1
