"""The distributed actor-learner on loopback: wire format, exactly-once ingest, validation,
auth, warmup and sync-mode Algorithm 1 (against the single-process Finetuner)."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import jax
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actor.client import LearnerClient
from actor.loop import ActorLoop, ActorSettings
from actor.policy import Policy, jsrl_rollin_steps
from actor.spool import Spool
from envs.tasks import get_task
from learner.agents import make_agent
from learner.checkpoint import read_checkpoint, save_checkpoint
from learner.distributed.auth import AuthInterceptor, token_matches
from learner.distributed.server import LearnerServer, is_loopback
from learner.distributed.settings import DistributedSettings
from learner.distributed.trainer import Trainer
from learner.finetune import Finetuner
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = get_task("pointmass-goal").spec()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A CalQL 'pre-trained' tiny agent, so version 0 differs from a fresh SAC init."""
    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=3)
    return save_checkpoint(tmp_path_factory.mktemp("pre") / "pre.ckpt", agent, config, SPEC)


def start_learner(config, **settings):
    trainer = Trainer(config, SPEC, DistributedSettings(**settings))
    return LearnerServer(trainer).start()


@pytest.fixture
def server():
    s = start_learner(tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000}), max_batch_size=16)
    yield s
    s.stop(grace=0)


def rid(name: str) -> str:
    """A valid run id (16+ characters) made from a short name."""
    return f"{name:-<16}"


def hello(client, actor_id="a", run_id=rid("r1"), spec=SPEC, protocol=codec.PROTOCOL_VERSION, next_sequence=0):
    return client.handshake(pb.HandshakeRequest(protocol_version=protocol, spec=codec.spec_to_proto(spec), actor_id=actor_id, run_id=run_id, next_sequence=next_sequence))


def make_batch(n=3, seq=0, actor_id="a", run_id=rid("r1"), rng=None, **overrides):
    rng = rng or np.random.default_rng(seq)
    fields = {
        "observations": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "episode_ends": np.zeros(n, bool),
    }
    fields.update(overrides)
    return pb.TransitionBatch(actor_id=actor_id, run_id=run_id, sequence=seq, **{k: codec.encode_tensor(v) for k, v in fields.items()})


def health_status(address):
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="wsrl.v1.Learner"), timeout=5).status


def leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ---- wire format ------------------------------------------------------------------------


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("learner_pb2.py", "learner_pb2.pyi", "learner_pb2_grpc.py"):
        fresh, committed = tmp_path / "protos/wsrl/v1" / name, ROOT / "protos/wsrl/v1" / name
        assert filecmp.cmp(fresh, committed, shallow=False), f"{committed} is stale: run `python protos/generate.py`"


def test_actor_package_imports_nothing_of_the_learner():
    """The robot machine's package stands alone: every actor module loads without the
    learner package (and so without optax, the losses, the replay buffer or the agents)."""
    modules = sorted(p.stem for p in (ROOT / "actor").glob("*.py") if p.stem != "__init__")
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module('actor.' + m)\n"
        "bad = [m for m in sys.modules if m == 'optax' or m == 'learner' or m.startswith('learner.')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr


def test_param_packing_matches_flax_msgpack_byte_for_byte():
    """serialize_params writes flax's msgpack format itself (one copy instead of three); the
    bytes equal flax.serialization.msgpack_serialize for every kind of leaf we meet."""
    from flax import serialization

    rng = np.random.default_rng(0)
    tree = {
        "Dense_0": {"kernel": jax.numpy.asarray(rng.normal(size=(17, 300)).astype(np.float32)), "bias": np.zeros(300, np.float32)},
        "scalar": np.float32(2.5), "empty": np.zeros((0, 3), np.float32), "ints": np.arange(70_000, dtype=np.int32),
        "transposed": rng.normal(size=(4, 3)).T, "flags": np.array([True, False]), "half": jax.numpy.ones(5, jax.numpy.bfloat16),
        "nested": {f"k{i}": np.full(i, i, np.float32) for i in range(20)}, "none": {},
    }
    payload = codec.serialize_params(tree)
    assert payload == serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(tree)))
    back = codec.deserialize_params(payload)
    np.testing.assert_array_equal(back["Dense_0"]["kernel"], np.asarray(tree["Dense_0"]["kernel"]))
    assert back["half"].dtype == jax.numpy.bfloat16 and back["transposed"].shape == (3, 4) and back["nested"]["k19"].shape == (19,)


