"""Human interventions as data: the optional per-transition flag on the wire, its validation
and digest, the learner's count and saved state, and HIL-SERL's intervention share of each
batch (off by default)."""

from __future__ import annotations

import numpy as np
import pytest

from actor.client import LearnerClient
from learner.distributed.validation import BatchRejected, batch_digest, validate_batch
from learner.replay_buffer import InterventionSampler, MixedSampler, ReplayBuffer
from protos import codec
from tests.conftest import tiny_config
from tests.test_distributed import SPEC, hello, make_batch, start_learner


def test_the_flag_is_optional_validated_and_part_of_the_content():
    plain = make_batch(4)
    assert not validate_batch(plain, SPEC, 16, 0)["interventions"].any()  # absent: none
    flagged = make_batch(4, interventions=np.array([False, True, True, False]))
    assert validate_batch(flagged, SPEC, 16, 0)["interventions"].tolist() == [False, True, True, False]
    # A batch that says which steps a human chose is another batch than one that does not.
    assert batch_digest(flagged) != batch_digest(plain) == batch_digest(make_batch(4))
    for bad, message in (
        (make_batch(4, interventions=np.ones(3, bool)), "field 'interventions.shape': got [3], expected [4]"),
        (make_batch(4, interventions=np.ones(4, np.float32)), "field 'interventions.dtype': got 'float32', expected 'bool'"),
    ):
        with pytest.raises(BatchRejected, match=message.replace("[", r"\[").replace("]", r"\]")):
            validate_batch(bad, SPEC, 16, 0)
    raw = make_batch(4, interventions=np.zeros(4, bool))
    raw.interventions.data = bytes([0, 2, 0, 0])
    with pytest.raises(BatchRejected, match="interventions.data"):
        validate_batch(raw, SPEC, 16, 0)


def test_the_learner_stores_and_counts_intervention_steps_and_saves_them(tmp_path):
    from learner.distributed.learner_state import load_learner_state, save_learner_state

    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000})
    server = start_learner(config)
    client = LearnerClient(server.address)
    try:
        hello(client)
        client.push(make_batch(3, seq=0))
        client.push(make_batch(3, seq=1, interventions=np.array([True, False, True])))
        assert server.trainer.wait_processed(6, 20)
        status = client.status()
        assert status.intervention_steps == 2 and status.env_steps == 6
        assert server.trainer.replay.interventions[:6].tolist() == [False, False, False, True, False, True]
        save_learner_state(server.trainer, str(tmp_path))
    finally:
        client.close()
        server.stop(grace=0)
    resumed = start_learner(config)
    try:
        load_learner_state(resumed.trainer, str(tmp_path))
        assert resumed.trainer.intervention_steps == 2
        assert resumed.trainer.replay.interventions[:6].tolist() == [False, False, False, True, False, True]
    finally:
        resumed.stop(grace=0)


def test_intervention_share_of_each_batch_holds():
    replay = ReplayBuffer(100, 1, 1)
    for i in range(100):
        # Rewards mark the rows: 1 for the ten a human acted in, 0 for the rest.
        replay.add([i], [0.0], float(i % 10 == 0), [i], False, intervention=i % 10 == 0)
    sampler = InterventionSampler(replay, replay, 0.25)
    batch = sampler.sample(np.random.default_rng(0), 3, 8)
    assert batch["rewards"].shape == (3, 8)
    # 2 of every 8 (25%) from the flagged rows, placed last; the rest uniform over all 100.
    assert np.all(batch["rewards"][:, 6:] == 1.0)
    many = sampler.sample(np.random.default_rng(1), 200, 8)
    assert many["rewards"][:, :6].mean() == pytest.approx(0.1, abs=0.03)
    # Nothing flagged yet: the base sampler's batches alone.
    empty = ReplayBuffer(10, 1, 1)
    empty.add([0.0], [0.0], 5.0, [0.0], False)
    assert InterventionSampler(empty, empty, 0.5).sample(np.random.default_rng(0), 1, 4)["rewards"].tolist() == [[5.0] * 4]
    # Around a retention sampler too: offline share, then the intervention share.
    offline = ReplayBuffer(5, 1, 1)
    for _ in range(5):
        offline.add([0.0], [0.0], -1.0, [0.0], False)
    mixed = InterventionSampler(MixedSampler(replay, offline, 0.5), replay, 0.25).sample(np.random.default_rng(0), 1, 8)
    assert mixed["rewards"].shape == (1, 8) and np.all(mixed["rewards"][0, 6:] == 1.0) and np.all(mixed["rewards"][0, 3:6] == -1.0)
    with pytest.raises(ValueError, match="intervention_ratio: got 1.0"):
        InterventionSampler(replay, replay, 1.0)


def test_intervention_ratio_is_off_by_default_and_builds_the_sampler():
    from envs.tasks import get_task
    from learner.config import ConfigError, load_config
    from learner.runs import online_replay

    assert load_config("pointmass", "wsrl").finetune.intervention_ratio == 0.0
    config = load_config("pointmass", "wsrl", ["finetune.intervention_ratio=0.25"])
    _, sampler, _ = online_replay(config, get_task(config.task), get_task(config.task).spec())
    assert isinstance(sampler, InterventionSampler) and sampler.share == 0.25
    with pytest.raises(ConfigError, match="finetune.intervention_ratio"):
        load_config("pointmass", "wsrl", ["finetune.intervention_ratio=1.5"])


def test_a_robot_actor_sends_its_takeover_steps_flagged(tmp_path):
    from actor.loop import ActorLoop, ActorSettings

    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000})
    server = start_learner(config)
    try:
        loop = ActorLoop(ActorSettings(learner=server.address, env="pointmass-goal", actor_id="r", batch_size=4, num_steps=0))
        loop.connect()
        for i in range(4):
            loop._pending.append((np.zeros(2, np.float32), np.zeros(2, np.float32), 0.0, np.zeros(2, np.float32), False, False, 0, "", i % 2 == 1))
        batch = loop._make_batch()
        assert codec.decode_tensor(batch.interventions, "interventions").tolist() == [False, True, False, True]
        loop._pending = [row[:8] + (False,) for row in loop._pending]
        assert not loop._make_batch().HasField("interventions")  # no takeover: the field is left out
        loop.close()
    finally:
        server.stop(grace=0)
