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


# ---- camera observations: the DrQ-style encoder ----------------------------------------------
#
# A spec with images (envs/observations.py) gives dict observations {part name: (..., *shape)}:
# uint8 cameras (H, W, C) and an optional float32 "state" vector. `ObservationEncoder` maps
# them to one flat float32 feature vector: per camera a conv trunk trained from scratch (DrQ,
# Kostrikov et al. 2020; Yarats et al. 2021): 3x3 convolutions with ReLU, the first strided,
# then Dense -> LayerNorm -> tanh to `feature_dim` features; the cameras' features and the
# state are concatenated. On the learner the critic ensemble owns it (all critics share it,
# the critic loss trains it) and the policy reads its features through a stop_gradient; on the
# actor `EncodedPolicy` runs it in front of the policy.

ENCODER_DTYPES = ("float32", "bfloat16")


class ConvEncoder(nn.Module):
    """One camera's trunk: uint8 images (..., H, W, C) -> features (..., feature_dim) in [-1, 1].

    `dtype` is the element type the convolutions and the Dense layer compute in ("bfloat16":
    bf16 inputs and outputs, float32 parameters, as `CriticEnsemble.matmul_dtype`); LayerNorm
    and the output are float32.
    """

    channels: Sequence[int] = (32, 32, 32, 32)
    strides: Sequence[int] = (2, 1, 1, 1)
    kernel_size: int = 3
    feature_dim: int = 50
    dtype: str = "float32"

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        if self.dtype not in ENCODER_DTYPES:
            raise ValueError(f"ConvEncoder.dtype: got {self.dtype!r}, expected one of {ENCODER_DTYPES}")
        lead, frame = images.shape[:-3], images.shape[-3:]
        # Cast on the device: frames travel and are stored as uint8 (a quarter of float32).
        x = images.reshape((-1,) + frame).astype(self.dtype) / 255.0
        for channels, stride in zip(self.channels, self.strides):
            x = nn.Conv(channels, (self.kernel_size,) * 2, strides=(stride,) * 2, padding="VALID",
                        kernel_init=default_init(), dtype=self.dtype)(x)
            x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.feature_dim, kernel_init=default_init(), dtype=self.dtype)(x)
        x = jnp.tanh(nn.LayerNorm()(x.astype(jnp.float32)))
        return x.reshape(lead + (self.feature_dim,))


class ObservationEncoder(nn.Module):
    """Dict observations -> flat float32 features: one `ConvEncoder` per camera (parameters
    "conv_<camera>"), their features then the "state" vector, concatenated in the spec's (name)
    order. Leading batch dims are kept."""

    camera_names: Sequence[str]
    has_state: bool
    channels: Sequence[int] = (32, 32, 32, 32)
    strides: Sequence[int] = (2, 1, 1, 1)
    kernel_size: int = 3
    feature_dim: int = 50
    dtype: str = "float32"

    @nn.compact
    def __call__(self, observations) -> jnp.ndarray:
        features = [
            ConvEncoder(self.channels, self.strides, self.kernel_size, self.feature_dim, self.dtype, name=f"conv_{name}")(observations[name])
            for name in self.camera_names
        ]
        if self.has_state:
            features.append(jnp.asarray(observations["state"], jnp.float32))
        return jnp.concatenate(features, axis=-1)


def _has_images(observation_spec) -> bool:
    """True for an ObservationSpec with cameras; False for None, an int dimension or a flat spec."""
    return observation_spec is not None and not isinstance(observation_spec, int) and not observation_spec.is_flat


def make_encoder(agent_config, observation_spec, dtype: str = "float32") -> Optional[ObservationEncoder]:
    """The observation encoder an `AgentConfig` describes for `observation_spec` (an
    envs.observations.ObservationSpec), or None when there is nothing to encode (a flat spec,
    an int dimension or None: the networks take the vector as it is). `dtype`: the element
    type of its convolutions (the learner resolves "auto" to one of `ENCODER_DTYPES`)."""
    if not _has_images(observation_spec):
        return None
    return ObservationEncoder(
        camera_names=tuple(p.name for p in observation_spec.images),
        has_state=observation_spec.state_dim > 0,
        channels=tuple(agent_config.encoder_channels),
        strides=tuple(agent_config.encoder_strides),
        kernel_size=agent_config.encoder_kernel_size,
        feature_dim=agent_config.encoder_feature_dim,
        dtype=dtype,
    )


class EncodedPolicy(nn.Module):
    """`policy(encoder(observations))`: what the actor runs on camera observations.

    Parameters {"encoder": the learner's critic encoder, "policy": the policy network}, the
    tree the learner publishes (`learner.agents.policy_params`)."""

    encoder: ObservationEncoder
    policy: TanhGaussianPolicy

    def __call__(self, observations) -> tuple[jnp.ndarray, jnp.ndarray]:
        return self.policy(self.encoder(observations))


def make_policy(agent_config, action_dim: int, observation_spec=None):
    """The policy module described by an `AgentConfig` (used by learner and actor alike).

    Without `observation_spec`, or with a flat one (or an int dimension), the
    `TanhGaussianPolicy` on the observation vector, exactly as before camera observations
    existed. With an `envs.observations.ObservationSpec` holding images, an `EncodedPolicy`:
    the critic's observation encoder (`make_encoder`) followed by that policy, to apply to the
    parameters the learner publishes ({"encoder": ..., "policy": ...}). Its convolutions run in
    float32 here: the actor's batch-1 inference gains nothing from bf16.
    """
    policy = TanhGaussianPolicy(
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
    encoder = make_encoder(agent_config, observation_spec)
    return policy if encoder is None else EncodedPolicy(encoder, policy)
