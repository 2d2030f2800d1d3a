"""Camera observations on the wire: named parts in the handshake spec and in TransitionBatch,
optional zstd compression of frames, the learner's per-part checks (a hostile compressed frame
refused before it is decompressed), and an actor pushing Dict observations to a real server."""

from __future__ import annotations

import gymnasium as gym
import grpc
import numpy as np
import pytest

from actor.client import LearnerClient
from envs.observations import ObservationSpec, observation_spec_of
from envs.robot import check_robot_env
from learner.distributed.server import LearnerServer
from learner.distributed.service import observation_mismatches
from learner.distributed.settings import DistributedSettings
from learner.distributed.trainer import Trainer
from learner.distributed.validation import BatchRejected, batch_digest, max_request_bytes, validate_batch
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from tests.conftest import tiny_config

zstandard = pytest.importorskip("zstandard")

ENV = "tests.test_camera_wire:CameraEnv"
PARTS = ObservationSpec.from_json([{"name": "state", "shape": [3], "dtype": "float32"},
                                   {"name": "wrist", "shape": [8, 8, 3], "dtype": "uint8"},
                                   {"name": "side", "shape": [6, 10, 1], "dtype": "uint8"}])
SPEC = {"task": ENV, "observation_dim": 3, "action_dim": 2, "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0],
        "observation_spec": PARTS.to_json()}


class CameraEnv(gym.Env):
    """A robot-like env with a state vector and two cameras; frames are a smooth gradient
    that moves with the state, plus a step counter in one pixel (so every frame differs)."""

    observation_space = PARTS.to_space()
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self):
        self.t = 0

    def _obs(self):
        grid = np.add.outer(np.arange(8), np.arange(8))
        wrist = np.repeat(((grid * 9 + self.t * 7) % 256).astype(np.uint8)[..., None], 3, axis=2)
        side = np.full((6, 10, 1), self.t % 256, np.uint8)
        wrist[0, 0, 0] = self.t % 256
        return {"state": np.array([self.t, -self.t, 0.5], np.float32), "wrist": wrist, "side": side}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), False, self.t % 5 == 0, {}


def frames(n, rng):
    return {"state": rng.normal(size=(n, 3)).astype(np.float32), "wrist": rng.integers(0, 256, (n, 8, 8, 3), np.uint8),
            "side": rng.integers(0, 256, (n, 6, 10, 1), np.uint8)}


def part_batch(n=3, seq=0, encoding="", run_id="r1--------------", **overrides) -> pb.TransitionBatch:
    rng = np.random.default_rng(seq)
    obs, nxt = frames(n, rng), frames(n, rng)
    batch = pb.TransitionBatch(
        actor_id="cam", run_id=run_id, sequence=seq,
        actions=codec.encode_tensor(rng.uniform(-1, 1, (n, 2)).astype(np.float32)), rewards=codec.encode_tensor(np.ones(n, np.float32)),
        terminals=codec.encode_tensor(np.zeros(n, bool)), episode_ends=codec.encode_tensor(np.zeros(n, bool)),
        observation_parts=codec.encode_parts(obs, encoding), next_observation_parts=codec.encode_parts(nxt, encoding),
    )
    for key, value in overrides.items():
        batch.ClearField(key)
        getattr(batch, key).extend(value) if isinstance(value, list) else getattr(batch, key).CopyFrom(value)
    return batch, obs, nxt


def rejected(batch, spec=SPEC, max_batch_size=16) -> str:
    with pytest.raises(BatchRejected) as info:
        validate_batch(batch, spec, max_batch_size, 0)
    return str(info.value)


# ---- codec --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["", "zstd"])
def test_frames_round_trip_bit_exact(encoding):
    rng = np.random.default_rng(0)
    obs = frames(5, rng)
    parts = codec.encode_parts(obs, encoding)
    assert [p.name for p in parts] == ["side", "state", "wrist"]
    assert [p.tensor.encoding for p in parts] == [encoding, "", encoding]  # the float state always raw
    back = codec.decode_parts(pb.TransitionBatch(observation_parts=parts).observation_parts, "observation_parts")
    for name, array in obs.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)
    # A smooth frame compresses; the payload is one zstd frame stating its size.
    smooth = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (64, 1, 3))[None]
    t = codec.encode_tensor(smooth, encoding)
    if encoding:
        assert len(t.data) < smooth.nbytes // 10 and zstandard.frame_content_size(t.data) == smooth.nbytes
    np.testing.assert_array_equal(codec.decode_tensor(t, "x"), smooth)


