"""The pure loss functions of `learner.losses` and `actor.distributions` against values
worked out by hand (or with plain float64 numpy/math formulas) on small fixed arrays."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actor import distributions
from learner import losses

LOG2 = math.log(2.0)


def close(actual, expected, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------
# reduce_target_q

# (E=3, B=2, N=3). Built so that "min" and "max" pick different actions in row 0.
NEXT_QS = np.array(
    [
        [[1.0, 5.0, 2.0], [0.0, -1.0, 3.0]],
        [[2.0, 4.0, 0.0], [1.0, 2.0, 2.5]],
        [[9.0, 6.0, 1.0], [-3.0, 0.0, 4.0]],
    ],
    np.float32,
)
NEXT_LOG_PROBS = np.array([[0.1, 0.2, 0.3], [-0.4, -0.5, -0.6]], np.float32)


def test_reduce_target_q_min_over_critics_then_max_over_actions():
    # min over critics: row 0 [1, 4, 0] -> action 1; row 1 [-3, -1, 2.5] -> action 2.
    q, lp = losses.reduce_target_q(jnp.asarray(NEXT_QS), jnp.asarray(NEXT_LOG_PROBS), "min")
    assert q.shape == (2,) and lp.shape == (2,)
    close(q, [4.0, 2.5])
    close(lp, [0.2, -0.6])


def test_reduce_target_q_max_over_ensemble():
    # max over critics: row 0 [9, 6, 2] -> action 0; row 1 [1, 2, 4] -> action 2.
    q, lp = losses.reduce_target_q(jnp.asarray(NEXT_QS), jnp.asarray(NEXT_LOG_PROBS), "max")
    close(q, [9.0, 4.0])
    close(lp, [0.1, -0.6])


def test_reduce_target_q_single_action_passes_log_prob_through():
    qs = NEXT_QS[:, :, :1]  # N = 1: no max over actions
    lp_in = NEXT_LOG_PROBS[:, :1]
    q, lp = losses.reduce_target_q(jnp.asarray(qs), jnp.asarray(lp_in), "min")
    close(q, [1.0, -3.0])
    close(lp, [0.1, -0.4])
    q, lp = losses.reduce_target_q(jnp.asarray(qs), jnp.asarray(lp_in), "max")
    close(q, [9.0, 1.0])
    close(lp, [0.1, -0.4])


def test_reduce_target_q_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="ensemble_reduction"):
        losses.reduce_target_q(jnp.asarray(NEXT_QS), jnp.asarray(NEXT_LOG_PROBS), "mean")


# ---------------------------------------------------------------------------------------
# td_target

R = np.array([1.0, -2.0, 0.5], np.float32)
MASKS = np.array([1.0, 0.0, 1.0], np.float32)
NQ = np.array([10.0, 20.0, -4.0], np.float32)
NLP = np.array([0.5, 1.0, -2.0], np.float32)


def test_td_target_without_entropy():
    y = losses.td_target(jnp.asarray(R), jnp.asarray(MASKS), jnp.asarray(NQ), 0.9)
    # 1 + 0.9*10; terminal: -2; 0.5 + 0.9*(-4)
    close(y, [10.0, -2.0, -3.1])


def test_td_target_with_entropy_backup():
    y = losses.td_target(jnp.asarray(R), jnp.asarray(MASKS), jnp.asarray(NQ), 0.9, jnp.asarray(NLP), jnp.asarray(0.2))
    # next value minus 0.2 * log-prob: [9.9, 19.8, -3.6]; the terminal row stays the reward.
    close(y, [1.0 + 0.9 * 9.9, -2.0, 0.5 + 0.9 * -3.6])


def test_td_target_terminal_mask_stops_bootstrapping():
    masks = np.zeros(3, np.float32)
    y = losses.td_target(jnp.asarray(R), jnp.asarray(masks), jnp.asarray(NQ * 1e3), 0.99, jnp.asarray(NLP), jnp.asarray(5.0))
    close(y, R, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# critic and actor losses


def test_critic_loss_is_mean_over_critics_and_batch():
    qs = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    targets = np.array([1.0, 1.0, 1.0], np.float32)
    # squared errors [0, 1, 4, 1, 1, 1] -> 8 / 6
    close(losses.critic_loss(jnp.asarray(qs), jnp.asarray(targets)), 8.0 / 6.0)


ACTOR_LP = np.array([1.0, -1.0], np.float32)
ACTOR_QS = np.array([[1.0, 4.0], [2.0, 0.0], [3.0, 2.0]], np.float32)


def test_actor_loss_min_reduction():
    # min over critics [1, 0]; 0.5 * [1, -1] - [1, 0] = [-0.5, -0.5]
    close(losses.actor_loss(jnp.asarray(ACTOR_LP), jnp.asarray(ACTOR_QS), jnp.asarray(0.5), "min"), -0.5)


def test_actor_loss_mean_reduction():
    # mean over critics [2, 2]; [0.5 - 2, -0.5 - 2] -> mean -2
    close(losses.actor_loss(jnp.asarray(ACTOR_LP), jnp.asarray(ACTOR_QS), jnp.asarray(0.5), "mean"), -2.0)


def test_actor_loss_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        losses.actor_loss(jnp.asarray(ACTOR_LP), jnp.asarray(ACTOR_QS), jnp.asarray(0.5), "max")


def test_actor_loss_gradient_wrt_log_probs_is_temperature_over_batch():
    g = jax.grad(lambda lp: losses.actor_loss(lp, jnp.asarray(ACTOR_QS), jnp.asarray(0.5), "min"))(jnp.asarray(ACTOR_LP))
    close(g, [0.25, 0.25])


# ---------------------------------------------------------------------------------------
# temperature


def test_temperature_loss_value():
    close(losses.temperature_loss(jnp.asarray(0.3), jnp.asarray(1.5), -2.0), 0.3 * 3.5)
    close(losses.temperature_loss(jnp.asarray(0.3), jnp.asarray(-3.0), -2.0), -0.3)


@pytest.mark.parametrize("entropy,expected_grad", [(1.5, 3.5), (-3.0, -1.0)])
def test_temperature_loss_gradient_sign(entropy, expected_grad):
    """d loss / d alpha = H - H_target: positive (alpha shrinks under descent) when the policy
    is more random than the target, negative (alpha grows) when it is less random."""
    g_alpha, g_entropy = jax.grad(losses.temperature_loss, argnums=(0, 1))(jnp.asarray(0.3), jnp.asarray(entropy), -2.0)
    close(g_alpha, expected_grad)
    assert float(g_entropy) == 0.0  # the entropy is a fixed input to this loss


# ---------------------------------------------------------------------------------------
# CQL / CalQL

A = 2  # action dim
# E=2, B=2, N=2
Q_DATA = np.array([[1.0, -0.5], [0.3, 2.0]], np.float32)
Q_RAND = np.array([[[0.2, -1.0], [0.5, 0.1]], [[-0.3, 0.4], [1.5, -2.0]]], np.float32)
Q_POL = np.array([[[1.2, 0.7], [-0.4, 0.9]], [[0.8, 2.2], [0.0, -1.1]]], np.float32)
LP_POL = np.array([[0.5, -1.0], [2.0, 0.3]], np.float32)
Q_NEXT = np.array([[[0.1, 1.6], [1.0, -0.2]], [[2.5, -0.7], [0.6, 0.4]]], np.float32)
LP_NEXT = np.array([[-0.2, 1.1], [0.0, -0.8]], np.float32)


def _lse(values, temp=1.0):
    return temp * math.log(sum(math.exp(v / temp) for v in values))


def _expected_gap(importance_sample, temp=1.0, bound=None):
    gap = np.zeros((2, 2))
    for e in range(2):
        for b in range(2):
            qp = [float(Q_POL[e, b, n]) for n in range(2)]
            qn = [float(Q_NEXT[e, b, n]) for n in range(2)]
            if bound is not None:
                qp = [max(q, bound[b]) for q in qp]
                qn = [max(q, bound[b]) for q in qn]
            rand = [float(Q_RAND[e, b, n]) for n in range(2)]
            if importance_sample:
                vals = [q + A * LOG2 for q in rand]  # minus the uniform log-density -A log 2
                vals += [qn[n] - float(LP_NEXT[b, n]) for n in range(2)]
                vals += [qp[n] - float(LP_POL[b, n]) for n in range(2)]
                ood = _lse(vals, temp)
            else:
                # T log mean exp(./T) over the 3N + 1 values (the reference's -T log(3N + 1))
                vals = rand + [float(Q_DATA[e, b])] + qn + qp
                ood = _lse(vals, temp) - temp * math.log(len(vals))
            gap[e, b] = ood - float(Q_DATA[e, b])
    return gap


def _gap(**kw):
    return losses.cql_q_gap(
        jnp.asarray(Q_DATA), jnp.asarray(Q_RAND), jnp.asarray(Q_POL), jnp.asarray(LP_POL),
        jnp.asarray(Q_NEXT), jnp.asarray(LP_NEXT), A, **kw,
    )


def test_cql_q_gap_importance_sampled():
    gap, info = _gap(cql_temperature=1.0, importance_sample=True)
    assert gap.shape == (2, 2)
    expected = _expected_gap(True)
    close(gap, expected)
    close(info["cql_ood_values"], (expected + Q_DATA).mean())
    assert "calql_bound_rate" not in info
    # The densities matter: dropping them changes the answer well beyond tolerance.
    assert np.abs(_expected_gap(False) - expected).max() > 0.1


def test_cql_q_gap_importance_sampled_hand_value():
    """One entry worked out fully by hand: e=0, b=0."""
    vals = [0.2 + 2 * LOG2, -1.0 + 2 * LOG2, 0.1 + 0.2, 1.6 - 1.1, 1.2 - 0.5, 0.7 + 1.0]
    expected = math.log(sum(math.exp(v) for v in vals)) - 1.0
    gap, _ = _gap()
    close(gap[0, 0], expected)


def test_cql_q_gap_without_importance_sampling():
    gap, _ = _gap(cql_temperature=1.0, importance_sample=False)
    close(gap, _expected_gap(False))


def test_cql_q_gap_without_importance_sampling_hand_value():
    """e=0, b=0 by hand: log of the mean of exp over the 3N + 1 = 7 values
    [random 0.2, -1.0; data 1.0; next 0.1, 1.6; policy 1.2, 0.7], minus Q(data) = 1.0."""
    vals = [0.2, -1.0, 1.0, 0.1, 1.6, 1.2, 0.7]
    expected = math.log(sum(math.exp(v) for v in vals) / 7.0) - 1.0
    gap, _ = _gap(importance_sample=False)
    close(gap[0, 0], expected)
    # temperature 0.5: 0.5 * log(mean(exp(v / 0.5))) - 1
    expected_t = 0.5 * math.log(sum(math.exp(v / 0.5) for v in vals) / 7.0) - 1.0
    gap_t, _ = _gap(importance_sample=False, cql_temperature=0.5)
    close(gap_t[0, 0], expected_t)


@pytest.mark.parametrize("importance_sample", [True, False])
def test_cql_q_gap_temperature(importance_sample):
    gap, _ = _gap(cql_temperature=0.5, importance_sample=importance_sample)
    expected = _expected_gap(importance_sample, temp=0.5)
    close(gap, expected)
    assert np.abs(expected - _expected_gap(importance_sample, temp=1.0)).max() > 0.05


def test_calql_lower_bound_active():
    # Bounds between the policy values: some Q(s, pi) are lifted, others left alone.
    bound = np.array([1.0, 0.5], np.float32)
    gap, info = _gap(mc_lower_bound=jnp.asarray(bound))
    expected = _expected_gap(True, bound=[1.0, 0.5])
    close(gap, expected)
    assert np.abs(expected - _expected_gap(True)).max() > 0.05
    # Entries strictly below the bound among the policy and next-policy values (16 in all):
    # b=0 (bound 1): Q_POL 0.7, 0.8; Q_NEXT 0.1, -0.7 -> 4. b=1 (bound .5): Q_POL -0.4, 0.0,
    # -1.1; Q_NEXT -0.2, 0.4 -> 5. The rate is over all 3N = 24 proposal values (the random
    # ones are never bounded), the reference implementation's denominator.
    close(info["calql_bound_rate"], 9.0 / 24.0)


def test_calql_lower_bound_leaves_random_and_data_values_alone():
    # A bound above every value: all policy values become the bound, random ones do not.
    bound = np.array([10.0, 10.0], np.float32)
    gap, info = _gap(mc_lower_bound=jnp.asarray(bound))
    close(gap, _expected_gap(True, bound=[10.0, 10.0]))
    close(info["calql_bound_rate"], 2.0 / 3.0)  # every policy value, none of the random ones
    gap_nis, _ = _gap(mc_lower_bound=jnp.asarray(bound), importance_sample=False)
    close(gap_nis, _expected_gap(False, bound=[10.0, 10.0]))


def test_calql_lower_bound_inactive_matches_cql():
    bound = np.array([-100.0, -100.0], np.float32)
    gap, info = _gap(mc_lower_bound=jnp.asarray(bound))
    close(gap, _expected_gap(True))
    close(info["calql_bound_rate"], 0.0)


def test_cql_penalty_fixed_alpha():
    gap = np.array([[1.0, 2.0], [3.0, -2.0]], np.float32)  # mean 1
    close(losses.cql_penalty(jnp.asarray(gap), 5.0), 5.0)


def test_cql_penalty_fixed_alpha_clips_the_gap():
    """The reference's cql_clip_diff_min/max: clip each gap, then the mean."""
    gap = jnp.asarray(np.array([[1.0, 2.0], [3.0, -2.0]], np.float32))
    # clip to [-1, 2.5]: [1, 2, 2.5, -1] -> mean 1.125, times alpha 5
    close(losses.cql_penalty(gap, 5.0, clip_min=-1.0, clip_max=2.5), 5.0 * 1.125)
    # one-sided: [0, inf) -> [1, 2, 3, 0] -> 1.5; (-inf, 1.5] -> [1, 1.5, 1.5, -2] -> 0.5
    close(losses.cql_penalty(gap, 5.0, clip_min=0.0), 5.0 * 1.5)
    close(losses.cql_penalty(gap, 5.0, clip_max=1.5), 5.0 * 0.5)
    # no bounds (the reference's default -inf / inf): the plain mean
    close(losses.cql_penalty(gap, 5.0, clip_min=None, clip_max=None), 5.0)
    # the bounds do not apply to the Lagrange form (the reference clips only without it)
    close(losses.cql_penalty(gap, 5.0, jnp.asarray(2.0), 0.8, clip_min=0.0, clip_max=0.5), 2.0 * (1.0 - 0.8))


