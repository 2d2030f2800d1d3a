"""Forgetting diagnostics (learner/diagnostics.py): KL estimators against closed forms and
numpy, TD errors against the agents' own targets, the periodic diagnostics, the evaluation dip
and recovery, and evaluation videos."""

from __future__ import annotations

import dataclasses
import math
import os

# Headless MuJoCo rendering; mujoco reads this when it is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from learner import diagnostics as D  # noqa: E402
from learner.agents import IQLAgent, SACAgent  # noqa: E402
from learner.config import AgentConfig  # noqa: E402
from actor.networks import TanhGaussianPolicy  # noqa: E402
from learner.replay_buffer import ReplayBuffer  # noqa: E402

try:
    from tests import numpy_reference as ref
except ImportError:  # tests/ itself on sys.path (pytest's default rootdir insertion)
    import numpy_reference as ref

OBS_DIM, ACT_DIM, E, K = 3, 2, 4, 2
CFG = AgentConfig(
    critic_ensemble_size=E,
    critic_subsample_size=K,
    critic_hidden_dims=(5,),
    actor_hidden_dims=(4,),
    discount=0.9,
    critic_matmul_dtype="float32",  # the float64 reference checks the float32 math ("auto" may pick bf16)
    initial_temperature=0.37,
    log_std_min=-1.5,
    log_std_max=0.6,
    max_target_backup_num_actions=3,
)


def close(actual, expected, rtol=1e-4, atol=1e-4):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


def _random_like(tree, rs, scale):
    return jax.tree_util.tree_map(lambda p: jnp.asarray(rs.normal(0.0, scale, p.shape), jnp.float32), tree)


def perturb(agent, seed=0, log_std_gain=2.0):
    """Random parameters everywhere and a target critic different from the online one."""
    rs = np.random.RandomState(seed)
    actor_params = _random_like(agent.actor.params, rs, 0.6)
    actor_params["log_std"]["kernel"] = log_std_gain * actor_params["log_std"]["kernel"]
    critic = agent.critic.replace(
        params=_random_like(agent.critic.params, rs, 0.7), target_params=_random_like(agent.critic.params, rs, 0.7)
    )
    agent = agent.replace(actor=agent.actor.replace(params=actor_params), critic=critic)
    if hasattr(agent, "value"):
        agent = agent.replace(value=agent.value.replace(params=_random_like(agent.value.params, rs, 0.7)))
    return agent


def make_batch(n, seed=0):
    rs = np.random.RandomState(100 + seed)
    f = lambda *s: rs.uniform(-1.0, 1.0, s).astype(np.float32)  # noqa: E731
    return {
        "observations": f(n, OBS_DIM) * 1.5,
        "actions": f(n, ACT_DIM) * 0.9,
        "next_observations": f(n, OBS_DIM) * 1.5,
        "rewards": f(n) * 2.0,
        "terminals": (rs.uniform(size=n) < 0.3).astype(np.float32),
    }


def normal(key, shape):
    return np.asarray(jax.random.normal(key, shape, jnp.float32), np.float64)


def np_gaussian_kl(mp, sp, mq, sq):
    """Per-dimension closed form, summed, from means and standard deviations."""
    return np.sum(np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5, axis=-1)


def np_policy(agent_config, params, obs):
    return ref.policy(ref.to_np(params), np.asarray(obs, np.float64), agent_config.log_std_min, agent_config.log_std_max)


# ---- gaussian_kl -------------------------------------------------------------------------------


