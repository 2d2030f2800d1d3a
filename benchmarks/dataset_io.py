"""Offline dataset loading: a 1M-transition D4RL-style HDF5 file to an OfflineDataset with
CalQL's Monte-Carlo returns-to-go.

It writes a synthetic file shaped like D4RL antmaze (observations 29, actions 8, float32;
episodes of 1000 steps, each ending in a `timeouts` step; no `next_observations`; sparse 0/1
rewards, ~30% of episodes reaching the goal) to a temp directory, then measures

* time: `read_d4rl_hdf5` (read, drop the timeout steps, build next_observations and the
  episode ends) and processing (antmaze training rewards 10 r - 5, then `mc_returns` with
  discount 0.99 and the sparse-failure convention), median over `--repeats` runs in this
  process. The file was just written, so it is read from the page cache (warm): a cold read
  adds the disk's time for ~150 MB.
* memory, in a fresh child process: the peak of numpy's allocations (tracemalloc, which numpy
  reports its array buffers to; HDF5's own C buffers are not included) and the growth of the
  peak resident set size (VmHWM, reset through /proc/self/clear_refs before loading, minus
  VmRSS before loading), both relative to the raw arrays' size (what the file's five arrays
  take in memory as stored). The result itself (observations and next_observations, actions,
  ..., the returns) is already 1.8x the raw size, so the loader has little room for copies.
* for reference, the previous per-step Python `mc_returns` loop on the same rewards and on
  dense rewards (its worst case), against the current one; and `read_minari` on the same
  transitions written in Minari's HDF5 layout (1000 episode groups).

Targets (from the issue): load + process under 5 s, peak memory under 2x the raw arrays.

    python benchmarks/dataset_io.py                 # 1M transitions, 5 timed runs
    python benchmarks/dataset_io.py --quick         # 100k transitions, 3 timed runs
    python benchmarks/dataset_io.py --transitions 2000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from envs.d4rl_reader import read_d4rl_hdf5  # noqa: E402
from envs.dataset_writers import write_minari  # noqa: E402
from envs.minari_reader import read_minari  # noqa: E402
from envs.datasets import mc_returns  # noqa: E402

OBS_DIM, ACT_DIM, EPISODE_STEPS = 29, 8, 1000
DISCOUNT, REWARD_SCALE, REWARD_BIAS, FAILURE_REWARD = 0.99, 10.0, -5.0, -5.0  # antmaze (envs/tasks.py)
TIME_TARGET_S, MEMORY_TARGET = 5.0, 2.0


def write_antmaze_like(path: Path, transitions: int, seed: int = 0) -> int:
    """Writes the synthetic file; returns the raw size of its arrays in bytes."""
    import h5py

    rng = np.random.default_rng(seed)
    arrays = {
        "observations": rng.standard_normal((transitions, OBS_DIM), dtype=np.float32),
        "actions": rng.uniform(-1, 1, (transitions, ACT_DIM)).astype(np.float32),
        "rewards": np.zeros(transitions, np.float32),
        "terminals": np.zeros(transitions, bool),
        "timeouts": np.zeros(transitions, bool),
    }
    arrays["timeouts"][EPISODE_STEPS - 1 :: EPISODE_STEPS] = True
    # successful episodes sit at the goal (reward 1) for their last 50 steps, as antmaze's do
    for start in range(0, transitions, EPISODE_STEPS):
        if rng.random() < 0.3:
            stop = min(start + EPISODE_STEPS, transitions)
            arrays["rewards"][max(start, stop - 50) : stop] = 1.0
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return sum(value.nbytes for value in arrays.values())


def load_and_process(path: Path) -> tuple:
    """What a pre-training run does with the file; returns (dataset, returns, seconds per stage)."""
    t0 = time.perf_counter()
    dataset = read_d4rl_hdf5(path, observation_dim=OBS_DIM, action_dim=ACT_DIM)
    t1 = time.perf_counter()
    rewards = (dataset.rewards * REWARD_SCALE + REWARD_BIAS).astype(np.float32)
    returns = mc_returns(rewards, dataset.episode_ends, DISCOUNT, FAILURE_REWARD)
    t2 = time.perf_counter()
    return dataset, returns, {"load": t1 - t0, "process": t2 - t1, "total": t2 - t0}


def mc_returns_python_loop(rewards, episode_ends, discount, sparse_failure_reward=None):
    """envs.datasets.mc_returns before it was vectorized (kept here as the reference)."""
    returns = np.zeros(len(rewards), np.float32)
    start = 0
    for end in np.flatnonzero(episode_ends):
        segment = rewards[start : end + 1]
        if sparse_failure_reward is not None and np.all(segment == sparse_failure_reward):
            returns[start : end + 1] = sparse_failure_reward / (1.0 - discount)
        else:
            running = 0.0
            for i in range(end, start - 1, -1):
                running = rewards[i] + discount * running
                returns[i] = running
        start = end + 1
    return returns


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_memory_child(path: Path) -> None:
    """Runs in a fresh process: prints the memory figures of one load_and_process as JSON."""
    import tracemalloc

    rss_before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    tracemalloc.start()
    dataset, returns, _ = load_and_process(path)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result_bytes = returns.nbytes + sum(
        getattr(dataset, f).nbytes
        for f in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")
    )
    print(json.dumps({
        "traced_peak": traced_peak,
        "rss_growth": (_status_kb("VmHWM") - rss_before) * 1024,
        "hwm_reset": hwm_reset,
        "result_bytes": result_bytes,
    }))


def measure_memory(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, __file__, "--measure-memory", str(path)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_mc_returns(rewards, ends, repeats: int) -> dict:
    reference = None
    times = {}
    for name, fn in (("python loop (before)", mc_returns_python_loop), ("vectorized (now)", mc_returns)):
        runs = []
        for _ in range(1 if fn is mc_returns_python_loop else repeats):
            t0 = time.perf_counter()
            out = fn(rewards, ends, DISCOUNT, FAILURE_REWARD)
            runs.append(time.perf_counter() - t0)
        times[name] = float(np.median(runs))
        if reference is None:
            reference = out
        else:
            np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-3)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100k transitions, 3 repeats")
    parser.add_argument("--no-reference", action="store_true", help="skip timing the old mc_returns loop")
    parser.add_argument("--measure-memory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_memory:
        measure_memory_child(args.measure_memory)
        return
    if args.quick:
        args.transitions, args.repeats = 100_000, 3

    with tempfile.TemporaryDirectory(prefix="wsrl-dataset-bench-") as tmp:
        path = Path(tmp) / "antmaze-like.hdf5"
        raw = write_antmaze_like(path, args.transitions)
        load_before = os.getloadavg()[0]
        print(f"file: {args.transitions:,} transitions, obs {OBS_DIM}, act {ACT_DIM}, episodes of {EPISODE_STEPS} "
              f"with timeouts, no next_observations; raw arrays {raw / 1e6:.1f} MB, file {path.stat().st_size / 1e6:.1f} MB")

        stages = []
        for _ in range(args.repeats):
            dataset, returns, seconds = load_and_process(path)
            stages.append(seconds)
            del dataset, returns
        median = {k: float(np.median([s[k] for s in stages])) for k in stages[0]}
        best = min(s["total"] for s in stages)
        print(f"time (median of {args.repeats}, warm page cache): load {median['load']:.3f} s + process "
              f"{median['process']:.3f} s = {median['total']:.3f} s (best {best:.3f} s)")

        memory = measure_memory(path)
        traced, rss = memory["traced_peak"] / raw, memory["rss_growth"] / raw
        print(f"memory (fresh process): numpy peak {memory['traced_peak'] / 1e6:.1f} MB = {traced:.2f}x raw; "
              f"peak RSS growth {memory['rss_growth'] / 1e6:.1f} MB = {rss:.2f}x raw"
              f"{'' if memory['hwm_reset'] else ' (VmHWM could not be reset: includes start-up)'}; "
              f"result (dataset + returns) {memory['result_bytes'] / 1e6:.1f} MB = {memory['result_bytes'] / raw:.2f}x raw")
        print(f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")

        if not args.no_reference:
            dataset, _, _ = load_and_process(path)
            ends = dataset.episode_ends
            sparse = (dataset.rewards * REWARD_SCALE + REWARD_BIAS).astype(np.float32)
            dense = np.random.default_rng(1).standard_normal(len(ends)).astype(np.float32)
            for label, rewards in (("antmaze rewards", sparse), ("dense rewards", dense)):
                times = time_mc_returns(rewards, ends, args.repeats)
                old, new = times["python loop (before)"], times["vectorized (now)"]
                print(f"mc_returns, {label}: python loop (before) {old:.3f} s, vectorized (now) {new:.3f} s "
                      f"({old / new:.0f}x)")

        # The same transitions as a Minari dataset (one HDF5 group per episode).
        dataset, _, _ = load_and_process(path)
        minari_dir = write_minari(dataset, Path(tmp) / "antmaze-like-v0")
        del dataset
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            read_minari(minari_dir, observation_dim=OBS_DIM, action_dim=ACT_DIM)
            runs.append(time.perf_counter() - t0)
        print(f"read_minari, same transitions in Minari HDF5 layout: {np.median(runs):.3f} s (median of {args.repeats})")

        time_ok = median["total"] < TIME_TARGET_S
        memory_ok = max(traced, rss) < MEMORY_TARGET
        print(f"target load + process < {TIME_TARGET_S:.0f} s: {'met' if time_ok else 'NOT met'} ({median['total']:.2f} s)")
        print(f"target peak memory < {MEMORY_TARGET:.0f}x raw: {'met' if memory_ok else 'NOT met'} "
              f"(the larger of the two measures: {max(traced, rss):.2f}x)")


if __name__ == "__main__":
    main()
