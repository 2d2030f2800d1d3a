"""Pieces every agent shares: train states, optimizers, soft target updates, policy sampling."""

from __future__ import annotations


import ctypes
import ctypes.util
import dataclasses
import functools
import sys
from typing import Any, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from flax.training import train_state

from actor import distributions
from actor.networks import make_encoder
from envs.observations import ObservationSpec
from learner import losses
from learner.networks import CriticEnsemble, encoder_dtype, load_pretrained_encoder, map_in_chunks

Batch = dict[str, jnp.ndarray]


class TrainState(train_state.TrainState):
    """flax TrainState plus an optional slowly-moving copy of the parameters."""

    target_params: Any = None

    def soft_update_target(self, tau: float) -> "TrainState":
        target = optax.incremental_update(self.params, self.target_params, tau)
        return self.replace(target_params=target)


@functools.lru_cache(maxsize=None)
def adam(learning_rate: float) -> optax.GradientTransformation:
    """optax.adam, one object per learning rate: agents built alike then have equal static
    fields, so a compiled update (jit) is reused across them instead of compiled again."""
    return optax.adam(learning_rate)


def apply_of(module: flax.linen.Module):
    """`module.apply` of the first module equal to `module` (same class and fields): one
    function object per network description, for the same reason as `adam` (a module with
    an unhashable field keeps its own)."""
    try:
        return _apply_of(module)
    except TypeError:
        return module.apply


@functools.lru_cache(maxsize=None)
def _apply_of(module: flax.linen.Module):
    return module.apply


def make_state(module: flax.linen.Module, rng: jax.Array, inputs: tuple, learning_rate: float, with_target: bool = False) -> TrainState:
    params = module.init(rng, *inputs)["params"]
    state = TrainState.create(
        apply_fn=apply_of(module),
        params=params,
        tx=adam(learning_rate),
        target_params=params if with_target else None,
    )
    # A concrete int32 step (not a weak-typed Python int) so `update` compiles only once.
    return state.replace(step=jnp.zeros((), jnp.int32))


# The critic ensemble's output layer in its parameters (`CriticEnsemble`: critics/Dense_0).
CRITIC_OUTPUT = ("critics", "Dense_0")


def _map_critic_output(params: Any, fn) -> Any:
    """`params` with `fn` applied to every leaf of the critics' output layer."""
    outer, name = CRITIC_OUTPUT
    layer = jax.tree_util.tree_map(fn, params[outer][name])
    return {**params, outer: {**params[outer], name: layer}}


def tie_critic_outputs(params: Any) -> Any:
    """The critics' output layers all made the first critic's (a shared layer's initial value)."""
    return _map_critic_output(params, lambda x: jnp.broadcast_to(x[:1], x.shape))


def share_critic_output_grads(grads: Any) -> Any:
    """Critic gradients with the output layer's replaced, in every critic, by their sum over
    the critics: the gradient of one layer shared by all of them. Copies that start equal and
    take equal Adam steps stay equal, so E tied copies are that shared layer."""
    return _map_critic_output(grads, lambda g: jnp.broadcast_to(g.sum(axis=0, keepdims=True), g.shape))


def observation_spec_of(observations: Any) -> ObservationSpec:
    """The ObservationSpec of an agent's observations, given as an ObservationSpec, an int
    (the dimension of a flat vector, as before named parts existed) or a checkpoint-style spec
    dict ("observation_spec" when present, else "observation_dim")."""
    if isinstance(observations, ObservationSpec):
        return observations
    if isinstance(observations, Mapping):
        if "observation_spec" in observations:
            return ObservationSpec.from_json(observations["observation_spec"])
        if "observation_dim" in observations:
            return ObservationSpec.flat(int(observations["observation_dim"]))
        raise ValueError(f"spec: keys {sorted(observations)}, expected 'observation_spec' or 'observation_dim'")
    if isinstance(observations, (int, np.integer)) and not isinstance(observations, bool):
        return ObservationSpec.flat(int(observations))
    raise ValueError(f"observation spec: got {observations!r}, expected an ObservationSpec, an int dimension or a spec dict")


