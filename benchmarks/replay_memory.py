"""Replay with camera frames: host memory per transition, insert and sample speed, and the
camera dataset files (learner/replay_buffer.py, envs/dataset_writers.py).

Workloads (all synthetic, numpy only):

* flat: antmaze-like state transitions (observations 29, actions 8, float32).
* pixels: a 64x64x3 uint8 camera + an 8-vector state, actions 4; episodes of `--episode-steps`
  (default 100). Frames look rendered (a gradient background and a moving square, so they
  compress like a simple scene, not like noise) and every frame is distinct.
    - shared: each next frame is the following step's observation frame, byte for byte
      (what the actors send), from 1 actor and from 4 actors whose transitions interleave;
    - never shared: each next frame differs from the following observation in one byte (a
      codec that changes bytes): the buffer's fallback, 2 frames per transition;
    - the reference: a plain ring that copies both frames of every transition (`CopyBoth`).

Measured: `ReplayBuffer.nbytes / capacity` after filling the ring twice (the frame pool at
its final size, refs, state, actions, ...); inserts per second (`add`, one transition at a
time, as the learner inserts); `sample(rng, 4, 256)` (UTD 4 x batch 256: one fused update's
batches) median time, with glibc malloc set as the training commands set it
(`configure_cpu_malloc`: without it each sample page-faults its output in, ~10 ms more); `from_dataset`, `state_dict` and `load_state_dict`; the camera dataset
written as D4RL HDF5 and as Minari (gzip chunks): file size against the raw arrays, write and
read time.

    python benchmarks/replay_memory.py            # capacity 20000 (~0.3 GB per pixel buffer)
    python benchmarks/replay_memory.py --quick    # capacity 4000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from envs.dataset_io import read_dataset  # noqa: E402
from envs.dataset_writers import write_d4rl_hdf5, write_minari  # noqa: E402
from envs.datasets import OfflineDataset  # noqa: E402
from envs.observations import ObservationPart, ObservationSpec  # noqa: E402
from learner.agents.common import configure_cpu_malloc  # noqa: E402
from learner.replay_buffer import ReplayBuffer  # noqa: E402

H, W, C, STATE, ACT = 64, 64, 3, 8, 4
SPEC = ObservationSpec((ObservationPart("cam", (H, W, C), "uint8"), ObservationPart("state", (STATE,), "float32")))
FLAT_OBS, FLAT_ACT = 29, 8


def render(episode: int, t: int) -> np.ndarray:
    """A distinct, compressible frame: gradient background, a square that moves with t."""
    y, x = np.mgrid[0:H, 0:W]
    frame = np.stack([(x * 4) % 256, (y * 4) % 256, np.full_like(x, (episode * 37) % 256)], axis=-1).astype(np.uint8)
    r, c = (t * 3) % (H - 8), (t * 5 + episode) % (W - 8)
    frame[r : r + 8, c : c + 8] = (255, (t * 7) % 256, 0)
    frame[0, 0, 2] = t % 256  # distinct even when the square repeats its position
    frame[0, 1, 2] = (t // 256) % 256
    return frame


def pixel_streams(transitions: int, episode_steps: int, actors: int, shared: bool, seed: int = 0) -> list[list[tuple]]:
    """Each actor's transitions in its own order (episodes back to back)."""
    rng = np.random.default_rng(seed)
    streams: list[list[tuple]] = [[] for _ in range(actors)]
    episode = 0
    while sum(len(s) for s in streams) < transitions:
        stream = streams[episode % actors]
        obs = {"cam": render(episode, 0), "state": rng.normal(size=STATE).astype(np.float32)}
        for t in range(episode_steps):
            nxt = {"cam": render(episode, t + 1), "state": rng.normal(size=STATE).astype(np.float32)}
            sent = nxt
            if not shared:  # the next frame as a lossy codec might deliver it: one byte off
                cam = nxt["cam"].copy()
                cam[-1, -1, 0] ^= 1
                sent = {"cam": cam, "state": nxt["state"]}
            stream.append((obs, rng.uniform(-1, 1, ACT).astype(np.float32), float(t == episode_steps - 1), sent, False))
            obs = nxt
        episode += 1
    return streams