def test_cql_penalty_lagrange():
    """The reference's dual form: lambda * (mean(gap) - target), no cql_alpha in the product."""
    gap = np.array([[1.0, 2.0], [3.0, -2.0]], np.float32)  # mean 1
    close(losses.cql_penalty(jnp.asarray(gap), 5.0, jnp.asarray(2.0), 0.8), 2.0 * (1.0 - 0.8))
    # Below the target gap the penalty is negative (it rewards raising the gap).
    close(losses.cql_penalty(jnp.asarray(gap), 5.0, jnp.asarray(2.0), 3.0), 2.0 * (1.0 - 3.0))
    # The original CQL code's reading: lambda * alpha * (mean(gap) - target).
    close(
        losses.cql_penalty(jnp.asarray(gap), 5.0, jnp.asarray(2.0), 0.8, lagrange_times_alpha=True),
        2.0 * 5.0 * (1.0 - 0.8),
    )


def test_lagrange_loss_and_its_gradient():
    """-lambda * (gap - target): d/dlambda = -(gap - target), the gap held fixed."""
    loss = losses.lagrange_loss(jnp.asarray(1.5), jnp.asarray(1.3), 0.8)
    close(loss, -1.5 * 0.5)
    d_lambda, d_gap = jax.grad(lambda l, g: losses.lagrange_loss(l, g, 0.8), argnums=(0, 1))(jnp.asarray(1.5), jnp.asarray(1.3))
    close(d_lambda, -0.5)
    close(d_gap, 0.0)
    d_times = jax.grad(lambda l: losses.lagrange_loss(l, jnp.asarray(1.3), 0.8, 5.0, True))(jnp.asarray(1.5))
    close(d_times, -5.0 * 0.5)


