"""Agent updates on tiny networks against a float64 numpy recomputation from the agents'
own parameters (tests/numpy_reference.py), plus structural checks of the fused UTD step.

Random draws are reproduced with the same jax.random keys the agents use (the key-splitting
order of each method is mirrored here); everything else is recomputed in numpy.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learner.agents import CalQLAgent, CQLAgent, IQLAgent, SACAgent
from learner.config import AgentConfig
try:
    from tests import numpy_reference as ref
except ImportError:  # tests/ itself on sys.path (pytest's default rootdir insertion)
    import numpy_reference as ref

OBS_DIM, ACT_DIM, B = 3, 2, 6
E, K = 4, 2
RTOL, ATOL = 1e-4, 1e-4

BASE = AgentConfig(
    critic_ensemble_size=E,
    critic_subsample_size=K,
    critic_hidden_dims=(5,),
    actor_hidden_dims=(4,),
    critic_layer_norm=True,
    actor_layer_norm=True,
    critic_matmul_dtype="float32",  # the float64 reference checks the float32 math ("auto" may pick bf16)
    discount=0.9,
    tau=0.3,
    critic_lr=0.05,
    initial_temperature=0.37,
    log_std_min=-1.5,
    log_std_max=0.6,
    max_target_backup_num_actions=3,
    cql_num_actions=3,
    cql_alpha=2.5,
    iql_expectile=0.8,
    iql_awr_temperature=3.0,
    iql_awr_max_weight=2.0,
)


def cfg(**kw) -> AgentConfig:
    return dataclasses.replace(BASE, **kw)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


def _random_like(tree, rs, scale):
    return jax.tree_util.tree_map(lambda p: jnp.asarray(rs.normal(0.0, scale, p.shape), jnp.float32), tree)


def perturb(agent, seed=0):
    """Random parameters everywhere (LayerNorm scales/biases included) and a target critic
    that differs from the online one, so that mixing them up cannot go unnoticed."""
    rs = np.random.RandomState(seed)
    actor_params = _random_like(agent.actor.params, rs, 0.6)
    # A wider log-std head, so that the [log_std_min, log_std_max] clip is exercised.
    actor_params["log_std"]["kernel"] = 2.0 * actor_params["log_std"]["kernel"]
    actor = agent.actor.replace(params=actor_params)
    critic = agent.critic.replace(
        params=_random_like(agent.critic.params, rs, 0.7), target_params=_random_like(agent.critic.params, rs, 0.7)
    )
    agent = agent.replace(actor=actor, critic=critic)
    if hasattr(agent, "value"):
        agent = agent.replace(value=agent.value.replace(params=_random_like(agent.value.params, rs, 0.7)))
    return agent


def make_batch(seed=0, terminals=(0, 1, 0, 0, 1, 0), n=B):
    rs = np.random.RandomState(100 + seed)
    f = lambda *s: rs.uniform(-1.0, 1.0, s).astype(np.float32)
    batch = {
        "observations": f(n, OBS_DIM) * 1.5,
        "actions": f(n, ACT_DIM) * 0.9,
        "next_observations": f(n, OBS_DIM) * 1.5,
        "rewards": f(n) * 2.0,
        "terminals": np.asarray(terminals, np.float32)[:n],
        "mc_returns": f(n),
    }
    return {k: jnp.asarray(v) for k, v in batch.items()}


def npb(batch):
    return {k: np.asarray(v, np.float64) for k, v in batch.items()}


def normal(key, shape):
    return np.asarray(jax.random.normal(key, shape, jnp.float32), np.float64)


def alpha_of(agent):
    return math.exp(float(agent.temperature.params["log_value"]))


# The pieces checked under many configs run eagerly (the math is the same): under jit every
# static config is a compilation of its own (~1-4 s each on 2 cores), while eager op
# kernels, once compiled, are shared by all configs. The fused, jitted `update` is checked
# against numpy as well (test_update_step_counts).
def critic_target_fn(agent, batch, k1, k2):
    return agent.critic_target(batch, k1, k2)


def regularizer_fn(agent, params, batch, qs, rng):
    return agent.critic_regularizer(params, batch, qs, rng)


def update_critic_fn(agent, batch):
    return agent.update_critic(batch)


def update_actor_fn(agent, batch):
    return agent.update_actor(batch)


def iql_value_critic_fn(agent, batch):
    return agent.update_value_and_critic(batch)


# ---------------------------------------------------------------------------------------
# the TD target


def target_mode(agent):
    """SAC reads agent.max_target_backup; CQL/CalQL agent.cql_max_target_backup."""
    return agent.config.cql_max_target_backup if isinstance(agent, CQLAgent) else agent.config.max_target_backup


def np_critic_target(agent, batch, action_rng, subsample_rng, return_parts=False):
    c = agent.config
    b = npb(batch)
    mode = target_mode(agent)
    n = c.max_target_backup_num_actions if mode == "sampled_actions" else 1
    actor_p = ref.to_np(agent.actor.params)
    target_p = ref.to_np(agent.critic.target_params)
    next_obs = np.broadcast_to(b["next_observations"][:, None], (B, n, OBS_DIM))
    means, log_stds = ref.policy(actor_p, next_obs, c.log_std_min, c.log_std_max)
    actions, log_probs = ref.sample_tanh_gaussian(normal(action_rng, (B, n, ACT_DIM)), means, log_stds)
    if mode == "ensemble_max":
        q = ref.critic_ensemble(target_p, next_obs, actions).max(0)  # (B, n)
    else:
        idx = np.asarray(jax.random.choice(subsample_rng, c.critic_ensemble_size, (c.critic_subsample_size,), replace=False))
        assert len(set(idx.tolist())) == c.critic_subsample_size
        q = ref.critic_ensemble(target_p, next_obs, actions, indices=idx).min(0)
    best = q.argmax(-1)
    next_q = q[np.arange(B), best]
    next_lp = log_probs[np.arange(B), best]
    value = next_q - alpha_of(agent) * next_lp if c.backup_entropy else next_q
    y = b["rewards"] + c.discount * (1.0 - b["terminals"]) * value
    if return_parts:
        return y, dict(q=q, log_probs=log_probs, next_lp=next_lp)
    return y


KA, KS = jax.random.PRNGKey(11), jax.random.PRNGKey(12)


@pytest.mark.parametrize("backup_entropy", [False, True])
@pytest.mark.parametrize("mode", ["none", "ensemble_max", "sampled_actions"])
def test_critic_target_matches_numpy(mode, backup_entropy):
    agent = perturb(SACAgent.create(cfg(max_target_backup=mode, backup_entropy=backup_entropy), OBS_DIM, ACT_DIM))
    batch = make_batch()
    y, info = critic_target_fn(agent, batch, KA, KS)
    expected, parts = np_critic_target(agent, batch, KA, KS, return_parts=True)
    assert y.shape == (B,)
    close(y, expected)
    close(info["target_q"], expected.mean())
    close(info["next_log_prob"], parts["next_lp"].mean())
    # Terminal rows are exactly the reward.
    term = np.asarray(batch["terminals"]) == 1
    np.testing.assert_array_equal(np.asarray(y)[term], np.asarray(batch["rewards"])[term])


def test_critic_target_sensitivity_guards():
    """The fixed keys and parameters are such that the alternatives the code could wrongly
    take give different targets: the tests above can fail."""
    batch = make_batch()
    base = perturb(SACAgent.create(cfg(), OBS_DIM, ACT_DIM))
    y_none = np_critic_target(base, batch, KA, KS)
    # sub-sampled min != min over the whole ensemble != max over the ensemble
    y_max = np_critic_target(base.replace(config=cfg(max_target_backup="ensemble_max")), batch, KA, KS)
    full_min = base.replace(config=cfg(critic_subsample_size=E))
    y_full_min = np_critic_target(full_min, batch, KA, KS)
    assert np.abs(y_none - y_full_min).max() > 1e-2
    assert np.abs(y_none - y_max).max() > 1e-2
    # the online critic is not the target critic
    swapped = base.replace(critic=base.critic.replace(target_params=base.critic.params))
    assert np.abs(y_none - np_critic_target(swapped, batch, KA, KS)).max() > 1e-2
    # with N sampled actions, picking by Q differs from picking the first one, and the
    # entropy term is not negligible
    sampled = base.replace(config=cfg(max_target_backup="sampled_actions", backup_entropy=True))
    _, parts = np_critic_target(sampled, batch, KA, KS, return_parts=True)
    assert (parts["q"].argmax(-1) != 0).any()
    assert np.abs(alpha_of(base) * parts["next_lp"]).max() > 1e-2


@pytest.mark.parametrize("mode", ["none", "sampled_actions"])
def test_critic_target_all_terminal_is_reward(mode):
    agent = perturb(SACAgent.create(cfg(max_target_backup=mode, backup_entropy=True), OBS_DIM, ACT_DIM))
    batch = make_batch(terminals=(1,) * B)
    y, _ = critic_target_fn(agent, batch, KA, KS)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(batch["rewards"]))


def test_update_critic_loss_soft_update_and_terminal_target():
    """One critic step: the reported TD loss is mean_(i,b) (Q_i(s,a) - r)^2 when every
    transition is terminal; the target critic moves by exactly a tau soft update."""
    agent = perturb(SACAgent.create(cfg(), OBS_DIM, ACT_DIM), seed=1)
    batch = make_batch(terminals=(1,) * B)
    b = npb(batch)
    new, info = update_critic_fn(agent, batch)

    qs = ref.critic_ensemble(ref.to_np(agent.critic.params), b["observations"], b["actions"])
    close(info["critic_loss"], ((qs - b["rewards"][None]) ** 2).mean())
    close(info["target_q"], b["rewards"].mean())
    close(info["q_mean"], qs.mean())
    close(info["q_min"], qs.min())
    close(info["q_max"], qs.max())

    tau = agent.config.tau
    old_p, old_t = ref.to_np(agent.critic.params), ref.to_np(agent.critic.target_params)
    new_p, new_t = ref.to_np(new.critic.params), ref.to_np(new.critic.target_params)
    flat = lambda t: np.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(t)])
    assert np.abs(flat(new_p) - flat(old_p)).max() > 1e-3  # the critic did take a step
    expected = (1 - tau) * flat(old_t) + tau * flat(new_p)
    np.testing.assert_allclose(flat(new_t), expected, rtol=0, atol=2e-6)
    # a soft update towards the *old* parameters would be distinguishable
    assert np.abs((1 - tau) * flat(old_t) + tau * flat(old_p) - expected).max() > 1e-3
    assert int(new.critic.step) == 1 and int(new.actor.step) == 0
    # the rng advanced as split(rng, 4)[0]
    np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(jax.random.split(agent.rng, 4)[0]))


# ---------------------------------------------------------------------------------------
# actor and temperature


def np_actor_metrics(agent, obs, key, critic_params):
    c = agent.config
    means, log_stds = ref.policy(ref.to_np(agent.actor.params), obs, c.log_std_min, c.log_std_max)
    actions, log_probs = ref.sample_tanh_gaussian(normal(key, (obs.shape[0], ACT_DIM)), means, log_stds)
    qs = ref.critic_ensemble(ref.to_np(critic_params), obs, actions)
    q = qs.min(0) if c.actor_q_reduction == "min" else qs.mean(0)
    alpha = alpha_of(agent)
    entropy = -log_probs.mean()
    return {
        "actor_loss": (alpha * log_probs - q).mean(),
        "entropy": entropy,
        "temperature_loss": alpha * (entropy - (-ACT_DIM)),
        "temperature": alpha,
    }


@pytest.mark.parametrize("reduction", ["min", "mean"])
def test_update_actor_metrics_match_numpy(reduction):
    agent = perturb(SACAgent.create(cfg(actor_q_reduction=reduction), OBS_DIM, ACT_DIM), seed=4)
    batch = make_batch(seed=1)
    new, info = update_actor_fn(agent, batch)
    rng, key = jax.random.split(agent.rng)
    expected = np_actor_metrics(agent, npb(batch)["observations"], key, agent.critic.params)
    for name, value in expected.items():
        close(info[name], value)
    np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(rng))
    assert int(new.actor.step) == 1 and int(new.temperature.step) == 1 and int(new.critic.step) == 0
    # The log-std clipping is exercised by these parameters (both bounds).
    h_logstd = ref.policy(ref.to_np(agent.actor.params), npb(batch)["observations"], -np.inf, np.inf)[1]
    assert (h_logstd > agent.config.log_std_max).any() and (h_logstd < agent.config.log_std_min).any()
    # Temperature: Adam's first step moves log(alpha) by ~lr against the sign of
    # d loss / d log(alpha) = alpha * (H - H_target): alpha falls when H is above target.
    step = float(new.temperature.params["log_value"]) - float(agent.temperature.params["log_value"])
    sign = np.sign(expected["entropy"] + ACT_DIM)
    assert sign != 0
    close(step, -sign * agent.config.temperature_lr, rtol=5e-3, atol=0)


def test_actor_reductions_differ():
    """Guard: min and mean reductions give different losses here, so the test above can fail."""
    batch = make_batch(seed=1)
    obs, key = npb(batch)["observations"], jax.random.split(jax.random.PRNGKey(0))[1]
    a_min = perturb(SACAgent.create(cfg(actor_q_reduction="min"), OBS_DIM, ACT_DIM), seed=4)
    a_mean = a_min.replace(config=cfg(actor_q_reduction="mean"))
    l_min = np_actor_metrics(a_min, obs, key, a_min.critic.params)["actor_loss"]
    l_mean = np_actor_metrics(a_mean, obs, key, a_min.critic.params)["actor_loss"]
    assert abs(l_min - l_mean) > 1e-2


# ---------------------------------------------------------------------------------------
# the fused UTD step


def stacked_batch(m):
    parts = [make_batch(seed=10 + i) for i in range(m)]
    return {k: jnp.stack([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def sac_agent():
    return perturb(SACAgent.create(cfg(), OBS_DIM, ACT_DIM), seed=3)


@pytest.mark.parametrize("m", [1, 3, 4])
def test_update_step_counts(sac_agent, m):
    batch = stacked_batch(m)
    new, info = sac_agent.update(batch)
    assert int(new.critic.step) == m
    assert int(new.critic.opt_state[0].count) == m
    assert int(new.actor.step) == 1
    assert int(new.temperature.step) == 1
    # The actor update comes after the M critic updates, sees the updated critic and the
    # union of the M batches, and uses the rng that the M critic updates left behind.
    rng = sac_agent.rng
    for _ in range(m):
        rng = jax.random.split(rng, 4)[0]
    rng, key = jax.random.split(rng)
    obs = np.asarray(batch["observations"], np.float64).reshape(m * B, OBS_DIM)
    expected = np_actor_metrics(sac_agent, obs, key, new.critic.params)
    for name in ("actor_loss", "entropy", "temperature_loss", "temperature"):
        close(info[name], expected[name])
    np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(rng))


# ---------------------------------------------------------------------------------------
# CQL / CalQL regularizer


def np_cql_regularizer(agent, batch, qs, rng, lagrange=None, critic_params=None):
    c = agent.config
    b = npb(batch)
    n = c.cql_num_actions
    k_random, k_policy, k_next, k_subsample = jax.random.split(rng, 4)
    rand = np.asarray(jax.random.uniform(k_random, (B, n, ACT_DIM), minval=-1.0, maxval=1.0), np.float64)
    actor_p = ref.to_np(agent.actor.params)
    critic_p = ref.to_np(agent.critic.params) if critic_params is None else critic_params
    # the penalty's critics: critic_subsample_size distinct ones drawn with k_subsample (or all)
    if c.cql_penalty_critics == "all" or c.critic_subsample_size == c.critic_ensemble_size:
        idx = np.arange(c.critic_ensemble_size)
    else:
        idx = np.asarray(jax.random.choice(k_subsample, c.critic_ensemble_size, (c.critic_subsample_size,), replace=False))
    qs = qs[idx]
    obs_rep = np.broadcast_to(b["observations"][:, None], (B, n, OBS_DIM))
    next_rep = np.broadcast_to(b["next_observations"][:, None], (B, n, OBS_DIM))
    pol_a, pol_lp = ref.sample_tanh_gaussian(normal(k_policy, (B, n, ACT_DIM)), *ref.policy(actor_p, obs_rep, c.log_std_min, c.log_std_max))
    nxt_a, nxt_lp = ref.sample_tanh_gaussian(normal(k_next, (B, n, ACT_DIM)), *ref.policy(actor_p, next_rep, c.log_std_min, c.log_std_max))
    # all proposals are evaluated at the current state s
    q_rand = ref.critic_ensemble(critic_p, obs_rep, rand, indices=idx)
    q_pol = ref.critic_ensemble(critic_p, obs_rep, pol_a, indices=idx)
    q_nxt = ref.critic_ensemble(critic_p, obs_rep, nxt_a, indices=idx)
    info = {}
    if agent.use_mc_lower_bound:
        bound = b["mc_returns"][None, :, None]
        # lifted values over all 3n proposal values per critic and state
        info["calql_bound_rate"] = (np.sum(q_pol < bound) + np.sum(q_nxt < bound)) / (3 * q_pol.size)
        q_pol, q_nxt = np.maximum(q_pol, bound), np.maximum(q_nxt, bound)
    t = c.cql_temperature
    if c.cql_importance_sample:
        cat = np.concatenate([q_rand + ACT_DIM * np.log(2.0), q_nxt - nxt_lp[None], q_pol - pol_lp[None]], -1)
        ood = t * ref.logsumexp(cat / t, -1)
    else:
        cat = np.concatenate([q_rand, qs[..., None], q_nxt, q_pol], -1)
        ood = t * (ref.logsumexp(cat / t, -1) - np.log(cat.shape[-1]))
    gap = ood - qs
    if lagrange is None:
        lo = -np.inf if c.cql_clip_diff_min is None else c.cql_clip_diff_min
        hi = np.inf if c.cql_clip_diff_max is None else c.cql_clip_diff_max
        penalty = c.cql_alpha * np.clip(gap, lo, hi).mean()
    else:
        weight = lagrange * c.cql_alpha if c.cql_lagrange_times_alpha else lagrange
        penalty = weight * (gap.mean() - c.cql_target_action_gap)
    info.update(cql_penalty=penalty, cql_q_gap=gap.mean(), cql_ood_values=ood.mean())
    return penalty, info, dict(q_pol=q_pol, idx=idx)


RK = jax.random.PRNGKey(21)


@pytest.mark.parametrize(
    "cls,kw",
    [
        (CQLAgent, dict()),
        (CQLAgent, dict(cql_importance_sample=False)),
        (CQLAgent, dict(cql_temperature=0.5)),
        (CQLAgent, dict(cql_importance_sample=False, cql_temperature=2.0)),
        (CQLAgent, dict(cql_lagrange=True, cql_alpha_lagrange_init=2.0, cql_target_action_gap=0.8)),
        (CQLAgent, dict(cql_lagrange=True, cql_alpha_lagrange_init=2.0, cql_lagrange_times_alpha=True)),
        (CQLAgent, dict(cql_penalty_critics="all")),
        (CQLAgent, dict(cql_clip_diff_min=-0.5, cql_clip_diff_max=1.0)),
        (CalQLAgent, dict()),
        (CalQLAgent, dict(cql_lagrange=True, cql_alpha_lagrange_init=0.5)),
    ],
    ids=["cql", "cql-no-is", "cql-temp0.5", "cql-no-is-temp2", "cql-lagrange", "cql-lagrange-times-alpha", "cql-all-critics",
         "cql-clip", "calql", "calql-lagrange"],
)
def test_cql_regularizer_matches_numpy(cls, kw):
    agent = perturb(cls.create(cfg(**kw), OBS_DIM, ACT_DIM), seed=4)
    batch = make_batch(seed=2)
    b = npb(batch)
    # For CalQL put the MC bound inside the range of the Q-values so it is partly active.
    qs = ref.critic_ensemble(ref.to_np(agent.critic.params), b["observations"], b["actions"])
    if cls is CalQLAgent:
        batch = dict(batch, mc_returns=jnp.asarray(qs.mean(0), jnp.float32))
        b = npb(batch)
    lagrange = kw.get("cql_alpha_lagrange_init") if kw.get("cql_lagrange") else None
    penalty, info = regularizer_fn(agent, agent.critic.params, batch, jnp.asarray(qs, jnp.float32), RK)
    expected_penalty, expected_info, parts = np_cql_regularizer(agent, batch, qs, RK, lagrange)
    close(penalty, expected_penalty)
    for name, value in expected_info.items():
        close(info[name], value)
    if cls is CalQLAgent:
        assert 0.05 < expected_info["calql_bound_rate"] < 0.95
        # the bound changes the answer: CQL on the same batch gives a different penalty
        cql = CQLAgent.create(cfg(**kw), OBS_DIM, ACT_DIM).replace(actor=agent.actor, critic=agent.critic)
        assert abs(np_cql_regularizer(cql, batch, qs, RK, lagrange)[0] - expected_penalty) > 1e-3


def test_cql_lagrange_multiplier_step_direction():
    """Dual CQL: lambda = softplus(raw) takes one Adam step per fused update (M = 2 critic
    steps here), up while the mean gap of those steps exceeds its target, down below it."""
    batch = stacked_batch(2)
    for target_gap, direction in ((-50.0, +1), (50.0, -1)):
        agent = perturb(CQLAgent.create(cfg(cql_lagrange=True, cql_target_action_gap=target_gap), OBS_DIM, ACT_DIM), seed=4)
        new, info = agent.update(batch)
        old_raw = float(agent.lagrange.params["raw_value"])
        new_raw = float(new.lagrange.params["raw_value"])
        close(math.log1p(math.exp(old_raw)), agent.config.cql_alpha_lagrange_init, rtol=1e-6)  # softplus, initial 1
        assert np.sign(float(info["cql_q_gap"]) - target_gap) == direction
        close(new_raw - old_raw, direction * agent.config.cql_alpha_lagrange_lr, rtol=5e-3, atol=0)
        close(info["cql_alpha_lagrange"], math.log1p(math.exp(new_raw)), rtol=1e-5)
        assert int(new.lagrange.step) == 1 and int(new.critic.step) == 2


# ---------------------------------------------------------------------------------------
# IQL


@pytest.fixture(scope="module")
def iql_agent():
    agent = perturb(IQLAgent.create(cfg(), OBS_DIM, ACT_DIM), seed=5)
    # Lift V so that it straddles the target Q on the test batches: Q - V takes both signs
    # and only some AWR weights hit the clip.
    params = jax.tree_util.tree_map(lambda x: x, agent.value.params)
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"] + 0.5
    return agent.replace(value=agent.value.replace(params=params))


def np_iql_target_q(agent, b, key):
    idx = np.asarray(jax.random.choice(key, E, (K,), replace=False))
    return ref.critic_ensemble(ref.to_np(agent.critic.target_params), b["observations"], b["actions"], indices=idx).min(0)


def test_iql_value_loss_matches_numpy(iql_agent):
    agent, c = iql_agent, iql_agent.config
    batch = make_batch(seed=3)
    b = npb(batch)
    new, info = iql_value_critic_fn(agent, batch)
    _, key = jax.random.split(agent.rng)
    q_t = np_iql_target_q(agent, b, key)
    v = ref.value_function(ref.to_np(agent.value.params), b["observations"])
    diff = q_t - v
    assert (diff > 0).any() and (diff < 0).any()  # both sides of the expectile are used
    weight = np.where(diff > 0, c.iql_expectile, 1 - c.iql_expectile)
    close(info["value_loss"], (weight * diff**2).mean())
    close(info["v_mean"], v.mean())
    # symmetric L2 would differ: the asymmetry is visible
    assert abs((weight * diff**2).mean() - 0.5 * (diff**2).mean()) > 1e-3
    # the critic bootstraps from the *updated* value network
    v_next = ref.value_function(ref.to_np(new.value.params), b["next_observations"])
    close(info["target_q"], (b["rewards"] + c.discount * (1 - b["terminals"]) * v_next).mean())
    assert int(new.value.step) == 1 and int(new.critic.step) == 1 and int(new.actor.step) == 0


def test_iql_awr_weights_and_actor_loss_match_numpy(iql_agent):
    agent, c = iql_agent, iql_agent.config
    batch = make_batch(seed=4)
    b = npb(batch)
    new, info = update_actor_fn(agent, batch)
    _, key = jax.random.split(agent.rng)
    adv = np_iql_target_q(agent, b, key) - ref.value_function(ref.to_np(agent.value.params), b["observations"])
    raw = np.exp(c.iql_awr_temperature * adv)
    weights = np.minimum(raw, c.iql_awr_max_weight)
    assert (raw > c.iql_awr_max_weight).any() and (raw < c.iql_awr_max_weight).any()  # clipping is active
    means, log_stds = ref.policy(ref.to_np(agent.actor.params), b["observations"], c.log_std_min, c.log_std_max)
    log_probs = ref.tanh_gaussian_log_prob(b["actions"], means, log_stds)
    close(info["advantage"], adv.mean())
    close(info["awr_weight"], weights.mean())
    close(info["log_prob_data"], log_probs.mean())
    close(info["actor_loss"], -(weights * log_probs).mean())
    assert int(new.actor.step) == 1


# ---------------------------------------------------------------------------------------
# gradients: Adam's first step is exactly -lr * g / (|g| + eps), so the sign of every
# parameter's step is the sign of its gradient. Compared with central finite differences of
# the numpy losses (float64), this checks the backward pass of the networks (including the
# gradient through the critic's action input that the actor loss needs).


def _flatten(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    shapes = [np.shape(x) for x in leaves]
    vec = np.concatenate([np.ravel(x) for x in leaves]).astype(np.float64)

    def unflatten(v):
        out, i = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            out.append(v[i : i + size].reshape(shape))
            i += size
        return jax.tree_util.tree_unflatten(treedef, out)

    return vec, unflatten


def _fd_grad(loss, vec, h=1e-6):
    g = np.zeros_like(vec)
    for i in range(vec.size):
        e = np.zeros_like(vec)
        e[i] = h
        g[i] = (loss(vec + e) - loss(vec - e)) / (2 * h)
    return g


def _check_adam_first_step(old_tree, new_tree, grad, lr, min_checked=0.6):
    old_vec, _ = _flatten(ref.to_np(old_tree))
    new_vec, _ = _flatten(ref.to_np(new_tree))
    step = new_vec - old_vec
    big = np.abs(grad) > 1e-4  # clear of float32 round-off in the gradient
    assert big.mean() >= min_checked, big.mean()
    np.testing.assert_array_equal(np.sign(step[big]), -np.sign(grad[big]))
    np.testing.assert_allclose(np.abs(step[big]), lr, rtol=2e-2)


@pytest.mark.parametrize("cls", [SACAgent, CQLAgent, CalQLAgent], ids=["sac", "cql", "calql"])
def test_critic_step_follows_numpy_gradient(cls):
    agent = perturb(cls.create(cfg(critic_lr=1e-3), OBS_DIM, ACT_DIM), seed=6)
    batch = make_batch(seed=5)
    b = npb(batch)
    if cls is CalQLAgent:
        qs0 = ref.critic_ensemble(ref.to_np(agent.critic.params), b["observations"], b["actions"])
        batch = dict(batch, mc_returns=jnp.asarray(qs0.mean(0), jnp.float32))
    _, k_actions, k_subsample, k_reg = jax.random.split(agent.rng, 4)
    y = np_critic_target(agent, batch, k_actions, k_subsample)
    vec, unflatten = _flatten(ref.to_np(agent.critic.params))

    def loss(v):
        params = unflatten(v)
        qs = ref.critic_ensemble(params, b["observations"], b["actions"])
        total = ((qs - y[None]) ** 2).mean()
        if cls is not SACAgent:
            total += np_cql_regularizer(agent, batch, qs, k_reg, critic_params=params)[0]
        return total

    new, _ = update_critic_fn(agent, batch)
    _check_adam_first_step(agent.critic.params, new.critic.params, _fd_grad(loss, vec), agent.config.critic_lr)


def test_actor_step_follows_numpy_gradient():
    agent = perturb(SACAgent.create(cfg(), OBS_DIM, ACT_DIM), seed=4)
    c = agent.config
    batch = make_batch(seed=1)
    obs = npb(batch)["observations"]
    _, key = jax.random.split(agent.rng)
    noise = normal(key, (B, ACT_DIM))
    critic_p = ref.to_np(agent.critic.params)
    alpha = alpha_of(agent)
    vec, unflatten = _flatten(ref.to_np(agent.actor.params))

    def loss(v):
        means, log_stds = ref.policy(unflatten(v), obs, c.log_std_min, c.log_std_max)
        actions, log_probs = ref.sample_tanh_gaussian(noise, means, log_stds)
        return (alpha * log_probs - ref.critic_ensemble(critic_p, obs, actions).min(0)).mean()

    grad = _fd_grad(loss, vec)
    new, _ = update_actor_fn(agent, batch)
    # fewer checked entries: clipped log-stds and dead ReLUs give zero gradients
    _check_adam_first_step(agent.actor.params, new.actor.params, grad, c.actor_lr, min_checked=0.4)
