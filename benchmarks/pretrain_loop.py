"""Pre-training loop overhead: the whole loop's steps/s against the bare jitted update's.

Three ways to run the same offline updates, measured in turns inside one process (so a noisy
host slows them alike) and reported as medians over rounds with ratios to `bare`:

* `bare`: `agent.update` on one fixed batch already on the device, one dispatch per step --
  the update's own rate, no sampling at all (the ceiling a loop can approach);
* `host`: the loop `wsrl pretrain` ran before: a batch sampled with numpy on the host, then
  one dispatch per step (what `learner/pretrain.py` did until the device loop);
* `device`: `learner.pretrain.make_train_chunk`: the dataset on the device, batches sampled
  there, K updates per dispatch in one `lax.scan` (what `wsrl pretrain` runs now).

Each family's agent is its pre-training agent (configs/<family>.yaml: CalQL or CQL, its
network sizes and CQL action counts); the dataset is synthetic (random transitions of the
task's dimensions, `--dataset-size` of them), which costs the update the same.

    python benchmarks/pretrain_loop.py                                  # pointmass, locomotion
    python benchmarks/pretrain_loop.py --families pointmass --steps 200 --rounds 5
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

DIMS = {"pointmass": (2, 2), "pointmaze": (4, 2), "locomotion": (17, 6), "antmaze": (29, 8), "adroit": (39, 28), "kitchen": (59, 9)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="pointmass,locomotion")
    parser.add_argument("--steps", type=int, default=0, help="updates per variant per round (default: 200 for pointmass, 20 otherwise)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset-size", type=int, default=100_000)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from learner.agents import make_agent
    from learner.config import load_config, pretraining_agent_config
    from learner.pretrain import device_dataset, make_train_chunk
    from learner.replay_buffer import ReplayBuffer
    from learner.runs import keep_freed_memory

    keep_freed_memory()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    for family in args.families.split(","):
        config = load_config(family, "wsrl")
        agent_config = pretraining_agent_config(config.agent)
        obs_dim, act_dim = DIMS[family]
        steps = args.steps or (200 if family in ("pointmass", "pointmaze") else 20)
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
        agent0 = make_agent(config.pretrain.algorithm, agent_config, obs_dim, act_dim, 0)
        batch_size = agent_config.batch_size
        fixed = {k: jnp.asarray(v) for k, v in buffer.sample(rng, 1, batch_size).items()}
        dataset = device_dataset(buffer)
        train_chunk = make_train_chunk(batch_size, steps)
        key = jax.random.key(0)

        def bare(agent):
            for _ in range(steps):
                agent, _ = agent.update(fixed)
            return agent

        def host(agent):
            for _ in range(steps):
                agent, _ = agent.update(buffer.sample(rng, 1, batch_size))
            return agent

        def device(agent):
            agent, _, _ = train_chunk(agent, dataset, key)
            return agent

        variants = {"bare": bare, "host": host, "device": device}
        for fn in variants.values():  # compile
            jax.block_until_ready(fn(agent0))
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(agent0))
                rates[name].append(steps / (time.perf_counter() - start))
        print(f"\n{family} ({config.pretrain.algorithm}, critics {agent_config.critic_ensemble_size}x{list(agent_config.critic_hidden_dims)}, "
              f"batch {batch_size}, {agent_config.cql_num_actions} CQL actions per kind): {steps} updates x {args.rounds} rounds")
        base = statistics.median(rates["bare"])
        for name, values in rates.items():
            med = statistics.median(values)
            print(f"  {name:7s} {med:9.1f} steps/s  ({1000 / med:7.2f} ms/step)  x{med / base:.3f} of bare   rounds: "
                  + ", ".join(f"{v:.1f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