# ---------------------------------------------------------------------------------------
# IQL


def test_expectile_loss_is_asymmetric():
    diff = np.array([2.0, -2.0, 0.5, -0.5, 0.0], np.float32)
    close(losses.expectile_loss(jnp.asarray(diff), 0.8), [3.2, 0.8, 0.2, 0.05, 0.0])
    # expectile 0.5 is half the squared error
    close(losses.expectile_loss(jnp.asarray(diff), 0.5), 0.5 * diff**2)


def test_awr_weights_and_clipping():
    adv = np.array([0.0, 1.0, -1.0, 2.0], np.float32)
    w = losses.awr_weights(jnp.asarray(adv), 2.0, 20.0)
    close(w, [1.0, math.exp(2.0), math.exp(-2.0), 20.0])  # exp(4) = 54.6 is clipped to 20


def test_awr_actor_loss_and_fixed_weights():
    lp = np.array([-1.0, 2.0, 0.5], np.float32)
    w = np.array([2.0, 0.5, 4.0], np.float32)
    close(losses.awr_actor_loss(jnp.asarray(lp), jnp.asarray(w)), -(-2.0 + 1.0 + 2.0) / 3.0)
    g_lp, g_w = jax.grad(losses.awr_actor_loss, argnums=(0, 1))(jnp.asarray(lp), jnp.asarray(w))
    close(g_lp, -w / 3.0)
    close(g_w, np.zeros(3))


