"""The math of every agent as pure functions of arrays (no networks, no optimizers).

Shapes: E = critics in an ensemble, B = batch, N = sampled actions per state.
`masks` are 1 - terminal: time-limit truncations keep mask 1 so the target bootstraps.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def reduce_target_q(
    next_qs: jnp.ndarray, next_log_probs: jnp.ndarray, ensemble_reduction: str = "min"
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Collapses target-critic values over the ensemble, then over sampled next actions.

    next_qs: (E, B, N) target Q of N sampled next actions; next_log_probs: (B, N).
    ensemble_reduction "min" is REDQ's min over the (sub-sampled) critics; "max" is the
    optimistic max over the ensemble. When N > 1 the max over actions is taken (CQL's
    "max target backup"), and the log-prob of the chosen action comes with it.
    Returns next_q (B,), next_log_prob (B,).
    """
    if ensemble_reduction == "min":
        q = next_qs.min(axis=0)
    elif ensemble_reduction == "max":
        q = next_qs.max(axis=0)
    else:
        raise ValueError(f"ensemble_reduction: got {ensemble_reduction!r}, expected 'min' or 'max'")
    best = jnp.argmax(q, axis=-1)
    next_q = jnp.take_along_axis(q, best[:, None], axis=-1)[:, 0]
    next_log_prob = jnp.take_along_axis(next_log_probs, best[:, None], axis=-1)[:, 0]
    return next_q, next_log_prob


def td_target(
    rewards: jnp.ndarray,
    masks: jnp.ndarray,
    next_q: jnp.ndarray,
    discount: float,
    next_log_prob: Optional[jnp.ndarray] = None,
    temperature: Optional[jnp.ndarray] = None,
) -> jnp.ndarray:
    """r + discount * mask * (Q'(s', a') - alpha * log pi(a'|s')); the entropy term only
    when `next_log_prob` is given (SAC's `backup_entropy`)."""
    if next_log_prob is not None:
        next_q = next_q - temperature * next_log_prob
    return rewards + discount * masks * next_q


def perturb_target_actions(actions: jnp.ndarray, noise: jnp.ndarray, variance: float, clip: float) -> jnp.ndarray:
    """SO2's perturbed value update: a' + clip(sqrt(variance) * noise, -clip, clip), kept in
    the action box [-1, 1]. `noise` is standard normal, shaped like `actions`."""
    perturbation = jnp.clip(jnp.sqrt(variance) * noise, -clip, clip)
    return jnp.clip(actions + perturbation, -1.0, 1.0)