def test_tensors_and_chunked_params_round_trip():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = codec.encode_tensor(a)
    assert t.dtype == "float32" and list(t.shape) == [3, 4] and t.data == a.astype("<f4").tobytes()
    np.testing.assert_array_equal(codec.decode_tensor(t, "x"), a)
    with pytest.raises(codec.WireError, match="field 'x.data': got 47 bytes, expected 48"):
        codec.decode_tensor(pb.Tensor(dtype="float32", shape=[3, 4], data=t.data[:-1]), "x")
    params = {"Dense_0": {"kernel": np.random.default_rng(0).normal(size=(300, 1000)).astype(np.float32)}}
    payload = codec.serialize_params(params)
    chunks = codec.policy_chunks(7, payload, chunk_bytes=1 << 18, learner_id="L1")
    assert len(chunks) == 5 and all(len(c.data) <= 1 << 18 for c in chunks)  # 1.2 MB in 256 KB chunks
    version, unchanged, joined, learner_id = codec.join_chunks(iter(chunks))
    assert version == 7 and not unchanged and learner_id == "L1" and joined == payload
    np.testing.assert_array_equal(codec.deserialize_params(joined)["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    with pytest.raises(codec.WireError, match="index"):
        codec.join_chunks(iter([chunks[0], chunks[2]]))
    corrupt = pb.PolicyChunk()
    corrupt.CopyFrom(chunks[1])
    corrupt.data = bytes(len(corrupt.data))
    with pytest.raises(codec.WireError, match="sha256"):
        codec.join_chunks(iter([chunks[0], corrupt, *chunks[2:]]))


# ---- Algorithm 1 over gRPC ------------------------------------------------------------------


def test_sync_actor_reproduces_finetune_warmup_and_update_counts(checkpoint):
    """One actor, sync mode, batch 1, max lead 0, pull every step, the same seeds: the
    learner's replay buffer and parameters equal the single-process Finetuner's exactly
    (tolerance 0: both run the same jitted functions on bit-identical inputs on one device)."""
    k, m, steps = 5, 3, 12
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": k, "num_steps": 40, "utd_ratio": m})
    reference = Finetuner(config)
    pre_params = reference.pretrained_actor_params
    critic_steps0 = int(reference.agent.critic.step)
    for _ in range(steps):
        reference.step()

    server = start_learner(config, max_lead=0)
    try:
        trainer = server.trainer
        loop = ActorLoop(ActorSettings(learner=server.address, seed=config.seed, batch_size=1, pull_every=1, actor_id="solo"))
        loop.connect()
        assert loop.version == 0 and leaves_equal(loop.params, pre_params)  # version 0 = pre-trained
        loop.run(k)
        # Warmup: K steps arrived, no update, still version 0; actions from version-0 params.
        assert trainer.wait_processed(k, 30) and trainer.updates == 0 and trainer.policy_version == 0
        rng, policy = jax.random.PRNGKey(config.seed + 1), Policy(config.agent, 2)
        for i in range(k):
            rng, key = jax.random.split(rng)
            expected = policy(pre_params, trainer.replay.data["observations"][i], key)
            np.testing.assert_array_equal(trainer.replay.data["actions"][i], expected)
        # The same actor goes on past warmup (same episode, RNG stream and sequence).
        loop.run(steps)
        assert trainer.wait_processed(steps, 30)
        assert trainer.updates == steps - k  # sync: one fused update per env step after K
        assert int(trainer.agent.critic.step) - critic_steps0 == m * (steps - k)
        assert trainer.policy_version == steps - k and loop.version == steps - k - 1
        for name in ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns"):
            np.testing.assert_array_equal(trainer.replay.data[name][:steps], reference.replay.data[name][:steps], err_msg=name)
        assert leaves_equal(trainer.agent.actor.params, reference.agent.actor.params)
        assert leaves_equal(trainer.agent.critic.params, reference.agent.critic.params)
        assert leaves_equal(trainer.agent.critic.target_params, reference.agent.critic.target_params)
    finally:
        loop.close()
        server.stop(grace=0)




@pytest.mark.parametrize("method", [{"warmup": "dataset", "warmup_steps": 6}, {"freeze_policy_steps": 3}], ids=["dataset_warmup", "freeze_policy"])
def test_sync_actor_reproduces_finetune_for_method_variants(checkpoint, method):
    """Dataset warmup (offline rows seeded, updates from the first env step) and the frozen
    policy (critic-only updates first) run the same through the learner as in Finetuner."""
    steps = 10
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": 4, "num_steps": 40, "utd_ratio": 2, **method})
    reference = Finetuner(config)
    for _ in range(steps):
        reference.step()
    server = start_learner(config, max_lead=0)
    try:
        trainer = server.trainer
        loop = ActorLoop(ActorSettings(learner=server.address, seed=config.seed, batch_size=1, pull_every=1, actor_id="solo"))
        loop.connect()
        loop.run(steps)
        assert trainer.wait_processed(steps, 30) and trainer.updates == reference.updates
        rows = len(reference.replay)
        assert len(trainer.replay) == rows
        for name in ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns"):
            np.testing.assert_array_equal(trainer.replay.data[name][:rows], reference.replay.data[name][:rows], err_msg=name)
        assert leaves_equal(trainer.agent.actor.params, reference.agent.actor.params)
        assert leaves_equal(trainer.agent.critic.params, reference.agent.critic.params)
    finally:
        loop.close()
        server.stop(grace=0)


def test_sync_learner_logs_the_diagnostics_finetune_logs(checkpoint, tmp_path):
    """The forgetting diagnostics come at the steps `wsrl finetune` logs them (step 0 before
    any data, then every diagnostics_every inserted env steps, warmup steps included) with the
    same values (one sync actor reproduces the run exactly)."""
    import csv

    from learner.config import to_dict
    from learner.finetune import finetune
    from learner.run_logger import RunLogger

    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": 5, "num_steps": 12, "utd_ratio": 2, "diagnostics_every": 4,
                                   "diagnostics_states": 16})
    finetune(config, str(tmp_path / "finetune"))
    logger = RunLogger(tmp_path / "learner", config.logging, to_dict(config), "learner")
    server = LearnerServer(Trainer(config, SPEC, DistributedSettings(max_lead=0), logger=logger)).start()
    try:
        loop = ActorLoop(ActorSettings(learner=server.address, seed=config.seed, batch_size=1, pull_every=1, actor_id="solo"))
        loop.connect()
        loop.run(12)
        assert server.trainer.wait_processed(12, 30)
    finally:
        loop.close()
        server.stop(grace=0)
        logger.close()

    def rows(path):
        with open(path / "diagnostics.csv", newline="") as f:
            return list(csv.DictReader(f))

    expected, got = rows(tmp_path / "finetune"), rows(tmp_path / "learner")
    assert [r["step"] for r in expected] == ["0", "4", "8", "12"]
    assert got == expected


class _Pending:
    """A stand-in for an update's output: records when the training thread waits for it."""

    def __init__(self, index: int, log: list):
        self.index, self.log = index, log

    def block_until_ready(self):  # what jax.block_until_ready calls on a leaf
        self.log.append(("waited", self.index))
        return self


class _RecordingAgent:
    """An agent whose updates only record their order (no computation)."""

    def __init__(self, params, log: list, count: int = 0):
        self.actor = type("Actor", (), {"params": params})()
        self.log, self.count = log, count

    def update(self, batch):
        self.log.append(("dispatched", self.count + 1))
        return _RecordingAgent(self.actor.params, self.log, self.count + 1), {"loss": _Pending(self.count + 1, self.log)}

    update_critics = update

    def policy_params(self):
        return self.actor.params


