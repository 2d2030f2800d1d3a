"""actor/policy.py: the jitted action selection shared by the actors and the learner's loops."""

import jax
import numpy as np

from actor.policy import Policy
from learner.agents import make_agent
from tests.conftest import tiny_config


def test_sample_is_split_then_act_in_one_call():
    config = tiny_config()
    params = make_agent("sac", config.agent, 2, 2, seed=0).actor.params
    policy = Policy(config.agent, 2)
    rng = jax.random.PRNGKey(11)
    observations = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    for observation in observations:
        expected_rng, key = jax.random.split(rng)
        expected = policy(params, observation, key)
        action, rng = policy.sample(params, observation, rng)
        np.testing.assert_array_equal(action, expected)
        np.testing.assert_array_equal(np.asarray(rng), np.asarray(expected_rng))
        assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    batch, _ = policy.sample(params, observations, rng)
    assert batch.shape == (5, 2)
    # deterministic: tanh of the mean, independent of the key
    a = policy(params, observations[0], jax.random.PRNGKey(1), deterministic=True)
    b = policy(params, observations[0], jax.random.PRNGKey(2), deterministic=True)
    np.testing.assert_array_equal(a, b)
