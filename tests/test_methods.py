"""The distinguishing mechanism of every method variant (configs/common/methods.yaml): SO2's
target noise, JSRL's roll-in schedule, random / dataset warmup, the frozen policy, what each
`finetune.init` takes from the checkpoint, and the variant table itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learner import losses
from learner.agents import make_agent
from learner.config import ConfigError, load_config
from learner.finetune import Finetuner
from learner.runs import initial_agent
from tests.conftest import leaves_equal, tiny_config

SPEC = {"task": "pointmass-goal", "observation_dim": 2, "action_dim": 2}


class RecordingPolicy:
    """Stands in for the jitted policy: records which params acted, returns a fixed action."""

    def __init__(self):
        self.params_used = []

    def __call__(self, params, observation, key, deterministic=False):
        self.params_used.append(params)
        return np.full(2, 0.25, np.float32)

    def sample(self, params, observation, rng):
        return self(params, observation, rng), rng


# --- SO2 ---------------------------------------------------------------------------------------
def test_so2_target_noise_by_hand():
    actions = jnp.array([[0.9, -0.2], [0.0, 0.1]])
    noise = jnp.array([[1.0, -3.0], [0.5, 0.0]])
    got = losses.perturb_target_actions(actions, noise, 0.3, 0.6)
    s = np.sqrt(0.3)  # standard deviation of a variance-0.3 Gaussian: 0.5477
    expected = [[min(0.9 + s, 1.0), -0.2 - 0.6], [0.5 * s, 0.1]]  # +s clipped to the box; -3s clipped to -0.6
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_so2_noise_changes_the_td_target_and_vanishes_with_a_tiny_clip():
    import dataclasses

    config = tiny_config()
    rng = np.random.default_rng(0)
    batch = {
        "observations": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, (8, 2)), jnp.float32),
        "rewards": jnp.asarray(rng.normal(size=8), jnp.float32),
        "next_observations": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32),
        "terminals": jnp.zeros(8, jnp.float32),
        "mc_returns": jnp.zeros(8, jnp.float32),
    }

    def target(**agent_changes):
        agent = make_agent("sac", dataclasses.replace(config.agent, **agent_changes), 2, 2, seed=1)
        # Make the target critics sensitive to the action so a perturbation shows.
        return np.asarray(agent.critic_target(batch, jax.random.PRNGKey(5), jax.random.PRNGKey(6))[0])

    plain = target()
    noisy = target(target_action_noise_variance=0.3, target_action_noise_clip=0.6)
    tiny = target(target_action_noise_variance=0.3, target_action_noise_clip=1e-7)
    assert np.abs(noisy - plain).max() > 1e-4
    # With the noise clipped to ~0 only the key split differs: the next actions are resampled
    # from another key, so compare against a plain target sampled with that same key.
    k_actions, _ = jax.random.split(jax.random.PRNGKey(5))
    agent = make_agent("sac", config.agent, 2, 2, seed=1)
    resampled = np.asarray(agent.critic_target(batch, k_actions, jax.random.PRNGKey(6))[0])
    np.testing.assert_allclose(tiny, resampled, atol=1e-5)


# --- JSRL -----------------------------------------------------------------------------------
def test_jsrl_rollin_probability_decays_linearly_to_zero():
    from actor.policy import jsrl_rollin_steps

    for steps, expected in ((0, 0.5), (25, 0.375), (50, 0.25), (100, 0.0), (150, 0.0)):
        rng = np.random.default_rng(0)
        rolled = np.mean([jsrl_rollin_steps(rng, steps, 0.5, 100, 0.99) > 0 for _ in range(4000)])
        assert rolled == pytest.approx(expected, abs=0.03)  # binomial s.e. <= 0.008


def test_jsrl_rollin_lengths_are_geometric():
    from actor.policy import jsrl_rollin_steps

    rng = np.random.default_rng(1)
    lengths = np.array([jsrl_rollin_steps(rng, 0, 1.0, 100_000, 0.99) for _ in range(4000)])
    assert lengths.min() >= 1
    # Geometric(p = 1 - 0.99): mean 1/p = 100, standard error sqrt(1-p)/p/sqrt(n) ~ 1.6
    assert lengths.mean() == pytest.approx(100, abs=6)


def test_jsrl_rolls_in_with_the_frozen_policy_then_hands_over(pretrained):
    path, _ = pretrained
    config = tiny_config(finetune={"checkpoint": str(path), "jsrl": True, "init": "actor", "warmup_steps": 0, "jsrl_initial_prob": 1.0, "num_steps": 50})
    runner = Finetuner(config)
    runner.rollin_steps_left = 3
    runner.policy = recorder = RecordingPolicy()
    for _ in range(5):
        runner.act(runner.observation)
    frozen = [p is runner.pretrained_actor_params for p in recorder.params_used]
    assert frozen == [True, True, True, False, False]


# --- warmup variants ------------------------------------------------------------------------
def test_random_warmup_never_asks_the_policy_and_does_not_update(pretrained):
    path, _ = pretrained
    runner = Finetuner(tiny_config(finetune={"checkpoint": str(path), "warmup": "random", "warmup_steps": 6, "num_steps": 8}))
    runner.policy = recorder = RecordingPolicy()
    for _ in range(6):
        _, info = runner.step()
        assert info is None
    actions = runner.replay.data["actions"][:6]
    assert recorder.params_used == [] and np.all(np.abs(actions) <= 1) and len(np.unique(actions)) == 12
    live_params = runner.agent.actor.params
    _, info = runner.step()  # the first online step acts with the live policy, then updates
    assert info is not None and len(recorder.params_used) == 1 and recorder.params_used[0] is live_params


def test_dataset_warmup_seeds_k_offline_transitions_and_updates_from_the_first_step(pretrained):
    path, _ = pretrained
    config = tiny_config(finetune={"checkpoint": str(path), "warmup": "dataset", "warmup_steps": 20, "num_steps": 8})
    runner = Finetuner(config)
    assert len(runner.replay) == 20 and runner.env_steps == 0 and not runner.in_warmup
    from learner.runs import offline_replay
    from envs.tasks import get_task

    offline = offline_replay(config, get_task("pointmass-goal"))
    rows = {tuple(r) for r in np.concatenate([offline.data["observations"], offline.data["actions"]], 1)[: len(offline)]}
    seeded = np.concatenate([runner.replay.data["observations"][:20], runner.replay.data["actions"][:20]], 1)
    assert all(tuple(r) in rows for r in seeded)
    assert np.isfinite(runner.replay.data["mc_returns"][:20]).all()  # CalQL bounds come along
    _, info = runner.step()
    assert info is not None and runner.updates == 1 and len(runner.replay) == 21


def test_frozen_policy_updates_only_the_critics_for_n_online_steps(pretrained):
    path, pre = pretrained
    runner = Finetuner(tiny_config(finetune={"checkpoint": str(path), "warmup_steps": 2, "freeze_policy_steps": 3, "num_steps": 10}))
    for _ in range(2 + 3):
        runner.step()
    assert runner.updates == 3
    assert leaves_equal(runner.agent.actor.params, pre.actor.params)
    assert not leaves_equal(runner.agent.critic.params, pre.critic.params)
    assert int(runner.agent.temperature.step) == int(pre.temperature.step)
    runner.step()
    assert not leaves_equal(runner.agent.actor.params, pre.actor.params)


# --- what the checkpoint provides ------------------------------------------------------------
def test_init_actor_takes_only_the_policy(pretrained):
    path, pre = pretrained
    config = tiny_config(finetune={"checkpoint": str(path), "init": "actor"})
    agent = initial_agent(config, SPEC)
    fresh = make_agent("sac", config.agent, 2, 2, config.seed)
    assert leaves_equal(agent.actor.params, pre.actor.params)
    assert leaves_equal(agent.critic.params, fresh.critic.params)
    assert not leaves_equal(agent.critic.params, pre.critic.params)
    full = initial_agent(tiny_config(finetune={"checkpoint": str(path)}), SPEC)
    assert leaves_equal(full.critic.params, pre.critic.params)


def test_init_errors_name_the_field(pretrained):
    path, _ = pretrained
    with pytest.raises(ConfigError, match="finetune.checkpoint.*finetune.init='scratch'"):
        initial_agent(tiny_config(finetune={"checkpoint": str(path), "init": "scratch"}), SPEC)
    with pytest.raises(ConfigError, match="finetune.checkpoint.*JSRL"):
        initial_agent(tiny_config(finetune={"jsrl": True}), SPEC)
    with pytest.raises(ConfigError, match="finetune.jsrl"):
        load_config("pointmass", "sac", ["finetune.jsrl=true"])


# --- the variant table ------------------------------------------------------------------------
def test_every_family_offers_the_shared_methods_with_its_own_changes():
    for family in ("pointmass", "pointmaze", "antmaze", "kitchen", "adroit", "locomotion"):
        for variant in ("wsrl", "wsrl_no_warmup", "wsrl_dataset_warmup", "rlpd", "jsrl", "so2", "calql_retain", "iql"):
            load_config(family, variant)
    rlpd = load_config("antmaze", "rlpd")  # base sac + antmaze's sub-sample 1 + 50/50 batches
    assert (rlpd.finetune.init, rlpd.finetune.warmup, rlpd.finetune.offline_mixing_ratio) == ("scratch", "random", 0.5)
    assert rlpd.agent.critic_subsample_size == 1 and rlpd.agent.max_target_backup == "none"
    kitchen = load_config("kitchen", "calql_retain")  # base calql (2 critics) + kitchen's 25%
    assert (kitchen.agent.critic_ensemble_size, kitchen.finetune.offline_mixing_ratio, kitchen.finetune.algorithm) == (2, 0.25, "calql")
    so2 = load_config("locomotion", "so2")
    assert (so2.agent.target_action_noise_variance, so2.agent.target_action_noise_clip, so2.finetune.warmup_steps) == (0.3, 0.6, 0)
    assert load_config("pointmass", "wsrl").agent.target_action_noise_variance == 0.0


def test_variant_base_errors_name_the_variant(tmp_path):
    path = tmp_path / "fam.yaml"
    path.write_text("defaults: {}\nvariants:\n  a: {base: b}\n  b: {base: a}\n  c: {base: nope}\n")
    with pytest.raises(ConfigError, match=r"variant 'b' field 'base': cycle a -> b -> a"):
        load_config(str(path), "a")
    with pytest.raises(ConfigError, match=r"variant 'c' field 'base': unknown variant 'nope'"):
        load_config(str(path), "c")


def test_pretraining_ignores_so2_target_noise():
    from learner.config import pretraining_agent_config

    so2, wsrl = load_config("pointmass", "so2"), load_config("pointmass", "wsrl")
    assert so2.agent.target_action_noise_variance == 0.3
    assert pretraining_agent_config(so2.agent) == pretraining_agent_config(wsrl.agent) == wsrl.agent