def test_sync_learner_keeps_at_most_two_updates_in_flight():
    """JAX dispatches updates asynchronously; the training thread waits for update t - 2
    before it dispatches update t, so a policy pull (which needs the latest version computed)
    never waits behind a long queue of updates."""
    from learner.distributed import trainer as trainer_module

    log: list = []
    config = tiny_config(finetune={"warmup_steps": 2, "num_steps": 100, "utd_ratio": 1})
    params = make_agent("sac", config.agent, 2, 2, seed=0).actor.params
    trainer = Trainer(config, SPEC, DistributedSettings(max_lead=1000), agent=_RecordingAgent(params, log))
    trainer.start()
    try:
        trainer.register("a", rid("r1"), 0)
        batch = make_batch(12, actor_id="a")
        arrays = {name: codec.decode_tensor(getattr(batch, name), name) for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")}
        trainer.submit("a", rid("r1"), 0, arrays)
        assert trainer.wait_processed(12, 30)
    finally:
        trainer.stop()
    assert trainer_module.DISPATCH_AHEAD == 2 and trainer.updates == 10
    # Before dispatching update t (t > 2) the thread has waited for update t - 2, in order.
    for t in range(3, 11):
        assert log.index(("waited", t - 2)) < log.index(("dispatched", t))
        assert ("waited", t - 1) not in log[: log.index(("dispatched", t))]
    assert [i for kind, i in log if kind == "waited"] == list(range(1, 9))


def test_actors_follow_the_learners_random_warmup_and_jsrl_rollins(checkpoint):
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": 5, "num_steps": 40, "warmup": "random"})
    server = start_learner(config, max_lead=0)
    try:
        loop = ActorLoop(ActorSettings(learner=server.address, seed=0, batch_size=1, pull_every=1, actor_id="w"))
        loop.connect()
        assert loop.behaviour["warmup"] == "random" and loop.version == 0
        loop.run(5)
        warmup_actions = server.trainer.replay.data["actions"][:5]
        observations = server.trainer.replay.data["observations"][:5]
        rng, policy = jax.random.PRNGKey(1), Policy(config.agent, 2)
        sampled = np.stack([policy.sample(loop.pretrained_params, o, rng)[0] for o in observations])
        assert np.all(np.abs(warmup_actions) <= 1) and not np.allclose(warmup_actions, sampled)
        np.testing.assert_array_equal(warmup_actions, np.random.default_rng(0 + 3).uniform(-1, 1, (5, 2)).astype(np.float32))
    finally:
        loop.close()
        server.stop(grace=0)
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": 0, "num_steps": 40, "init": "actor",
                                   "jsrl": True, "jsrl_initial_prob": 1.0, "jsrl_decay_steps": 10**9})
    server = start_learner(config, max_lead=0)
    try:
        loop = ActorLoop(ActorSettings(learner=server.address, seed=0, batch_size=1, pull_every=1, actor_id="j"))
        loop.connect()
        assert loop.behaviour["jsrl"] and leaves_equal(loop.pretrained_params, server.trainer.agent.actor.params)
        loop.run(1)
        assert loop.rollin_steps_left >= 0 and loop.num_episodes == 0
        drawn = loop.rollin_steps_left + 1  # one roll-in step was taken
        assert drawn == jsrl_rollin_steps(np.random.default_rng(3), 0, 1.0, 10**9, 0.99)
    finally:
        loop.close()
        server.stop(grace=0)


# ---- exactly-once ---------------------------------------------------------------------------


def test_duplicates_are_acknowledged_not_stored_and_restarts_resume(server):
    client, trainer = LearnerClient(server.address), server.trainer
    try:
        assert hello(client, run_id=rid("r1")).next_sequence == 0
        ack = client.push(make_batch(3, seq=0))
        assert ack.stored and not ack.duplicate and ack.next_sequence == 1 and ack.env_steps == 3
        assert ack.durable_sequence == 1  # no state directory: nothing to wait for, forget at once
        retry = client.push(make_batch(3, seq=0))  # a retry after a lost ack
        assert retry.duplicate and not retry.stored and retry.next_sequence == 1
        with pytest.raises(grpc.RpcError) as gap:
            client.push(make_batch(2, seq=2))
        assert gap.value.code() == grpc.StatusCode.OUT_OF_RANGE and "expected 1" in gap.value.details()
        # The same run shaking hands again (actor reconnecting) is told where to resume.
        assert hello(client, run_id=rid("r1"), next_sequence=0).next_sequence == 1
        # A restarted actor (fresh run id) starts its own sequence.
        assert hello(client, run_id=rid("r2")).next_sequence == 0
        assert client.push(make_batch(2, seq=0, run_id=rid("r2"))).stored
        with pytest.raises(grpc.RpcError) as unknown:
            client.push(make_batch(1, seq=0, run_id=rid("never-shook-hands")))
        assert unknown.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "Handshake" in unknown.value.details()
        assert trainer.wait_processed(5, 10) and len(trainer.replay) == 5
        assert trainer.status()["duplicate_batches"] == 1
    finally:
        client.close()


def test_spooled_batches_of_a_killed_actor_are_delivered_exactly_once(server, tmp_path):
    """An actor killed after spooling (some batches acknowledged, some not) restarts with
    the same id and spool: the learner ends up with every transition exactly once."""
    client, trainer = LearnerClient(server.address), server.trainer
    spool = Spool(tmp_path / "spool" / "robot")
    try:
        hello(client, actor_id="robot", run_id=rid("dead"))
        batches = [make_batch(2, seq=i, actor_id="robot", run_id=rid("dead")) for i in range(4)]
        for b in batches:
            spool.put(b)
        for b in batches[:2]:  # acknowledged before the kill; the deletions were lost too
            client.push(b)
        spool.remove(rid("dead"), 0)
        settings = ActorSettings(learner=server.address, actor_id="robot", spool_dir=str(tmp_path / "spool"), batch_size=2, pull_every=0)
        loop = ActorLoop(settings)
        try:
            loop.connect()
            assert spool.pending() == []
            loop.run(4)
        finally:
            loop.close()
        assert trainer.wait_processed(12, 10)
        stored = trainer.replay.data["observations"][:8]
        expected = np.concatenate([codec.decode_tensor(b.observations, "o") for b in batches])
        np.testing.assert_array_equal(stored, expected)  # dead run: seqs 0..3 once each, in order
        assert len(trainer.replay) == 12 and trainer.status()["duplicate_batches"] == 1
        record = trainer.actors["robot"]
        assert record.next_sequence[rid("dead")] == 4 and record.next_sequence[loop.run_id] == 2
    finally:
        client.close()


# ---- validation -------------------------------------------------------------------------------


