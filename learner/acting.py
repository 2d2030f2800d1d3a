"""Jitted action selection from policy parameters; shared by the learner's loops and actors.

Needs only jax and flax, never optax or the training code.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from learner import distributions
from learner.networks import make_policy


@partial(jax.jit, static_argnames=("policy", "deterministic"))
def _act(policy, params, observations, rng, deterministic: bool):
    means, log_stds = policy.apply({"params": params}, observations)
    if deterministic:
        return distributions.deterministic_action(means)
    actions, _ = distributions.sample_tanh_gaussian(rng, means, log_stds)
    return actions


class Policy:
    """Maps one observation (or a batch) to actions in [-1, 1] with given parameters."""

    def __init__(self, agent_config, action_dim: int):
        self.module = make_policy(agent_config, action_dim)

    def __call__(self, params, observation: np.ndarray, rng: jax.Array, deterministic: bool = False) -> np.ndarray:
        obs = jnp.asarray(observation, jnp.float32)
        single = obs.ndim == 1
        actions = _act(self.module, params, obs[None] if single else obs, rng, deterministic)
        actions = np.asarray(actions)
        return actions[0] if single else actions
