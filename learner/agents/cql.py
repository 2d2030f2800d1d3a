"""CQL and CalQL: SAC whose critic loss adds the conservative regularizer.

CalQL (Nakamoto et al. 2023) differs from CQL in one line: Q-values of policy actions inside
the regularizer are lower-bounded by the Monte-Carlo return-to-go of the data
(`batch["mc_returns"]`), so the learned Q is calibrated rather than arbitrarily small.
With `cql_lagrange` the penalty weight lambda is learned ("dual" CQL) so that the soft-max
gap stays near `cql_target_action_gap`.

As in the reference implementation (docs/fidelity.md):
- the TD target is CQL's max target backup (`agent.cql_max_target_backup`: the max over 10
  sampled next actions of the min over the sub-sampled target critics);
- with a critic ensemble larger than its sub-sample (WSRL's 10 critics, sub-sample 2), the
  penalty is computed on `critic_subsample_size` critics drawn afresh at every critic step
  (`agent.cql_penalty_critics: subsample`), the TD loss on all of them;
- dual CQL's critic loss is TD + lambda * (mean(gap) - target gap), lambda = softplus(raw)
  starting at `cql_alpha_lagrange_init`, and lambda takes one Adam step per fused update
  (after the M critic steps; the reference steps it with the actor, once per update).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp

from learner import losses
from learner.agents.common import (
    Batch,
    TrainState,
    apply_gradients,
    critic_subsample_indices,
    make_state,
    repeat_states,
    sample_policy,
)
from envs.observations import ObservationSpec
from learner.agents.sac import SACAgent
from learner.config import AgentConfig
from learner.networks import LagrangeMultiplier


class CQLAgent(SACAgent):
    lagrange: Optional[TrainState] = None  # lambda of dual CQL (softplus-parameterized); None with a fixed alpha

    algorithm: ClassVar[str] = "cql"
    use_mc_lower_bound: ClassVar[bool] = False

    @classmethod
    def network_states(cls, config: AgentConfig, observations: ObservationSpec | int, action_dim: int, rng: jax.Array) -> dict:
        rng, k_lagrange = jax.random.split(rng)
        states = super().network_states(config, observations, action_dim, rng)
        if config.cql_lagrange:
            states["lagrange"] = make_state(
                LagrangeMultiplier(config.cql_alpha_lagrange_init), k_lagrange, (), config.cql_alpha_lagrange_lr
            )
        return states

    def target_backup(self) -> str:
        return self.config.cql_max_target_backup

    def lagrange_value(self) -> Optional[jnp.ndarray]:
        if self.lagrange is None:
            return None
        return self.lagrange.apply_fn({"params": self.lagrange.params})

    def penalty_critics(self, params: Any, qs: jnp.ndarray, rng: jax.Array) -> tuple[Any, jnp.ndarray, Any]:
        """(parameters, Q of the data (E', B), apply function) of the critics the penalty is
        computed on: `critic_subsample_size` of them drawn at random, or all (see the module
        docstring). Gradients flow back to the full ensemble's parameters."""
        c = self.config
        if c.cql_penalty_critics == "all" or c.critic_subsample_size == c.critic_ensemble_size:
            return params, qs, self.critic.apply_fn
        indices = critic_subsample_indices(rng, c.critic_ensemble_size, c.critic_subsample_size)
        subset = jax.tree_util.tree_map(lambda p: p[indices], params)
        return subset, qs[indices], self.target_critic_module.apply

    def critic_regularizer(self, params: Any, batch: Batch, qs: jnp.ndarray, rng: jax.Array) -> tuple[jnp.ndarray, dict]:
        c = self.config
        n = c.cql_num_actions
        obs = batch["observations"]
        k_random, k_policy, k_next, k_subsample = jax.random.split(rng, 4)
        random_actions = jax.random.uniform(k_random, (obs.shape[0], n, self.action_dim), minval=-1.0, maxval=1.0)
        # The policy reads the observations without passing gradients back (with cameras they
        # are the encoder's features, which only the Q-values train; a no-op on flat vectors).
        policy_obs = repeat_states(jax.lax.stop_gradient(obs), n)
        policy_actions, policy_log_probs = sample_policy(self.actor, self.actor.params, policy_obs, k_policy)
        next_actions, next_log_probs = sample_policy(
            self.actor, self.actor.params, repeat_states(batch["next_observations"], n), k_next
        )
        penalized, q_data, apply = self.penalty_critics(params, qs, k_subsample)
        # One critic call on all 3n proposals, every one evaluated at the current state s.
        proposals = jnp.concatenate([random_actions, policy_actions, next_actions], axis=1)
        q_all = apply({"params": penalized}, repeat_states(obs, 3 * n), proposals)
        q_random, q_policy, q_next = jnp.split(q_all, 3, axis=-1)
        gap, info = losses.cql_q_gap(
            q_data,
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
        penalty = losses.cql_penalty(
            gap, c.cql_alpha, self.lagrange_value(), c.cql_target_action_gap, c.cql_clip_diff_min, c.cql_clip_diff_max,
            c.cql_lagrange_times_alpha,
        )
        return penalty, {"cql_penalty": penalty, "cql_q_gap": gap.mean(), **info}

    def _critic_updates(self, batch: Batch) -> tuple["CQLAgent", dict]:
        """The M critic updates, then (dual CQL) one step of lambda on the mean gap of those
        M steps, each measured by its critic step on its own batch before that step's update.
        (The reference measures it afresh on the union of the M batches after the updates; at
        M = 1, offline pre-training, the two are the same measurement.)"""
        agent, info = super()._critic_updates(batch)
        if agent.lagrange is None:
            return agent, info
        c = self.config
        gap = jax.lax.stop_gradient(info["cql_q_gap"])

        def loss_fn(params):
            value = agent.lagrange.apply_fn({"params": params})
            return losses.lagrange_loss(value, gap, c.cql_target_action_gap, c.cql_alpha, c.cql_lagrange_times_alpha), {}

        lagrange, _ = apply_gradients(agent.lagrange, loss_fn)
        agent = agent.replace(lagrange=lagrange)
        return agent, {**info, "cql_alpha_lagrange": agent.lagrange_value()}


class CalQLAgent(CQLAgent):
    algorithm: ClassVar[str] = "calql"
    use_mc_lower_bound: ClassVar[bool] = True