def _bad_batches():
    good = make_batch(3)
    cases = {}
    nan_obs = np.zeros((3, 2), np.float32)
    nan_obs[1, 0] = np.nan
    cases["nan"] = (make_batch(3, observations=nan_obs), "INVALID_ARGUMENT", "field 'observations': row 1 holds NaN")
    cases["wrong shape"] = (make_batch(3, actions=np.zeros((3, 3), np.float32)), "INVALID_ARGUMENT", "field 'actions.shape': got [3, 3], expected [3, 2]")
    cases["wrong dtype"] = (make_batch(3, rewards=np.zeros(3, np.float64)), "INVALID_ARGUMENT", "field 'rewards.dtype': got 'float64', expected 'float32'")
    cases["out of bounds"] = (make_batch(3, actions=np.array([[0, 0], [0, 1.5], [0, 0]], np.float32)), "INVALID_ARGUMENT", "field 'actions': row 1")
    cases["row mismatch"] = (make_batch(3, rewards=np.zeros(2, np.float32)), "INVALID_ARGUMENT", "field 'rewards.shape': got [2], expected 3 rows")
    truncated = pb.TransitionBatch()
    truncated.CopyFrom(good)
    truncated.next_observations.data = truncated.next_observations.data[:-3]
    cases["bytes"] = (truncated, "INVALID_ARGUMENT", "field 'next_observations.data'")
    missing = pb.TransitionBatch()
    missing.CopyFrom(good)
    missing.ClearField("terminals")
    cases["missing"] = (missing, "INVALID_ARGUMENT", "field 'terminals': missing")
    cases["bool dtype"] = (make_batch(3, terminals=np.array([0, 1, 0], np.uint8)), "INVALID_ARGUMENT", "field 'terminals.dtype': got 'uint8', expected 'bool'")
    bad_bool = pb.TransitionBatch()
    bad_bool.CopyFrom(good)
    bad_bool.episode_ends.data = b"\x00\x02\x00"
    cases["bool bytes"] = (bad_bool, "INVALID_ARGUMENT", "field 'episode_ends.data': bool bytes must be 0 or 1")
    future = pb.TransitionBatch()
    future.CopyFrom(good)
    future.policy_version = 99
    cases["future version"] = (future, "INVALID_ARGUMENT", "field 'policy_version': got 99")
    cases["oversized"] = (make_batch(17), "RESOURCE_EXHAUSTED", "at most 16 (max_batch_size)")
    return cases


@pytest.mark.parametrize("case", list(_bad_batches()))
def test_bad_batches_are_rejected_naming_the_field_and_nothing_is_stored(server, case):
    batch, code, message = _bad_batches()[case]
    client, trainer = LearnerClient(server.address), server.trainer
    try:
        hello(client)
        assert client.push(make_batch(2, seq=0)).stored
        batch.sequence = 1
        with pytest.raises(grpc.RpcError) as e:
            client.push(batch)
        assert e.value.code().name == code and message in e.value.details(), e.value.details()
        assert trainer.wait_processed(2, 10)
        assert trainer.env_steps == 2 and len(trainer.replay) == 2 and trainer.status()["rejected_batches"] == 1
        assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
        # The sequence was not consumed: the corrected batch goes through.
        assert client.push(make_batch(3, seq=1)).stored
    finally:
        client.close()


def test_multi_chunk_policy_is_pulled_chunk_by_chunk_while_versions_are_published(server):
    """A policy over the chunk size travels as several unary PullPolicy calls (index > 0 names
    the version); the learner keeps the last few versions, so publishing meanwhile does not
    break a pull, and a version that is gone gets NOT_FOUND naming the field."""
    trainer, store = server.trainer, server.service.policies
    store.chunk_bytes = 200  # the tiny policy (815 bytes) becomes 5 chunks
    client = LearnerClient(server.address)
    try:
        version, params, learner_id = client.pull("a", -1)
        assert version == 0 and learner_id == server.learner_id and leaves_equal(params, trainer.agent.actor.params)
        first = client.stub.PullPolicy(pb.PullPolicyRequest(actor_id="a", have_version=-1))
        assert first.num_chunks == 5 and first.index == 0 and first.total_bytes == 815 and len(first.sha256) == 64
        for v in range(1, 6):  # publish five versions (new arrays each time, as updates do)
            with trainer.cond:
                trainer.policy_version, trainer.policy_params = v, jax.tree_util.tree_map(lambda x: x + v, trainer.agent.actor.params)
            if v == 1:
                # Version 0 is still held: its remaining chunks can be fetched by index.
                rest = [client.stub.PullPolicy(pb.PullPolicyRequest(actor_id="a", index=i, version=0)) for i in range(1, 5)]
                assert codec.join_chunks(iter([first, *rest]))[0] == 0
            assert client.pull("a", v - 1, learner_id)[0] == v
        with pytest.raises(grpc.RpcError) as e:
            client.stub.PullPolicy(pb.PullPolicyRequest(actor_id="a", index=1, version=0))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "field 'version': version 0 is no longer held (latest is 5)" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            client.stub.PullPolicy(pb.PullPolicyRequest(actor_id="a", index=9, version=5))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'index': got 9, expected < 5" in e.value.details()
        version, params, _ = client.pull("a", 2, learner_id)
        assert version == 5 and leaves_equal(params, jax.tree_util.tree_map(lambda x: x + 5, trainer.agent.actor.params))
        assert client.pull("a", 5, learner_id)[1] is None  # unchanged
    finally:
        client.close()


def test_random_bytes_into_every_rpc_never_crash_the_server(server):
    rng, codes = np.random.default_rng(0), set()
    with grpc.insecure_channel(server.address) as channel:
        for method in ("Handshake", "PushTransitions", "PullPolicy", "ReportEpisodes", "GetStatus", "NextEvaluation", "PullEvaluationPolicy", "ReportEvaluation"):
            path = f"/wsrl.v1.Learner/{method}"
            call = channel.unary_unary(path)
            for size in (0, 1, 7, 64, 1000, 5000):
                for _ in range(3):
                    try:
                        call(rng.bytes(size), timeout=10)
                    except grpc.RpcError as e:
                        # UNKNOWN would mean an exception escaped a handler.
                        assert e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN), (method, e.details())
                        codes.add(e.code().name)
    assert "INTERNAL" in codes  # undecodable requests are refused by the deserializer
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
    client = LearnerClient(server.address)
    try:
        assert hello(client, run_id=rid("after-fuzz")).next_sequence == 0
        assert client.push(make_batch(2, run_id=rid("after-fuzz"))).stored
    finally:
        client.close()
    assert server.trainer.error is None


# ---- handshake and auth -------------------------------------------------------------------------


def test_spec_or_protocol_mismatch_is_failed_precondition_naming_both_sides(server):
    client = LearnerClient(server.address)
    try:
        with pytest.raises(grpc.RpcError) as e:
            hello(client, spec={**SPEC, "observation_dim": 5})
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "spec.observation_dim: actor has 5, learner has 2" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            hello(client, protocol=99, spec={**SPEC, "task": "other"})
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"protocol_version: actor has 99, learner has {codec.PROTOCOL_VERSION}" in e.value.details()
        assert "spec.task: actor has 'other', learner has 'pointmass-goal'" in e.value.details()
    finally:
        client.close()