def make_encoder_state(config, spec: ObservationSpec, rng: jax.Array) -> tuple[Optional[TrainState], int]:
    """(the critic encoder's train state, the width of the vectors the MLPs take): no encoder
    and the state dimension for a flat spec; for a spec with cameras the shared
    `ObservationEncoder` (Adam at `critic_lr`, the critic loss trains it; target parameters
    for the target critics), loaded from `agent.encoder_pretrained` when set, and its feature
    width."""
    encoder = make_encoder(config, spec, encoder_dtype(config.critic_matmul_dtype))
    if encoder is None:
        return None, spec.state_dim
    zeros = jax.tree_util.tree_map(jnp.asarray, spec.zeros((1,)))
    params = encoder.init(rng, zeros)["params"]
    if config.encoder_pretrained:
        params = load_pretrained_encoder(params, config.encoder_pretrained)
    state = TrainState.create(apply_fn=encoder.apply, params=params, tx=optax.adam(config.critic_lr), target_params=params)
    features = jax.eval_shape(encoder.apply, {"params": params}, zeros)
    return state.replace(step=jnp.zeros((), jnp.int32)), int(features.shape[-1])


def register_optional_networks(cls, names: tuple[str, ...] = ("encoder",)) -> None:
    """Serializes agent class `cls` (flax state dicts: checkpoints) leaving out the networks
    in `names` while they are absent (None), so an agent without an encoder (every flat-vector
    task) writes exactly the state dict it wrote before encoders existed, and such state
    dicts restore into it."""
    data_fields = [f.name for f in dataclasses.fields(cls) if f.metadata.get("pytree_node", True)]

    def to_state(agent):
        return {
            name: serialization.to_state_dict(getattr(agent, name))
            for name in data_fields if not (name in names and getattr(agent, name) is None)
        }

    def from_state(agent, state):
        state, updates = dict(state), {}
        for name in data_fields:
            if name not in state:
                if name in names and getattr(agent, name) is None:
                    continue
                raise ValueError(f"missing field {name} in the state dict of a {cls.__name__}")
            updates[name] = serialization.from_state_dict(getattr(agent, name), state.pop(name), name=name)
        if state:
            raise ValueError(f"unknown field(s) {', '.join(state)} in the state dict of a {cls.__name__}")
        return agent.replace(**updates)

    serialization.register_serialization_state(cls, to_state, from_state, override=True)


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


def critic_subsample_indices(rng: jax.Array, ensemble_size: int, subsample_size: int) -> jnp.ndarray:
    """`subsample_size` distinct critic indices drawn uniformly from the ensemble.

    Deliberate difference (docs/fidelity.md): the reference implementation draws them with
    replacement (`randint`), so with 10 critics and 2 draws one time in ten both are the same
    critic and the "min over 2" is one critic. Distinct critics are REDQ's (Chen et al. 2021)
    and the paper's "randomly sub-sampling 2 and taking the min over the 2" (Appendix I).
    """
    return jax.random.choice(rng, ensemble_size, (subsample_size,), replace=False)


def subsample_critics(rng: jax.Array, params: Any, ensemble_size: int, subsample_size: int) -> Any:
    """The parameters of `subsample_size` distinct critics drawn uniformly from the ensemble
    (`critic_subsample_indices`); all of them when the sizes are equal."""
    if subsample_size == ensemble_size:
        return params
    indices = critic_subsample_indices(rng, ensemble_size, subsample_size)
    return jax.tree_util.tree_map(lambda p: p[indices], params)