def test_gaussian_kl_one_dimensional_closed_form():
    # KL(N(0.3, 0.5^2) || N(-0.2, 1.3^2)) = log(1.3/0.5) + (0.5^2 + 0.5^2) / (2 * 1.3^2) - 1/2
    expected = math.log(1.3 / 0.5) + (0.25 + 0.25) / (2 * 1.69) - 0.5
    kl = D.gaussian_kl(jnp.array([0.3]), jnp.log(jnp.array([0.5])), jnp.array([-0.2]), jnp.log(jnp.array([1.3])))
    assert kl.shape == ()
    close(kl, expected, rtol=1e-6, atol=1e-6)
    # equal variances: the squared mean difference over 2 sigma^2
    close(D.gaussian_kl(jnp.array([1.0]), jnp.array([0.0]), jnp.array([3.0]), jnp.array([0.0])), 2.0, rtol=1e-6)
    # equal means: log(s_q/s_p) + s_p^2 / (2 s_q^2) - 1/2
    close(D.gaussian_kl(jnp.zeros(1), jnp.log(jnp.ones(1) * 2.0), jnp.zeros(1), jnp.zeros(1)), 0.5 * 4 - 0.5 - math.log(2.0), rtol=1e-6)


def test_gaussian_kl_diagonal_sums_dimensions_and_is_asymmetric():
    rs = np.random.RandomState(0)
    mp, mq = rs.normal(size=(5, 3)), rs.normal(size=(5, 3))
    sp, sq = np.exp(rs.normal(0, 0.5, (5, 3))), np.exp(rs.normal(0, 0.5, (5, 3)))
    f = lambda *a: D.gaussian_kl(*(jnp.asarray(x, jnp.float32) for x in a))  # noqa: E731
    kl = f(mp, np.log(sp), mq, np.log(sq))
    assert kl.shape == (5,)
    close(kl, np_gaussian_kl(mp, sp, mq, sq), rtol=1e-5, atol=1e-6)
    # the sum of the per-dimension 1-D divergences (independent dimensions)
    per_dim = [f(mp[:, d : d + 1], np.log(sp[:, d : d + 1]), mq[:, d : d + 1], np.log(sq[:, d : d + 1])) for d in range(3)]
    close(kl, np.sum(per_dim, axis=0), rtol=1e-5, atol=1e-6)
    # KL(p || p) = 0, KL >= 0, and KL(p || q) != KL(q || p)
    np.testing.assert_array_equal(np.asarray(f(mp, np.log(sp), mp, np.log(sp))), 0.0)
    assert (np.asarray(kl) > 0).all()
    reverse = f(mq, np.log(sq), mp, np.log(sp))
    close(reverse, np_gaussian_kl(mq, sq, mp, sp), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(kl) - np.asarray(reverse)).min() > 1e-3


# ---- policy KL ---------------------------------------------------------------------------------


def constant_policy_params(means, stds, obs_dim=OBS_DIM, hidden=4):
    """Parameters of a TanhGaussianPolicy whose Gaussian is N(means, stds^2) in every state."""
    module = TanhGaussianPolicy(action_dim=len(means), hidden_dims=(hidden,), log_std_min=-5.0, log_std_max=2.0)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, obs_dim)))["params"]
    params = jax.tree_util.tree_map(lambda x: x, params)
    params["mean"] = {"kernel": jnp.zeros_like(params["mean"]["kernel"]), "bias": jnp.asarray(means, jnp.float32)}
    params["log_std"] = {
        "kernel": jnp.zeros_like(params["log_std"]["kernel"]),
        "bias": jnp.log(jnp.asarray(stds, jnp.float32)),
    }
    return module, params


def test_policy_kl_identical_params_is_zero_and_matches_numpy_on_a_random_actor():
    a = perturb(SACAgent.create(CFG, OBS_DIM, ACT_DIM), seed=1)
    b = perturb(SACAgent.create(CFG, OBS_DIM, ACT_DIM), seed=2)
    # log-stds pushed past both ends of [log_std_min, log_std_max]: the clip is exercised
    params = jax.tree_util.tree_map(lambda x: x, a.actor.params)
    params["log_std"]["bias"] = params["log_std"]["bias"] + jnp.array([0.8, -1.2])
    a = a.replace(actor=a.actor.replace(params=params))
    obs = jnp.asarray(make_batch(16)["observations"])
    apply = a.actor.apply_fn
    np.testing.assert_array_equal(np.asarray(D.policy_kl(apply, a.actor.params, a.actor.params, obs)), 0.0)
    kl = D.policy_kl(apply, a.actor.params, b.actor.params, obs)
    assert kl.shape == (16,)
    mp, lp = np_policy(CFG, a.actor.params, obs)
    mq, lq = np_policy(CFG, b.actor.params, obs)
    assert (lp == CFG.log_std_max).any() and (lp == CFG.log_std_min).any()
    close(kl, np_gaussian_kl(mp, np.exp(lp), mq, np.exp(lq)), rtol=1e-4, atol=1e-5)