def test_hostile_compressed_frames_are_refused_before_decompressing():
    shape = [2, 8, 8, 3]  # 384 bytes
    small = np.zeros(shape, np.uint8)
    # A decompression bomb: 100 MB of zeros in a ~3 kB frame, sent as a 384-byte tensor.
    bomb = zstandard.ZstdCompressor().compress(bytes(100 << 20))
    assert len(bomb) < 8000
    for data, message in [
        (bomb, "compressed bytes, expected at most"),  # more bytes than any frame of 384 can take
        (zstandard.ZstdCompressor().compress(bytes(1000)), "states a content size of 1000 bytes, expected 384 \\(dtype x shape\\); refused before decompressing"),
        (zstandard.ZstdCompressor(write_content_size=False).compress(small.tobytes()), "states no content size, expected 384"),
        (b"\x00" * 40, "not a zstd frame"),
        (zstandard.ZstdCompressor().compress(small.tobytes()) + b"xx", "corrupt zstd frame"),  # trailing bytes
        (zstandard.ZstdCompressor().compress(small.tobytes())[:-4] + b"abcd", "corrupt zstd frame"),  # checksum / data damaged
    ]:
        with pytest.raises(codec.WireError, match=message):
            codec.decode_tensor(pb.Tensor(dtype="uint8", shape=shape, data=data, encoding="zstd"), "wrist")
    with pytest.raises(codec.WireError, match="field 'wrist.encoding': got 'lzma', expected '' \\(raw\\) or an encoding this learner decodes: zstd"):
        codec.decode_tensor(pb.Tensor(dtype="uint8", shape=shape, data=small.tobytes(), encoding="lzma"), "wrist")


def test_raw_frames_work_without_the_codec_library(monkeypatch):
    monkeypatch.setattr(codec, "available_encodings", lambda: ())
    obs = frames(2, np.random.default_rng(1))
    back = codec.decode_parts(codec.encode_parts(obs), "o")
    np.testing.assert_array_equal(back["wrist"], obs["wrist"])
    with pytest.raises(ValueError, match="'zstd' needs the zstandard package"):
        codec.encode_parts(obs, "zstd")
    compressed = pb.Tensor(dtype="uint8", shape=[1], data=b"x", encoding="zstd")
    with pytest.raises(codec.WireError, match="this learner decodes: none \\(the zstandard package is not installed\\)"):
        codec.decode_tensor(compressed, "x")


def test_spec_carries_parts_and_a_flat_spec_travels_as_before():
    message = codec.spec_to_proto(SPEC)
    assert [(p.name, p.dtype, list(p.shape)) for p in message.observation_parts] == [
        ("side", "uint8", [6, 10, 1]), ("state", "float32", [3]), ("wrist", "uint8", [8, 8, 3])]
    assert observation_spec_of(codec.spec_from_proto(message)) == PARTS
    flat = {"task": "t", "observation_dim": 4, "action_dim": 2, "action_low": [], "action_high": []}
    old = pb.Spec(task="t", observation_dim=4, action_dim=2)
    assert codec.spec_to_proto(flat).SerializeToString() == old.SerializeToString()
    flat_with_spec = {**flat, "observation_spec": ObservationSpec.flat(4).to_json()}
    assert codec.spec_to_proto(flat_with_spec).SerializeToString() == old.SerializeToString()
    assert codec.spec_from_proto(old) == flat
    # The policy fingerprint of a flat spec is unchanged; parts change it.
    config = tiny_config().agent
    assert codec.policy_fingerprint(config, 4, 2, []) == codec.policy_fingerprint(config, 4, 2)
    assert codec.policy_fingerprint(config, 3, 2, codec.observation_parts(SPEC)) != codec.policy_fingerprint(config, 3, 2)


# ---- learner-side validation -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["", "zstd"])
def test_validate_batch_decodes_every_part(encoding):
    batch, obs, nxt = part_batch(4, encoding=encoding)
    arrays = validate_batch(batch, SPEC, 16, 0)
    for name in PARTS.names:
        np.testing.assert_array_equal(arrays["observations"][name], obs[name])
        np.testing.assert_array_equal(arrays["next_observations"][name], nxt[name])
    assert arrays["observations"]["wrist"].dtype == np.uint8 and arrays["observations"]["state"].dtype == np.float32
    assert arrays["actions"].shape == (4, 2)
    # The digest covers the parts: another frame is another batch.
    other, _, _ = part_batch(4, encoding=encoding)
    other.observation_parts[2].tensor.data = other.observation_parts[2].tensor.data[:-1] + b"\x01"
    assert batch_digest(batch) == batch_digest(part_batch(4, encoding=encoding)[0]) != batch_digest(other)


