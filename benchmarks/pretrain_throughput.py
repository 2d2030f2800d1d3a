"""Offline pre-training throughput: the CQL/CalQL step's FLOPs and speed, and the loop's
overhead, per family, on this machine.

For each family's pre-training agent (configs/<family>.yaml: CalQL or CQL, its networks, its
CQL action count and target backup) it prints:

* the analytic matmul FLOPs of one pre-training step (one critic update with the CQL
  penalty and the max target backup, then one actor and temperature update; see
  `pretrain_flops`), the achieved GFLOP/s and its fraction of this same process's matmul rate
  (jitted 1024x1024 @ 1024x1024 in float32 and with bf16 inputs);
* `--variants` (override sets, e.g. `default;agent.cql_penalty_critics=all`): the bare
  update of each, timed call by call in turns in this one process, with ratios to the first;
* the loop comparison: `bare` (`agent.update` on one fixed device batch, one dispatch per
  step: the update's own rate), `host` (numpy sampling on the host + one dispatch per step:
  the loop `wsrl pretrain` ran before), `device` (`learner.pretrain.make_train_chunk`: the
  dataset on the device, batches sampled there, K steps per dispatch: what it runs now),
  timed in turns, with ratios to `bare`.

Everything is measured in turns inside one process, so a noisy host slows all variants
alike; the medians over `--rounds` and the ratios are the figures to quote. The dataset is
synthetic (random transitions of the task's dimensions), which costs the update the same.

    python benchmarks/pretrain_throughput.py --families antmaze --rounds 3
    python benchmarks/pretrain_throughput.py --families locomotion --variants "default;agent.cql_penalty_critics=all"
    python benchmarks/pretrain_throughput.py --families pointmass --steps 200 --no-flops
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from learner_throughput import network_macs  # noqa: E402  (the same per-sample counts as the SAC step's)

# Observation and action dimensions of each family's default task.
DIMS = {"pointmass": (2, 2), "pointmaze": (4, 2), "locomotion": (11, 3), "antmaze": (29, 8), "adroit": (39, 28), "kitchen": (59, 9)}


def pretrain_flops(config, obs_dim: int, act_dim: int) -> dict:
    """Analytic matmul FLOPs of one CQL/CalQL pre-training step (M = 1; 1 multiply-add = 2
    FLOPs; elementwise work not counted): per part, and in total."""
    E, B, n = config.critic_ensemble_size, config.batch_size, config.cql_num_actions
    backup = config.cql_max_target_backup
    n_next = config.max_target_backup_num_actions if backup == "sampled_actions" else 1
    n_target = E if backup == "ensemble_max" else config.critic_subsample_size
    penalized = config.critic_subsample_size if config.cql_penalty_critics == "subsample" else E
    hidden = tuple(config.critic_hidden_dims)
    c_fwd, c_dx, p_fwd, p_dx = network_macs(config, obs_dim, act_dim)  # per sample (and critic)
    parts = {
        "td_ensemble": 2 * E * B * (2 * c_fwd + c_dx),  # forward, weight and input gradients
        "target": 2 * B * n_next * (n_target * c_fwd + p_fwd),  # next actions + target critics
        "cql_proposals": 2 * penalized * B * 3 * n * (2 * c_fwd + c_dx),  # 3n actions per state, fwd + bwd
        "cql_policy_samples": 2 * 2 * B * n * p_fwd,  # pi(.|s) and pi(.|s'), n each
        "actor": 2 * B * p_fwd + 2 * E * B * c_fwd + 2 * B * (c_dx + act_dim * hidden[0]) + 2 * B * (p_fwd + p_dx),
    }
    return {"parts": parts, "total": sum(parts.values())}


def _matmul_gflops(repeats: int = 20) -> dict:
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (1024, 1024), jnp.float32)
    b = jax.random.normal(k2, (1024, 1024), jnp.float32)
    out = {}
    for name, fn in {
        "float32": jax.jit(lambda a, b: a @ b),
        "bfloat16": jax.jit(lambda a, b: jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)),
    }.items():
        fn(a, b).block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        out[name] = 2 * 1024**3 / statistics.median(times) / 1e9
    return out


def _in_turns(fns: dict, rounds: int, steps: int) -> dict:
    """Runs each `fn()` (which blocks) once per round in turns, the order reversed every other
    round; returns {name: [steps/s per round]}."""
    rates: dict = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            rates[name].append(steps / (time.perf_counter() - t0))
    return rates


def _report(rates: dict, base_name: str, flops: float = 0.0, matmul: float = 0.0) -> None:
    base = statistics.median(rates[base_name])
    for name, values in rates.items():
        med = statistics.median(values)
        extra = ""
        if flops:
            gflops = flops * med / 1e9
            extra = f"  {gflops:6.1f} GFLOP/s ({gflops / matmul:5.1%} of fp32 matmul)"
        print(f"  {name:40s} {med:8.2f} steps/s {1000 / med:9.2f} ms/step  x{med / base:.3f}{extra}   rounds: "
              + ", ".join(f"{v:.2f}" for v in values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="pointmass,locomotion,antmaze")
    parser.add_argument("--steps", type=int, default=0, help="updates per variant per round (default: 100 for point tasks, 10 otherwise)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset-size", type=int, default=100_000)
    parser.add_argument("--variants", default="", help="';'-separated override sets to compare (bare update), e.g. 'default;agent.cql_penalty_critics=all'")
    parser.add_argument("--no-loop", action="store_true", help="skip the bare/host/device loop comparison")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from learner.agents import make_agent
    from learner.config import load_config, pretraining_agent_config
    from learner.networks import describe_matmul_dtype
    from learner.pretrain import device_dataset, make_train_chunk
    from learner.replay_buffer import ReplayBuffer
    from learner.runs import keep_freed_memory

    keep_freed_memory()
    matmul = _matmul_gflops()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; "
          f"matmul 1024^3: {matmul['float32']:.1f} GFLOP/s float32, {matmul['bfloat16']:.1f} bf16 inputs; "
          f"{describe_matmul_dtype('auto')}")
    for family in args.families.split(","):
        obs_dim, act_dim = DIMS[family]
        steps = args.steps or (100 if family in ("pointmass", "pointmaze") else 10)
        rng = np.random.default_rng(0)
        n = args.dataset_size
        buffer = ReplayBuffer(n, obs_dim, act_dim)
        buffer.data["observations"][:] = rng.normal(size=(n, obs_dim))
        buffer.data["actions"][:] = rng.uniform(-1, 1, size=(n, act_dim))
        buffer.data["rewards"][:] = rng.normal(size=n)
        buffer.data["next_observations"][:] = rng.normal(size=(n, obs_dim))
        buffer.data["terminals"][:] = rng.random(n) < 0.01
        buffer.data["mc_returns"][:] = rng.normal(size=n)
        buffer._size = n
        dataset = device_dataset(buffer)

        variants = [v.strip() for v in (args.variants or "default").split(";") if v.strip()]
        agents, configs = {}, {}
        for v in variants:
            overrides = [] if v == "default" else v.split(",")
            config = load_config(family, "wsrl", overrides)
            configs[v] = pretraining_agent_config(config.agent)
            agents[v] = make_agent(config.pretrain.algorithm, configs[v], obs_dim, act_dim, 0)
        first = variants[0]
        algorithm = load_config(family, "wsrl").pretrain.algorithm
        c = configs[first]
        flops = pretrain_flops(c, obs_dim, act_dim) if algorithm in ("cql", "calql") else None
        print(f"\n{family} ({algorithm}, {c.critic_ensemble_size} critics {list(c.critic_hidden_dims)}, batch {c.batch_size}, "
              f"{c.cql_num_actions} CQL actions per kind, penalty on {c.cql_penalty_critics}, target {c.cql_max_target_backup}): "
              f"{steps} steps x {args.rounds} rounds")
        if flops:
            print(f"  FLOPs per step: {flops['total'] / 1e9:.2f} G = " + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in flops["parts"].items()))
        fixed = {k: jnp.asarray(v) for k, v in buffer.sample(rng, 1, c.batch_size).items()}

        def bare_of(agent):
            update = jax.jit(type(agent).update.__wrapped__)  # its own compilation per variant

            def run():
                a = agent
                for _ in range(steps):
                    a, info = update(a, fixed)
                jax.block_until_ready((a, info))

            return run

        bare = {v: bare_of(agents[v]) for v in variants}
        for fn in bare.values():
            fn()  # compile
        if len(variants) > 1:
            print("  variants (bare update):")
            _report(_in_turns(bare, args.rounds, steps), first)
        if args.no_loop:
            continue
        agent = agents[first]
        train_chunk = make_train_chunk(c.batch_size, steps)
        key = jax.random.key(0)

        def host():
            a = agent
            for _ in range(steps):
                a, info = a.update(buffer.sample(rng, 1, c.batch_size))
            jax.block_until_ready((a, info))

        def device():
            jax.block_until_ready(train_chunk(agent, dataset, key))

        host()
        device()
        print(f"  loop ({first}):")
        per_step = flops["total"] if flops else 0.0
        _report(_in_turns({"bare": bare[first], "host": host, "device": device}, args.rounds, steps), "bare", per_step, matmul["float32"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
