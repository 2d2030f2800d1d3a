"""Jitted action selection from policy parameters: what an actor runs at every step, and what
the learner's loops (evaluation, single-process fine-tuning) use too.

Needs only jax and flax, never optax or the training code.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from actor import distributions
from actor.networks import make_policy


@partial(jax.jit, static_argnames=("policy", "deterministic"))
def _act(policy, params, observations, rng, deterministic: bool):
    means, log_stds = policy.apply({"params": params}, observations)
    if deterministic:
        return distributions.deterministic_action(means)
    actions, _ = distributions.sample_tanh_gaussian(rng, means, log_stds)
    return actions


@partial(jax.jit, static_argnames=("policy",))
def _split_and_act(policy, params, observations, rng):
    rng, key = jax.random.split(rng)
    return _act(policy, params, observations, key, False), rng


class Policy:
    """Maps one observation (or a batch) to actions in [-1, 1] with given parameters."""

    def __init__(self, agent_config, action_dim: int):
        self.module = make_policy(agent_config, action_dim)

    def __call__(self, params, observation: np.ndarray, rng: jax.Array, deterministic: bool = False) -> np.ndarray:
        # Shapes are fixed in numpy: every jax op outside the jitted call is one more dispatch
        # (~0.1 ms each on a CPU), which is what a robot's control loop would feel.
        obs = np.asarray(observation, np.float32)
        single = obs.ndim == 1
        actions = np.asarray(_act(self.module, params, obs[None] if single else obs, rng, deterministic))
        return actions[0] if single else actions

    def sample(self, params, observation: np.ndarray, rng: jax.Array) -> tuple[np.ndarray, jax.Array]:
        """`rng, key = split(rng)` then `self(params, observation, key)`, in one compiled call:
        the same actions and key stream, at the cost of a single dispatch. Returns (action, rng)."""
        obs = np.asarray(observation, np.float32)
        single = obs.ndim == 1
        actions, rng = _split_and_act(self.module, params, obs[None] if single else obs, rng)
        actions = np.asarray(actions)
        return (actions[0] if single else actions), rng


def jsrl_rollin_steps(rng: np.random.Generator, env_steps: int, initial_prob: float, decay_steps: int, discount: float) -> int:
    """JSRL's roll-in for an episode starting after `env_steps` env steps of fine-tuning: with
    probability `initial_prob` decaying linearly to 0 over `decay_steps`, a Geometric(1 -
    `discount`) number of steps acted by the frozen pre-trained policy; else 0 (Appendix I)."""
    probability = initial_prob * max(0.0, 1.0 - env_steps / decay_steps)
    if rng.random() >= probability:
        return 0
    return int(rng.geometric(1.0 - discount))
