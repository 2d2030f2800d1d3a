"""Pieces every agent shares: train states, optimizers, soft target updates, policy sampling."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from learner import distributions

Batch = dict[str, jnp.ndarray]


class TrainState(train_state.TrainState):
    """flax TrainState plus an optional slowly-moving copy of the parameters."""

    target_params: Any = None

    def soft_update_target(self, tau: float) -> "TrainState":
        target = optax.incremental_update(self.params, self.target_params, tau)
        return self.replace(target_params=target)


def make_state(module: flax.linen.Module, rng: jax.Array, inputs: tuple, learning_rate: float, with_target: bool = False) -> TrainState:
    params = module.init(rng, *inputs)["params"]
    state = TrainState.create(
        apply_fn=module.apply,
        params=params,
        tx=optax.adam(learning_rate),
        target_params=params if with_target else None,
    )
    # A concrete int32 step (not a weak-typed Python int) so `update` compiles only once.
    return state.replace(step=jnp.zeros((), jnp.int32))


def apply_gradients(state: TrainState, loss_fn, *args) -> tuple[TrainState, Any]:
    """One gradient step of `loss_fn(params, *args) -> (loss, aux)`; returns (state, aux)."""
    grads, aux = jax.grad(loss_fn, has_aux=True)(state.params, *args)
    return state.apply_gradients(grads=grads), aux


def sample_policy(actor: TrainState, params: Any, observations: jnp.ndarray, rng: jax.Array):
    """Actions and log-probs from pi(.|s) with the given actor parameters."""
    means, log_stds = actor.apply_fn({"params": params}, observations)
    return distributions.sample_tanh_gaussian(rng, means, log_stds)


def repeat_states(observations: jnp.ndarray, n: int) -> jnp.ndarray:
    """(B, D) -> (B, n, D): the same state for each of n sampled actions."""
    return jnp.broadcast_to(observations[:, None], (observations.shape[0], n, observations.shape[-1]))


def subsample_critics(rng: jax.Array, params: Any, ensemble_size: int, subsample_size: int) -> Any:
    """The parameters of `subsample_size` distinct critics drawn uniformly from the ensemble."""
    if subsample_size == ensemble_size:
        return params
    indices = jax.random.choice(rng, ensemble_size, (subsample_size,), replace=False)
    return jax.tree_util.tree_map(lambda p: p[indices], params)


def batch_masks(batch: Batch) -> jnp.ndarray:
    """1 - terminal: only true terminals stop bootstrapping (time limits do not)."""
    return 1.0 - batch["terminals"]


def flatten_updates(batch: Batch) -> Batch:
    """(M, B, ...) -> (M*B, ...): the union of the M critic batches, for the delayed actor."""
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)


def mean_metrics(infos: list[dict]) -> dict:
    return {k: jnp.mean(jnp.stack([i[k] for i in infos])) for k in infos[0]}
