"""The places where the defaults follow the reference implementation (docs/fidelity.md):
each pinned on a small case worked out by hand or in float64 numpy, never against the
reference's code (it is not a dependency)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from learner.agents import CQLAgent, SACAgent
from learner.checkpoint import Checkpoint, restore_agent
from learner.config import AgentConfig, load_config
from actor.networks import TanhGaussianPolicy
from learner.networks import CriticEnsemble, LagrangeMultiplier, inverse_softplus

FAMILIES = ("pointmass", "pointmaze", "locomotion", "antmaze", "kitchen", "adroit")


# ---- the config defaults ------------------------------------------------------------------


def test_std_parameterization_per_family_as_the_reference():
    # the reference's antmaze configs use the state-independent std, adroit's the exp head
    for variant in ("wsrl", "calql", "cql"):
        assert load_config("antmaze", variant).agent.std_parameterization == "uniform"
        assert load_config("adroit", variant).agent.std_parameterization == "exp"
        assert load_config("kitchen", variant).agent.std_parameterization == "exp"
        assert load_config("locomotion", variant).agent.std_parameterization == "exp"


def test_antmaze_uses_the_reference_lagrange_form():
    a = load_config("antmaze", "wsrl").agent
    assert a.cql_lagrange and a.cql_target_action_gap == 0.8
    assert a.cql_alpha_lagrange_init == 1.0 and not a.cql_lagrange_times_alpha
    assert load_config("antmaze", "wsrl", ["agent.cql_lagrange_times_alpha=true"]).agent.cql_lagrange_times_alpha


def test_every_family_pretrains_cql_with_the_max_target_backup_and_subsampled_penalty():
    for family in FAMILIES:
        for variant in ("wsrl", "calql", "cql", "wsrl_from_cql"):
            a = load_config(family, variant).agent
            assert a.cql_max_target_backup == "sampled_actions", (family, variant)
            assert a.max_target_backup_num_actions == 10
            assert a.cql_penalty_critics == "subsample"
            assert a.cql_clip_diff_min is None and a.cql_clip_diff_max is None
            assert a.kernel_init == "orthogonal"
    # SAC fine-tuning keeps its own setting: the max backup on antmaze only
    assert load_config("antmaze", "wsrl").agent.max_target_backup == "sampled_actions"
    assert load_config("locomotion", "wsrl").agent.max_target_backup == "none"
    # the reference's kitchen: no importance weights in the soft-max, no small last-layer gain
    kitchen = load_config("kitchen", "wsrl").agent
    assert not kitchen.cql_importance_sample and kitchen.kernel_scale_final is None
    assert load_config("adroit", "wsrl").agent.kernel_scale_final == 1e-2


def test_clip_bounds_are_validated():
    from learner.config import ConfigError

    with pytest.raises(ConfigError, match="'agent.cql_clip_diff_min': got 2.0, expected a number < agent.cql_clip_diff_max=1.0"):
        load_config("pointmass", "wsrl", ["agent.cql_clip_diff_min=2", "agent.cql_clip_diff_max=1"])
    assert load_config("pointmass", "wsrl", ["agent.cql_clip_diff_max=.inf"]).agent.cql_clip_diff_max == math.inf


# ---- initialization ------------------------------------------------------------------------


def _gram(kernel):
    """K^T K when K has at least as many rows as columns, else K K^T (orthogonal: gain^2 I)."""
    k = np.asarray(kernel, np.float64)
    return k.T @ k if k.shape[0] >= k.shape[1] else k @ k.T


def _assert_orthogonal(kernel, gain):
    g = _gram(kernel)
    np.testing.assert_allclose(g, gain**2 * np.eye(g.shape[0]), rtol=0, atol=1e-5 * max(gain**2, 1e-4) + 1e-9)


def test_orthogonal_init_with_small_last_hidden_layer():
    """Orthogonal kernels of gain sqrt(2) everywhere but the trunk's last hidden layer (gain
    kernel_scale_final), zero biases: critic ensemble (every critic) and policy heads."""
    obs, act = jnp.zeros((1, 5)), jnp.zeros((1, 3))
    params = CriticEnsemble(3, (16, 8), True, "float32", "orthogonal", 1e-2).init(jax.random.PRNGKey(0), obs, act)["params"]
    mlp = params["critics"]["MLP_0"]
    for i in range(3):
        _assert_orthogonal(mlp["Dense_0"]["kernel"][i], math.sqrt(2.0))  # (8, 16): rows orthogonal
        _assert_orthogonal(mlp["Dense_1"]["kernel"][i], 1e-2)  # the last hidden layer
        _assert_orthogonal(params["critics"]["Dense_0"]["kernel"][i], math.sqrt(2.0))  # output (8, 1)
        assert not np.any(np.asarray(mlp["Dense_0"]["bias"][i]))
    # the critics are initialized independently
    assert np.abs(np.asarray(mlp["Dense_0"]["kernel"][0] - mlp["Dense_0"]["kernel"][1])).max() > 0.1

    policy = TanhGaussianPolicy(action_dim=3, hidden_dims=(16, 8), kernel_scale_final=1e-2).init(jax.random.PRNGKey(1), obs)["params"]
    _assert_orthogonal(policy["MLP_0"]["Dense_0"]["kernel"], math.sqrt(2.0))
    _assert_orthogonal(policy["MLP_0"]["Dense_1"]["kernel"], 1e-2)
    _assert_orthogonal(policy["mean"]["kernel"], math.sqrt(2.0))
    _assert_orthogonal(policy["log_std"]["kernel"], math.sqrt(2.0))
    # no kernel_scale_final (kitchen): the last hidden layer keeps gain sqrt(2)
    plain = TanhGaussianPolicy(action_dim=3, hidden_dims=(16, 8), kernel_scale_final=None).init(jax.random.PRNGKey(1), obs)["params"]
    _assert_orthogonal(plain["MLP_0"]["Dense_1"]["kernel"], math.sqrt(2.0))


def test_xavier_uniform_option():
    obs = jnp.zeros((1, 5))
    p = TanhGaussianPolicy(action_dim=3, hidden_dims=(16,), kernel_scale_final=None, kernel_init="xavier_uniform").init(
        jax.random.PRNGKey(0), obs
    )["params"]
    k = np.asarray(p["MLP_0"]["Dense_0"]["kernel"])
    bound = math.sqrt(6.0 / (5 + 16))  # Glorot uniform limit
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.7 * bound
    assert np.abs(_gram(k) - 2.0 * np.eye(5)).max() > 0.1  # not orthogonal


# ---- CQL max target backup -------------------------------------------------------------------


def _cfg(**kw):
    base = AgentConfig(
        critic_ensemble_size=4, critic_subsample_size=2, critic_hidden_dims=(5,), actor_hidden_dims=(4,),
        critic_matmul_dtype="float32", max_target_backup_num_actions=3, cql_num_actions=3,
    )
    return dataclasses.replace(base, **kw)


def _batch(n=6, seed=0):
    rs = np.random.RandomState(seed)
    f = lambda *s: jnp.asarray(rs.uniform(-1, 1, s), jnp.float32)  # noqa: E731
    return {"observations": f(n, 3), "actions": f(n, 2) * 0.9, "next_observations": f(n, 3), "rewards": f(n),
            "terminals": jnp.zeros((n,), jnp.float32), "mc_returns": f(n)}


def _perturbed(agent, seed=0):
    rs = np.random.RandomState(seed)
    rnd = lambda t: jax.tree_util.tree_map(lambda p: jnp.asarray(rs.normal(0, 0.7, p.shape), jnp.float32), t)  # noqa: E731
    critic = agent.critic.replace(params=rnd(agent.critic.params), target_params=rnd(agent.critic.params))
    return agent.replace(actor=agent.actor.replace(params=rnd(agent.actor.params)), critic=critic)


def test_cql_target_is_the_max_over_sampled_actions_and_sac_keeps_its_own():
    """With the same networks, CQL's target (cql_max_target_backup: sampled_actions) equals
    SAC's with max_target_backup: sampled_actions, and differs from the single-action one."""
    cfg = _cfg()
    cql = _perturbed(CQLAgent.create(cfg, 3, 2))
    sac = SACAgent.create(cfg, 3, 2).replace(actor=cql.actor, critic=cql.critic)
    sac_max = sac.replace(config=dataclasses.replace(cfg, max_target_backup="sampled_actions"))
    cql_none = cql.replace(config=dataclasses.replace(cfg, cql_max_target_backup="none"))
    batch, ka, ks = _batch(), jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    y_cql = np.asarray(cql.critic_target(batch, ka, ks)[0])
    np.testing.assert_allclose(y_cql, np.asarray(sac_max.critic_target(batch, ka, ks)[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cql_none.critic_target(batch, ka, ks)[0]), np.asarray(sac.critic_target(batch, ka, ks)[0]), rtol=1e-6)
    # the max over 3 sampled next actions is above the single-sample target on average
    assert y_cql.mean() > np.asarray(sac.critic_target(batch, ka, ks)[0]).mean() + 1e-3


# ---- CQL penalty on the sub-sampled critics ---------------------------------------------------


@pytest.mark.parametrize("which, expected_count", [("subsample", 2), ("all", 4)])
def test_cql_penalty_reaches_only_the_subsampled_critics(which, expected_count):
    """The penalty's gradient is non-zero on exactly the drawn critics (the 2 of
    critic_subsample_indices(k_subsample), 4-way split of the regularizer key) or on all."""
    agent = _perturbed(CQLAgent.create(_cfg(cql_penalty_critics=which), 3, 2))
    batch, rng = _batch(), jax.random.PRNGKey(5)

    def penalty(params):
        qs = agent.critic.apply_fn({"params": params}, batch["observations"], batch["actions"])
        return agent.critic_regularizer(params, batch, qs, rng)[0]

    grads = jax.grad(penalty)(agent.critic.params)
    per_critic = np.asarray(sum(jnp.abs(g).reshape(g.shape[0], -1).sum(1) for g in jax.tree_util.tree_leaves(grads)))
    touched = np.flatnonzero(per_critic > 0)
    assert len(touched) == expected_count
    if which == "subsample":
        k_subsample = jax.random.split(rng, 4)[3]
        drawn = np.sort(np.asarray(jax.random.choice(k_subsample, 4, (2,), replace=False)))
        np.testing.assert_array_equal(touched, drawn)


def test_cql_penalty_on_two_critics_by_hand():
    """Gap values of 4 critics on 2 states; the penalty is the mean over the 2 drawn critics
    only: alpha * mean(gap[idx]) (with the Lagrange form lambda * (mean(gap[idx]) - 0.8))."""
    from learner import losses

    gap = np.array([[1.0, 3.0], [10.0, 20.0], [-1.0, 1.0], [100.0, 0.0]])
    idx = np.array([2, 0])
    sub = jnp.asarray(gap[idx])
    # (-1 + 1 + 1 + 3) / 4 = 1 -> alpha 5 -> 5; all four critics would give 5 * 16.75
    np.testing.assert_allclose(float(losses.cql_penalty(sub, 5.0)), 5.0, rtol=1e-6)
    np.testing.assert_allclose(float(losses.cql_penalty(jnp.asarray(gap), 5.0)), 5.0 * 134.0 / 8.0, rtol=1e-6)
    np.testing.assert_allclose(float(losses.cql_penalty(sub, 5.0, jnp.asarray(1.0), 0.8)), 0.2, rtol=1e-6)


# ---- the Lagrange multiplier ------------------------------------------------------------------


def test_lagrange_multiplier_is_softplus_parameterized():
    params = LagrangeMultiplier(1.0).init(jax.random.PRNGKey(0))["params"]
    raw = float(params["raw_value"])
    np.testing.assert_allclose(raw, math.log(math.e - 1.0), rtol=1e-6)  # softplus^-1(1)
    np.testing.assert_allclose(float(LagrangeMultiplier(1.0).apply({"params": params})), 1.0, rtol=1e-6)
    # softplus(raw + 3e-4), the value after one Adam step up from lambda = 1
    np.testing.assert_allclose(math.log1p(math.exp(raw + 3e-4)), 1.0 + 3e-4 * (1.0 - 1.0 / math.e), rtol=1e-6)
    for v in (0.01, 2.5, 40.0):
        np.testing.assert_allclose(math.log1p(math.exp(inverse_softplus(v))), v, rtol=1e-9)


def test_checkpoint_with_a_log_parameterized_lagrange_multiplier_loads():
    """Checkpoints written before the softplus parameterization hold log(lambda)."""
    config = load_config("antmaze", "calql", ["agent.critic_hidden_dims=[8]", "agent.actor_hidden_dims=[8]"])
    agent = CQLAgent.create(config.agent, 3, 2)
    state = serialization.to_state_dict(agent)
    state["lagrange"] = {**state["lagrange"], "step": np.asarray(7, np.int32), "params": {"log_value": np.asarray(math.log(2.5), np.float32)}}
    checkpoint = Checkpoint("calql", config, {"observation_dim": 3, "action_dim": 2}, {}, state)
    restored = restore_agent(checkpoint)
    np.testing.assert_allclose(float(restored.lagrange_value()), 2.5, rtol=1e-5)
    assert int(restored.lagrange.step) == 7


# ---- the eight antmazes: antmaze-ultra ---------------------------------------------------------


def test_ultra_antmazes_use_jiang_et_al_s_map_and_the_antmaze_conventions():
    from envs import d4rl_envs, maze_data
    from envs.tasks import get_task

    layout = d4rl_envs.MAZE_LAYOUTS["ultra"]
    assert (len(layout), len(layout[0])) == (12, 16)
    assert sum(row.count(0) for row in layout) == 89  # ULTRA_MAZE_TEST's free cells ('R' and 'G' included)
    assert all(v == 1 for v in layout[0] + layout[-1] + [row[0] for row in layout] + [row[-1] for row in layout])
    # every play cell is free and reachable from the start (BFS over the free cells)
    start, goal = d4rl_envs.ANTMAZE_CELLS["ultra"]
    assert (start, goal) == ((1, 1), (10, 14))
    seen, frontier = {start}, [start]
    while frontier:
        r, c = frontier.pop()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if layout[nr][nc] == 0 and (nr, nc) not in seen:
                seen.add((nr, nc))
                frontier.append((nr, nc))
    assert len(seen) == 89 and set(maze_data.PLAY_CELLS["ultra"]) <= seen and goal in seen

    large = get_task("antmaze-large-diverse")
    for name in ("antmaze-ultra-play", "antmaze-ultra-diverse"):
        task = get_task(name)
        assert task.family == "antmaze" and task.max_episode_steps == 2000
        assert (task.reward_scale, task.reward_bias, task.sparse_failure_reward) == (large.reward_scale, large.reward_bias, -5.0)
        assert (task.ref_min_score, task.ref_max_score) == (0.0, 1.0) and task.d4rl_dataset == f"{name}-v0"
        assert maze_data.maze_mode_of(task) == name.split("-")[-1]
    env = get_task("antmaze-ultra-diverse").make_env(0, training=False)
    obs, _ = env.reset(seed=0)
    maze = env.unwrapped.maze
    assert obs.shape == (29,) and maze.maze_size_scaling == 4
    np.testing.assert_allclose(maze.cell_rowcol_to_xy(np.array(goal)), [26.0, -18.0])  # (col - 7.5) * 4, (5.5 - row) * 4
    # the env's own noise: up to a quarter cell (1 m) per axis around the goal and start cells
    assert np.abs(env.unwrapped.goal - [26.0, -18.0]).max() <= 1.0 and np.abs(obs[:2] - [-26.0, 18.0]).max() <= 1.0 + 1e-6
    env.close()


def test_ultra_generator_makes_play_data_from_the_hand_picked_cells():
    from envs import maze_data
    from envs.tasks import get_task

    task = dataclasses.replace(get_task("antmaze-ultra-play"), max_episode_steps=40)  # short episodes: a smoke test
    dataset, card = maze_data.generate_maze_dataset(task, 3, seed=1)
    assert card["mode"] == "play" and card["generator"] == "antmaze-waypoint-gait-controller"
    assert len(dataset.rewards) == 120 and dataset.observations.shape[1] == 29
    starts = dataset.observations[np.r_[0, np.flatnonzero(dataset.episode_ends)[:-1] + 1], :2]
    play_xy = np.array([[(c - 7.5) * 4.0, (5.5 - r) * 4.0] for r, c in maze_data.PLAY_CELLS["ultra"]])
    for xy in starts:  # each episode starts within the env's reset noise of a play cell
        assert np.min(np.abs(play_xy - xy).max(axis=1)) <= 1.0 + 1e-6


def test_shared_critic_output_is_one_layer_for_all_critics():
    """`agent.critic_shared_output` (the reference's single Dense(1) over the vmapped MLPs):
    the critics' output layers start equal, their gradient is the gradient of one shared layer
    (the sum over critics, checked against differentiating through a shared parameter), and
    after UTD updates of SAC and IQL (whose critic steps are the two code paths) they are still
    one layer."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from learner.agents import make_agent
    from learner.agents.common import share_critic_output_grads
    from tests.conftest import tiny_config

    config = dataclasses.replace(tiny_config().agent, critic_shared_output=True)
    rng = np.random.default_rng(0)
    m, b = 2, config.batch_size
    batch = {"observations": rng.normal(size=(m, b, 2)).astype(np.float32), "actions": rng.uniform(-1, 1, (m, b, 2)).astype(np.float32),
             "rewards": rng.normal(size=(m, b)).astype(np.float32), "next_observations": rng.normal(size=(m, b, 2)).astype(np.float32),
             "terminals": np.zeros((m, b), np.float32), "masks": np.ones((m, b), np.float32), "mc_returns": rng.normal(size=(m, b)).astype(np.float32)}
    batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def output_layers_equal(params):
        layer = params["critics"]["Dense_0"]
        return all(np.array_equal(np.asarray(x), np.broadcast_to(np.asarray(x)[:1], x.shape)) for x in jax.tree_util.tree_leaves(layer))

    for algorithm in ("sac", "iql"):  # (CQL and CalQL take SACAgent's critic step)
        agent = make_agent(algorithm, config, 2, 2, seed=1)
        assert output_layers_equal(agent.critic.params) and output_layers_equal(agent.critic.target_params)
        unshared = make_agent(algorithm, tiny_config().agent, 2, 2, seed=1)
        assert not output_layers_equal(unshared.critic.params)  # the default: one output layer per critic
        for _ in range(2):
            agent, _ = agent.update(batch)
        assert output_layers_equal(agent.critic.params) and output_layers_equal(agent.critic.target_params), algorithm

    # The summed gradient is the gradient of a shared layer.
    agent = make_agent("sac", config, 2, 2, seed=2)
    flat = {k: v[0] for k, v in batch.items()}
    target = jnp.asarray(rng.normal(size=b).astype(np.float32))
    loss = lambda params: agent.critic_loss(params, flat, target, jax.random.PRNGKey(0))[0]  # noqa: E731
    grads = share_critic_output_grads(jax.grad(loss)(agent.critic.params))
    layer = agent.critic.params["critics"]["Dense_0"]

    def with_shared(shared):
        tied = jax.tree_util.tree_map(lambda s, x: jnp.broadcast_to(s, x.shape), shared, layer)
        return loss({"critics": {**agent.critic.params["critics"], "Dense_0": tied}})

    direct = jax.grad(with_shared)(jax.tree_util.tree_map(lambda x: x[:1], layer))
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(np.asarray(grads["critics"]["Dense_0"][name][0]), np.asarray(direct[name][0]), rtol=1e-5, atol=1e-7)