def test_policy_kl_known_gaussians_closed_form_and_monte_carlo_on_tanh_samples():
    mp, sp = np.array([0.4, -0.3]), np.array([0.5, 0.8])
    mq, sq = np.array([0.1, 0.2]), np.array([0.7, 0.6])
    module, pre = constant_policy_params(mp, sp)
    _, cur = constant_policy_params(mq, sq)
    obs = jnp.asarray(make_batch(3)["observations"])
    exact = np_gaussian_kl(mp, sp, mq, sq)
    kl = D.policy_kl(module.apply, pre, cur, obs)
    close(kl, np.full(3, exact), rtol=1e-5, atol=1e-6)

    # The bijection argument, checked independently in float64: sample u ~ N_p, a = tanh(u),
    # and average log pi_p(a) - log pi_q(a) with the tanh-Gaussian densities of the squashed
    # actions (Jacobian terms included, evaluated through atanh(a)).
    rs = np.random.RandomState(0)
    u = mp + sp * rs.normal(size=(200_000, 2))
    a = np.tanh(u)
    ratio = ref.tanh_gaussian_log_prob(a, mp, np.log(sp)) - ref.tanh_gaussian_log_prob(a, mq, np.log(sq))
    stderr = ratio.std() / math.sqrt(len(ratio))
    assert abs(ratio.mean() - exact) < 4 * stderr
    # ... and the squashed densities differ from the Gaussian ones: the agreement is not trivial.
    gaussian_log_p = (-0.5 * ((u[:10] - mp) / sp) ** 2 - np.log(sp) - 0.5 * np.log(2 * np.pi)).sum(-1)
    assert np.abs(ref.tanh_gaussian_log_prob(a[:10], mp, np.log(sp)) - gaussian_log_p).min() > 1e-3

    # The jax Monte-Carlo estimator (float32) agrees too, per state.
    mc = D.monte_carlo_policy_kl(module.apply, pre, cur, obs, jax.random.PRNGKey(3), num_samples=50_000)
    assert mc.shape == (3,)
    close(mc, np.full(3, exact), rtol=0, atol=0.02)


# ---- softmax-Q KL ------------------------------------------------------------------------------


def np_softmax_kl(qp, qq, t=1.0):
    lp = qp / t - ref.logsumexp(qp / t)[..., None]
    lq = qq / t - ref.logsumexp(qq / t)[..., None]
    return (np.exp(lp) * (lp - lq)).sum(-1)


def test_q_softmax_kl_matches_numpy_and_is_shift_invariant():
    q_pre = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 0.0]])
    q = np.array([[0.5, 2.5, 0.0, -0.5], [1.0, -1.0, 0.0, 2.0], [3.0, -2.0, 1.0, 0.0]])
    # one row by hand: softmax([0, 0, 0, 0]) is uniform, so KL = sum_j 1/4 log((1/4) / q_j)
    qq = np.exp(q[1]) / np.exp(q[1]).sum()
    by_hand = np.sum(0.25 * np.log(0.25 / qq))
    kl = D.q_softmax_kl(jnp.asarray(q_pre), jnp.asarray(q))
    assert kl.shape == (3,)
    close(kl, np_softmax_kl(q_pre, q), rtol=1e-5, atol=1e-6)
    close(kl[1], by_hand, rtol=1e-5)
    close(kl[2], 0.0, atol=1e-6)  # identical rows
    np.testing.assert_allclose(np.asarray(D.q_softmax_kl(jnp.asarray(q), jnp.asarray(q))), 0.0, atol=1e-6)
    shift = np.array([[10.0], [-3.0], [100.0]])
    close(D.q_softmax_kl(jnp.asarray(q_pre + shift), jnp.asarray(q - 2 * shift)), kl, rtol=1e-4, atol=1e-5)
    close(D.q_softmax_kl(jnp.asarray(q_pre), jnp.asarray(q), temperature=2.0), np_softmax_kl(q_pre, q, 2.0), rtol=1e-5, atol=1e-6)
    assert abs(float(D.q_softmax_kl(jnp.asarray(q), jnp.asarray(q_pre))[0]) - float(kl[0])) > 1e-4  # asymmetric


