"""An independent float64 numpy re-implementation of the networks and distributions, used as
the reference in the agent tests. It reads flax parameter dicts but calls no jax/flax code.

Conventions mirrored from `learner.networks` (flax defaults): Dense is x @ kernel + bias;
LayerNorm normalizes over the last axis with the biased variance and epsilon 1e-6, then
applies scale and bias; the MLP is Dense -> LayerNorm -> ReLU per hidden layer.
"""

from __future__ import annotations

import numpy as np

LN_EPS = 1e-6


def to_np(tree):
    """Nested dict of arrays -> nested dict of float64 numpy arrays."""
    if isinstance(tree, dict):
        return {k: to_np(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float64)


def index_tree(tree, i):
    """The i-th slice along the leading axis of every leaf."""
    if isinstance(tree, dict):
        return {k: index_tree(v, i) for k, v in tree.items()}
    return tree[i]


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def layer_norm(x, p, eps=LN_EPS):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def mlp(x, p, layer_norm_on=True):
    i = 0
    while f"Dense_{i}" in p:
        x = dense(x, p[f"Dense_{i}"])
        if layer_norm_on:
            x = layer_norm(x, p[f"LayerNorm_{i}"])
        x = np.maximum(x, 0.0)
        i += 1
    return x


def critic(p, obs, act, layer_norm_on=True):
    """One critic's Q(s, a); p holds 'MLP_0' and the output 'Dense_0'."""
    x = np.concatenate([obs, act], axis=-1)
    h = mlp(x, p["MLP_0"], layer_norm_on)
    return dense(h, p["Dense_0"])[..., 0]


def critic_ensemble(params, obs, act, indices=None, layer_norm_on=True):
    """(E', ...) Q values of the ensemble in `params` ({'critics': ...}), optionally only the
    critics at `indices` (in that order)."""
    p = params["critics"]
    size = p["Dense_0"]["bias"].shape[0]
    indices = range(size) if indices is None else indices
    return np.stack([critic(index_tree(p, int(i)), obs, act, layer_norm_on) for i in indices])


def policy(p, obs, log_std_min, log_std_max, layer_norm_on=True):
    """means, clipped log-stds of the tanh-Gaussian policy ('exp' parameterization)."""
    h = mlp(obs, p["MLP_0"], layer_norm_on)
    means = dense(h, p["mean"])
    log_stds = np.clip(dense(h, p["log_std"]), log_std_min, log_std_max)
    return means, log_stds


def value_function(p, obs, layer_norm_on=True):
    return dense(mlp(obs, p["MLP_0"], layer_norm_on), p["Dense_0"])[..., 0]


def tanh_gaussian_from_pre_tanh(u, means, log_stds):
    """log pi(tanh(u)) by change of variables: log N(u) - sum log(1 - tanh(u)^2)."""
    std = np.exp(log_stds)
    log_normal = -0.5 * ((u - means) / std) ** 2 - log_stds - 0.5 * np.log(2.0 * np.pi)
    log_det = np.log(1.0 - np.tanh(u) ** 2)
    return (log_normal - log_det).sum(-1)


def sample_tanh_gaussian(noise, means, log_stds):
    """Reparameterized sample from given standard-normal noise: (actions, log-probs)."""
    u = means + np.exp(log_stds) * noise
    return np.tanh(u), tanh_gaussian_from_pre_tanh(u, means, log_stds)


def tanh_gaussian_log_prob(actions, means, log_stds):
    return tanh_gaussian_from_pre_tanh(np.arctanh(actions), means, log_stds)


def logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)