def test_token_checks():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    assert token_matches((("authorization", "Bearer s3cret"),), "s3cret")
    assert not token_matches((("authorization", "Bearer s3cre"),), "s3cret")
    assert not token_matches((("authorization", "s3cret"),), "s3cret")
    assert not token_matches((), "s3cret")
    auth = AuthInterceptor("t", None, status_open=False)
    assert auth.required_token("/wsrl.v1.Learner/PushTransitions") == "t"
    assert auth.required_token("/wsrl.v1.Learner/GetStatus") == ""  # off loopback, no status token: refused
    assert auth.required_token("/grpc.health.v1.Health/Check") is None


def test_off_loopback_requires_the_token(tmp_path):
    config = tiny_config()
    with pytest.raises(ValueError, match="auth token is required"):
        LearnerServer(Trainer(config, SPEC), "0.0.0.0:0")
    server = LearnerServer(Trainer(config, SPEC), "0.0.0.0:0", token="s3cret", status_token="st4tus").start()
    address = f"127.0.0.1:{server.port}"
    try:
        for token in (None, "wrong"):
            client = LearnerClient(address, token)
            for call in (lambda: hello(client), lambda: client.pull("a", -1), lambda: client.push(make_batch(1))):
                with pytest.raises(grpc.RpcError) as e:
                    call()
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            client.close()
        client = LearnerClient(address, "s3cret")
        assert hello(client).next_sequence == 0
        with pytest.raises(grpc.RpcError) as e:  # status needs its own token
            client.status()
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        client.close()
        status_client = LearnerClient(address, "st4tus")
        assert status_client.status().mode == "sync"
        status_client.close()
        assert health_status(address) == health_pb2.HealthCheckResponse.SERVING  # probes stay open
    finally:
        server.stop(grace=0)


