"""Camera frames on the wire: raw vs compressed (this machine, loopback).

Frames: a MuJoCo scene rendered headless (EGL; a checkered floor, a swinging arm, a box, one
light) from a fixed camera, 64 consecutive frames per resolution ("rendered"), and the same
frames with Gaussian sensor noise of sigma 2 grey levels ("camera-like": real cameras are
never noise-free, and noise is what defeats lossless codecs). Without EGL the scene falls back
to a synthetic smooth image (gradients and a moving disc) and says so.

Prints, as medians (the machine is shared: compare within a run, look at the ratios):

* per frame of 64x64x3 and 128x128x3: bytes, encode and decode CPU microseconds, one frame per
  call (a frame at a time) and 32 consecutive frames per call (what the actor sends: one
  tensor per camera per batch of 32 transitions), for raw, zstd levels 1 and 3 (the codec
  `--compress zstd` uses, at level 1) and, if installed, lz4 (block format) for comparison;
* bytes per transition of a real TransitionBatch (32 transitions: a 7-float state, one camera,
  observation and next observation, action, reward, flags) raw vs zstd;
* end to end: transitions/s that two actor processes (`ActorLoop` on a Dict-observation env
  replaying the rendered frames, random warmup actions: no policy inference) push into one
  learner over loopback gRPC (validation, decompression and insertion into a replay of
  preallocated uint8 arrays included; the learner stays in warmup so no update runs), raw
  vs zstd, 64x64 and 128x128, rounds interleaved.

    PYTHONPATH=. python benchmarks/camera_transport.py [--rounds 3] [--steps 3000] [--only codec,e2e]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZES = (64, 128)
NOISE_SIGMA = 2.0
STATE_DIM, ACTION_DIM = 7, 4

XML = """<mujoco><asset><texture name="grid" type="2d" builtin="checker" rgb1=".2 .3 .4" rgb2=".3 .4 .5" width="64" height="64"/>
<material name="grid" texture="grid" texrepeat="4 4"/></asset>
<worldbody><light pos="0 0 3" dir="0 0 -1"/><camera name="cam" pos="0 -1.2 1.0" xyaxes="1 0 0 0 .6 .8"/>
<geom type="plane" size="1 1 .1" material="grid"/>
<body name="arm" pos="0 0 .1"><joint name="j" type="hinge" axis="0 0 1"/><geom type="capsule" fromto="0 0 0 .4 0 0" size=".04" rgba=".8 .6 .2 1"/></body>
<body name="obj" pos=".2 .2 .05"><geom type="box" size=".05 .05 .05" rgba=".9 .1 .1 1"/></body>
</worldbody></mujoco>"""


def render_frames(size: int, n: int = 64) -> tuple[np.ndarray, str]:
    """(n, size, size, 3) uint8 consecutive frames of the swinging arm, and their source."""
    try:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco

        model = mujoco.MjModel.from_xml_string(XML)
        data = mujoco.MjData(model)
        renderer = mujoco.Renderer(model, size, size)
        out = []
        for t in range(n):
            data.qpos[0] = 0.05 * t
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera="cam")
            out.append(renderer.render().copy())
        renderer.close()
        return np.stack(out), "MuJoCo render (EGL)"
    except Exception as e:  # no EGL: a synthetic smooth scene instead
        y, x = np.mgrid[0:size, 0:size] / size
        out = []
        for t in range(n):
            img = np.stack([0.5 + 0.3 * np.sin(6 * x + 1), 0.4 + 0.3 * y, 0.6 - 0.2 * x * y], -1)
            img[(x - 0.5 - 0.2 * np.cos(0.1 * t)) ** 2 + (y - 0.5) ** 2 < 0.02] = [0.9, 0.2, 0.1]
            out.append((img * 255).astype(np.uint8))
        return np.stack(out), f"synthetic smooth scene (no MuJoCo render: {type(e).__name__})"


def with_noise(frames: np.ndarray, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, NOISE_SIGMA, frames.shape)
    return np.clip(np.rint(frames + noise), 0, 255).astype(np.uint8)


def codecs() -> dict:
    import zstandard

    out = {
        "raw": (lambda b: b, lambda c, n: c),
        "zstd-1": (zstandard.ZstdCompressor(level=1).compress, lambda c, n: zstandard.ZstdDecompressor().decompress(c, max_output_size=n)),
        "zstd-3": (zstandard.ZstdCompressor(level=3).compress, lambda c, n: zstandard.ZstdDecompressor().decompress(c, max_output_size=n)),
    }
    try:
        import lz4.block

        out["lz4"] = (lambda b: lz4.block.compress(b, store_size=False), lambda c, n: lz4.block.decompress(c, uncompressed_size=n))
    except ImportError:
        pass
    return out


def codec_table(frames: np.ndarray, repeats: int = 5) -> dict:
    """{codec: {mode: (bytes per frame, encode us per frame, decode us per frame)}}, medians.
    Times are this thread's CPU time: on the shared 2-core machine a call longer than a
    scheduler slice is stretched several-fold in wall time by preemption."""
    table = {}
    for name, (encode, decode) in codecs().items():
        rows = {}
        for mode, chunk in (("1 frame", 1), ("32 frames", 32)):
            pieces = [frames[i : i + chunk].tobytes() for i in range(0, len(frames), chunk)]
            enc, dec, sizes = [], [], []
            for _ in range(max(repeats, 30 // len(pieces))):
                for piece in pieces:
                    t0 = time.thread_time()
                    c = encode(piece)
                    t1 = time.thread_time()
                    d = decode(c, len(piece))
                    t2 = time.thread_time()
                    assert bytes(d) == piece
                    enc.append((t1 - t0) / chunk)
                    dec.append((t2 - t1) / chunk)
                    sizes.append(len(c) / chunk)
            rows[mode] = (statistics.median(sizes), 1e6 * statistics.median(enc), 1e6 * statistics.median(dec))
        table[name] = rows
    return table


def bytes_per_transition(frames: np.ndarray, encoding: str, n: int = 32) -> float:
    """Serialized size of a real TransitionBatch of `n` transitions, per transition."""
    from protos import codec
    from protos.wsrl.v1 import learner_pb2 as pb

    rng = np.random.default_rng(0)
    obs = {"state": rng.normal(size=(n, STATE_DIM)).astype(np.float32), "camera": frames[:n]}
    nxt = {"state": rng.normal(size=(n, STATE_DIM)).astype(np.float32), "camera": frames[1 : n + 1]}
    batch = pb.TransitionBatch(
        actor_id="bench", run_id="bench-run-0000000001", sequence=123, policy_version=7,
        actions=codec.encode_tensor(rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32)), rewards=codec.encode_tensor(np.zeros(n, np.float32)),
        terminals=codec.encode_tensor(np.zeros(n, bool)), episode_ends=codec.encode_tensor(np.zeros(n, bool)),
        observation_parts=codec.encode_parts(obs, encoding), next_observation_parts=codec.encode_parts(nxt, encoding),
    )
    return batch.ByteSize() / n


# ---- end to end ------------------------------------------------------------------------------


def spec_for(size: int) -> dict:
    parts = [{"name": "camera", "shape": [size, size, 3], "dtype": "uint8"}, {"name": "state", "shape": [STATE_DIM], "dtype": "float32"}]
    return {"task": "camera_transport:FrameEnv", "observation_dim": STATE_DIM, "action_dim": ACTION_DIM,
            "action_low": [-1.0] * ACTION_DIM, "action_high": [1.0] * ACTION_DIM, "observation_spec": parts}


class FrameEnv(gym.Env):
    """A Dict-observation env replaying the frames in $WSRL_BENCH_FRAMES (a .npy): the
    transport sees real rendered frames without the actor paying for rendering."""

    def __init__(self):
        self.frames = np.load(os.environ["WSRL_BENCH_FRAMES"])
        size = self.frames.shape[1]
        self.observation_space = gym.spaces.Dict({"camera": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
                                                  "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.t = 0

    def _obs(self):
        return {"camera": self.frames[self.t % len(self.frames)], "state": np.full(STATE_DIM, self.t, np.float32)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, self.t % 200 == 0, {}


class ArrayReplay:
    """A replay of preallocated arrays (uint8 frames), one row per `add`: stands in for the
    frame-sharing buffer (learner/replay_buffer.py) so insertion costs a frame copy, as there."""

    def __init__(self, capacity, observations, action_dim):
        self.capacity, self._size = capacity, 0
        self.obs = {p.name: np.zeros((capacity, *p.shape), p.dtype) for p in observations.parts}
        self.next_obs = {p.name: np.zeros((capacity, *p.shape), p.dtype) for p in observations.parts}
        self.data = {"rewards": np.zeros(capacity, np.float32), "actions": np.zeros((capacity, action_dim), np.float32)}
        self.interventions = np.zeros(capacity, bool)

    def __len__(self):
        return self._size

    def add(self, observation, action, reward, next_observation, terminal, intervention=False):
        i = self._size % self.capacity
        for name in self.obs:
            self.obs[name][i] = observation[name]
            self.next_obs[name][i] = next_observation[name]
        self.data["actions"][i], self.data["rewards"][i] = action, reward
        self._size += 1
        return i


def end_to_end(size: int, compress: str, steps: int, frames_path: str, actors: int = 2) -> float:
    """Transitions/s of `actors` actor processes pushing `steps` transitions each into one
    learner (in this process): from a common start (all connected) to the last one inserted."""
    import learner.runs
    from learner.agents import make_agent
    from learner.config import AgentConfig, Config, FinetuneConfig, LoggingConfig
    from learner.distributed.server import LearnerServer
    from learner.distributed.settings import DistributedSettings
    from learner.distributed.trainer import Trainer

    try:  # the real buffer once it takes an ObservationSpec (issue 19); else the stand-in
        from envs.observations import observation_spec_of

        learner.runs.ReplayBuffer(8, observation_spec_of(spec_for(size)), ACTION_DIM)
    except Exception:
        learner.runs.ReplayBuffer = ArrayReplay
    agent_config = AgentConfig(actor_hidden_dims=(16,), critic_hidden_dims=(16,), critic_ensemble_size=2, critic_subsample_size=2, batch_size=8)
    config = Config(task="camera-bench", agent=agent_config, logging=LoggingConfig(tensorboard=False, progress=False),
                    finetune=FinetuneConfig(warmup_steps=10**9, num_steps=10**9, warmup="random", replay_capacity=actors * steps + 64))
    agent = make_agent(config.finetune.algorithm, agent_config, STATE_DIM, ACTION_DIM, 0)  # served, never updated
    trainer = Trainer(config, spec_for(size), DistributedSettings(mode="async", max_batch_size=64, max_pending=1 << 16), agent=agent)
    server = LearnerServer(trainer).start()
    env = {**os.environ, "WSRL_BENCH_FRAMES": frames_path, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    gate = Path(tempfile.mkdtemp())
    try:
        procs = [subprocess.Popen([sys.executable, __file__, "--actor", server.address, "--compress", compress, "--steps", str(steps), "--actor-index", str(i),
                                   "--gate", str(gate)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(actors)]
        # Every actor connects (process start-up, handshake, first pull), then all start at once.
        while len(list(gate.glob("ready-*"))) < actors:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("an actor failed: " + "".join(p.stdout.read() for p in procs if p.poll() is not None))
            time.sleep(0.01)
        started = time.perf_counter()
        (gate / "go").touch()
        total = actors * steps
        if not trainer.wait_processed(total, 600):
            raise RuntimeError(f"only {trainer.status()['processed_steps']} of {total} transitions arrived")
        elapsed = time.perf_counter() - started
        for p in procs:
            p.wait(60)
        return total / elapsed
    finally:
        server.stop(grace=0)
        shutil.rmtree(gate, ignore_errors=True)


def run_actor(address: str, compress: str, steps: int, index: int, gate: str) -> None:
    from actor.loop import ActorLoop, ActorSettings

    settings = ActorSettings(learner=address, env="camera_transport:FrameEnv", actor_id=f"bench-{index}", seed=index, batch_size=32,
                             pull_every=0, pull_at_episode_end=False, compress=compress, report_every_s=3600.0)
    actor = ActorLoop(settings)
    try:
        actor.connect()
        (Path(gate) / f"ready-{index}").touch()
        while not (Path(gate) / "go").exists():
            time.sleep(0.002)
        result = actor.run(steps)
    finally:
        actor.close()
    assert result["delivered"], result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000, help="transitions per actor per end-to-end round")
    parser.add_argument("--only", default="codec,e2e")
    parser.add_argument("--actor", default="", help=argparse.SUPPRESS)
    parser.add_argument("--compress", default="", help=argparse.SUPPRESS)
    parser.add_argument("--actor-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--gate", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.actor:
        return run_actor(args.actor, args.compress, args.steps, args.actor_index, args.gate)
    only = set(args.only.split(","))
    frames = {size: render_frames(size) for size in SIZES}
    print(f"frames: {frames[SIZES[0]][1]}; camera-like = + Gaussian noise sigma {NOISE_SIGMA:g} grey levels")
    if "codec" in only:
        for size in SIZES:
            rendered = frames[size][0]
            for kind, f in (("rendered", rendered), ("camera-like", with_noise(rendered))):
                raw = f[0].nbytes
                print(f"\n{size}x{size}x3 {kind} frames ({raw} bytes raw): bytes/frame (ratio), encode / decode CPU us per frame")
                for name, rows in codec_table(f).items():
                    line = "   ".join(f"{mode}: {b:7.0f} ({raw / b:4.1f}x) enc {e:6.1f} dec {d:6.1f}" for mode, (b, e, d) in rows.items())
                    print(f"  {name:7s} {line}")
                print(f"  bytes per transition (TransitionBatch of 32, state {STATE_DIM} + this camera, obs + next obs): "
                      f"raw {bytes_per_transition(f, ''):.0f}, zstd {bytes_per_transition(f, 'zstd'):.0f}")
    if "e2e" in only:
        with tempfile.TemporaryDirectory() as tmp:
            results: dict = {}
            for size in SIZES:
                for kind, f in (("rendered", frames[size][0]), ("camera-like", with_noise(frames[size][0]))):
                    path = str(Path(tmp) / f"{size}-{kind}.npy")
                    np.save(path, f)
                    for _ in range(args.rounds):
                        for compress in ("", "zstd"):
                            rate = end_to_end(size, compress, args.steps, path)
                            results.setdefault((size, kind, compress or "raw"), []).append(rate)
            print(f"\nend to end: 2 actor processes -> 1 learner over loopback, {args.steps} transitions each, batch 32; median of {args.rounds} rounds (all rounds)")
            for size in SIZES:
                for kind in ("rendered", "camera-like"):
                    raw, z = (statistics.median(results[(size, kind, c)]) for c in ("raw", "zstd"))
                    rounds = {c: ", ".join(f"{r:.0f}" for r in results[(size, kind, c)]) for c in ("raw", "zstd")}
                    print(f"  {size}x{size}x3 {kind:11s}: raw {raw:7.0f} transitions/s ({rounds['raw']}), zstd {z:7.0f} ({rounds['zstd']}); zstd/raw {z / raw:.2f}")


if __name__ == "__main__":
    main()