# ---- TD errors ---------------------------------------------------------------------------------


def np_sac_target(agent, b, rng):
    """numpy recomputation of SAC's TD target with the keys `td_target` derives from rng."""
    c = agent.config
    _, action_rng, subsample_rng, _ = jax.random.split(rng, 4)
    n = c.max_target_backup_num_actions if c.max_target_backup == "sampled_actions" else 1
    size, obs_dim = b["observations"].shape
    next_obs = np.broadcast_to(b["next_observations"][:, None], (size, n, obs_dim)).astype(np.float64)
    means, log_stds = np_policy(c, agent.actor.params, next_obs)
    actions, log_probs = ref.sample_tanh_gaussian(normal(action_rng, (size, n, agent.action_dim)), means, log_stds)
    idx = np.asarray(jax.random.choice(subsample_rng, c.critic_ensemble_size, (c.critic_subsample_size,), replace=False))
    q = ref.critic_ensemble(ref.to_np(agent.critic.target_params), next_obs, actions, indices=idx).min(0)
    best = q.argmax(-1)
    value = q[np.arange(size), best]
    if c.backup_entropy:
        alpha = math.exp(float(agent.temperature.params["log_value"]))
        value = value - alpha * log_probs[np.arange(size), best]
    return b["rewards"] + c.discount * (1.0 - b["terminals"]) * value


def np_q(agent, params, obs, actions):
    return ref.critic_ensemble(ref.to_np(params), np.asarray(obs, np.float64), np.asarray(actions, np.float64))


@pytest.mark.parametrize("kw", [dict(backup_entropy=True), dict(max_target_backup="sampled_actions")])
def test_td_errors_match_numpy_and_the_agents_critic_loss(kw):
    agent = perturb(SACAgent.create(dataclasses.replace(CFG, **kw), OBS_DIM, ACT_DIM), seed=3)
    batch = make_batch(8)
    assert 0 < batch["terminals"].sum() < 8
    rng = jax.random.PRNGKey(7)
    td = D.td_errors(agent, batch, rng)
    assert td.shape == (E, 8)
    expected = np_q(agent, agent.critic.params, batch["observations"], batch["actions"]) - np_sac_target(agent, batch, rng)[None]
    close(td, expected)
    close(D.mean_q(agent, batch), np_q(agent, agent.critic.params, batch["observations"], batch["actions"]).mean())
    if "backup_entropy" in kw:
        # with the agent's own key: exactly the TD loss its next critic update reports
        _, info = jax.jit(lambda a, b: a.update_critic(b))(agent, {k: jnp.asarray(v) for k, v in batch.items()})
        close(jnp.mean(D.td_errors(agent, batch, agent.rng) ** 2), info["critic_loss"], rtol=1e-5, atol=1e-6)


def test_td_errors_iql_bootstraps_from_the_value_network():
    agent = perturb(IQLAgent.create(CFG, OBS_DIM, ACT_DIM), seed=4)
    batch = make_batch(8, seed=1)
    td = D.td_errors(agent, batch, jax.random.PRNGKey(0))
    v_next = ref.value_function(ref.to_np(agent.value.params), batch["next_observations"].astype(np.float64))
    y = batch["rewards"] + CFG.discount * (1.0 - batch["terminals"]) * v_next
    close(td, np_q(agent, agent.critic.params, batch["observations"], batch["actions"]) - y[None])


# ---- ForgettingDiagnostics ---------------------------------------------------------------------


