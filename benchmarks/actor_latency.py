"""Actor-side latency per control step: observation -> action (policy inference) and the
transition hand-off into the actor's outgoing batch, at fixed control rates.

Target (issue 5): p99 < 2 ms for a 256x256 policy on one CPU core, so a robot's control loop
is never the bottleneck. The process is pinned to one core (where the OS allows); the loop
sleeps to hold the rate, as the actor does, so the numbers include waking up from that sleep.

    python benchmarks/actor_latency.py [--rates 20 100] [--seconds 10] [--obs-dim 29 --act-dim 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from actor.networks import make_policy  # noqa: E402
from actor.policy import Policy  # noqa: E402


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def run_rate(policy, params, obs_dim: int, rate_hz: float, seconds: float, seed: int = 0) -> dict:
    """Holds `rate_hz` for `seconds`; per step times the policy call (rng split included, as
    ActorLoop.act does) and the hand-off (the tuple append ActorLoop.step does)."""
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    pending: list[tuple] = []
    inference, handoff, overruns = [], [], 0
    period = 1.0 / rate_hz
    next_tick = time.perf_counter()
    observation = rng.normal(size=obs_dim).astype(np.float32)
    for step in range(int(seconds * rate_hz)):
        next_tick += period
        t0 = time.perf_counter()
        key, sub = jax.random.split(key)
        action = policy(params, observation, sub)
        t1 = time.perf_counter()
        next_observation = rng.normal(size=obs_dim).astype(np.float32)  # the env's part, not timed
        t2 = time.perf_counter()
        pending.append((observation, action, 0.0, next_observation, False, False, 0, ""))
        if len(pending) >= 32:
            pending = []  # the batch goes to the sender thread
        t3 = time.perf_counter()
        inference.append(t1 - t0)
        handoff.append(t3 - t2)
        observation = next_observation
        wait = next_tick - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            overruns += 1
    ms = lambda xs: (1e3 * statistics.median(xs), 1e3 * percentile(xs, 99))  # noqa: E731
    return {"rate_hz": rate_hz, "steps": len(inference), "inference_ms": ms(inference), "handoff_ms": ms(handoff), "overruns": overruns}


def run_robot_rate(policy, params, obs_dim: int, act_dim: int, rate_hz: float, seconds: float, batch_size: int = 32, seed: int = 0) -> dict:
    """Robot mode's control step (actor/robot.py): policy sample, clip to bounds, per-step
    change limit, the transition appended, and every `batch_size` steps the batch encoded
    (`ActorLoop._make_batch`, protobuf tensors) and put on the sender's bounded queue, which a
    background thread drains as the spooler does (without the disk). Times the whole step."""
    import queue
    import threading

    from actor.loop import ActorLoop

    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    outbox: queue.Queue = queue.Queue(maxsize=1024)
    done = threading.Event()

    def drain():
        while not done.is_set():
            try:
                outbox.get(timeout=0.05)
            except queue.Empty:
                pass

    consumer = threading.Thread(target=drain, daemon=True)
    consumer.start()
    for _ in range(20):  # compile `sample` (the actor does this in connect())
        policy.sample(params, np.zeros(obs_dim, np.float32), jax.random.PRNGKey(1))
    state = types.SimpleNamespace(_pending=[], actor_id="bench", run_id="r", sequence=0)
    state._batch_columns = lambda: ActorLoop._batch_columns(state)
    low, high = -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)
    previous, times, overruns = None, [], 0
    period = 1.0 / rate_hz
    next_tick = time.perf_counter()
    observation = rng.normal(size=obs_dim).astype(np.float32)
    for _ in range(int(seconds * rate_hz)):
        next_tick += period
        next_observation = rng.normal(size=obs_dim).astype(np.float32)  # the env's part, not timed
        t0 = time.perf_counter()
        action, key = policy.sample(params, observation, key)
        action = np.clip(np.asarray(action, np.float32), low, high)
        if previous is not None:
            action = np.clip(action, previous - 0.2, previous + 0.2)
        state._pending.append((observation, action, 0.0, next_observation, False, False, 0, "", False))
        if len(state._pending) >= batch_size:
            outbox.put_nowait(ActorLoop._make_batch(state))
            state.sequence += 1
            state._pending = []
        times.append(time.perf_counter() - t0)
        previous, observation = action, next_observation
        wait = next_tick - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            overruns += 1
            next_tick = time.perf_counter()  # as the actor: no catch-up burst
    done.set()
    consumer.join()
    return {"rate_hz": rate_hz, "steps": len(times), "step_ms": (1e3 * statistics.median(times), 1e3 * percentile(times, 99)),
            "max_ms": 1e3 * max(times), "overruns": overruns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 100.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--obs-dim", type=int, default=29)
    parser.add_argument("--act-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    config = types.SimpleNamespace(actor_hidden_dims=tuple(args.hidden), actor_layer_norm=True, std_parameterization="exp",
                                   kernel_scale_final=1e-2, log_std_min=-20.0, log_std_max=2.0)
    module = make_policy(config, args.act_dim)
    params = module.init(jax.random.PRNGKey(0), np.zeros((1, args.obs_dim), np.float32))["params"]
    policy = Policy(config, args.act_dim)
    for _ in range(50):  # compile and warm up
        policy(params, np.zeros(args.obs_dim, np.float32), jax.random.PRNGKey(0))
    print(f"policy {args.hidden} (LayerNorm), obs {args.obs_dim}, act {args.act_dim}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; one core; {args.seconds:.0f} s per rate")
    print(f"{'rate':>7} {'steps':>6} {'inference median':>17} {'p99':>8} {'hand-off median':>16} {'p99':>8} {'overruns':>9}")
    for rate in args.rates:
        r = run_rate(policy, params, args.obs_dim, rate, args.seconds)
        print(f"{rate:5.0f}Hz {r['steps']:6d} {r['inference_ms'][0]:14.3f} ms {r['inference_ms'][1]:5.3f} ms "
              f"{r['handoff_ms'][0] * 1e3:13.1f} us {r['handoff_ms'][1] * 1e3:5.1f} us {r['overruns']:9d}")
    print("robot mode (actor/robot.py): sample + clip + change limit + transition + batch encode and queue hand-off every 32 steps")
    print(f"{'rate':>7} {'steps':>6} {'step median':>12} {'p99':>8} {'max':>8} {'overruns':>9}")
    for rate in args.rates:
        r = run_robot_rate(policy, params, args.obs_dim, args.act_dim, rate, args.seconds)
        print(f"{rate:5.0f}Hz {r['steps']:6d} {r['step_ms'][0]:9.3f} ms {r['step_ms'][1]:5.3f} ms {r['max_ms']:5.2f} ms {r['overruns']:9d}")


if __name__ == "__main__":
    main()
