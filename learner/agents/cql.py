"""CQL and CalQL: SAC whose critic loss adds the conservative regularizer.

CalQL (Nakamoto et al. 2023) differs from CQL in one line: Q-values of policy actions inside
the regularizer are lower-bounded by the Monte-Carlo return-to-go of the data
(`batch["mc_returns"]`), so the learned Q is calibrated rather than arbitrarily small.
With `cql_lagrange` the penalty weight alpha' is learned ("dual" CQL) so that the soft-max
gap stays near `cql_target_action_gap`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp

from learner import losses
from learner.agents.common import Batch, TrainState, apply_gradients, make_state, repeat_states, sample_policy
from learner.agents.sac import SACAgent
from learner.config import AgentConfig
from learner.networks import Temperature

# CalQL/CQL reference implementations clip the learned multiplier to this range.
_LAGRANGE_MAX = 1e6


class CQLAgent(SACAgent):
    lagrange: Optional[TrainState] = None  # alpha' of dual CQL; None with a fixed alpha

    algorithm: ClassVar[str] = "cql"
    use_mc_lower_bound: ClassVar[bool] = False

    @classmethod
    def network_states(cls, config: AgentConfig, observation_dim: int, action_dim: int, rng: jax.Array) -> dict:
        rng, k_lagrange = jax.random.split(rng)
        states = super().network_states(config, observation_dim, action_dim, rng)
        if config.cql_lagrange:
            states["lagrange"] = make_state(
                Temperature(config.cql_alpha_lagrange_init), k_lagrange, (), config.cql_alpha_lagrange_lr
            )
        return states

    def lagrange_value(self) -> Optional[jnp.ndarray]:
        if self.lagrange is None:
            return None
        return jnp.clip(self.lagrange.apply_fn({"params": self.lagrange.params}), 0.0, _LAGRANGE_MAX)

    def critic_regularizer(self, params: Any, batch: Batch, qs: jnp.ndarray, rng: jax.Array) -> tuple[jnp.ndarray, dict]:
        c = self.config
        n = c.cql_num_actions
        obs = batch["observations"]
        k_random, k_policy, k_next = jax.random.split(rng, 3)
        random_actions = jax.random.uniform(k_random, (obs.shape[0], n, self.action_dim), minval=-1.0, maxval=1.0)
        policy_actions, policy_log_probs = sample_policy(self.actor, self.actor.params, repeat_states(obs, n), k_policy)
        next_actions, next_log_probs = sample_policy(
            self.actor, self.actor.params, repeat_states(batch["next_observations"], n), k_next
        )
        # One critic call on all 3n proposals, every one evaluated at the current state s.
        proposals = jnp.concatenate([random_actions, policy_actions, next_actions], axis=1)
        q_all = self.critic.apply_fn({"params": params}, repeat_states(obs, 3 * n), proposals)
        q_random, q_policy, q_next = jnp.split(q_all, 3, axis=-1)
        gap, info = losses.cql_q_gap(
            qs,
            q_random,
            q_policy,
            jax.lax.stop_gradient(policy_log_probs),
            q_next,
            jax.lax.stop_gradient(next_log_probs),
            self.action_dim,
            c.cql_temperature,
            c.cql_importance_sample,
            batch["mc_returns"] if self.use_mc_lower_bound else None,
        )
        penalty = losses.cql_penalty(gap, c.cql_alpha, self.lagrange_value(), c.cql_target_action_gap)
        return penalty, {"cql_penalty": penalty, "cql_q_gap": gap.mean(), **info}

    def update_critic(self, batch: Batch) -> tuple["CQLAgent", dict]:
        agent, info = super().update_critic(batch)
        if agent.lagrange is None:
            return agent, info
        c = self.config
        gap = jax.lax.stop_gradient(info["cql_q_gap"])

        def loss_fn(params):
            value = jnp.clip(agent.lagrange.apply_fn({"params": params}), 0.0, _LAGRANGE_MAX)
            # alpha' ascends the constraint violation: it grows while the gap exceeds its target.
            return -value * c.cql_alpha * (gap - c.cql_target_action_gap), {}

        lagrange, _ = apply_gradients(agent.lagrange, loss_fn)
        agent = agent.replace(lagrange=lagrange)
        return agent, {**info, "cql_alpha_lagrange": agent.lagrange_value()}


class CalQLAgent(CQLAgent):
    algorithm: ClassVar[str] = "calql"
    use_mc_lower_bound: ClassVar[bool] = True
