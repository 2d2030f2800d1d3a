"""IQL (Kostrikov et al. 2021): expectile value regression and advantage-weighted policy
extraction. The policy is the same tanh-Gaussian network SAC uses, so an IQL checkpoint's
policy and critics load into the fine-tuning agent (see `learner.checkpoint`).

Camera observations: as SAC (learner/agents/sac.py), one encoder shared by the critics and
trained by the critic loss, its target copy feeding the target critics; the value function and
the policy read its features without passing gradients into it."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from actor.networks import make_policy
from actor import distributions
from envs.observations import ObservationSpec
from learner import losses
from learner.agents.common import (
    Batch,
    TrainState,
    apply_gradients,
    batch_masks,
    flatten_updates,
    make_encoder_state,
    make_state,
    mean_metrics,
    observation_spec_of,
    register_optional_networks,
    share_critic_output_grads,
    subsample_critics,
    tie_critic_outputs,
)
from learner.config import AgentConfig
from learner.networks import CriticEnsemble, ValueFunction, augment_observations


class IQLAgent(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    value: TrainState
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)
    target_critic_module: nn.Module = flax.struct.field(pytree_node=False)
    encoder: Optional[TrainState] = None  # camera observations only (see SACAgent.encoder)

    algorithm: ClassVar[str] = "iql"

    @classmethod
    def network_states(cls, config: AgentConfig, observations: ObservationSpec | int, action_dim: int, rng: jax.Array) -> dict:
        k_actor, k_critic, k_value = jax.random.split(rng, 3)
        encoder, feature_dim = make_encoder_state(config, observation_spec_of(observations), jax.random.fold_in(rng, 0xE4C))
        obs = jnp.zeros((1, feature_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)
        critic = CriticEnsemble(
            config.critic_ensemble_size, tuple(config.critic_hidden_dims), config.critic_layer_norm, config.critic_matmul_dtype,
            config.kernel_init, config.kernel_scale_final,
        )
        value = ValueFunction(tuple(config.critic_hidden_dims), config.critic_layer_norm, config.kernel_init, config.kernel_scale_final)
        critic_state = make_state(critic, k_critic, (obs, act), config.critic_lr, with_target=True)
        if config.critic_shared_output:  # (see SACAgent)
            tied = tie_critic_outputs(critic_state.params)
            critic_state = critic_state.replace(params=tied, target_params=tied)
        states = {
            "actor": make_state(make_policy(config, action_dim), k_actor, (obs,), config.actor_lr),
            "critic": critic_state,
            "value": make_state(value, k_value, (obs,), config.value_lr),
        }
        if encoder is not None:
            states["encoder"] = encoder
        return states

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
    def create(cls, config: AgentConfig, observations: ObservationSpec | int, action_dim: int, seed: int = 0) -> "IQLAgent":
        """See `SACAgent.create`."""
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        states = cls.network_states(config, observations, action_dim, init_rng)
        return cls(rng=rng, **states, **cls.static_fields(config, action_dim))

    def features(self, observations: Any, target: bool = False) -> jnp.ndarray:
        """See `SACAgent.features`."""
        if self.encoder is None:
            return observations
        params = self.encoder.target_params if target else self.encoder.params
        return self.encoder.apply_fn({"params": params}, observations)

    def policy_params(self) -> Any:
        """See `SACAgent.policy_params`."""
        if self.encoder is None:
            return self.actor.params
        return {"encoder": self.encoder.params, "policy": self.actor.params}

    def q_values(self, observations: Any, actions: jnp.ndarray) -> jnp.ndarray:
        return self.critic.apply_fn({"params": self.critic.params}, self.features(observations), actions)

    def target_q(self, batch: Batch, rng: jax.Array, observations: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """min over `critic_subsample_size` random target critics of Q(s, a) on data actions;
        the critics read `observations` when given (the target encoder's features), else
        batch["observations"]."""
        c = self.config
        params = subsample_critics(rng, self.critic.target_params, c.critic_ensemble_size, c.critic_subsample_size)
        obs = batch["observations"] if observations is None else observations
        qs = self.target_critic_module.apply({"params": params}, obs, batch["actions"])
        return qs.min(axis=0)

    def _encoded(self, batch: Batch, rng: jax.Array) -> tuple[Batch, jnp.ndarray, Any]:
        """(batch with the encoder's features of shifted images as observations and next
        observations, no gradient; the target encoder's features of the observations; the
        shifted observations themselves), for camera observations."""
        k_obs, k_next = jax.random.split(rng)
        observations = augment_observations(k_obs, batch["observations"], self.config.encoder_augment_pad)
        next_observations = augment_observations(k_next, batch["next_observations"], self.config.encoder_augment_pad)
        features = {
            **batch,
            "observations": jax.lax.stop_gradient(self.features(observations)),
            "next_observations": jax.lax.stop_gradient(self.features(next_observations)),
        }
        return features, self.features(observations, target=True), observations

    def update_value_and_critic(self, batch: Batch) -> tuple["IQLAgent", dict]:
        if self.encoder is None:
            rng, key = jax.random.split(self.rng)
            target_obs, raw_observations = None, None
        else:
            rng, key, k_aug = jax.random.split(self.rng, 3)
            batch, target_obs, raw_observations = self._encoded(batch, k_aug)
        c = self.config
        q_target = self.target_q(batch, key, target_obs)

        def value_loss_fn(params):
            v = self.value.apply_fn({"params": params}, batch["observations"])
            loss = losses.expectile_loss(q_target - v, c.iql_expectile).mean()
            return loss, {"value_loss": loss, "v_mean": v.mean()}

        value, value_info = apply_gradients(self.value, value_loss_fn)
        next_v = value.apply_fn({"params": value.params}, batch["next_observations"])
        target = losses.td_target(batch["rewards"], batch_masks(batch), next_v, c.discount)

        def critic_loss_fn(params, observations):
            qs = self.critic.apply_fn({"params": params}, observations, batch["actions"])
            loss = losses.critic_loss(qs, target)
            return loss, {"critic_loss": loss, "q_mean": qs.mean(), "q_min": qs.min(), "q_max": qs.max()}

        shared = share_critic_output_grads if c.critic_shared_output else (lambda g: g)
        if self.encoder is None:
            grads, critic_info = jax.grad(critic_loss_fn, has_aux=True)(self.critic.params, batch["observations"])
            critic = self.critic.apply_gradients(grads=shared(grads))
            encoder = None
        else:
            # The critic loss trains the critics and the shared encoder together.
            def joint_loss_fn(params):
                critic_params, encoder_params = params
                return critic_loss_fn(critic_params, self.encoder.apply_fn({"params": encoder_params}, raw_observations))

            grads, critic_info = jax.grad(joint_loss_fn, has_aux=True)((self.critic.params, self.encoder.params))
            critic = self.critic.apply_gradients(grads=shared(grads[0]))
            encoder = self.encoder.apply_gradients(grads=grads[1]).soft_update_target(c.tau)
        critic = critic.soft_update_target(c.tau)
        agent = self.replace(value=value, critic=critic, rng=rng, encoder=encoder)
        return agent, {**value_info, **critic_info, "target_q": target.mean()}

    def update_actor(self, batch: Batch) -> tuple["IQLAgent", dict]:
        if self.encoder is None:
            rng, key = jax.random.split(self.rng)
            target_obs = None
        else:
            rng, key, k_aug = jax.random.split(self.rng, 3)
            batch, target_obs, _ = self._encoded(batch, k_aug)
        c = self.config
        v = self.value.apply_fn({"params": self.value.params}, batch["observations"])
        advantages = self.target_q(batch, key, target_obs) - v
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


register_optional_networks(IQLAgent)
