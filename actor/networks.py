"""The policy network the actor runs and the learner trains: the MLP trunk (shared with the
learner's critics), the tanh-squashed Gaussian policy and `make_policy`, which builds it from
an agent config. Needs nothing but jax and flax, so a robot machine can load it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp


KERNEL_INITS = ("orthogonal", "xavier_uniform")


def default_init(scale: Optional[float] = None, kind: str = "orthogonal") -> nn.initializers.Initializer:
    """The kernel initializer of every Dense layer.

    "orthogonal" (the reference implementation's, and the default): orthogonal matrices of
    gain `scale`, sqrt(2) when None (ReLU's gain). "xavier_uniform": Xavier/Glorot uniform
    scaled by `scale` (1 when None). Biases start at zero either way.
    """
    if kind == "orthogonal":
        return nn.initializers.orthogonal(math.sqrt(2.0) if scale is None else scale)
    if kind == "xavier_uniform":
        return nn.initializers.variance_scaling(1.0 if scale is None else scale, "fan_avg", "uniform")
    raise ValueError(f"kernel_init: got {kind!r}, expected one of {KERNEL_INITS}")


class MLP(nn.Module):
    """Dense layers with ReLU; LayerNorm (if asked) after every hidden layer, before ReLU.

    The last hidden layer's kernel is initialized with gain `kernel_scale_final` when given
    (the reference implementation's `kernel_scale_final`: 1e-2 on antmaze, adroit and
    locomotion, unset on kitchen), every other kernel with the default gain of `kernel_init`.
    """

    hidden_dims: Sequence[int]
    layer_norm: bool = False
    kernel_init: str = "orthogonal"
    kernel_scale_final: Optional[float] = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, width in enumerate(self.hidden_dims):
            last = i + 1 == len(self.hidden_dims)
            scale = self.kernel_scale_final if last else None
            x = nn.Dense(width, kernel_init=default_init(scale, self.kernel_init))(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return x


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
    kernel_scale_final: Optional[float] = 1e-2  # the trunk's last hidden layer (see `MLP`)
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    kernel_init: str = "orthogonal"

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        h = MLP(self.hidden_dims, self.layer_norm, self.kernel_init, self.kernel_scale_final)(observations)
        # The heads get the default gain, as in the reference implementation (its small
        # `kernel_scale_final` is on the trunk's last hidden layer, not on the heads).
        head_init = default_init(None, self.kernel_init)
        means = nn.Dense(self.action_dim, kernel_init=head_init, name="mean")(h)
        if self.std_parameterization == "exp":
            log_stds = nn.Dense(self.action_dim, kernel_init=head_init, name="log_std")(h)
        elif self.std_parameterization == "uniform":
            log_stds = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
            log_stds = jnp.broadcast_to(log_stds, means.shape)
        else:
            raise ValueError(f"std_parameterization: got {self.std_parameterization!r}, expected 'exp' or 'uniform'")
        return means, jnp.clip(log_stds, self.log_std_min, self.log_std_max)


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
        # Initialization only: an actor process applies received parameters and never reads it.
        kernel_init=getattr(agent_config, "kernel_init", "orthogonal"),
    )