def reduced_q_with_action_grad(
    critic: TrainState, observations: jnp.ndarray, actions: jnp.ndarray, reduction: str, chunk_size: int = 256
) -> jnp.ndarray:
    """`losses.reduce_ensemble(Q_critic(observations, actions), reduction)`, shape (B,),
    differentiable with respect to `actions` only (critic parameters and observations are held
    constant, as in the actor loss).

    The gradient dQ/da is computed in the forward pass and kept as the only residual: the
    backward pass just scales it. The critic runs `chunk_size` samples at a time (a sequential
    `lax.map`), so its activations are never held for all B samples at once: that bounds the
    scratch memory of the compiled update (XLA:CPU maps and page-faults it afresh on every call
    when it is large) and keeps the working set in cache. For the min of a fused
    `CriticEnsemble`, the backward pass runs only through the minimizing critic of each sample
    (`networks.ensemble_min_q_and_action_grad`); otherwise it is autodiff of the reduction,
    chunk by chunk. `critic.apply_fn(params, obs, actions)` must return (E, B) and treat
    samples independently.
    """
    critic_params = jax.lax.stop_gradient(critic.params)
    observations = jax.lax.stop_gradient(observations)
    module = getattr(critic.apply_fn, "__self__", None)  # apply_fn is the module's bound `apply`

    def autodiff_value_and_grad(obs, act):
        def reduced(a):
            return losses.reduce_ensemble(critic.apply_fn({"params": critic_params}, obs, a), reduction)

        value, vjp = jax.vjp(reduced, act)
        (grad,) = vjp(jnp.ones_like(value))
        return value, grad

    def forward(act):
        if reduction == "min" and isinstance(module, CriticEnsemble) and CriticEnsemble.implementation == "fused":
            return critic.apply_fn(
                {"params": critic_params}, observations, act, chunk_size, method=CriticEnsemble.min_q_and_action_grad
            )
        return map_in_chunks(autodiff_value_and_grad, observations, act, chunk_size=chunk_size)

    @jax.custom_vjp
    def reduced_q(act):
        return forward(act)[0]

    def reduced_q_fwd(act):
        value, grad = forward(act)
        return value, grad

    def reduced_q_bwd(grad, g):
        return (g.reshape(g.shape + (1,) * (grad.ndim - g.ndim)) * grad,)

    reduced_q.defvjp(reduced_q_fwd, reduced_q_bwd)
    return reduced_q(actions)


def batch_masks(batch: Batch) -> jnp.ndarray:
    """1 - terminal: only true terminals stop bootstrapping (time limits do not)."""
    return 1.0 - batch["terminals"]


def flatten_updates(batch: Batch) -> Batch:
    """(M, B, ...) -> (M*B, ...): the union of the M critic batches, for the delayed actor."""
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)


def mean_metrics(infos: list[dict]) -> dict:
    return {k: jnp.mean(jnp.stack([i[k] for i in infos])) for k in infos[0]}


def configure_cpu_malloc() -> bool:
    """Lets XLA:CPU reuse its per-call scratch memory instead of page-faulting it in.

    XLA:CPU allocates one scratch buffer per call of a compiled function (fused UTD-4 update:
    23 MB locomotion, 60 MB antmaze, 71 MB adroit; see `.compile().memory_analysis()`) and
    frees it when the call ends. glibc serves buffers over 32 MB with a fresh mmap and unmaps
    them on free, so every call page-faults the whole buffer in again (~16k faults per
    antmaze update). This tells glibc's malloc (via `mallopt`) never to mmap and never to trim
    its heaps, so freed scratch stays mapped and is reused. Measured on 2 cores with float32
    critic matmuls: antmaze ~5% faster per update; locomotion (scratch under 32 MB) and
    adroit (scratch over the 64 MB of a glibc per-thread heap, still mmapped by XLA's worker
    threads) unchanged. With bf16 critic matmuls the locomotion update faulted ~7k pages per
    call without it, and is ~15% faster with it.

    The training commands call it at start (`learner.runs.keep_freed_memory`); it affects
    later allocations. Linux/glibc only. Cost: memory the process frees is not returned to the
    OS (resident memory stays at its peak). (`GLIBC_TUNABLES=glibc.malloc.arena_max=1:...`
    removes all the faults but made the locomotion update ~20% slower here: one malloc arena
    for every thread.)
    Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1
