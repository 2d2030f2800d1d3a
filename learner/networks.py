"""Flax networks: MLP trunk, critic ensemble, tanh-Gaussian policy, temperature, value.

The actor process builds its policy from this same file (`actor/` imports only this module
and `learner.distributions`, which need nothing but jax and flax).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp


def default_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """Xavier-uniform scaled by `scale` (scale 1 is plain Xavier/Glorot)."""
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense layers with ReLU; LayerNorm (if asked) after every hidden layer, before ReLU."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=default_init())(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return x


class Critic(nn.Module):
    """Q(s, a) -> scalar."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        x = jnp.concatenate([observations, actions], axis=-1)
        x = MLP(self.hidden_dims, self.layer_norm)(x)
        return nn.Dense(1, kernel_init=default_init())(x)[..., 0]


class CriticEnsemble(nn.Module):
    """`num_critics` independent critics evaluated in one vectorized call.

    Parameters carry a leading axis of size `num_critics`; the output is (num_critics, ...).
    A module built with a smaller `num_critics` applies to a slice of the parameters, which is
    how the TD target evaluates only the sub-sampled target critics.
    """

    num_critics: int
    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        return ensemble(self.hidden_dims, self.layer_norm, name="critics")(observations, actions)


class TanhGaussianPolicy(nn.Module):
    """Outputs the mean and log-std of a Gaussian that is squashed by tanh into [-1, 1].

    std_parameterization "exp": a state-dependent head gives log-std, clipped to
    [log_std_min, log_std_max]. "uniform": one learned log-std per action dimension,
    independent of the state.
    """

    action_dim: int
    hidden_dims: Sequence[int]
    layer_norm: bool = True
    std_parameterization: str = "exp"
    kernel_scale_final: Optional[float] = 1e-2
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        h = MLP(self.hidden_dims, self.layer_norm)(observations)
        final_init = default_init(self.kernel_scale_final or 1.0)
        means = nn.Dense(self.action_dim, kernel_init=final_init, name="mean")(h)
        if self.std_parameterization == "exp":
            log_stds = nn.Dense(self.action_dim, kernel_init=final_init, name="log_std")(h)
        elif self.std_parameterization == "uniform":
            log_stds = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
            log_stds = jnp.broadcast_to(log_stds, means.shape)
        else:
            raise ValueError(f"std_parameterization: got {self.std_parameterization!r}, expected 'exp' or 'uniform'")
        return means, jnp.clip(log_stds, self.log_std_min, self.log_std_max)


class Temperature(nn.Module):
    """SAC's entropy temperature alpha, stored as log(alpha) so it stays positive."""

    initial_value: float = 1.0

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        log_value = self.param("log_value", lambda _: jnp.full((), jnp.log(self.initial_value), jnp.float32))
        return jnp.exp(log_value)


class ValueFunction(nn.Module):
    """V(s) -> scalar (IQL)."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        h = MLP(self.hidden_dims, self.layer_norm)(observations)
        return nn.Dense(1, kernel_init=default_init())(h)[..., 0]


def make_policy(agent_config, action_dim: int) -> TanhGaussianPolicy:
    """The policy module described by an `AgentConfig` (used by learner and actor alike)."""
    return TanhGaussianPolicy(
        action_dim=action_dim,
        hidden_dims=tuple(agent_config.actor_hidden_dims),
        layer_norm=agent_config.actor_layer_norm,
        std_parameterization=agent_config.std_parameterization,
        kernel_scale_final=agent_config.kernel_scale_final,
        log_std_min=agent_config.log_std_min,
        log_std_max=agent_config.log_std_max,
    )
