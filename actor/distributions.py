"""Tanh-squashed diagonal Gaussian: sampling and log-densities as pure functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_LOG_2 = jnp.log(2.0)
_HALF_LOG_2PI = 0.5 * jnp.log(2.0 * jnp.pi)
# Keeps atanh finite for actions on the bounds (e.g. dataset actions clipped to +-1).
ACTION_EPS = 1e-6


def log_abs_det_tanh(pre_tanh: jnp.ndarray) -> jnp.ndarray:
    """log |d tanh(u)/du| = log(1 - tanh(u)^2), in the numerically stable form."""
    return 2.0 * (_LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def gaussian_log_prob(x: jnp.ndarray, means: jnp.ndarray, log_stds: jnp.ndarray) -> jnp.ndarray:
    """Per-dimension log N(x; mean, exp(log_std)^2)."""
    z = (x - means) * jnp.exp(-log_stds)
    return -0.5 * z**2 - log_stds - _HALF_LOG_2PI


def sample_tanh_gaussian(
    rng: jax.Array, means: jnp.ndarray, log_stds: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Reparameterized sample a = tanh(mean + std * eps) and its log-density (summed over dims)."""
    pre_tanh = means + jnp.exp(log_stds) * jax.random.normal(rng, means.shape, means.dtype)
    log_probs = gaussian_log_prob(pre_tanh, means, log_stds) - log_abs_det_tanh(pre_tanh)
    return jnp.tanh(pre_tanh), log_probs.sum(-1)


def tanh_gaussian_log_prob(
    actions: jnp.ndarray, means: jnp.ndarray, log_stds: jnp.ndarray
) -> jnp.ndarray:
    """log pi(a|s) of given actions in [-1, 1] (summed over dims)."""
    pre_tanh = jnp.arctanh(jnp.clip(actions, -1.0 + ACTION_EPS, 1.0 - ACTION_EPS))
    return (gaussian_log_prob(pre_tanh, means, log_stds) - log_abs_det_tanh(pre_tanh)).sum(-1)


def deterministic_action(means: jnp.ndarray) -> jnp.ndarray:
    """The deterministic action used for evaluation: tanh(mean)."""
    return jnp.tanh(means)