def np_state_diagnostics(agent, pre_actor, pre_critic, batch, rng, n):
    """numpy recomputation of one distribution's diagnostics (same keys as the jax code)."""
    k_td, k_pre, k_cur = jax.random.split(rng, 3)
    b = {k: np.asarray(v, np.float64) for k, v in batch.items()}
    size, obs_dim = b["observations"].shape
    act_dim = b["actions"].shape[1]
    qs = np_q(agent, agent.critic.params, b["observations"], b["actions"])
    td = qs - np_sac_target(agent, b, k_td)[None]
    mp, lp = np_policy(agent.config, pre_actor, b["observations"])
    mq, lq = np_policy(agent.config, agent.actor.params, b["observations"])
    half = n // 2
    a_pre, _ = ref.sample_tanh_gaussian(normal(k_pre, (size, half, act_dim)), mp[:, None], lp[:, None])
    a_cur, _ = ref.sample_tanh_gaussian(normal(k_cur, (size, n - half, act_dim)), mq[:, None], lq[:, None])
    actions = np.concatenate([a_pre, a_cur], axis=1)
    states = np.broadcast_to(b["observations"][:, None], (size, n, obs_dim))
    q_pre = np_q(agent, pre_critic, states, actions).mean(0)
    q_cur = np_q(agent, agent.critic.params, states, actions).mean(0)
    return {
        "q_mean": qs.mean(),
        "td_error": (td**2).mean(),
        "kl_policy": np_gaussian_kl(mp, np.exp(lp), mq, np.exp(lq)).mean(),
        "kl_q_softmax": np_softmax_kl(q_pre, q_cur).mean(),
    }


def test_state_diagnostics_match_numpy_in_chunks():
    """150 states x 4 actions: the softmax-Q KL is evaluated in chunks of states (the
    unchunked path is checked against numpy in the ForgettingDiagnostics test)."""
    pre = perturb(SACAgent.create(CFG, OBS_DIM, ACT_DIM), seed=5)
    agent = perturb(SACAgent.create(CFG, OBS_DIM, ACT_DIM), seed=6)
    num_states = 150
    assert 1 < D._chunk_size(num_states, 4) < num_states
    batch = {k: jnp.asarray(v) for k, v in make_batch(num_states, seed=2).items()}
    rng = jax.random.PRNGKey(9)
    pretrained = {"actor": pre.actor.params, "critic": pre.critic.params, "encoder": None}
    out = D._state_diagnostics(agent, pretrained, batch, rng, num_actions=4)
    expected = np_state_diagnostics(agent, pre.actor.params, pre.critic.params, batch, rng, 4)
    for key, value in expected.items():
        close(out[key], value, rtol=1e-4, atol=1e-5)
        assert abs(value) > 1e-3  # non-trivial: the two agents differ


def _restored_pointmass_agent(tmp_path):
    from learner.checkpoint import read_checkpoint, restore_agent, save_checkpoint
    from tests.conftest import tiny_config
    from envs.tasks import get_task

    config = tiny_config()
    # float32 critic matmuls: the tests compare with the float64 reference ("auto" may pick bf16)
    config = dataclasses.replace(config, agent=dataclasses.replace(config.agent, critic_matmul_dtype="float32"))
    task = get_task(config.task)
    spec = task.spec()
    trained = perturb(SACAgent.create(config.agent, spec["observation_dim"], spec["action_dim"], 0), seed=8, log_std_gain=0.3)
    save_checkpoint(tmp_path / "pre.ckpt", trained, config, spec)
    agent = restore_agent(read_checkpoint(tmp_path / "pre.ckpt"), "sac", config.agent, spec, seed=1)
    return config, task, spec, agent


