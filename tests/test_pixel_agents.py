"""Learning from camera observations: the shared critic encoder, random shifts, pixel updates
of SAC / CalQL / IQL, the actor's policy from published parameters, checkpoints and the
pre-trained-encoder hook. Tiny images (16x16) and networks: seconds."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from actor.networks import EncodedPolicy, TanhGaussianPolicy, make_policy
from actor.policy import Policy
from envs.observations import ObservationPart, ObservationSpec
from learner.agents import make_agent
from learner.checkpoint import CheckpointError, read_checkpoint, restore_agent, save_checkpoint
from learner.config import AgentConfig, Config, ConfigError, load_config
from learner.networks import augment_observations, load_pretrained_encoder, random_shift, save_encoder_params
from learner.pretrain import device_dataset, make_train_chunk
from learner.replay_buffer import ReplayBuffer, take_rows
from protos import codec

SPEC = ObservationSpec((
    ObservationPart("state", (4,), "float32"),
    ObservationPart("front", (16, 16, 3), "uint8"),
    ObservationPart("wrist", (16, 16, 1), "uint8"),
))
ACT = 2
CFG = AgentConfig(
    critic_ensemble_size=4, critic_hidden_dims=(16, 16), actor_hidden_dims=(16, 16), batch_size=8,
    encoder_channels=(4, 4), encoder_strides=(2, 1), encoder_feature_dim=6, critic_matmul_dtype="float32",
)
FEATURES = 6 + 6 + 4  # two cameras' features, then the state


def observations(rng, lead):
    return {
        "state": rng.normal(size=lead + (4,)).astype(np.float32),
        "front": rng.integers(0, 256, lead + (16, 16, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, lead + (16, 16, 1), dtype=np.uint8),
    }


def batch(m=2, b=8, seed=0):
    r = np.random.default_rng(seed)
    return {
        "observations": observations(r, (m, b)),
        "actions": r.uniform(-1, 1, (m, b, ACT)).astype(np.float32),
        "rewards": r.normal(size=(m, b)).astype(np.float32),
        "next_observations": observations(r, (m, b)),
        "terminals": np.zeros((m, b), np.float32),
        "mc_returns": r.normal(size=(m, b)).astype(np.float32),
    }


def leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))


def first(tree):
    return jax.tree_util.tree_map(lambda x: x[0], tree)


# ---- the shared encoder ------------------------------------------------------------------


def test_one_encoder_shared_by_every_critic():
    small = make_agent("sac", dataclasses.replace(CFG, critic_ensemble_size=2), SPEC, ACT)
    large = make_agent("sac", CFG, SPEC, ACT)
    shapes = lambda t: jax.tree_util.tree_map(np.shape, t)  # noqa: E731
    # One set of encoder parameters, whatever the ensemble size: no critic axis.
    assert shapes(small.encoder.params) == shapes(large.encoder.params)
    assert set(large.encoder.params) == {"conv_front", "conv_wrist"}
    assert large.encoder.params["conv_front"]["Conv_0"]["kernel"].shape == (3, 3, 3, 4)
    assert large.encoder.params["conv_wrist"]["Conv_0"]["kernel"].shape == (3, 3, 1, 4)
    # 16x16 -> 7x7 (3x3, stride 2) -> 5x5 (3x3): 5 * 5 * 4 inputs to the Dense layer.
    assert large.encoder.params["conv_front"]["Dense_0"]["kernel"].shape == (100, 6)
    # The critics and the policy read the features: their first layer has FEATURES (+ action) inputs.
    assert large.critic.params["critics"]["MLP_0"]["Dense_0"]["kernel"].shape == (4, FEATURES + ACT, 16)
    assert large.actor.params["MLP_0"]["Dense_0"]["kernel"].shape == (FEATURES, 16)
    assert not any("conv" in jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(large.critic.params)[0])
    features = large.features(observations(np.random.default_rng(0), (5,)))
    assert features.shape == (5, FEATURES) and features.dtype == jnp.float32
    assert np.all(np.abs(features[:, :12]) <= 1.0)  # tanh


def test_critic_loss_trains_the_encoder_and_the_actor_loss_does_not():
    agent = make_agent("sac", dataclasses.replace(CFG, tau=0.25), SPEC, ACT, seed=1)
    b = first(batch(m=1))
    after_critic, _ = agent.update_critic(b)
    assert not same(after_critic.encoder.params, agent.encoder.params)
    assert int(after_critic.encoder.step) == 1
    # Every camera trunk gets a gradient from the critic loss (its Adam moments are non-zero).
    mu = after_critic.encoder.opt_state[0].mu
    for name in ("conv_front", "conv_wrist"):
        assert all(np.any(leaf != 0) for leaf in leaves(mu[name]))
    # The target encoder moves by tau towards the new parameters (Polyak, like the critics).
    expected = jax.tree_util.tree_map(lambda t, p: 0.75 * t + 0.25 * p, agent.encoder.target_params, after_critic.encoder.params)
    for x, y in zip(leaves(after_critic.encoder.target_params), leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # The actor (and temperature) update reads the features without passing gradients back.
    after_actor, _ = after_critic.update_actor(b)
    assert not same(after_actor.actor.params, after_critic.actor.params)
    assert same(after_actor.encoder, after_critic.encoder)


# ---- random shifts -------------------------------------------------------------------------


def test_random_shift_is_a_crop_of_the_edge_padded_image():
    pad = 2
    images = np.arange(6 * 8 * 8 * 3).reshape(6, 8, 8, 3).astype(np.uint8)
    shifted = np.asarray(random_shift(jax.random.PRNGKey(0), jnp.asarray(images), pad))
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    offsets = []
    for image, out in zip(images, shifted):
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        found = [(i, j) for i in range(2 * pad + 1) for j in range(2 * pad + 1) if np.array_equal(padded[i:i + 8, j:j + 8], out)]
        assert found, "not a crop of the padded image"
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # drawn per image
    # Leading dims are kept; pad 0 is the identity.
    stacked = jnp.asarray(images.reshape(2, 3, 8, 8, 3))
    assert random_shift(jax.random.PRNGKey(1), stacked, pad).shape == (2, 3, 8, 8, 3)
    assert random_shift(jax.random.PRNGKey(1), stacked, 0) is stacked


def test_augment_observations_shifts_images_only():
    obs = jax.tree_util.tree_map(jnp.asarray, observations(np.random.default_rng(0), (4,)))
    out = augment_observations(jax.random.PRNGKey(3), obs, 4)
    assert set(out) == set(obs)
    np.testing.assert_array_equal(out["state"], obs["state"])
    for name in ("front", "wrist"):
        assert out[name].shape == obs[name].shape and out[name].dtype == jnp.uint8
    assert not np.array_equal(out["front"], obs["front"])
    flat = jnp.ones((4, 3))
    assert augment_observations(jax.random.PRNGKey(3), flat, 4) is flat


# ---- updates on dict batches ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm,m", [("sac", 2), ("calql", 1), ("iql", 2)])
def test_fused_update_on_dict_batches_changes_every_network(algorithm, m):
    config = dataclasses.replace(CFG, cql_lagrange=True) if algorithm == "calql" else CFG
    agent = make_agent(algorithm, config, SPEC, ACT)
    updated, info = agent.update(batch(m=m))
    assert all(np.isfinite(float(v)) for v in info.values())
    for name in ("actor", "critic", "encoder"):
        assert not same(getattr(updated, name).params, getattr(agent, name).params), name
    assert not same(updated.encoder.target_params, agent.encoder.target_params)
    # Critic-only updates (frozen policy) leave the policy alone but train the encoder.
    frozen, _ = agent.update_critics(batch(m=m))
    assert same(frozen.actor.params, agent.actor.params)
    assert not same(frozen.encoder.params, agent.encoder.params)


def image_buffer(n):
    """A frame-sharing ReplayBuffer of `n` random camera transitions (what `wsrl pretrain` loads)."""
    b = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), batch(m=1, b=n, seed=7))
    buffer = ReplayBuffer(n, SPEC, ACT)
    for i in range(n):
        buffer.add({k: v[i] for k, v in b["observations"].items()}, b["actions"][i], b["rewards"][i],
                   {k: v[i] for k, v in b["next_observations"].items()}, bool(b["terminals"][i]))
    return buffer, b


def test_calql_pretraining_chunk_runs_on_a_device_dataset_of_images():
    buffer, b = image_buffer(32)
    dataset = device_dataset(buffer)
    assert dataset["frames"]["front"].dtype == jnp.uint8  # frames travel to the device as uint8
    rows = take_rows(dataset, jnp.arange(4))
    assert rows["observations"]["front"].shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(np.asarray(rows["next_observations"]["front"]), b["next_observations"]["front"][:4])
    agent = make_agent("calql", CFG, SPEC, ACT)
    chunk = make_train_chunk(batch_size=8, num_steps=2)
    trained, key, info = chunk(agent, dataset, jax.random.PRNGKey(0))
    assert int(trained.critic.step) == 2 and int(trained.encoder.step) == 2 and int(trained.actor.step) == 2
    assert not same(trained.encoder.params, agent.encoder.params)
    assert np.isfinite(float(info["critic_loss"]))


# ---- forgetting diagnostics --------------------------------------------------------------


def test_forgetting_diagnostics_read_each_encoders_features():
    """A camera agent's diagnostics are those of a flat agent with the same critic and policy
    fed the encoder's features; the pre-trained networks read the pre-trained encoder's."""
    from learner import diagnostics as D

    pre = make_agent("calql", CFG, SPEC, ACT, seed=1)
    # "Fine-tuned": every network nudged (cheaper than compiling an update). Target encoder =
    # encoder, so "the target critics on the target encoder's features" is what a flat agent
    # computes from one set of features.
    noise = np.random.default_rng(5)
    nudge = lambda tree: jax.tree_util.tree_map(lambda p: p + jnp.asarray(noise.normal(0, 0.05, p.shape), p.dtype), tree)  # noqa: E731
    encoder = nudge(pre.encoder.params)
    tuned = pre.replace(actor=pre.actor.replace(params=nudge(pre.actor.params)),
                        critic=pre.critic.replace(params=nudge(pre.critic.params)),
                        encoder=pre.encoder.replace(params=encoder, target_params=encoder))
    # 16 states with the fields the diagnostics read: the periodic diagnostics below reuse the compilation.
    b = jax.tree_util.tree_map(jnp.asarray, {k: v for k, v in first(batch(m=1, b=16, seed=3)).items() if k in D.BATCH_FIELDS})
    flat = make_agent("calql", CFG, FEATURES, ACT, seed=1)
    flat = flat.replace(actor=tuned.actor, critic=tuned.critic, temperature=tuned.temperature)
    flat_batch = {**b, "observations": tuned.features(b["observations"]), "next_observations": tuned.features(b["next_observations"])}
    key = jax.random.PRNGKey(4)
    np.testing.assert_allclose(D.td_target(tuned, b, key), D.td_target(flat, flat_batch, key), rtol=1e-5, atol=1e-6)

    pretrained = {"actor": pre.actor.params, "critic": pre.critic.params}
    got = D._state_diagnostics(tuned, {**pretrained, "encoder": tuned.encoder.params}, b, key, num_actions=4)
    want = D._state_diagnostics(flat, {**pretrained, "encoder": None}, flat_batch, key, num_actions=4)
    for k in want:
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-4, atol=1e-6, err_msg=k)
        assert k == "td_error" or abs(float(want[k])) > 1e-6, k  # non-trivial: the networks moved

    # Same actor and critic, different encoders: the policies differ only through the encoder.
    same_heads = {"actor": tuned.actor.params, "critic": tuned.critic.params}
    assert float(D._state_diagnostics(tuned, {**same_heads, "encoder": tuned.encoder.params}, b, key, 4)["kl_policy"]) == 0.0
    assert float(D._state_diagnostics(tuned, {**same_heads, "encoder": pre.encoder.params}, b, key, 4)["kl_policy"]) > 1e-6

    # The periodic diagnostics on image buffers (offline sample and online replay).
    buffer, _ = image_buffer(40)
    diag = D.ForgettingDiagnostics.from_agent(pre, buffer, num_states=16, num_actions=4, seed=0)
    assert diag.offline_batch["observations"]["front"].dtype == jnp.uint8
    at_start = diag.compute(pre, buffer)
    assert all(np.isfinite(v) for v in at_start.values())
    assert at_start["kl_policy_offline"] == 0.0 and at_start["kl_policy_online"] == 0.0
    later = diag.compute(tuned, buffer)
    assert later["kl_policy_offline"] > 0 and later["kl_q_softmax_online"] > 0


def test_flat_agents_have_no_encoder_and_unchanged_state_dicts():
    agent = make_agent("sac", CFG, 3, ACT)
    assert agent.encoder is None
    assert agent.policy_params() is agent.actor.params
    assert set(serialization.to_state_dict(agent)) == {"actor", "critic", "temperature", "rng"}
    # A flat ObservationSpec is the same agent as its dimension.
    same_agent = make_agent("sac", CFG, ObservationSpec.flat(3), ACT)
    assert same(serialization.to_state_dict(same_agent), serialization.to_state_dict(agent))
    assert isinstance(make_policy(CFG, ACT), TanhGaussianPolicy)
    assert isinstance(make_policy(CFG, ACT, ObservationSpec.flat(3)), TanhGaussianPolicy)
    assert isinstance(make_policy(CFG, ACT, SPEC), EncodedPolicy)


# ---- the actor's policy ----------------------------------------------------------------------


def test_actor_policy_from_published_params_equals_the_learner():
    agent, _ = make_agent("sac", CFG, SPEC, ACT, seed=2).update(batch(m=2))
    # What travels: the published tree, serialized and read back as an actor does.
    published = codec.deserialize_params(codec.serialize_params(agent.policy_params()))
    assert set(published) == {"encoder", "policy"}
    policy = Policy(CFG, ACT, SPEC)  # actor/ only
    obs = observations(np.random.default_rng(5), (3,))
    means, _ = agent.actor.apply_fn({"params": agent.actor.params}, agent.features(obs))
    learner_actions = np.tanh(np.asarray(means))
    np.testing.assert_allclose(policy(published, obs, None, deterministic=True), learner_actions, rtol=1e-5, atol=1e-6)
    # One observation (batch 1), as a robot's control loop calls it.
    one = {k: v[1] for k, v in obs.items()}
    action = policy(published, one, None, deterministic=True)
    assert action.shape == (ACT,)
    np.testing.assert_allclose(action, learner_actions[1], rtol=1e-5, atol=1e-6)
    sampled, rng = policy.sample(published, one, jax.random.PRNGKey(0))
    assert sampled.shape == (ACT,) and np.all(np.abs(sampled) <= 1.0)
    with pytest.raises(ValueError, match="front"):
        policy(published, {**one, "front": one["front"].astype(np.float32)}, None, deterministic=True)
    with pytest.raises(ValueError, match="expected a dict"):
        policy(published, np.zeros(4, np.float32), None, deterministic=True)


# ---- checkpoints ---------------------------------------------------------------------------


def test_pixel_checkpoint_round_trip_and_spec_check(tmp_path):
    agent, _ = make_agent("calql", CFG, SPEC, ACT, seed=4).update(batch(m=1))
    spec = {"task": "pixels", "observation_spec": SPEC.to_json(), "action_dim": ACT}
    config = Config(agent=CFG)
    loaded = read_checkpoint(save_checkpoint(tmp_path / "p.ckpt", agent, config, spec))
    assert loaded.spec["observation_spec"] == SPEC.to_json()
    assert "encoder" in loaded.state
    sac = restore_agent(loaded, "sac", CFG, spec)
    assert same(serialization.to_state_dict(sac.encoder), serialization.to_state_dict(agent.encoder))
    obs = observations(np.random.default_rng(1), (3,))
    act = np.zeros((3, ACT), np.float32)
    np.testing.assert_array_equal(sac.q_values(obs, act), agent.q_values(obs, act))
    # Another camera layout, or another encoder architecture, is refused by name.
    other = ObservationSpec((ObservationPart("front", (16, 16, 3), "uint8"),))
    with pytest.raises(CheckpointError, match="observation_spec"):
        restore_agent(loaded, "sac", CFG, {**spec, "observation_spec": other.to_json()})
    with pytest.raises(CheckpointError, match="encoder_feature_dim"):
        restore_agent(loaded, "sac", dataclasses.replace(CFG, encoder_feature_dim=7), spec)


def test_checkpoint_stores_the_spec_and_old_specs_still_load(tmp_path):
    agent = make_agent("sac", CFG, 2, ACT)
    old_spec = {"task": "pointmass-goal", "observation_dim": 2, "action_dim": ACT}
    loaded = read_checkpoint(save_checkpoint(tmp_path / "f.ckpt", agent, Config(agent=CFG), old_spec))
    assert loaded.spec["observation_spec"] == [{"name": "state", "shape": [2], "dtype": "float32"}]
    # A checkpoint written before named parts (spec with observation_dim only) loads.
    loaded.spec = old_spec
    restored = restore_agent(loaded, "sac", CFG, old_spec)
    assert restored.encoder is None and same(restored.actor.params, agent.actor.params)
    with pytest.raises(CheckpointError, match="observation_spec"):
        restore_agent(loaded, "sac", CFG, {"observation_spec": SPEC.to_json(), "action_dim": ACT})


# ---- pre-trained encoder weights and config --------------------------------------------------


def test_pretrained_encoder_hook_loads_every_camera_trunk(tmp_path):
    trained, _ = make_agent("sac", CFG, SPEC, ACT, seed=9).update(batch(m=2))
    # A trunk with 3-channel input loads into the 3-channel camera; give the 1-channel camera
    # its own layout by using a spec of two RGB cameras.
    spec = ObservationSpec((ObservationPart("a", (16, 16, 3), "uint8"), ObservationPart("b", (16, 16, 3), "uint8")))
    path = tmp_path / "trunk.msgpack"
    save_encoder_params(path, trained.encoder.params["conv_front"])
    agent = make_agent("sac", dataclasses.replace(CFG, encoder_pretrained=str(path)), spec, ACT)
    for name in ("conv_a", "conv_b"):
        assert same(agent.encoder.params[name], trained.encoder.params["conv_front"])
    assert same(agent.encoder.target_params, agent.encoder.params)
    # A checkpoint of such an agent restores without the file (its encoder is in the checkpoint).
    config = dataclasses.replace(CFG, encoder_pretrained=str(path))
    spec_dict = {"observation_spec": spec.to_json(), "action_dim": ACT}
    saved = save_checkpoint(tmp_path / "c.ckpt", agent, Config(agent=config), spec_dict)
    path.unlink()
    restored = restore_agent(read_checkpoint(saved))
    assert same(restored.encoder.params, agent.encoder.params) and restored.config == config
    save_encoder_params(path, trained.encoder.params["conv_front"])
    with pytest.raises(ValueError, match="agent.encoder_pretrained.*conv_wrist"):
        make_agent("sac", dataclasses.replace(CFG, encoder_pretrained=str(path)), SPEC, ACT)
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained_encoder(agent.encoder.params, str(tmp_path / "missing.msgpack"))


def test_encoder_config_fields_are_validated():
    with pytest.raises(ConfigError, match="agent.encoder_strides"):
        load_config("pointmass", "wsrl", ["agent.encoder_strides=[2, 1]", "agent.encoder_channels=[32]"])
    with pytest.raises(ConfigError, match="agent.encoder_augment_pad"):
        load_config("pointmass", "wsrl", ["agent.encoder_augment_pad=-1"])