def test_validate_batch_names_the_offending_part():
    batch, obs, _ = part_batch(2)
    parts = codec.encode_parts(obs)
    assert "field 'observation_parts': missing part(s) ['wrist']" in rejected(part_batch(2, observation_parts=parts[:2])[0])
    extra = parts + [pb.NamedTensor(name="top", tensor=parts[0].tensor)]
    assert "field 'observation_parts[3].name': got 'top', expected one of the spec's parts" in rejected(part_batch(2, observation_parts=extra)[0])
    assert "'side' appears twice" in rejected(part_batch(2, observation_parts=[parts[0], *parts])[0])
    as_float = codec.encode_parts({**obs, "wrist": obs["wrist"].astype(np.float32)})
    assert "field 'observation_parts['wrist'].dtype': got 'float32', expected 'uint8'" in rejected(part_batch(2, observation_parts=as_float)[0])
    bigger = codec.encode_parts({**obs, "wrist": np.zeros((2, 16, 16, 3), np.uint8)})
    assert "field 'observation_parts['wrist'].shape': got [2, 16, 16, 3], expected [2, 8, 8, 3]" in rejected(part_batch(2, observation_parts=bigger)[0])
    nan = codec.encode_parts({**obs, "state": np.full((2, 3), np.nan, np.float32)})
    assert "field 'next_observation_parts['state']': row 0 holds NaN" in rejected(part_batch(2, next_observation_parts=nan)[0])
    short = pb.NamedTensor(name="wrist", tensor=pb.Tensor(dtype="uint8", shape=[2, 8, 8, 3], data=b"\x00" * 10))
    assert "field 'observation_parts['wrist'].data': got 10 bytes, expected 384" in rejected(part_batch(2, observation_parts=[*parts[:2], short])[0])
    # A bomb inside a batch: refused as INVALID_ARGUMENT naming the part, before decompressing.
    bomb = pb.NamedTensor(name="wrist", tensor=pb.Tensor(dtype="uint8", shape=[2, 8, 8, 3], encoding="zstd",
                                                         data=zstandard.ZstdCompressor().compress(bytes(1 << 20))))
    with pytest.raises(BatchRejected) as info:
        validate_batch(part_batch(2, observation_parts=[*parts[:2], bomb])[0], SPEC, 16, 0)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "observation_parts['wrist'].data" in str(info.value)
    # Flat fields with a parts spec, and parts with a flat spec.
    flat_obs = codec.encode_tensor(np.zeros((2, 3), np.float32))
    assert "field 'observations': expected absent: the handshake spec has observation parts" in rejected(part_batch(2, observations=flat_obs)[0])
    flat_spec = {**SPEC, "observation_spec": None}
    assert "field 'observation_parts': got 3 parts, expected none: the handshake spec is a flat vector" in rejected(batch, flat_spec)
    # Too many rows: refused from the actions' shape before any part is decoded.
    big, _, _ = part_batch(20)
    with pytest.raises(BatchRejected) as info:
        validate_batch(big, SPEC, 16, 0)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_receive_limit_follows_the_parts():
    b = 16
    frame_bytes = [6 * 10 * 1, 3 * 4, 8 * 8 * 3]
    batch = 2 * sum(codec.zstd_bound(b * n) for n in frame_bytes) + b * (4 * (2 + 1) + 3)
    assert max_request_bytes(SPEC, b) == int(max(batch, 1024 * 40) * 1.25) + 65536
    camera = {**SPEC, "observation_spec": [{"name": "state", "shape": [7], "dtype": "float32"}, {"name": "cam", "shape": [128, 128, 3], "dtype": "uint8"}]}
    # 1024 transitions of a 128x128x3 camera: ~101 MB raw frames (observations and next).
    assert 2 * 1024 * 128 * 128 * 3 < max_request_bytes(camera, 1024) < 2 * 1024 * 128 * 128 * 3 * 1.3