def test_forgetting_diagnostics_on_a_freshly_restored_agent(tmp_path):
    config, task, spec, agent = _restored_pointmass_agent(tmp_path)
    dataset = task.training_rewards(task.builtin_dataset(3, 0))
    diag = D.ForgettingDiagnostics.from_agent(agent, dataset, num_states=32, num_actions=4, seed=0)
    replay = ReplayBuffer(100, spec["observation_dim"], spec["action_dim"])

    empty = diag.compute(agent, replay)
    assert tuple(empty) == D.DIAGNOSTIC_KEYS == D.ForgettingDiagnostics.keys
    assert all(isinstance(v, float) for v in empty.values())
    for key in ("online_q_mean", "online_td_error", "kl_policy_online", "kl_q_softmax_online"):
        assert math.isnan(empty[key])
    assert empty["kl_policy_offline"] == 0.0 and abs(empty["kl_q_softmax_offline"]) < 1e-6
    assert math.isfinite(empty["offline_q_mean"]) and math.isfinite(empty["offline_td_error"])
    assert empty["offline_td_error"] > 0
    close(empty["offline_q_mean"], np_q(agent, agent.critic.params, diag.offline_batch["observations"], diag.offline_batch["actions"]).mean())
    assert math.isnan(diag.compute(agent, None)["online_q_mean"])

    rs = np.random.RandomState(0)
    for i in range(20):
        replay.add(rs.uniform(-1, 1, 2), rs.uniform(-1, 1, 2), 0.0, rs.uniform(-1, 1, 2), i == 19)
    full = diag.compute(agent, replay)
    assert all(math.isfinite(v) for v in full.values())
    assert full["kl_policy_online"] == 0.0 and abs(full["kl_q_softmax_online"]) < 1e-6

    # Fine-tuned (here: nudged) networks move away from the frozen pre-trained copies.
    rs = np.random.RandomState(1)
    nudge = lambda tree: jax.tree_util.tree_map(lambda p: p + jnp.asarray(rs.normal(0, 0.05, p.shape), p.dtype), tree)  # noqa: E731
    tuned = agent.replace(
        actor=agent.actor.replace(params=nudge(agent.actor.params)), critic=agent.critic.replace(params=nudge(agent.critic.params))
    )
    moved = diag.compute(tuned, replay)
    for key in ("kl_policy_offline", "kl_policy_online", "kl_q_softmax_offline", "kl_q_softmax_online"):
        assert moved[key] > 0, key
    assert diag.compute(agent, replay)["kl_policy_offline"] == 0.0

    # The offline values against numpy (a fresh instance: its first key is split(PRNGKey(seed))[1]).
    fresh = D.ForgettingDiagnostics.from_agent(agent, dataset, num_states=32, num_actions=4, seed=0)
    assert D._chunk_size(32, 4) == 32
    values = fresh.compute(tuned, None)
    expected = np_state_diagnostics(
        tuned, agent.actor.params, agent.critic.params, fresh.offline_batch, jax.random.split(jax.random.PRNGKey(0))[1], 4
    )
    for key, value in expected.items():
        close(values[f"offline_{key}" if key in ("q_mean", "td_error") else f"{key}_offline"], value, rtol=1e-4, atol=1e-5)


def test_held_out_sample_and_argument_checks():
    data = make_batch(50)
    sample = D.held_out_sample(data, 20, seed=1, exclude=np.arange(25))
    assert len(sample["rewards"]) == 20
    rows = {tuple(o) for o in data["observations"][25:].tolist()}
    assert all(tuple(o) in rows for o in sample["observations"].tolist())
    assert len(D.held_out_sample(data, 500)["rewards"]) == 50
    buffer = ReplayBuffer(10, OBS_DIM, ACT_DIM)
    for i in range(4):
        buffer.add(data["observations"][i], data["actions"][i], 1.0, data["next_observations"][i], False)
    assert len(D.held_out_sample(buffer, 8)["rewards"]) == 4
    agent = SACAgent.create(CFG, OBS_DIM, ACT_DIM)
    with pytest.raises(ValueError, match="num_actions"):
        D.ForgettingDiagnostics.from_agent(agent, data, num_actions=1)


# ---- dip and recovery --------------------------------------------------------------------------