def _self_signed(directory: Path, name: str) -> tuple[str, str]:
    """(cert, key) PEM paths of a fresh self-signed certificate for localhost / 127.0.0.1."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("no `openssl` binary to make a test certificate (and the `cryptography` package is not a dependency)")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_off_loopback_serves_actors_status_and_health_and_refuses_plaintext(tmp_path, capsys):
    """TLS with a self-signed certificate (made here with openssl): an actor with --tls-ca and
    the token pushes and pulls, `wsrl status --tls-ca` works, health checks work over TLS;
    a plaintext client or one trusting another CA cannot talk to it, and the token is still
    required over TLS. Bad TLS options are refused naming the option."""
    from learner.cli import main

    cert, key = _self_signed(tmp_path, "learner")
    other_cert, _ = _self_signed(tmp_path, "other")
    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000})
    with pytest.raises(ValueError, match="give both --tls-cert and --tls-key"):
        LearnerServer(Trainer(config, SPEC), "127.0.0.1:0", tls_cert=cert)
    with pytest.raises(ValueError, match="--tls-key: cannot read '/nonexistent.key'"):
        LearnerServer(Trainer(config, SPEC), "127.0.0.1:0", tls_cert=cert, tls_key="/nonexistent.key")
    with pytest.raises(ValueError, match="--tls-cert: .* holds no PEM certificate"):
        LearnerServer(Trainer(config, SPEC), "127.0.0.1:0", tls_cert=key, tls_key=key)
    with pytest.raises(ValueError, match="--tls-ca: .* holds no PEM certificate"):
        LearnerClient("127.0.0.1:1", tls_ca=key)

    server = LearnerServer(Trainer(config, SPEC), "0.0.0.0:0", token="s3cret", status_token="st4tus", tls_cert=cert, tls_key=key).start()
    address = f"localhost:{server.port}"
    request = pb.HandshakeRequest(protocol_version=codec.PROTOCOL_VERSION, spec=codec.spec_to_proto(SPEC), actor_id="x", run_id=rid("x"))
    try:
        for label, client in (("plaintext", LearnerClient(address, "s3cret")), ("other CA", LearnerClient(address, "s3cret", other_cert))):
            with pytest.raises(grpc.RpcError) as e:
                client.stub.Handshake(request, timeout=10, metadata=client.metadata)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, label
            client.close()
        client = LearnerClient(address, None, cert)
        with pytest.raises(grpc.RpcError) as e:  # TLS does not replace the token
            hello(client)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        client.close()

        loop = ActorLoop(ActorSettings(learner=address, actor_id="tls-robot", token="s3cret", tls_ca=cert, batch_size=3, pull_every=2))
        try:
            result = loop.run(6)
        finally:
            loop.close()
        assert result["delivered"] and result["sequence"] == 2 and loop.version == 0 and loop.params is not None
        assert server.trainer.wait_processed(6, 10) and len(server.trainer.replay) == 6

        assert main(["status", address, "--token", "st4tus", "--tls-ca", cert]) == 0
        out = capsys.readouterr().out
        assert "env steps 6 (processed 6" in out and "tls-robot" in out
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(cert).read_bytes())) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="wsrl.v1.Learner"), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(grace=0)


# ---- async mode -----------------------------------------------------------------------------------


def test_async_mode_never_exceeds_max_utd_and_reports_it():
    config = tiny_config(finetune={"warmup_steps": 4, "num_steps": 100, "utd_ratio": 2})
    server = start_learner(config, mode="async", max_utd=1.0, max_lead=0)
    client, trainer = LearnerClient(server.address), server.trainer
    try:
        hello(client)
        for seq in range(4):
            client.push(make_batch(5, seq=seq))  # never held back, even with max_lead 0
        # Generous waits: the first update compiles, which takes far longer on a loaded box.
        assert trainer.wait_processed(20, 120)
        deadline = time.monotonic() + 120
        while trainer.updates < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        status = client.status()
        # max_utd 1 with M=2: at most (20-4)/2 = 8 fused updates, and it gets there.
        assert status.updates == 8 and status.critic_updates == 16
        assert status.achieved_utd == pytest.approx(1.0)
    finally:
        client.close()
        server.stop(grace=0)


def test_async_mode_keeps_the_configured_utd_unless_the_cap_is_lifted(capsys):
    from learner.cli import build_parser
    from learner.distributed.launch import settings_from_args
    from learner.distributed.operator_commands import format_status

    config = tiny_config(finetune={"warmup_steps": 4, "num_steps": 100, "utd_ratio": 2})
    settings = settings_from_args(build_parser().parse_args(["learner", "--mode", "async"]), config)
    assert settings.max_utd == 2.0  # finetune.utd_ratio, the paper's M
    assert "warning" not in capsys.readouterr().err
    lifted = settings_from_args(build_parser().parse_args(["learner", "--mode", "async", "--max-utd", "0"]), config)
    assert lifted.max_utd == 0.0 and "--max-utd 0: no cap" in capsys.readouterr().err
    # The status names the ratio the learner keeps: the cap in async mode, M in sync mode.
    for mode, max_utd, shown in (("async", 2.0, "(target 2)"), ("async", 0.0, "(no cap)"), ("sync", 0.0, "(target 2)")):
        server = start_learner(config, mode=mode, max_utd=max_utd)
        client = LearnerClient(server.address)
        try:
            status = client.status()
            assert status.target_utd == (0.0 if shown == "(no cap)" else 2.0)
            assert f"achieved UTD 0.00 {shown}" in format_status(status)
        finally:
            client.close()
            server.stop(grace=0)


# ---- commands ---------------------------------------------------------------------------------------


def test_wsrl_status_prints_the_learner_state(server, capsys):
    from learner.cli import main

    client = LearnerClient(server.address)
    try:
        hello(client, actor_id="robot-7")
        client.push(make_batch(3, actor_id="robot-7"))
        assert server.trainer.wait_processed(3, 10)
    finally:
        client.close()
    assert main(["status", server.address]) == 0
    out = capsys.readouterr().out
    assert "env steps 3 (processed 3, warmup 1000, warming up)" in out
    assert "policy version 0" in out and "buffer 3" in out and "connected actors: 1" in out and "robot-7" in out
    assert main(["status", "127.0.0.1:1"]) == 1  # nothing listens there


def test_wsrl_run_spawns_a_learner_and_two_actors_in_sync_mode(checkpoint, tmp_path):
    """Separate processes (spawn); the sync-mode count holds end to end: every env step
    after K got exactly one fused update, i.e. M critic updates."""
    from learner.cli import main

    run_dir = tmp_path / "run"
    args = [
        "run", "--num-actors", "2", "--checkpoint", str(checkpoint), "--run-dir", str(run_dir), "--batch-size", "4", "--pull-every", "3",
        "agent.critic_hidden_dims=[16]", "agent.actor_hidden_dims=[16]", "agent.critic_ensemble_size=4", "agent.batch_size=8",
        "finetune.warmup_steps=10", "finetune.num_steps=31", "finetune.utd_ratio=2", "finetune.eval_episodes=1", "finetune.log_every=5",
        "finetune.eval_every=10", "logging.tensorboard=false", "logging.progress=false",
    ]
    assert main(args) == 0
    final = read_checkpoint(run_dir / "checkpoint.ckpt")
    assert final.counters["processed_steps"] == final.counters["env_steps"] == 31
    assert final.counters["updates"] == 31 - 10
    pre = read_checkpoint(checkpoint)
    assert int(final.state["critic"]["step"]) - int(pre.state["critic"]["step"]) == 2 * (31 - 10)
    assert (run_dir / "config.yaml").exists() and (run_dir / "train.csv").exists() and (run_dir / "eval.csv").exists()
    # The evaluator: step 0 and every 10 env steps, plus the end, each of the version current
    # there (sync mode: version = updates = step - K after warmup); summary.json of them.
    evals = _read_csv(run_dir / "eval.csv")
    assert [int(r["step"]) for r in evals] == [0, 10, 20, 30, 31]
    assert [int(r["policy_version"]) for r in evals] == [0, 0, 10, 20, 21]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schema"] == "wsrl-summary-v1" and summary["command"] == "run" and summary["evaluations"] == 5
    assert summary["final_normalized_score"] == evals[-1]["normalized_score"] and summary["interrupted"] is False
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["logging"]["run_dir"] == str(run_dir)


def test_kill_9_of_an_actor_then_restart_loses_and_duplicates_nothing(tmp_path):
    """A real actor process with a spool is killed with SIGKILL mid-episode and restarted
    with the same id: every batch of the dead run is stored exactly once (sequence numbers
    contiguous, the stored trajectory chains next_obs -> obs without a gap or repeat)."""
    import os
    import signal
    import time

    server = start_learner(tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000}))
    trainer = server.trainer
    spool = tmp_path / "spool"
    command = [sys.executable, "-m", "learner.cli", "actor", "--learner", server.address, "--actor-id", "robot",
               "--spool-dir", str(spool), "--batch-size", "4", "--max-latency", "1000", "--pull-every", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    try:
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while trainer.env_steps < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        dead_run = trainer.actors["robot"].run_id
        assert trainer.env_steps >= 40
        second = subprocess.run([*command, "--num-steps", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert list(spool.rglob("*.pb")) == []  # everything spooled got acknowledged
        runs = trainer.actors["robot"].next_sequence
        assert set(runs) == {dead_run, trainer.actors["robot"].run_id} and runs[trainer.actors["robot"].run_id] == 2
        assert trainer.wait_processed(4 * sum(runs.values()), 10)
        assert len(trainer.replay) == trainer.env_steps == 4 * sum(runs.values())  # exactly once per (actor, run, seq)
        n = 4 * runs[dead_run]
        d = trainer.replay.data
        np.testing.assert_array_equal(d["next_observations"][: n - 1], d["observations"][1:n])  # one unbroken episode
    finally:
        server.stop(grace=0)


def test_learner_state_resume_continues_counters_buffer_version_and_sequences(checkpoint, tmp_path):
    """In-process: the saved state restores counters, buffer, RNGs and sequence numbers; the
    durable watermark answered with each push is what the last save holds; versions of the
    previous learner process are told apart from the resumed one's by learner id (the
    multi-process SIGKILL test below covers real processes and live actors)."""
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": 4, "num_steps": 100, "utd_ratio": 2})
    settings = {"state_dir": str(tmp_path / "state"), "max_lead": 0}
    first = start_learner(config, **settings)
    client = LearnerClient(first.address)
    hello(client)
    for seq in range(3):
        assert client.push(make_batch(3, seq=seq)).durable_sequence == 0  # nothing saved yet
    old_version, _, old_learner = client.pull("a", -1)
    assert old_version == 5 and old_learner == first.learner_id
    client.close()
    first.stop(grace=0)  # drains, then saves the state
    a = first.trainer
    assert (a.processed, a.updates, a.policy_version) == (9, 5, 5)

    b = Trainer(config, SPEC, DistributedSettings(**settings))
    b.resume(settings["state_dir"])
    assert (b.env_steps, b.processed, b.updates, b.policy_version) == (9, 9, 5, 5)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns"):
        np.testing.assert_array_equal(b.replay.data[name], a.replay.data[name])
    assert len(b.replay) == 9 and b.sample_rng.bit_generator.state == a.sample_rng.bit_generator.state
    assert leaves_equal(b.agent, a.agent)  # params, targets, optimizer states, RNG
    second = LearnerServer(b).start()
    client = LearnerClient(second.address)
    try:
        assert hello(client).next_sequence == 3  # the reconnecting actor resumes where it was
        assert client.pull("a", 4)[0] == 5
        # The same version number from the killed learner process is not "unchanged".
        version, params, learner_id = client.pull("a", 5, old_learner)
        assert version == 5 and params is not None and learner_id == second.learner_id != old_learner
        assert client.pull("a", 5, learner_id)[1] is None
        ack = client.push(make_batch(3, seq=2))  # retried after the restart: not stored
        assert ack.duplicate and ack.durable_sequence == 3
        # Acted with version 9 of the old learner process (published after its last save, say):
        # above this learner's count, but not "from the future".
        batch = make_batch(2, seq=3)
        batch.policy_version, batch.policy_learner_id = 9, old_learner
        assert client.push(batch).stored
        batch = make_batch(2, seq=4)
        batch.policy_version, batch.policy_learner_id = 99, second.learner_id
        with pytest.raises(grpc.RpcError) as e:
            client.push(batch)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'policy_version': got 99" in e.value.details()
        assert b.wait_processed(11, 10)
        assert b.updates == 11 - 4 and len(b.replay) == 11  # no burst of catch-up updates
    finally:
        client.close()
        second.stop(grace=0)


# ---- multi-process: rolling UTD windows, learner kill -9 and resume ----------------------------


def _read_csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Polls `predicate` (a condition on another process's state) until it returns a truthy value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _paced_actor(settings: dict, barrier) -> None:
    """Spawned: one actor; its channel is made here, after the process started. It connects,
    then waits for the other actors so that their runs overlap, then runs to its num_steps."""
    loop = ActorLoop(ActorSettings(**settings))
    try:
        loop.connect()
        barrier.wait(timeout=180)
        result = loop.run()
    finally:
        loop.close()
    sys.exit(0 if result["delivered"] else 1)


def test_sync_two_actors_of_different_speeds_keep_utd_in_every_rolling_window(checkpoint, tmp_path):
    """Learner and 2 actors are separate processes (spawn). Actor 'fast' steps as fast as the
    learner lets it (batches of 4); actor 'slow' takes >= 50 ms per env step (batches of 1).

    Samples: the learner's `learner.csv` has one row per inserted env step p = 0..N (log_every
    1), each a consistent snapshot taken on the training thread after that step's update:
    C(p) critic gradient steps (M per fused update) and A(p) transitions accepted so far.
    Window: any w = 20 consecutive inserted env steps [p, p + w]. Only post-warmup steps count
    in the denominator, post(p) = max(0, p - K), so a window straddling the warmup boundary
    K is judged on its post-warmup part. Checked for every window:
    (C(p+w) - C(p)) / (post(p+w) - post(p)) within M = 4 +- 0.1, and C unchanged in windows
    entirely inside warmup. Also: the actors' lead over the learner stays bounded (A(p) - p <=
    2 x (max_lead + batch)), the fast actor finished while the slow one still had steps left
    (the speeds really differ, so the last windows hold only slow-actor steps), and the
    agent's own critic step counter grew by exactly M x (N - K)."""
    import dataclasses
    import multiprocessing as mp
    import time

    from learner.config import to_dict
    from learner.distributed.children import _learner_process

    k, m, fast_steps, slow_steps, max_lead, window = 30, 4, 90, 45, 8, 20
    n = fast_steps + slow_steps
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": k, "num_steps": n, "utd_ratio": m, "log_every": 1})
    settings = DistributedSettings(max_lead=max_lead)
    ctx = mp.get_context("spawn")
    ready, stop, barrier = ctx.Queue(), ctx.Event(), ctx.Barrier(2)
    run_dir = tmp_path / "run"
    learner = ctx.Process(target=_learner_process, args=(to_dict(config), dataclasses.asdict(settings), str(run_dir), str(tmp_path / "learner.log"), ready, stop))
    learner.start()
    actors, client = [], None
    try:
        kind, address, _ = ready.get(timeout=180)
        assert kind == "ready", address
        common = {"learner": address, "env": config.task, "pull_every": 5, "max_latency_s": 1000.0}
        for actor_id, steps, batch, period in (("fast", fast_steps, 4, 0.0), ("slow", slow_steps, 1, 0.05)):
            s = {**common, "actor_id": actor_id, "seed": len(actors), "num_steps": steps, "batch_size": batch, "step_period_s": period}
            actors.append(ctx.Process(target=_paced_actor, args=(s, barrier)))
            actors[-1].start()
        client = LearnerClient(address)
        slow_when_fast_done = None
        while any(a.is_alive() for a in actors):
            accepted = {a.actor_id: a.env_steps for a in client.status().actors}
            if slow_when_fast_done is None and accepted.get("fast") == fast_steps:
                slow_when_fast_done = accepted.get("slow", 0)
            time.sleep(0.02)
        assert [a.exitcode for a in actors] == [0, 0]
        _wait_for(lambda: client.status().processed_steps == n, 60, "the learner to insert every transition")
    finally:
        stop.set()
        if client is not None:
            client.close()
        learner.join(timeout=120)
        for a in actors:
            if a.is_alive():
                a.terminate()
    assert learner.exitcode == 0
    # The fast actor finished while the slow one still had steps to take (>= 50 ms each).
    assert slow_when_fast_done is not None and slow_when_fast_done < slow_steps, slow_when_fast_done

    rows = _read_csv(run_dir / "learner.csv")
    by_step = {int(r["processed_steps"]): r for r in rows}
    assert sorted(by_step) == list(range(n + 1))  # a sample at every inserted env step
    c = [by_step[p]["critic_updates"] for p in range(n + 1)]
    lead = [by_step[p]["env_steps"] - p for p in range(n + 1)]
    post = [max(0, p - k) for p in range(n + 1)]
    assert max(lead) <= 2 * (max_lead + 4) and lead[-1] == 0
    ratios = []
    for p in range(n + 1 - window):
        if post[p + window] == post[p]:
            assert c[p + window] == c[p] == 0, f"critic updates during warmup window [{p}, {p + window}]"
        else:
            ratios.append((p, (c[p + window] - c[p]) / (post[p + window] - post[p])))
    straddling = [p for p, _ in ratios if p < k]
    assert len(straddling) == window - 1  # windows across the warmup boundary were checked
    bad = [(p, r) for p, r in ratios if abs(r - m) > 0.1]
    assert not bad, f"windows [p, p+{window}] off M={m}: {bad[:5]}"
    final = read_checkpoint(run_dir / "checkpoint.ckpt")
    pre = read_checkpoint(checkpoint)
    assert int(final.state["critic"]["step"]) - int(pre.state["critic"]["step"]) == m * (n - k)
    assert final.counters["env_steps"] == final.counters["processed_steps"] == n