def critic_loss(qs: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
    """Mean over critics and batch of (Q_i(s, a) - y)^2; qs (E, B), targets (B,)."""
    return jnp.mean((qs - targets[None]) ** 2)


def reduce_ensemble(qs: jnp.ndarray, reduction: str) -> jnp.ndarray:
    """min or mean over the leading (ensemble) axis."""
    if reduction == "min":
        return qs.min(axis=0)
    if reduction == "mean":
        return qs.mean(axis=0)
    raise ValueError(f"reduction: got {reduction!r}, expected 'min' or 'mean'")


def actor_loss(
    log_probs: jnp.ndarray, qs: jnp.ndarray, temperature: jnp.ndarray, reduction: str = "min"
) -> jnp.ndarray:
    """SAC policy objective mean(alpha * log pi(a|s) - Q(s, a)), a ~ pi; qs (E, B)."""
    return jnp.mean(temperature * log_probs - reduce_ensemble(qs, reduction))


def temperature_loss(
    temperature: jnp.ndarray, entropy: jnp.ndarray, target_entropy: float
) -> jnp.ndarray:
    """alpha * (H - H_target): descending it raises alpha when entropy is below target."""
    return temperature * (jax.lax.stop_gradient(entropy) - target_entropy)


def cql_q_gap(
    q_data: jnp.ndarray,
    q_random: jnp.ndarray,
    q_policy: jnp.ndarray,
    log_probs_policy: jnp.ndarray,
    q_next_policy: jnp.ndarray,
    log_probs_next_policy: jnp.ndarray,
    action_dim: int,
    cql_temperature: float = 1.0,
    importance_sample: bool = True,
    mc_lower_bound: Optional[jnp.ndarray] = None,
) -> tuple[jnp.ndarray, dict]:
    """CQL's conservative gap: soft-max of Q over out-of-distribution actions minus Q of data.

    q_data (E, B); q_random (E, B, N) for uniform actions in [-1, 1]^A; q_policy and
    q_next_policy (E, B, N) at state s for actions sampled from pi(.|s) and pi(.|s'), with
    their log-probs (B, N). With `mc_lower_bound` (B,) this is CalQL: the policy-action values
    are replaced by max(Q, MC return-to-go) before the soft-max.
    With importance sampling the soft-max is T logsumexp(./T) over the 3N proposals weighted
    by their densities (log density of the uniform is -A log 2); without it, T log mean
    exp(./T) over the 3N + 1 values [random, data, next, current], as in the original CQL
    (and the reference implementation, which subtracts T log(3N + 1)).
    Returns the gap (E, B) and diagnostics; `calql_bound_rate` is the share of the 3N
    proposal values per critic and state that the bound lifted (random actions are never
    bounded, so at most 2/3), the reference implementation's denominator.
    """
    info = {}
    if mc_lower_bound is not None:
        bound = mc_lower_bound[None, :, None]
        lifted = jnp.sum(q_policy < bound) + jnp.sum(q_next_policy < bound)
        info["calql_bound_rate"] = lifted / (q_random.size + q_policy.size + q_next_policy.size)
        q_policy = jnp.maximum(q_policy, bound)
        q_next_policy = jnp.maximum(q_next_policy, bound)
    if importance_sample:
        random_log_density = -action_dim * jnp.log(2.0)
        proposals = jnp.concatenate(
            [
                q_random - random_log_density,
                q_next_policy - log_probs_next_policy[None],
                q_policy - log_probs_policy[None],
            ],
            axis=-1,
        )
        ood = jax.nn.logsumexp(proposals / cql_temperature, axis=-1) * cql_temperature
    else:
        proposals = jnp.concatenate([q_random, q_data[..., None], q_next_policy, q_policy], axis=-1)
        ood = (jax.nn.logsumexp(proposals / cql_temperature, axis=-1) - jnp.log(proposals.shape[-1])) * cql_temperature
    info["cql_ood_values"] = ood.mean()
    return ood - q_data, info


def cql_penalty(
    q_gap: jnp.ndarray,
    cql_alpha: float,
    lagrange_multiplier: Optional[jnp.ndarray] = None,
    target_action_gap: float = 0.0,
    clip_min: Optional[float] = None,
    clip_max: Optional[float] = None,
    lagrange_times_alpha: bool = False,
) -> jnp.ndarray:
    """The term added to the critic loss; q_gap (E, B).

    Fixed weight: alpha * mean(clip(gap, clip_min, clip_max)) (a None bound does not clip).
    Lagrange ("dual") form: lambda * (mean(gap) - target_action_gap), lambda >= 0 learned
    (`lagrange_loss`), the form of the CQL paper and of the reference implementation; with
    `lagrange_times_alpha`, lambda * alpha * (...), the original CQL code's (its min_q_weight
    times alpha_prime). No clipping in the Lagrange form (the reference clips only without it).
    """
    if lagrange_multiplier is None:
        if clip_min is not None:
            q_gap = jnp.maximum(q_gap, clip_min)
        if clip_max is not None:
            q_gap = jnp.minimum(q_gap, clip_max)
        return cql_alpha * q_gap.mean()
    weight = lagrange_multiplier * cql_alpha if lagrange_times_alpha else lagrange_multiplier
    return weight * (q_gap.mean() - target_action_gap)


def lagrange_loss(
    lagrange_multiplier: jnp.ndarray, mean_gap: jnp.ndarray, target_action_gap: float, cql_alpha: float = 1.0,
    lagrange_times_alpha: bool = False,
) -> jnp.ndarray:
    """-lambda * (mean gap - target) (times alpha with `lagrange_times_alpha`): descending it
    raises lambda while the gap exceeds its target and lowers it below (gap held fixed)."""
    weight = lagrange_multiplier * cql_alpha if lagrange_times_alpha else lagrange_multiplier
    return -weight * (jax.lax.stop_gradient(mean_gap) - target_action_gap)


def expectile_loss(diff: jnp.ndarray, expectile: float) -> jnp.ndarray:
    """Asymmetric L2 of diff = Q - V: weight `expectile` where diff > 0, 1 - expectile else."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def awr_weights(advantages: jnp.ndarray, inverse_temperature: float, max_weight: float) -> jnp.ndarray:
    """exp(beta * A), clipped at `max_weight` (IQL's advantage-weighted regression)."""
    return jnp.minimum(jnp.exp(inverse_temperature * advantages), max_weight)


def awr_actor_loss(log_probs: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """-mean(w * log pi(a|s)) over dataset actions, weights held fixed."""
    return -jnp.mean(jax.lax.stop_gradient(weights) * log_probs)