def test_handshake_mismatch_names_each_part():
    mine = codec.observation_parts(SPEC)
    theirs = [dict(p) for p in mine if p["name"] != "side"]
    theirs[1] = {**theirs[1], "shape": [16, 16, 3]}
    theirs.append({"name": "top", "shape": [8, 8, 3], "dtype": "uint8"})
    assert observation_mismatches(theirs, mine, 3) == [
        "spec.observation_parts['side']: actor has no such part, learner has uint8 [6, 10, 1]",
        "spec.observation_parts['top']: actor has uint8 [8, 8, 3], learner has no such part",
        "spec.observation_parts['wrist']: actor has uint8 [16, 16, 3], learner has uint8 [8, 8, 3]",
    ]
    # An old (flat) client against a camera learner: its vector is the "state" part.
    assert observation_mismatches([], mine, 5)[0] == "spec.observation_parts['side']: actor has no such part, learner has uint8 [6, 10, 1]"
    assert "spec.observation_parts['state']: actor has float32 [5], learner has float32 [3]" in observation_mismatches([], mine, 5)


# ---- robot env contract ----------------------------------------------------------------


def test_robot_env_contract_accepts_a_dict_of_state_and_cameras():
    assert check_robot_env(CameraEnv()) == {"hooks": [], "control_hz": None}
    env = CameraEnv()
    env.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,)), "wrist": gym.spaces.Box(0, 1, (8, 8, 3), np.float32)})
    with pytest.raises(ValueError, match="field 'observation_space': observation_space\\['wrist'\\]: dtype float32, expected uint8"):
        check_robot_env(env)


# ---- a real server ------------------------------------------------------------------------


class ListReplay:
    """A stand-in replay buffer that keeps the rows `Trainer` inserts (dict observations), so
    this wire test does not depend on the frame-sharing buffer (learner/replay_buffer.py)."""

    def __init__(self, capacity, observations, action_dim):
        self.capacity, self.rows = capacity, []
        self.data = {"rewards": np.zeros(0, np.float32)}
        self.interventions = np.zeros(0, bool)

    def __len__(self):
        return len(self.rows)

    def add(self, observation, action, reward, next_observation, terminal, intervention=False):
        self.rows.append((observation, action, reward, next_observation, terminal))
        return len(self.rows) - 1


@pytest.fixture
def camera_server(monkeypatch):
    import learner.runs
    from learner.agents import make_agent

    monkeypatch.setattr(learner.runs, "ReplayBuffer", ListReplay)
    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000, "warmup": "random"})
    agent = make_agent(config.finetune.algorithm, config.agent, 3, 2, config.seed)  # only served, never updated here
    trainer = Trainer(config, SPEC, DistributedSettings(max_batch_size=16, mode="async"), agent=agent)
    server = LearnerServer(trainer).start()
    yield server
    server.stop(grace=0)


def _hello(client, spec=SPEC, run_id="r1--------------"):
    return client.handshake(pb.HandshakeRequest(protocol_version=codec.PROTOCOL_VERSION, spec=codec.spec_to_proto(spec), actor_id="cam", run_id=run_id))


def test_server_stores_frames_bit_exact_raw_and_compressed(camera_server):
    client = LearnerClient(camera_server.address)
    trainer = camera_server.trainer
    try:
        hello = _hello(client)
        assert list(hello.encodings) == ["zstd"] and codec.observation_parts(codec.spec_from_proto(hello.spec)) == codec.observation_parts(SPEC)
        sent = []
        for seq, encoding in enumerate(["", "zstd"]):
            batch, obs, nxt = part_batch(3, seq=seq, encoding=encoding)
            assert client.push(batch).stored
            sent += [(obs, nxt, i) for i in range(3)]
        assert trainer.wait_processed(6, 30)
        for (obs, nxt, i), row in zip(sent, trainer.replay.rows):
            for name in PARTS.names:
                np.testing.assert_array_equal(row[0][name], obs[name][i])
                np.testing.assert_array_equal(row[3][name], nxt[name][i])
        # A bomb over the wire: INVALID_ARGUMENT naming the part; nothing stored.
        batch, _, _ = part_batch(3, seq=2)
        batch.observation_parts[2].tensor.CopyFrom(pb.Tensor(dtype="uint8", shape=[3, 8, 8, 3], encoding="zstd",
                                                             data=zstandard.ZstdCompressor().compress(bytes(10 << 20))))
        with pytest.raises(grpc.RpcError) as info:
            client.push(batch)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "observation_parts['wrist'].data" in info.value.details()
        # A spec that differs in one part is refused at the handshake, naming the part.
        other = {**SPEC, "observation_spec": [*SPEC["observation_spec"][:2], {"name": "wrist", "shape": [8, 8, 4], "dtype": "uint8"}]}
        with pytest.raises(grpc.RpcError) as info:
            _hello(client, other, run_id="r2--------------")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "spec.observation_parts['wrist']: actor has uint8 [8, 8, 4], learner has uint8 [8, 8, 3]" in info.value.details()
        # An old flat client: its vector is no match for the cameras.
        flat = {k: v for k, v in SPEC.items() if k != "observation_spec"}
        with pytest.raises(grpc.RpcError) as info:
            _hello(client, flat, run_id="r3--------------")
        assert "spec.observation_parts['side']: actor has no such part" in info.value.details()
    finally:
        client.close()


