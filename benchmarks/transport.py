"""Transport benchmark of the distributed learner (loopback, this machine).

Prints, as medians (the machine is shared: compare within a run, look at the ratios):

* validated inserts/s at batch 1, 64 and 256 (PushTransitions into a learner whose warmup is
  never reached, so only validation + ingest is timed);
* publish + pull latency of a locomotion policy (17 -> 2 x H -> 6 x 2 heads; H = 256: 0.29 MB,
  H = 512: 1.1 MB) through the real `LearnerServer` / `LearnerClient`: a fresh version is
  published (a reference swap, as the training thread does), then one `pull` serializes it,
  streams it and decodes it. Next to it, interleaved on the same server and channel, the
  floor: a raw grpcio unary call returning the same number of bytes;
* `wsrl run` env steps/s with 1 and 2 actors against `wsrl finetune` on the same config (the
  default `pointmass` family, small step counts, the same checkpoint), every command a fresh
  process, rounds interleaved. The rate is the steady state between two logged env steps
  after warmup and the first update's compilation (`finetune`: its `train.csv`; `run`: the
  learner's `learner.csv`), so process start-up and evaluations are not in it; the whole
  command's wall time is printed too.

    PYTHONPATH=. python benchmarks/transport.py [--seconds 3] [--rounds 3] [--only inserts,pull,run]
    PYTHONPATH=. python benchmarks/transport.py --only run --commands "finetune,run x1" --baseline /tmp/old-checkout
    PYTHONPATH=. python benchmarks/transport.py --only run --commands "finetune,run x2" --taskset "0;0,1"
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def inserts_per_second(batch_size: int, seconds: float) -> float:
    from actor.client import LearnerClient
    from envs.tasks import get_task
    from learner.config import Config, FinetuneConfig, LoggingConfig
    from learner.distributed.server import LearnerServer
    from learner.distributed.settings import DistributedSettings
    from learner.distributed.trainer import Trainer
    from protos import codec
    from protos.wsrl.v1 import learner_pb2 as pb

    spec = get_task("pointmass-goal").spec()
    config = Config(finetune=FinetuneConfig(warmup_steps=10**9, num_steps=2_000_000), logging=LoggingConfig(tensorboard=False, progress=False))
    server = LearnerServer(Trainer(config, spec, DistributedSettings(mode="async", max_batch_size=256, max_pending=1 << 22))).start()
    client = LearnerClient(server.address)
    client.handshake(pb.HandshakeRequest(protocol_version=codec.PROTOCOL_VERSION, spec=codec.spec_to_proto(spec), actor_id="bench", run_id="bench-run-0000000001"))
    rng = np.random.default_rng(0)
    n = batch_size
    tensors = {
        "observations": codec.encode_tensor(rng.uniform(-1, 1, (n, 2)).astype(np.float32)),
        "actions": codec.encode_tensor(rng.uniform(-1, 1, (n, 2)).astype(np.float32)),
        "rewards": codec.encode_tensor(np.zeros(n, np.float32)),
        "next_observations": codec.encode_tensor(rng.uniform(-1, 1, (n, 2)).astype(np.float32)),
        "terminals": codec.encode_tensor(np.zeros(n, bool)),
        "episode_ends": codec.encode_tensor(np.zeros(n, bool)),
    }
    seq, sent, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        client.push(pb.TransitionBatch(actor_id="bench", run_id="bench-run-0000000001", sequence=seq, **tensors))
        seq, sent = seq + 1, sent + n
    elapsed = time.perf_counter() - started
    client.close()
    server.stop(grace=0)
    return sent / elapsed


def pull_latency_ms(hidden: int, rounds: int = 200) -> dict:
    """Median ms of publish + pull of a fresh version of a 17 -> 2 x `hidden` -> 6 policy, and
    of a raw unary call returning as many bytes (the floor), interleaved; payload size."""
    import grpc
    import jax

    from actor.client import LearnerClient
    from learner.config import AgentConfig, Config, FinetuneConfig, LoggingConfig
    from learner.distributed.server import LearnerServer
    from learner.distributed.trainer import Trainer

    spec = {"task": "locomotion-bench", "observation_dim": 17, "action_dim": 6, "action_low": [-1.0] * 6, "action_high": [1.0] * 6}
    agent = AgentConfig(actor_hidden_dims=(hidden, hidden), critic_hidden_dims=(8,), critic_ensemble_size=2, critic_subsample_size=2, batch_size=8)
    config = Config(task="locomotion-bench", agent=agent, finetune=FinetuneConfig(warmup_steps=10**9, num_steps=1000), logging=LoggingConfig(tensorboard=False, progress=False))
    trainer = Trainer(config, spec)
    base = trainer.agent.actor.params
    server = LearnerServer(trainer)
    size = len(server.service.policies.latest()[1][0])
    raw_payload = bytes(size)
    raw_handler = grpc.method_handlers_generic_handler("bench.Raw", {"Bytes": grpc.unary_unary_rpc_method_handler(lambda request, context: raw_payload)})
    server.server.add_generic_rpc_handlers((raw_handler,))
    server.start()
    client = LearnerClient(server.address)
    raw = client.channel.unary_unary("/bench.Raw/Bytes")
    have, source = -1, ""
    pulls, raws = [], []
    for i in range(rounds + 10):
        params = jax.block_until_ready(jax.tree_util.tree_map(lambda x: x + 0.0, base))  # a new version's arrays
        with trainer.cond:  # publish, as Trainer._update does
            trainer.policy_version, trainer.policy_params = i + 1, params
        t = time.perf_counter()
        have, got, source = client.pull("bench", have, source)
        pulls.append(time.perf_counter() - t)
        assert got is not None and have == i + 1
        t = time.perf_counter()
        raw(b"", timeout=10)
        raws.append(time.perf_counter() - t)
    client.close()
    server.stop(grace=0)
    pulls, raws = pulls[10:], raws[10:]
    return {"bytes": size, "pull_ms": statistics.median(pulls) * 1e3, "raw_ms": statistics.median(raws) * 1e3,
            "pull_p10_ms": statistics.quantiles(pulls, n=10)[0] * 1e3, "raw_p10_ms": statistics.quantiles(raws, n=10)[0] * 1e3}


# ---- wsrl run vs wsrl finetune -------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _rate(times: dict[int, float], start: int, end: int) -> float:
    return (end - start) / (times[end] - times[start])


COMMANDS = {
    "finetune": ["finetune"],
    "run x1": ["run", "--num-actors", "1"],
    "run x2": ["run", "--num-actors", "2"],
}


def run_vs_finetune(rounds: int, warmup: int, steps: int, log_every: int, work: Path, names: list[str] = list(COMMANDS),
                    baseline: str = "", taskset: list[str] = ()) -> dict[str, list]:
    """Env steps/s of `wsrl finetune`, `wsrl run --num-actors 1` and `--num-actors 2` on the same
    config and checkpoint (fresh processes, rounds interleaved): {command: [(rate, wall s, CPU s)]}.
    `names`: which of COMMANDS; `baseline`: another checkout (e.g. `git archive` of an older
    commit) whose commands run too, as "<name> @base"; `taskset`: CPU lists (`taskset -c`), every
    command runs once per list in each round, as "<name> cpus=<list>"."""
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint
    from learner.config import load_config
    from envs.tasks import get_task

    overrides = [
        f"finetune.warmup_steps={warmup}", f"finetune.num_steps={steps}", f"finetune.log_every={log_every}", "finetune.eval_every=0",
        "finetune.eval_episodes=1", "finetune.checkpoint_every=0", "logging.tensorboard=false", "logging.progress=false",
    ]
    config = load_config("pointmass", "wsrl", overrides)
    spec = get_task(config.task).spec()
    # Weights do not change the speed: an untrained CalQL agent stands in for pre-training.
    checkpoint = save_checkpoint(work / "pre.ckpt", make_agent("calql", config.agent, spec["observation_dim"], spec["action_dim"], seed=0), config, spec)
    # Steady state: from 2 x warmup (the first update's compilation and the actors' queue of
    # up to --max-lead steps are behind) to the end; both ends are logged steps.
    start = max(2 * warmup, warmup + 4 * log_every) // log_every * log_every
    # (label, command, checkout, CPU list)
    variants = [(name, COMMANDS[name], ROOT, None) for name in names]
    if baseline:
        variants += [(f"{name} @base", COMMANDS[name], Path(baseline).resolve(), None) for name in names if name != "finetune"]
    if taskset:
        variants = [(f"{label} cpus={cpus}", command, checkout, cpus) for cpus in taskset for label, command, checkout, _ in variants]
    results: dict[str, list] = {label: [] for label, *_ in variants}
    for r in range(rounds):
        for label, command, checkout, cpus in variants:
            name = label.split(" @")[0].split(" cpus=")[0]
            run_dir = work / f"{label.replace(' ', '').replace('@', '').replace('=', '').replace(',', '')}-{r}"
            env = {**os.environ, "PYTHONPATH": str(checkout)}
            pin = ["taskset", "-c", cpus] if cpus else []
            t, cpu = time.perf_counter(), _children_cpu()
            done = subprocess.run([*pin, sys.executable, "-m", "learner.cli", *command, "--config", "pointmass", "--checkpoint", str(checkpoint),
                                   "--run-dir", str(run_dir), *overrides], cwd=checkout, env=env, capture_output=True, text=True)
            wall, cpu = time.perf_counter() - t, _children_cpu() - cpu
            if done.returncode != 0:
                raise RuntimeError(f"{label} failed:\n{done.stderr[-2000:]}")
            if name == "finetune":  # train.csv: env_steps_per_s = step / seconds since the loop began
                times = {int(row["step"]): row["step"] / row["env_steps_per_s"] for row in _read_csv(run_dir / "train.csv")}
            else:  # learner.csv: time_s since the learner started, per inserted env step
                times = {int(row["processed_steps"]): row["time_s"] for row in _read_csv(run_dir / "learner.csv")}
            results[label].append((_rate(times, start, steps), wall, cpu))
            print(f"  round {r + 1} {label:8s}: {results[label][-1][0]:7.1f} env steps/s (steps {start}..{steps}), {wall:5.1f} s wall, "
                  f"{cpu:5.1f} CPU s (all its processes), load {os.getloadavg()[0]:.1f}", flush=True)
    return results


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (and theirs) so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per insert measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of finetune / run x1 / run x2")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--only", default="inserts,pull,run", help="comma-separated subset of inserts, pull, run")
    parser.add_argument("--commands", default=",".join(COMMANDS), help=f"run: comma-separated subset of {', '.join(COMMANDS)}")
    parser.add_argument("--baseline", default="", help="run: also run the `wsrl run` commands of this other checkout, interleaved")
    parser.add_argument("--taskset", default="", help="run: CPU lists separated by ';' (e.g. '0;0,1'): every command pinned to each")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    if "inserts" in parts:
        for batch in (1, 64, 256):
            print(f"validated inserts/s at batch {batch:3d}: {inserts_per_second(batch, args.seconds):,.0f}", flush=True)
    if "pull" in parts:
        for hidden in (256, 512):
            r = pull_latency_ms(hidden)
            print(f"publish+pull of a {r['bytes'] / 1e6:.2f} MB policy (hidden {hidden}): {r['pull_ms']:.2f} ms median ({r['pull_p10_ms']:.2f} p10); "
                  f"raw grpcio unary of the same bytes: {r['raw_ms']:.2f} ms ({r['raw_p10_ms']:.2f} p10)", flush=True)
    if "run" in parts:
        with tempfile.TemporaryDirectory() as work:
            taskset = [c for c in args.taskset.split(";") if c]
            results = run_vs_finetune(args.rounds, args.warmup, args.steps, 50, Path(work), args.commands.split(","), args.baseline, taskset)
        for label, values in results.items():
            rate, wall, cpu = (statistics.median(v[i] for v in values) for i in range(3))
            line = f"{label:8s}: {rate:7.1f} env steps/s median of {len(values)}"
            suffix = label[len(label.split(' cpus=')[0]):]
            base = results.get("finetune" + suffix)
            if base is not None:  # ratios per round (same round = same load), then their median
                ratios = [v[0] / b[0] for v, b in zip(values, base)]
                line += f" ({statistics.median(ratios):.2f}x finetune{suffix}, per round: {', '.join(f'{x:.2f}' for x in ratios)})"
            print(f"{line}, {wall:.1f} s wall, {cpu:.1f} CPU s median", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
