"""The locomotion dataset generator (lab/behaviour_data.py) on Hopper with tiny budgets.

Hopper with a 30-step time limit: the untrained and barely trained policies fall within it in
most episodes (terminals) and stay up for all 30 steps in some (time-limit ends), so every
dataset has both kinds of episode end.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from envs.d4rl_reader import read_d4rl_hdf5
from envs.dataset_card import card_path
from envs.dataset_writers import write_d4rl_hdf5
from envs.tasks import get_task
from lab import behaviour_data
from learner.agents import make_agent
from lab.behaviour_data import (
    DEFAULT_NUM_TRANSITIONS,
    BehaviourCacheError,
    BehaviourConfig,
    collect_rollouts,
    generate_locomotion_dataset,
)
from learner.config import AgentConfig

LIMIT = 30
SEED = 0
TINY = BehaviourConfig(
    agent=AgentConfig(
        critic_ensemble_size=2,
        critic_subsample_size=2,
        critic_hidden_dims=(16, 16),
        critic_layer_norm=False,
        actor_hidden_dims=(16, 16),
        actor_layer_norm=False,
        backup_entropy=True,
        batch_size=16,
        actor_lr=3e-4,
        temperature_lr=3e-4,
    ),
    train_steps=300,
    random_steps=100,
    eval_every=50,
    eval_episodes=2,
)
FIELDS = [f.name for f in dataclasses.fields(behaviour_data.OfflineDataset)]


def hopper(kind: str, limit: int = LIMIT):
    return dataclasses.replace(get_task(f"hopper-{kind}"), max_episode_steps=limit)


def generate(kind: str, **kwargs):
    kwargs.setdefault("seed", SEED)
    kwargs.setdefault("behaviour", TINY)
    kwargs.setdefault("progress", False)
    if kind != "medium-replay":
        kwargs.setdefault("num_transitions", 400)
    return generate_locomotion_dataset(hopper(kind), **kwargs)


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if anything trains a behaviour policy."""

    def refuse(*args, **kwargs):
        raise AssertionError("the behaviour policy was trained again")

    monkeypatch.setattr(behaviour_data, "train_behaviour", refuse)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """One training run (seed 0) cached in a behaviour_dir, and the medium dataset it gave."""
    directory = tmp_path_factory.mktemp("behaviour")
    dataset, card = generate("medium", behaviour_dir=directory)
    assert card["behaviour_cache"] == {"dir": str(directory), "reused": False}
    return directory, dataset, card


def test_same_seed_gives_identical_arrays_and_another_seed_differs(cached):
    _, cached_medium, cached_card = cached
    fresh, card = generate("medium")  # trains again, no cache
    assert same(fresh, cached_medium)
    assert card["behaviour_training"]["evaluations"] == cached_card["behaviour_training"]["evaluations"]
    other, other_card = generate("medium", seed=1)
    assert len(other) == len(fresh)
    assert not np.array_equal(other.observations, fresh.observations)
    assert not np.array_equal(other.actions, fresh.actions)
    assert other_card["seed"] == 1
    random_a, _ = generate("random")
    random_b, _ = generate("random")
    random_c, _ = generate("random", seed=1)
    assert same(random_a, random_b)
    assert not np.array_equal(random_a.actions, random_c.actions)


def test_random_kind_rolls_out_the_untrained_policy_without_training(cached, no_training):
    dataset, card = generate("random", num_transitions=600)
    assert len(dataset) == 600
    assert card["kind"] == "random" and card["behaviour_policy_train_steps"] == 0
    # The behaviour run's own step-0 policy: same eval return as its step-0 evaluation.
    assert card["behaviour_eval_return"] == cached[2]["random_eval_return"]
    task = hopper("random")
    untrained = make_agent("sac", TINY.agent, 11, 3, SEED).actor.params
    assert same(dataset, collect_rollouts(task, TINY.agent, untrained, 600, SEED, "random", progress=False))
    # Near-zero output layers: actions are about tanh(N(0, 1)) per dimension (std ~0.63).
    assert abs(dataset.actions.mean()) < 0.1
    assert 0.5 < dataset.actions.std() < 0.75