@pytest.mark.parametrize("compress", ["", "zstd"])
def test_actor_pushes_dict_observations_and_spools_them(camera_server, tmp_path, compress):
    from actor.loop import ActorLoop, ActorSettings
    from actor.spool import Spool

    settings = ActorSettings(learner=camera_server.address, env=ENV, actor_id="cam", batch_size=4, pull_every=0, compress=compress,
                             spool_dir=str(tmp_path))
    actor = ActorLoop(settings)
    assert actor.spec["observation_spec"] == PARTS.to_json() and actor.spec["observation_dim"] == 3
    spooled = []
    put = actor.spool.put
    actor.spool.put = lambda batch: (spooled.append(batch), put(batch))[1]
    try:
        result = actor.run(10)
    finally:
        actor.close()
    assert result["delivered"] and result["env_steps"] == 10
    trainer = camera_server.trainer
    assert trainer.wait_processed(10, 30)
    env = CameraEnv()
    obs, _ = env.reset()
    for row in trainer.replay.rows:  # the env's own frames, in order, bit for bit
        nxt, _, _, truncated, _ = env.step(row[1])
        for name in PARTS.names:
            np.testing.assert_array_equal(row[0][name], obs[name])
            np.testing.assert_array_equal(row[3][name], nxt[name])
        obs = env.reset()[0] if truncated else nxt
    # What went to disk is the batch as sent: it parses back with its parts (and encoding).
    assert spooled and all(len(b.observation_parts) == 3 and not b.HasField("observations") for b in spooled)
    encodings = {p.tensor.encoding for b in spooled for p in b.observation_parts if p.name != "state"}
    assert encodings == {compress}
    first = spooled[0]
    Spool(tmp_path / "cam").put(first)
    back = [b for b in Spool(tmp_path / "cam").pending() if b.sequence == first.sequence and b.run_id == first.run_id]
    assert back and back[0].SerializeToString() == first.SerializeToString()


def test_robot_actor_sends_camera_frames(camera_server, tmp_path, monkeypatch):
    """Robot mode with a camera env: frames go through the control loop, the spool and the
    background sender. The policy is stubbed (zero actions): a camera policy network is not
    this test's subject (actor/policy.py)."""
    import actor.policy
    from actor.loop import ActorSettings
    from actor.robot import RobotActor

    seen = []

    def sample(self, params, observation, rng):
        seen.append(observation)
        return np.zeros(2, np.float32), rng

    monkeypatch.setattr(actor.policy.Policy, "sample", sample)
    settings = ActorSettings(learner=camera_server.address, env=ENV, actor_id="cam", robot=True, spool_dir=str(tmp_path), batch_size=4,
                             control_hz=200.0, status_every_s=0, compress="zstd", max_backoff_s=0.2, flush_timeout_s=20)
    robot = RobotActor(settings)
    try:
        result = robot.run(12)
    finally:
        robot.close()
    assert result["delivered"] and result["env_steps"] == 12
    assert isinstance(seen[0], dict) and seen[0]["wrist"].shape == (8, 8, 3)  # the compile call, on zeros of the spec
    trainer = camera_server.trainer
    assert trainer.wait_processed(12, 30)
    rows = trainer.replay.rows
    assert [int(row[0]["side"][0, 0, 0]) for row in rows[:4]] == [0, 1, 2, 3]  # the env's step counter, in order
    assert all(row[0]["wrist"].dtype == np.uint8 for row in rows)