def test_learner_killed_with_sigkill_resumes_and_live_actors_finish_exactly_once(checkpoint, tmp_path):
    """`wsrl learner` (a real process) is killed with SIGKILL after a state save and after it
    acknowledged more batches; `wsrl learner --resume RUN_DIR` (a new process, same address)
    continues from the saved counters, buffer and policy version. The two `wsrl actor`
    processes keep running: they retry, reconnect by themselves, resend the acknowledged
    batches the killed learner lost (kept until the learner reports them checkpointed) and
    finish. In the end every transition is stored exactly once: per actor, transitions and
    batches equal what it sent, and the buffer holds no repeated row."""
    import json
    import os
    import re
    import signal

    from flax import serialization

    from learner.distributed.serving import resumed_config
    from learner.distributed.learner_state import load_learner_state

    k, m, per_actor, batch, every = 10, 2, 60, 4, 40
    n = 2 * per_actor
    run_dir, state_file = tmp_path / "run", tmp_path / "run" / "learner_state" / "learner_state.msgpack"
    # A shared persistent compilation cache: the resumed learner reuses the first one's
    # compiled update instead of spending seconds of this 2-core box recompiling it.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    overrides = [
        "agent.critic_hidden_dims=[16]", "agent.actor_hidden_dims=[16]", "agent.critic_ensemble_size=4", "agent.batch_size=8",
        f"finetune.warmup_steps={k}", f"finetune.num_steps={n}", f"finetune.utd_ratio={m}", f"finetune.checkpoint_every={every}",
        "finetune.eval_episodes=1", "finetune.log_every=1", "logging.tensorboard=false", "logging.progress=false",
    ]
    processes = []

    def start(name, *args):
        log = open(tmp_path / f"{name}.log", "w")
        processes.append(subprocess.Popen([sys.executable, "-m", "learner.cli", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        return processes[-1]

    def saved_counters():
        if not state_file.exists():
            return None
        return json.loads(serialization.msgpack_restore(state_file.read_bytes())["counters"])

    def status():
        try:
            return client.status()
        except grpc.RpcError:
            return None

    client = None
    try:
        first = start("learner1", "learner", "--checkpoint", str(checkpoint), "--run-dir", str(run_dir), "--bind", "127.0.0.1:0", "--forever", "--max-lead", "4", *overrides)
        address = _wait_for(lambda: re.findall(r"on (127\.0\.0\.1:\d+) ->", (tmp_path / "learner1.log").read_text()), 120, "the learner to serve")[0]
        actors = [
            start(f"actor{i}", "actor", "--learner", address, "--actor-id", f"a{i}", "--seed", str(i), "--num-steps", str(per_actor), "--batch-size", str(batch),
                  "--max-latency", "1000", "--pull-every", "5", "--step-period", "0.02", "--max-backoff", "0.5")
            for i in range(2)
        ]
        client = LearnerClient(address, max_backoff_s=0.5)

        def acknowledged_after_a_save():
            # Status first: a save landing between the two reads then only delays the kill.
            s, saved = status(), saved_counters()
            # (A save past warmup: the learner also saves at start, and on a timer.)
            return s is not None and saved is not None and saved["processed"] > k and s.env_steps >= saved["env_steps"] + 2 * batch and s.env_steps

        acknowledged = _wait_for(acknowledged_after_a_save, 120, "a state save followed by more acknowledged batches")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        saved = saved_counters()
        assert saved["env_steps"] < acknowledged  # the kill lost acknowledged batches
        assert all(a.poll() is None for a in actors)  # the actors are still running

        second = start("learner2", "learner", "--resume", str(run_dir), "--bind", address, "--forever", "--max-lead", "4")
        for a in actors:
            assert a.wait(timeout=120) == 0, (tmp_path / "actor0.log").read_text() + (tmp_path / "actor1.log").read_text()
        _wait_for(lambda: (s := status()) is not None and s.processed_steps == n, 60, "the resumed learner to insert every transition")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=120) == 128 + signal.SIGTERM, (tmp_path / "learner2.log").read_text()
    finally:
        if client is not None:
            client.close()
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    actor_logs = "".join((tmp_path / f"actor{i}.log").read_text() for i in range(2))
    assert "the learner lost batches" in actor_logs  # and resent them

    # The resumed learner started exactly at the saved counters and trained on from there; the
    # rows the first learner wrote up to its last save are kept, later ones replaced.
    all_rows = _read_csv(run_dir / "learner.csv")
    at = [i for i, r in enumerate(all_rows) if int(r["processed_steps"]) == saved["processed"]]
    assert len(at) == 1, at
    before, rows = all_rows[:at[0]], all_rows[at[0]:]
    assert before and int(before[0]["processed_steps"]) == 0
    assert [int(r["processed_steps"]) for r in before] == sorted({int(r["processed_steps"]) for r in before})
    assert int(before[-1]["processed_steps"]) < saved["processed"]
    start_row = rows[0]
    assert int(start_row["processed_steps"]) == saved["processed"] and int(start_row["env_steps"]) == saved["env_steps"]
    assert int(start_row["updates"]) == saved["updates"] == saved["processed"] - k
    assert int(start_row["policy_version"]) == saved["policy_version"] == saved["updates"]
    assert int(start_row["buffer_size"]) == saved["processed"]
    steps = [int(r["processed_steps"]) for r in rows[1:]]
    assert steps == list(range(saved["processed"] + 1, n + 1))
    assert all(r["critic_updates"] == m * (r["processed_steps"] - k) for r in rows)  # no burst, no gap

    trainer = Trainer(resumed_config(str(run_dir)), SPEC)
    load_learner_state(trainer, str(run_dir / "learner_state"))
    assert trainer.env_steps == trainer.processed == len(trainer.replay) == n
    assert trainer.updates == trainer.policy_version == n - k
    for actor_id in ("a0", "a1"):
        record = trainer.actors[actor_id]
        assert record.accepted == per_actor and list(record.next_sequence.values()) == [per_actor // batch]
    d = trainer.replay.data
    rows_stored = np.concatenate([d["observations"][:n], d["actions"][:n], d["next_observations"][:n]], axis=1)
    assert len(np.unique(rows_stored, axis=0)) == n  # no transition stored twice
    final, pre = read_checkpoint(run_dir / "checkpoint.ckpt"), read_checkpoint(checkpoint)
    assert int(final.state["critic"]["step"]) - int(pre.state["critic"]["step"]) == m * (n - k)
