"""SAC with a LayerNorm critic ensemble and high UTD: WSRL's online fine-tuning algorithm.

One call of `update` on a batch shaped (M, B, ...) does Algorithm 1's inner step in a single
compiled function: M critic updates, each on its own batch of B transitions with a soft target
update after it, then one actor and temperature update on the union of the M batches
(actor delay M).

Camera observations (a spec with images): the critic ensemble reads the features of one
`ObservationEncoder` shared by all its critics (`encoder`), trained by the critic loss, with a
Polyak-averaged target copy for the target critics; the policy and the TD target's next
actions read its features through a stop_gradient, and every update shifts the images at
random (DrQ's recipe). The critic ensemble itself runs on the features unchanged. Without
images there is no encoder and every computation is the one of a flat-vector agent.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from actor.networks import make_policy
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
    reduced_q_with_action_grad,
    register_optional_networks,
    repeat_states,
    sample_policy,
    share_critic_output_grads,
    subsample_critics,
    tie_critic_outputs,
)
from learner.config import AgentConfig
from learner.networks import CriticEnsemble, Temperature, augment_observations


class SACAgent(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState  # target_params holds the target critic ensemble
    temperature: TrainState
    rng: jax.Array
    config: AgentConfig = flax.struct.field(pytree_node=False)
    action_dim: int = flax.struct.field(pytree_node=False)
    target_entropy: float = flax.struct.field(pytree_node=False)
    # The ensemble module sized to the sub-sampled target critics.
    target_critic_module: nn.Module = flax.struct.field(pytree_node=False)
    # The critic ensemble's observation encoder (camera observations only; None for a flat
    # vector); target_params holds the target critics' encoder.
    encoder: Optional[TrainState] = None

    algorithm: ClassVar[str] = "sac"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_optional_networks(cls)

    # ---- construction --------------------------------------------------------------

    @classmethod
    def network_states(cls, config: AgentConfig, observations: ObservationSpec | int, action_dim: int, rng: jax.Array) -> dict:
        """Freshly initialized train states of every network this agent owns; `observations`
        is the ObservationSpec (or the dimension of a flat vector)."""
        k_actor, k_critic, k_temp = jax.random.split(rng, 3)
        encoder, feature_dim = make_encoder_state(config, observation_spec_of(observations), jax.random.fold_in(rng, 0xE4C))
        obs = jnp.zeros((1, feature_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)
        critic = CriticEnsemble(
            config.critic_ensemble_size, tuple(config.critic_hidden_dims), config.critic_layer_norm, config.critic_matmul_dtype,
            config.kernel_init, config.kernel_scale_final,
        )
        critic_state = make_state(critic, k_critic, (obs, act), config.critic_lr, with_target=True)
        if config.critic_shared_output:
            tied = tie_critic_outputs(critic_state.params)
            critic_state = critic_state.replace(params=tied, target_params=tied)
        states = {
            "actor": make_state(make_policy(config, action_dim), k_actor, (obs,), config.actor_lr),
            "critic": critic_state,
            "temperature": make_state(Temperature(config.initial_temperature), k_temp, (), config.temperature_lr),
        }
        if encoder is not None:
            states["encoder"] = encoder
        return states

    @classmethod
    def static_fields(cls, config: AgentConfig, action_dim: int) -> dict:
        return {
            "config": config,
            "action_dim": action_dim,
            "target_entropy": float(-action_dim if config.target_entropy is None else config.target_entropy),
            "target_critic_module": CriticEnsemble(
                config.critic_subsample_size, tuple(config.critic_hidden_dims), config.critic_layer_norm, config.critic_matmul_dtype
            ),
        }

    @classmethod
    def create(cls, config: AgentConfig, observations: ObservationSpec | int, action_dim: int, seed: int = 0) -> "SACAgent":
        """A freshly initialized agent for observations described by `observations`: an
        `envs.observations.ObservationSpec` (with cameras: an encoder is built) or, for a flat
        vector, its dimension (an int, as before named parts existed)."""
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        states = cls.network_states(config, observations, action_dim, init_rng)
        return cls(rng=rng, **states, **cls.static_fields(config, action_dim))

    # ---- acting --------------------------------------------------------------------

    @property
    def temperature_value(self) -> jnp.ndarray:
        return self.temperature.apply_fn({"params": self.temperature.params})

    def features(self, observations: Any, target: bool = False) -> jnp.ndarray:
        """What the critics and the policy read: the observations themselves (flat vector), or
        the encoder's features of the (dict) observations, with the target encoder if `target`.
        No augmentation."""
        if self.encoder is None:
            return observations
        params = self.encoder.target_params if target else self.encoder.params
        return self.encoder.apply_fn({"params": params}, observations)

    def policy_params(self) -> Any:
        """The parameters an actor's policy applies (`actor.networks.make_policy(config,
        action_dim, observation_spec)`, `actor.policy.Policy`): the policy network's for a
        flat vector, exactly `actor.params`; with cameras {"encoder": the critic encoder's
        parameters, "policy": actor.params}. What the learner publishes and evaluates."""
        if self.encoder is None:
            return self.actor.params
        return {"encoder": self.encoder.params, "policy": self.actor.params}

    def q_values(self, observations: Any, actions: jnp.ndarray) -> jnp.ndarray:
        """Q of every critic, shape (E, ...)."""
        return self.critic.apply_fn({"params": self.critic.params}, self.features(observations), actions)

    # ---- the critic ----------------------------------------------------------------

    def target_backup(self) -> str:
        """Which max target backup the TD target uses (`agent.max_target_backup` for SAC;
        CQL/CalQL read `agent.cql_max_target_backup`)."""
        return self.config.max_target_backup

    def critic_target(self, batch: Batch, action_rng: jax.Array, subsample_rng: jax.Array,
                      next_target_observations: Optional[jnp.ndarray] = None) -> tuple[jnp.ndarray, dict]:
        """The TD target y (B,) for `batch`, from the target critics and the current policy.
        The policy reads batch["next_observations"], the target critics
        `next_target_observations` when given (the target encoder's features), else the same."""
        c = self.config
        backup = self.target_backup()
        num_next = c.max_target_backup_num_actions if backup == "sampled_actions" else 1
        next_obs = repeat_states(batch["next_observations"], num_next)
        target_obs = next_obs if next_target_observations is None else repeat_states(next_target_observations, num_next)
        if c.target_action_noise_variance > 0:
            action_rng, noise_rng = jax.random.split(action_rng)
        next_actions, next_log_probs = sample_policy(self.actor, self.actor.params, next_obs, action_rng)
        if c.target_action_noise_variance > 0:  # SO2 (the log-probs stay those of the policy's actions)
            noise = jax.random.normal(noise_rng, next_actions.shape)
            next_actions = losses.perturb_target_actions(
                next_actions, noise, c.target_action_noise_variance, c.target_action_noise_clip
            )
        if backup == "ensemble_max":
            next_qs = self.critic.apply_fn({"params": self.critic.target_params}, target_obs, next_actions)
            reduction = "max"
        else:
            params = subsample_critics(subsample_rng, self.critic.target_params, c.critic_ensemble_size, c.critic_subsample_size)
            next_qs = self.target_critic_module.apply({"params": params}, target_obs, next_actions)
            reduction = "min"
        next_q, next_log_prob = losses.reduce_target_q(next_qs, next_log_probs, reduction)
        target = losses.td_target(
            batch["rewards"],
            batch_masks(batch),
            next_q,
            c.discount,
            next_log_prob if c.backup_entropy else None,
            self.temperature_value,
        )
        return jax.lax.stop_gradient(target), {"target_q": target.mean(), "next_log_prob": next_log_prob.mean()}

    def critic_regularizer(self, params: Any, batch: Batch, qs: jnp.ndarray, rng: jax.Array) -> tuple[jnp.ndarray, dict]:
        """Extra critic loss term; none for SAC (CQL/CalQL override this)."""
        return jnp.zeros(()), {}

    def critic_loss(self, params: Any, batch: Batch, target: jnp.ndarray, rng: jax.Array) -> tuple[jnp.ndarray, dict]:
        """TD loss (+ the regularizer) of the critics `params` on `batch`, whose observations
        are what the critics read (the flat vectors, or the encoder's features)."""
        qs = self.critic.apply_fn({"params": params}, batch["observations"], batch["actions"])
        td_loss = losses.critic_loss(qs, target)
        reg_loss, reg_info = self.critic_regularizer(params, batch, qs, rng)
        return td_loss + reg_loss, {
            "critic_loss": td_loss,
            "q_mean": qs.mean(),
            "q_min": qs.min(),
            "q_max": qs.max(),
            **reg_info,
        }

    def update_critic(self, batch: Batch) -> tuple["SACAgent", dict]:
        if self.encoder is not None:
            return self._update_critic_and_encoder(batch)
        rng, k_actions, k_subsample, k_reg = jax.random.split(self.rng, 4)
        target, info = self.critic_target(batch, k_actions, k_subsample)
        grads, loss_info = jax.grad(lambda params: self.critic_loss(params, batch, target, k_reg), has_aux=True)(self.critic.params)
        critic = self.critic.apply_gradients(grads=self._critic_grads(grads)).soft_update_target(self.config.tau)
        return self.replace(critic=critic, rng=rng), {**info, **loss_info}

    def _critic_grads(self, grads: Any) -> Any:
        """The critic ensemble's gradients as its optimizer takes them: with
        `critic_shared_output`, the output layer's summed over the critics (one shared layer)."""
        return share_critic_output_grads(grads) if self.config.critic_shared_output else grads

    def _update_critic_and_encoder(self, batch: Batch) -> tuple["SACAgent", dict]:
        """One critic step on camera observations (DrQ): observations and next observations
        randomly shifted; the critic loss trains the critics and the shared encoder together;
        the TD target's next actions come from the policy on the encoder's features (no
        gradient), its Q-values from the target critics on the target encoder's features.
        Both targets then move by `tau`."""
        c = self.config
        rng, k_actions, k_subsample, k_reg, k_aug = jax.random.split(self.rng, 5)
        k_obs, k_next = jax.random.split(k_aug)
        observations = augment_observations(k_obs, batch["observations"], c.encoder_augment_pad)
        next_observations = augment_observations(k_next, batch["next_observations"], c.encoder_augment_pad)
        encode = self.encoder.apply_fn
        next_features = jax.lax.stop_gradient(encode({"params": self.encoder.params}, next_observations))
        next_target_features = encode({"params": self.encoder.target_params}, next_observations)
        features_batch = {**batch, "next_observations": next_features}
        target, info = self.critic_target(features_batch, k_actions, k_subsample, next_target_features)

        def loss_fn(params):
            critic_params, encoder_params = params
            features = encode({"params": encoder_params}, observations)
            return self.critic_loss(critic_params, {**features_batch, "observations": features}, target, k_reg)

        grads, loss_info = jax.grad(loss_fn, has_aux=True)((self.critic.params, self.encoder.params))
        critic = self.critic.apply_gradients(grads=self._critic_grads(grads[0])).soft_update_target(c.tau)
        encoder = self.encoder.apply_gradients(grads=grads[1]).soft_update_target(c.tau)
        return self.replace(critic=critic, encoder=encoder, rng=rng), {**info, **loss_info}

    # ---- actor and temperature -----------------------------------------------------

    def update_actor(self, batch: Batch) -> tuple["SACAgent", dict]:
        if self.encoder is None:
            rng, key = jax.random.split(self.rng)
            obs = batch["observations"]
        else:
            # DrQ: the policy reads the critic encoder's features of shifted images, and its
            # loss passes no gradient into the encoder.
            rng, key, k_aug = jax.random.split(self.rng, 3)
            shifted = augment_observations(k_aug, batch["observations"], self.config.encoder_augment_pad)
            obs = jax.lax.stop_gradient(self.features(shifted))
        temperature = self.temperature_value

        reduction = self.config.actor_q_reduction

        def actor_loss_fn(params):
            actions, log_probs = sample_policy(self.actor, params, obs, key)
            # min (or mean) over the critics of Q(s, a), with dQ/da computed chunk by chunk
            # (see reduced_q_with_action_grad); reducing a single row again is the identity.
            q = reduced_q_with_action_grad(self.critic, obs, actions, reduction)
            loss = losses.actor_loss(log_probs, q[None], temperature, reduction)
            return loss, {"actor_loss": loss, "entropy": -log_probs.mean()}

        actor, actor_info = apply_gradients(self.actor, actor_loss_fn)

        # Deliberate difference (docs/fidelity.md): the temperature follows the entropy of the
        # actions just sampled at s for the actor loss, as in SAC and RLPD; the reference
        # implementation samples fresh actions at s' for it.
        def temperature_loss_fn(params):
            value = self.temperature.apply_fn({"params": params})
            loss = losses.temperature_loss(value, actor_info["entropy"], self.target_entropy)
            return loss, {"temperature_loss": loss}

        temperature_state, temp_info = apply_gradients(self.temperature, temperature_loss_fn)
        agent = self.replace(actor=actor, temperature=temperature_state, rng=rng)
        return agent, {**actor_info, **temp_info, "temperature": temperature}

    # ---- the fused UTD step --------------------------------------------------------

    def _critic_updates(self, batch: Batch) -> tuple["SACAgent", dict]:
        """The M critic updates, one per leading index of `batch`; metrics averaged over them."""
        # The critic updates run as a lax.scan over the leading axis rather than an unrolled
        # loop: the same updates in the same order, but XLA keeps one critic update's
        # buffers instead of M, which shrinks the scratch memory it allocates per call
        # (locomotion: 34 -> 23 MB, adroit: 122 -> 71 MB). On a small CPU that is what
        # matters: glibc mmaps (and the call then page-faults) scratch buffers over 32 MB
        # afresh on every call. Locomotion on 2 cores: 74 -> 66 ms per call (best of 3 rounds).
        # With a camera encoder the loop is unrolled instead (no XLA loop at all, even for
        # M = 1): XLA:CPU computes convolution gradients inside a loop body ~10x slower than
        # outside one (SAC, UTD 4, batch 64, DrQ encoder: 24 s per call in a scan, 2.4 s
        # unrolled; a CalQL step: 1.2 s in a one-step loop, 0.14 s without).
        if self.encoder is not None:
            agent, infos = self, []
            for i in range(jax.tree_util.tree_leaves(batch)[0].shape[0]):
                agent, info = agent.update_critic(jax.tree_util.tree_map(lambda x: x[i], batch))  # noqa: B023
                infos.append(info)
            return agent, mean_metrics(infos)
        agent, critic_infos = jax.lax.scan(lambda agent, minibatch: agent.update_critic(minibatch), self, batch)
        return agent, jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), critic_infos)

    @jax.jit
    def update(self, batch: Batch) -> tuple["SACAgent", dict]:
        """M critic updates (one per leading index of `batch`) then one actor update on all
        M*B transitions, compiled as one function.

        Only the networks being updated take an optimizer step. Deliberate difference
        (docs/fidelity.md): the reference implementation steps every optimizer on every
        update, with zero gradients for the networks it does not update, so during its M
        critic-only steps Adam's momentum keeps moving the actor and the temperature.
        """
        agent, critic_info = self._critic_updates(batch)
        agent, actor_info = agent.update_actor(flatten_updates(batch))
        return agent, {**critic_info, **actor_info}

    @jax.jit
    def update_critics(self, batch: Batch) -> tuple["SACAgent", dict]:
        """`update` without the actor and temperature update: the policy stays frozen
        (`finetune.freeze_policy_steps`, Appendix F)."""
        return self._critic_updates(batch)


register_optional_networks(SACAgent)