def test_dip_then_recovery():
    steps = [0, 1000, 2000, 3000, 4000, 5000, 6000]
    scores = [50, 55, 30, 20, 45, 50, 70]
    r = D.dip_and_recovery(steps, scores, pretrained_score=50, warmup_steps=1000)
    assert r["dip"] == -30 and r["dip_step"] == 3000 and r["recovery_step"] == 5000
    assert r["min_score"] == 20 and r["pretrained_score"] == 50
    # pretrained_score None: the earliest evaluation; unsorted input is sorted
    order = [3, 0, 6, 1, 5, 2, 4]
    r2 = D.dip_and_recovery([steps[i] for i in order], [scores[i] for i in order], None, 1000)
    assert (r2["dip"], r2["dip_step"], r2["recovery_step"]) == (-30, 3000, 5000)


def test_no_dip_never_recovers_and_warmup_ignored():
    steps = [0, 500, 1000, 1500, 2000]
    # no dip: every evaluation after warmup is at or above the pre-trained level
    r = D.dip_and_recovery(steps, [10, 0, 0, 12, 15], 10, warmup_steps=1000)
    assert r["dip"] == 2 and r["dip_step"] == 1500 and r["recovery_step"] == 1500
    # the evaluations at steps <= warmup (score 0) are ignored; never back to 10
    r = D.dip_and_recovery(steps, [10, 0, 0, 5, 9], 10, warmup_steps=1000)
    assert r["dip"] == -5 and r["dip_step"] == 1500 and r["recovery_step"] is None
    # nothing after warmup
    r = D.dip_and_recovery(steps, [10, 0, 0, 5, 9], 10, warmup_steps=2000)
    assert math.isnan(r["dip"]) and r["dip_step"] is None and r["recovery_step"] is None
    with pytest.raises(ValueError, match="shapes"):
        D.dip_and_recovery([0, 1], [1.0], 1.0, 0)


# ---- evaluation videos -------------------------------------------------------------------------


def _skip_unless_renders(fn):
    try:
        return fn()
    except D.RenderUnavailable as e:
        pytest.skip(f"MuJoCo rgb_array rendering unavailable here: {e}")


def test_record_episode_video_from_an_env(tmp_path):
    gym = pytest.importorskip("gymnasium")
    try:
        env = gym.make("Hopper-v5", render_mode="rgb_array", width=64, height=48)
    except Exception as e:  # mujoco missing
        pytest.skip(f"Hopper-v5 unavailable: {type(e).__name__}: {e}")
    try:
        zero = lambda obs: np.zeros(3, np.float32)  # noqa: E731
        out = _skip_unless_renders(lambda: D.record_episode_video(zero, env, tmp_path / "ep.mp4", seed=0, max_steps=5, video_format="npz"))
        assert out["path"].endswith(".npz") and out["length"] == 5 and out["frames"] == 6
        saved = np.load(out["path"])
        frames = saved["frames"]
        assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8 and frames.std() > 0
        assert float(saved["fps"]) > 0
        gif = D.record_episode_video(zero, env, tmp_path / "ep", seed=0, max_steps=3, video_format="gif", frame_every=2)
        assert gif["path"].endswith(".gif") and os.path.getsize(gif["path"]) > 0 and gif["frames"] == 3
        auto = D.record_episode_video(zero, env, tmp_path / "auto.mp4", seed=0, max_steps=2)
        assert auto["path"].endswith((".mp4", ".npz")) and os.path.getsize(auto["path"]) > 0
    finally:
        env.close()


def test_record_episode_video_from_a_task(tmp_path):
    from envs.tasks import get_task

    task = get_task("hopper-medium")
    try:
        task.spec()
    except Exception as e:
        pytest.skip(f"hopper task unavailable: {type(e).__name__}: {e}")
    out = _skip_unless_renders(
        lambda: D.record_episode_video(lambda o: np.zeros(3), task, tmp_path / "hop", seed=1, max_steps=2, video_format="npz")
    )
    frames = np.load(out["path"])["frames"]
    assert frames.shape[0] == 3 and frames.ndim == 4 and frames.shape[-1] == 3 and frames.std() > 0
    # the built-in point-mass room has no renderer: a clear error, not a silent empty video
    with pytest.raises(D.RenderUnavailable, match="no MuJoCo renderer"):
        D.record_episode_video(lambda o: np.zeros(2), get_task("pointmass-goal"), tmp_path / "pm", max_steps=2)