def interleave(streams: list[list[tuple]], seed: int = 0) -> list[tuple]:
    """The transitions as a learner might receive them: actors' batches of 1-16 interleaved."""
    rng = np.random.default_rng(seed)
    cursors, out = [0] * len(streams), []
    while any(c < len(s) for c, s in zip(cursors, streams)):
        k = rng.choice([i for i, s in enumerate(streams) if cursors[i] < len(s)])
        n = int(rng.integers(1, 17))
        out.extend(streams[k][cursors[k] : cursors[k] + n])
        cursors[k] += n
    return out


class CopyBoth:
    """The reference layout: both frames of every transition copied into the ring."""

    def __init__(self, capacity: int):
        self.capacity, self.next, self.size = capacity, 0, 0
        self.data = {
            "observations": {"cam": np.zeros((capacity, H, W, C), np.uint8), "state": np.zeros((capacity, STATE), np.float32)},
            "next_observations": {"cam": np.zeros((capacity, H, W, C), np.uint8), "state": np.zeros((capacity, STATE), np.float32)},
            "actions": np.zeros((capacity, ACT), np.float32), "rewards": np.zeros(capacity, np.float32),
            "terminals": np.zeros(capacity, np.float32), "mc_returns": np.zeros(capacity, np.float32),
        }

    def add(self, obs, action, reward, nxt, terminal):
        i, d = self.next, self.data
        for part in ("cam", "state"):
            d["observations"][part][i], d["next_observations"][part][i] = obs[part], nxt[part]
        d["actions"][i], d["rewards"][i], d["terminals"][i] = action, reward, terminal
        self.next, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, rng, num_batches, batch_size):
        idx = rng.integers(0, self.size, (num_batches, batch_size))
        return {k: ({p: a[idx] for p, a in v.items()} if isinstance(v, dict) else v[idx]) for k, v in self.data.items()}

    @property
    def nbytes(self) -> int:
        return sum(sum(a.nbytes for a in v.values()) if isinstance(v, dict) else v.nbytes for v in self.data.values()) + self.capacity


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` after two untimed calls (the first large outputs page-fault)."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fill(buffer: ReplayBuffer, transitions: list[tuple]) -> float:
    """Inserts every transition; returns inserts per second."""
    start = time.perf_counter()
    for t in transitions:
        buffer.add(*t)
    return len(transitions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capacity", type=int, default=20000)
    parser.add_argument("--episode-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="capacity 4000")
    args = parser.parse_args()
    # as the training commands do: freed batches stay mapped, so sampling does not page-fault
    # a fresh 25 MB of frames in every time
    configure_cpu_malloc()
    capacity = 4000 if args.quick else args.capacity
    T = args.episode_steps
    rng = np.random.default_rng(0)
    frame_bytes = H * W * C
    print(f"capacity {capacity}, 64x64x3 camera + state {STATE}, actions {ACT}, episodes of {T} steps, each ring filled twice\n")

    # ---- flat ----
    flat = ReplayBuffer(capacity, FLAT_OBS, FLAT_ACT)
    transitions = [(rng.normal(size=FLAT_OBS).astype(np.float32), rng.uniform(-1, 1, FLAT_ACT).astype(np.float32), 0.0,
                    rng.normal(size=FLAT_OBS).astype(np.float32), False) for _ in range(2 * capacity)]
    flat_rate = fill(flat, transitions)
    flat_sample = timed(lambda: flat.sample(rng, 4, 256), args.repeats)
    print("| buffer | bytes / transition | frames / transition | inserts / s | sample 4x256 (ms) |")
    print("|---|---|---|---|---|")
    print(f"| flat (obs {FLAT_OBS}, act {FLAT_ACT}) | {flat.nbytes / capacity:.0f} | - | {flat_rate:,.0f} | {flat_sample * 1e3:.2f} |")

    results = {}
    for label, actors, shared in (("pixels, shared, 1 actor", 1, True), ("pixels, shared, 4 actors interleaved", 4, True),
                                  ("pixels, never shared (fallback)", 1, False)):
        buffer = ReplayBuffer(capacity, SPEC, ACT)
        stream = interleave(pixel_streams(2 * capacity, T, actors, shared))
        rate = fill(buffer, stream)
        sample = timed(lambda: buffer.sample(rng, 4, 256), args.repeats)
        pool = buffer.frames["cam"]
        results[label] = buffer
        print(f"| {label} | {buffer.nbytes / capacity:,.0f} | {pool.live / capacity:.3f} | {rate:,.0f} | {sample * 1e3:.2f} |")
    naive = CopyBoth(capacity)
    rate = fill(naive, interleave(pixel_streams(2 * capacity, T, 1, True)))
    sample = timed(lambda: naive.sample(rng, 4, 256), args.repeats)
    copy_both = naive.nbytes / capacity
    print(f"| pixels, copy both frames (reference) | {copy_both:,.0f} | 2 | {rate:,.0f} | {sample * 1e3:.2f} |")
    shared_bytes = results["pixels, shared, 1 actor"].nbytes / capacity
    print(f"\nshared / copy-both memory: {shared_bytes / copy_both:.3f} "
          f"(frame {frame_bytes} B; the pool is preallocated at capacity x 1.0625 frames and grows only past that)")

    # ---- from_dataset, state_dict ----
    data_stream = pixel_streams(capacity, T, 1, True)[0]
    ends = np.array([(i % T) == T - 1 for i in range(capacity)])
    dataset = OfflineDataset.from_columns({
        "observations": [s[0] for s in data_stream], "actions": [s[1] for s in data_stream],
        "rewards": [s[2] for s in data_stream], "next_observations": [s[3] for s in data_stream],
        "terminals": np.zeros(capacity), "episode_ends": ends,
    })
    start = time.perf_counter()
    offline = ReplayBuffer.from_dataset(dataset)
    from_dataset_s = time.perf_counter() - start
    buffer = results["pixels, shared, 4 actors interleaved"]
    start = time.perf_counter()
    state = buffer.state_dict()
    save_s = time.perf_counter() - start
    start = time.perf_counter()
    ReplayBuffer(capacity, SPEC, ACT).load_state_dict(state)
    load_s = time.perf_counter() - start
    print(f"\nfrom_dataset ({capacity} transitions): {from_dataset_s:.2f} s ({capacity / from_dataset_s:,.0f} / s), "
          f"{offline.frames['cam'].live / capacity:.3f} frames / transition")
    print(f"state_dict: {save_s:.2f} s ({len(state['frames']['cam'])} live frames), load_state_dict: {load_s:.2f} s")

    # ---- files ----
    raw = 2 * dataset.observations["cam"].nbytes + 2 * dataset.observations["state"].nbytes + dataset.actions.nbytes + 3 * capacity * 4
    with tempfile.TemporaryDirectory() as tmp:
        print("\n| file | size (MB) | / raw arrays | write (s) | read (s) |")
        print("|---|---|---|---|---|")
        for label, write, path in (("D4RL HDF5", write_d4rl_hdf5, Path(tmp) / "pix.hdf5"), ("Minari HDF5", write_minari, Path(tmp) / "pix")):
            start = time.perf_counter()
            write(dataset, path)
            write_s = time.perf_counter() - start
            start = time.perf_counter()
            back = read_dataset(path, observation_spec=SPEC)
            read_s = time.perf_counter() - start
            assert np.array_equal(back.next_observations["cam"], dataset.next_observations["cam"])
            size = sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())
            print(f"| {label} | {size / 1e6:.1f} | {size / raw:.3f} | {write_s:.2f} | {read_s:.2f} |")
    print(f"(raw arrays: {raw / 1e6:.1f} MB, frames counted twice as the in-memory dataset holds them)")


if __name__ == "__main__":
    main()
