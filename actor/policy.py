"""Jitted action selection from policy parameters: what an actor runs at every step, and what
the learner's loops (evaluation, single-process fine-tuning) use too.

Needs only jax and flax, never optax or the training code.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import jax
import numpy as np

from actor import distributions
from actor.networks import EncodedPolicy, make_policy


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
    """Maps one observation (or a batch) to actions in [-1, 1] with given parameters.

    Without `observation_spec` (or with a flat one) observations are float vectors (d,) or
    batches (N, d) and the parameters are the policy network's. With an
    `envs.observations.ObservationSpec` holding cameras, observations are dicts {part: array}
    (uint8 images (H, W, C), the float32 "state"), one or a batch (N, ...), and the
    parameters those the learner publishes ({"encoder", "policy"}: the agent's
    `policy_params()`)."""

    def __init__(self, agent_config, action_dim: int, observation_spec=None):
        self.module = make_policy(agent_config, action_dim, observation_spec)
        self.observation_spec = observation_spec if isinstance(self.module, EncodedPolicy) else None

    def _batched(self, observation) -> tuple[object, bool]:
        """(the observation(s) as a batch in the networks' dtypes, whether it was one)."""
        # Shapes are fixed in numpy: every jax op outside the jitted call is one more dispatch
        # (~0.1 ms each on a CPU), which is what a robot's control loop would feel.
        spec = self.observation_spec
        if spec is None:
            obs = np.asarray(observation, np.float32)
            single = obs.ndim == 1
            return (obs[None] if single else obs), single
        if not isinstance(observation, Mapping):
            raise ValueError(f"observation: got {type(observation).__name__}, expected a dict with keys {list(spec.names)}")
        first = spec.parts[0]
        single = np.ndim(observation.get(first.name)) == len(first.shape)
        # Images stay uint8 up to the device (the encoder casts them); check() names any
        # part whose key, shape or dtype is off.
        obs = spec.check({k: np.asarray(v)[None] if single else v for k, v in observation.items()})
        return obs, single

    def __call__(self, params, observation, rng: jax.Array, deterministic: bool = False) -> np.ndarray:
        obs, single = self._batched(observation)
        actions = np.asarray(_act(self.module, params, obs, rng, deterministic))
        return actions[0] if single else actions

    def sample(self, params, observation, rng: jax.Array) -> tuple[np.ndarray, jax.Array]:
        """`rng, key = split(rng)` then `self(params, observation, key)`, in one compiled call:
        the same actions and key stream, at the cost of a single dispatch. Returns (action, rng)."""
        obs, single = self._batched(observation)
        actions, rng = _split_and_act(self.module, params, obs, rng)
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
