"""IQL (Kostrikov et al. 2021): expectile value regression and advantage-weighted policy
extraction. The policy is the same tanh-Gaussian network SAC uses, so an IQL checkpoint's
policy and critics load into the fine-tuning agent (see `learner.checkpoint`)."""

from __future__ import annotations

from typing import ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from actor.networks import make_policy
from actor import distributions
from learner import losses
from learner.agents.common import (
    Batch,
    TrainState,
    apply_gradients,
    batch_masks,
    flatten_updates,
    make_state,
    mean_metrics,
    subsample_critics,
)
from learner.config import AgentConfig
from learner.networks import CriticEnsemble, ValueFunction


class IQLAgent(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    value: TrainState
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)
    target_critic_module: nn.Module = flax.struct.field(pytree_node=False)

    algorithm: ClassVar[str] = "iql"

    @classmethod
    def network_states(cls, config: AgentConfig, observation_dim: int, action_dim: int, rng: jax.Array) -> dict:
        k_actor, k_critic, k_value = jax.random.split(rng, 3)
        obs = jnp.zeros((1, observation_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)
        critic = CriticEnsemble(
            config.critic_ensemble_size, tuple(config.critic_hidden_dims), config.critic_layer_norm, config.critic_matmul_dtype,
            config.kernel_init, config.kernel_scale_final,
        )
        value = ValueFunction(tuple(config.critic_hidden_dims), config.critic_layer_norm, config.kernel_init, config.kernel_scale_final)
        return {
            "actor": make_state(make_policy(config, action_dim), k_actor, (obs,), config.actor_lr),
            "critic": make_state(critic, k_critic, (obs, act), config.critic_lr, with_target=True),
            "value": make_state(value, k_value, (obs,), config.value_lr),
        }

    @classmethod
    def static_fields(cls, config: AgentConfig, action_dim: int) -> dict:
        return {
            "config": config,
            "action_dim": action_dim,
            "target_critic_module": CriticEnsemble(
                config.critic_subsample_size, tuple(config.critic_hidden_dims), config.critic_layer_norm, config.critic_matmul_dtype
            ),
        }

    @classmethod
    def create(cls, config: AgentConfig, observation_dim: int, action_dim: int, seed: int = 0) -> "IQLAgent":
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        states = cls.network_states(config, observation_dim, action_dim, init_rng)
        return cls(rng=rng, **states, **cls.static_fields(config, action_dim))

    def q_values(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        return self.critic.apply_fn({"params": self.critic.params}, observations, actions)

    def target_q(self, batch: Batch, rng: jax.Array) -> jnp.ndarray:
        """min over `critic_subsample_size` random target critics of Q(s, a) on data actions."""
        c = self.config
        params = subsample_critics(rng, self.critic.target_params, c.critic_ensemble_size, c.critic_subsample_size)
        qs = self.target_critic_module.apply({"params": params}, batch["observations"], batch["actions"])
        return qs.min(axis=0)

    def update_value_and_critic(self, batch: Batch) -> tuple["IQLAgent", dict]:
        rng, key = jax.random.split(self.rng)
        c = self.config
        q_target = self.target_q(batch, key)

        def value_loss_fn(params):
            v = self.value.apply_fn({"params": params}, batch["observations"])
            loss = losses.expectile_loss(q_target - v, c.iql_expectile).mean()
            return loss, {"value_loss": loss, "v_mean": v.mean()}

        value, value_info = apply_gradients(self.value, value_loss_fn)
        next_v = value.apply_fn({"params": value.params}, batch["next_observations"])
        target = losses.td_target(batch["rewards"], batch_masks(batch), next_v, c.discount)

        def critic_loss_fn(params):
            qs = self.critic.apply_fn({"params": params}, batch["observations"], batch["actions"])
            loss = losses.critic_loss(qs, target)
            return loss, {"critic_loss": loss, "q_mean": qs.mean(), "q_min": qs.min(), "q_max": qs.max()}

        critic, critic_info = apply_gradients(self.critic, critic_loss_fn)
        critic = critic.soft_update_target(c.tau)
        agent = self.replace(value=value, critic=critic, rng=rng)
        return agent, {**value_info, **critic_info, "target_q": target.mean()}

    def update_actor(self, batch: Batch) -> tuple["IQLAgent", dict]:
        rng, key = jax.random.split(self.rng)
        c = self.config
        v = self.value.apply_fn({"params": self.value.params}, batch["observations"])
        advantages = self.target_q(batch, key) - v
        weights = losses.awr_weights(advantages, c.iql_awr_temperature, c.iql_awr_max_weight)

        def actor_loss_fn(params):
            means, log_stds = self.actor.apply_fn({"params": params}, batch["observations"])
            log_probs = distributions.tanh_gaussian_log_prob(batch["actions"], means, log_stds)
            loss = losses.awr_actor_loss(log_probs, weights)
            return loss, {"actor_loss": loss, "log_prob_data": log_probs.mean()}

        actor, info = apply_gradients(self.actor, actor_loss_fn)
        return self.replace(actor=actor, rng=rng), {**info, "advantage": advantages.mean(), "awr_weight": weights.mean()}

    def _critic_updates(self, batch: Batch) -> tuple["IQLAgent", dict]:
        """M value+critic updates, one per leading index of `batch`; metrics averaged."""
        agent, infos = self, []
        for i in range(batch["rewards"].shape[0]):
            agent, info = agent.update_value_and_critic(jax.tree_util.tree_map(lambda x: x[i], batch))
            infos.append(info)
        return agent, mean_metrics(infos)

    @jax.jit
    def update(self, batch: Batch) -> tuple["IQLAgent", dict]:
        """M value+critic updates (one per leading index of `batch`), then one actor update on
        the union of the M batches, compiled as one function (same contract as SAC)."""
        agent, critic_info = self._critic_updates(batch)
        agent, actor_info = agent.update_actor(flatten_updates(batch))
        return agent, {**critic_info, **actor_info}

    @jax.jit
    def update_critics(self, batch: Batch) -> tuple["IQLAgent", dict]:
        """`update` without the actor update: the policy stays frozen."""
        return self._critic_updates(batch)