def test_every_kind_has_clean_episode_boundaries(cached, no_training):
    directory = cached[0]
    datasets = {kind: generate(kind, behaviour_dir=directory)[0] for kind in ("random", "medium-replay", "expert", "medium-expert")}
    datasets["medium"] = cached[1]
    for kind, d in datasets.items():
        ends, terminals = d.episode_ends.astype(bool), d.terminals != 0
        assert ends[-1], kind
        assert not np.any(terminals & ~ends), f"{kind}: a terminal inside an episode"
        # No transition crosses an episode: inside one, next_obs[i] is obs[i + 1] ...
        inside = ~ends[:-1]
        assert np.array_equal(d.next_observations[:-1][inside], d.observations[1:][inside]), kind
        # ... and every episode starts afresh (a reset, not the previous episode's next_obs).
        assert not np.any(np.all(d.next_observations[:-1][ends[:-1]] == d.observations[1:][ends[:-1]], axis=1)), kind
        lengths = np.diff(np.concatenate([[-1], np.flatnonzero(ends)]))
        assert lengths.max() <= LIMIT, kind
        # Time-limit ends are episode ends but not terminals; falls are terminals. The data's
        # own cuts (its end; in medium-expert also the end of the medium half) end episodes early.
        cuts = {len(d) - 1} | ({len(d) // 2 - 1} if kind == "medium-expert" else set())
        end_rows = np.flatnonzero(ends)
        timeouts = [row for row, length in zip(end_rows, lengths) if not terminals[row] and row not in cuts]
        assert all(length == LIMIT for row, length in zip(end_rows, lengths) if not terminals[row] and row not in cuts), kind
        assert terminals.sum() >= 1, kind
        if kind in ("random", "medium-replay"):  # (the others happen to have none at this seed)
            assert len(timeouts) >= 1, kind
        assert d.rewards.dtype == np.float32 and d.observations.shape[1] == 11 and d.actions.shape[1] == 3


def test_medium_replay_is_the_buffer_up_to_the_medium_snapshot(cached, no_training):
    directory, _, medium_card = cached
    dataset, card = generate("medium-replay", behaviour_dir=directory)
    facts = card["behaviour_training"]
    step = facts["medium_step"]
    assert len(dataset) == step == card["behaviour_policy_train_steps"] == card["medium_step"]
    # The medium rule: the earliest evaluation after the random phase reaching 1/3 of the final return.
    assert card["medium_threshold"] == pytest.approx(facts["expert_eval_return"] / 3)
    evaluations = {e["step"]: e["return"] for e in facts["evaluations"]}
    assert step > TINY.random_steps and step % TINY.eval_every == 0
    assert evaluations[step] == card["medium_eval_return"] >= card["medium_threshold"]
    assert all(r < card["medium_threshold"] for s, r in evaluations.items() if TINY.random_steps < s < step)
    assert evaluations[TINY.train_steps] == card["expert_eval_return"]
    # The buffer starts with the uniform random actions of the random phase.
    random_phase = dataset.actions[: TINY.random_steps]
    assert random_phase.min() >= -1 and random_phase.max() <= 1 and random_phase.std() > 0.5
    assert card["random_eval_return"] == medium_card["random_eval_return"]
    with pytest.raises(ValueError, match="'num_transitions'"):
        generate("medium-replay", behaviour_dir=directory, num_transitions=100)


def test_medium_expert_is_medium_then_expert(cached, no_training):
    directory = cached[0]
    mixed, card = generate("medium-expert", behaviour_dir=directory, num_transitions=401)
    medium, _ = generate("medium", behaviour_dir=directory, num_transitions=200)
    expert, expert_card = generate("expert", behaviour_dir=directory, num_transitions=201)
    assert len(mixed) == 401 and card["medium_transitions"] == 200
    assert same(mixed, behaviour_data.concatenate(medium, expert))
    assert card["behaviour_policy_train_steps"] == [card["medium_step"], TINY.train_steps]
    assert expert_card["behaviour_policy_train_steps"] == TINY.train_steps
    assert expert_card["behaviour_eval_return"] == card["expert_eval_return"]


def test_round_trip_through_d4rl_hdf5(cached, no_training, tmp_path):
    for kind in ("medium-replay", "medium-expert"):
        dataset, card = generate(kind, behaviour_dir=cached[0])
        path = write_d4rl_hdf5(dataset, tmp_path / f"{kind}.hdf5", card)
        back = read_d4rl_hdf5(path, observation_dim=11, action_dim=3)
        assert same(back, dataset), kind
        stored = json.loads(card_path(path).read_text())
        assert stored["generator"] == "locomotion-behaviour-sac" and stored["kind"] == kind
        assert stored["num_transitions"] == len(dataset) and stored["seed"] == SEED


def test_behaviour_dir_is_reused_without_training(cached, no_training):
    directory = cached[0]
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["behaviour.json", "expert.ckpt", "medium.ckpt", "medium_replay.npz"]  # no temp files left
    dataset, card = generate("medium", behaviour_dir=directory)
    assert card["behaviour_cache"] == {"dir": str(directory), "reused": True}
    assert same(dataset, cached[1])
    assert card["behaviour_training"] == cached[2]["behaviour_training"]


def test_a_cache_from_other_settings_is_refused(cached, no_training):
    directory = cached[0]
    with pytest.raises(BehaviourCacheError, match=r"seed: cache has 0, this call asks 1"):
        generate("expert", behaviour_dir=directory, seed=1)
    with pytest.raises(BehaviourCacheError, match=r"train_steps: cache has 300, this call asks 800"):
        generate("expert", behaviour_dir=directory, train_steps=800)
    with pytest.raises(BehaviourCacheError, match=r"env_id: cache has 'Hopper-v5', this call asks 'Walker2d-v5'"):
        generate_locomotion_dataset(
            dataclasses.replace(get_task("walker2d-expert"), max_episode_steps=LIMIT),
            seed=SEED, num_transitions=10, behaviour=TINY, behaviour_dir=directory, progress=False,
        )
    with pytest.raises(BehaviourCacheError, match=r"behaviour\.eval_every"):
        generate("medium", behaviour_dir=directory, behaviour=dataclasses.replace(TINY, eval_every=25))


def test_a_task_outside_locomotion_is_refused():
    with pytest.raises(ValueError, match=r"field 'task'.*family 'locomotion'.*'pointmaze-umaze' of family 'maze'"):
        generate_locomotion_dataset(get_task("pointmaze-umaze"), seed=0, progress=False)
    with pytest.raises(ValueError, match="'train_steps'"):
        generate("medium", train_steps=100)  # not past the 100 random steps
    assert DEFAULT_NUM_TRANSITIONS == {"random": 1_000_000, "medium": 1_000_000, "expert": 1_000_000, "medium-expert": 2_000_000}