# ---------------------------------------------------------------------------------------
# distributions


def _np_tanh_gaussian_log_prob(a, m, log_std):
    """Change of variables in float64: a = tanh(u), u ~ N(m, s^2);
    p(a) = N(atanh(a); m, s^2) / (1 - a^2)."""
    a, m, log_std = (np.asarray(x, np.float64) for x in (a, m, log_std))
    s = np.exp(log_std)
    u = np.arctanh(a)
    log_n = -0.5 * ((u - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    return (log_n - np.log1p(-(a**2))).sum(-1)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    actions = np.array([[0.3, -0.7], [0.95, 0.0], [-0.2, 0.5]], np.float32)
    means = np.array([[0.1, -0.5], [1.2, 0.3], [0.0, -0.4]], np.float32)
    log_stds = np.array([[-0.5, 0.2], [0.0, -1.0], [0.4, -0.3]], np.float32)
    out = distributions.tanh_gaussian_log_prob(jnp.asarray(actions), jnp.asarray(means), jnp.asarray(log_stds))
    assert out.shape == (3,)
    close(out, _np_tanh_gaussian_log_prob(actions, means, log_stds), rtol=1e-5, atol=1e-4)


def test_tanh_gaussian_density_integrates_to_one():
    grid = np.linspace(-1 + 1e-6, 1 - 1e-6, 200001).astype(np.float32)
    lp = distributions.tanh_gaussian_log_prob(
        jnp.asarray(grid[:, None]), jnp.full((grid.size, 1), 0.3), jnp.full((grid.size, 1), -0.5)
    )
    integral = np.trapezoid(np.exp(np.asarray(lp, np.float64)), grid.astype(np.float64))
    assert abs(integral - 1.0) < 1e-3


def test_tanh_gaussian_log_prob_finite_on_bounds():
    actions = jnp.array([[1.0, -1.0]])
    out = distributions.tanh_gaussian_log_prob(actions, jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    assert np.isfinite(np.asarray(out)).all()


def test_log_abs_det_tanh():
    u = np.array([-3.0, -0.5, 0.0, 0.7, 2.5], np.float32)
    close(distributions.log_abs_det_tanh(jnp.asarray(u)), np.log(1 - np.tanh(u.astype(np.float64)) ** 2), atol=1e-5)
    # Stable for large |u|, where 1 - tanh^2 underflows: -> 2 (log 2 - |u|).
    close(distributions.log_abs_det_tanh(jnp.asarray([30.0, -30.0])), [2 * (LOG2 - 30.0)] * 2, rtol=1e-6)


def test_sample_tanh_gaussian_matches_reparameterization_and_log_prob():
    rng = jax.random.PRNGKey(3)
    means = jnp.array([[0.2, -0.4], [1.0, 0.5], [-0.3, 0.0], [0.0, 0.8]])
    log_stds = jnp.array([[-0.3, 0.1], [-1.0, -0.2], [0.3, -0.5], [0.0, 0.0]])
    actions, log_probs = distributions.sample_tanh_gaussian(rng, means, log_stds)
    assert actions.shape == (4, 2) and log_probs.shape == (4,)
    noise = np.asarray(jax.random.normal(rng, means.shape), np.float64)
    u = np.asarray(means, np.float64) + np.exp(np.asarray(log_stds, np.float64)) * noise
    close(actions, np.tanh(u), atol=1e-6)
    close(log_probs, _np_tanh_gaussian_log_prob(np.tanh(u), means, log_stds), atol=1e-4)
    # and it agrees with the density of the sampled action
    close(log_probs, distributions.tanh_gaussian_log_prob(actions, means, log_stds), atol=1e-3)


def test_sample_tanh_gaussian_statistics():
    """The pre-tanh samples have the requested mean and std."""
    n = 20000
    means = jnp.broadcast_to(jnp.array([0.5, -1.0]), (n, 2))
    log_stds = jnp.broadcast_to(jnp.array([-1.0, 0.3]), (n, 2))
    actions, _ = distributions.sample_tanh_gaussian(jax.random.PRNGKey(0), means, log_stds)
    u = np.arctanh(np.clip(np.asarray(actions, np.float64), -1 + 1e-7, 1 - 1e-7))
    np.testing.assert_allclose(u.mean(0), [0.5, -1.0], atol=0.05)
    np.testing.assert_allclose(u.std(0), np.exp([-1.0, 0.3]), rtol=0.05)
