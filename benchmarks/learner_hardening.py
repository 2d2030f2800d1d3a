"""What the learner's hardening costs (issue 14): periodic state saves and request floods.

`save`: a learner (`Trainer`, the locomotion shape: obs 17, act 6, 256x256 networks, SAC,
UTD 4, replay capacity 300k) with its replay buffer filled to `--fill` rows. Prints the fused
update time, the time of one full state save (agent + optimizer states + the filled replay
rows + ledger, `save_learner_state`) and the update rate over `--seconds` with no saves and
with a save every `--every` seconds; the cost of the default (a save every 60 s) is
save time / 60 s.

`flood`: a learner server in a child process (the pointmass spec, `--max-batch-size` 1024,
freed memory kept as `wsrl learner` does); the parent measures the child's resident memory
(VmRSS) at rest, then sends 64 concurrent pushes of 60 MB (refused by the receive limit
derived from the spec) and 64 concurrent pushes of the largest legitimate batch, and reads
the memory during, 1 s after and 7 s after each (the learner's `MemoryKeeper` looks every
5 s and hands freed memory back when it grew by more than 64 MB).

    python benchmarks/learner_hardening.py save --fill 100000
    python benchmarks/learner_hardening.py flood
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_save(args) -> None:
    import numpy as np

    from learner.config import AgentConfig, Config, FinetuneConfig, LoggingConfig
    from learner.distributed.learner_state import save_learner_state
    from learner.distributed.settings import DistributedSettings
    from learner.distributed.trainer import Trainer
    from learner.runs import keep_freed_memory

    keep_freed_memory()
    spec = {"task": "bench-locomotion", "observation_dim": 17, "action_dim": 6, "action_low": [-1.0] * 6, "action_high": [1.0] * 6}
    config = Config(task="bench-locomotion", agent=AgentConfig(critic_hidden_dims=(256, 256), actor_hidden_dims=(256, 256)),
                    finetune=FinetuneConfig(algorithm="sac", init="scratch", warmup_steps=0, num_steps=300_000, utd_ratio=4),
                    logging=LoggingConfig(tensorboard=False, progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, spec, DistributedSettings(state_dir=tmp))
        rng = np.random.default_rng(0)
        r = trainer.replay
        n = args.fill
        for name, array in r.data.items():
            array[:n] = rng.normal(size=(n, *array.shape[1:])).astype(array.dtype) if array.dtype != bool else rng.random((n, *array.shape[1:])) < 0.01
        r._size = r._next = n
        trainer.processed = trainer.env_steps = n
        for _ in range(3):  # compile, warm up
            trainer._update()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            trainer._update()
            jax_block(trainer)
            times.append(time.perf_counter() - t)
        update_s = statistics.median(times)
        saves = []
        for _ in range(3):
            t = time.perf_counter()
            save_learner_state(trainer, tmp)
            saves.append(time.perf_counter() - t)
        save_s = statistics.median(saves)
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6

        def rate(every: float) -> tuple[float, int]:
            done, saved, start = 0, 0, time.perf_counter()
            last = start
            while (now := time.perf_counter()) - start < args.seconds:
                if every and now - last >= every:
                    save_learner_state(trainer, tmp)
                    saved, last = saved + 1, time.perf_counter()
                trainer._update()
                done += 1
            jax_block(trainer)
            return done / (time.perf_counter() - start), saved

        plain, _ = rate(0)
        with_saves, count = rate(args.every)
        plain2, _ = rate(0)
    base = (plain + plain2) / 2
    print(f"load average {os.getloadavg()[0]:.1f}; replay filled with {n} rows; state on disk {size_mb:.1f} MB")
    print(f"fused update (UTD 4): {update_s * 1e3:.1f} ms median; one state save: {save_s * 1e3:.0f} ms median of 3")
    print(f"updates/s over {args.seconds:.0f} s: {plain:.1f} and {plain2:.1f} without saves, {with_saves:.1f} with a save every {args.every:g} s "
          f"({count} saves): {100 * (1 - with_saves / base):.1f}% fewer")
    print(f"cost of the default (a save every 60 s): {100 * save_s / 60:.2f}% of the update time")


def jax_block(trainer) -> None:
    import jax

    jax.block_until_ready(trainer.agent.critic.params)


def _serve(ready, stop, max_batch_size: int) -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from learner.distributed.server import LearnerServer
    from learner.distributed.settings import DistributedSettings
    from learner.distributed.trainer import Trainer
    from learner.runs import keep_freed_memory
    from tests.conftest import tiny_config
    from envs.tasks import get_task

    keep_freed_memory()
    config = tiny_config(finetune={"warmup_steps": 10**6, "num_steps": 200_000})
    server = LearnerServer(Trainer(config, get_task("pointmass-goal").spec(), DistributedSettings(max_batch_size=max_batch_size, max_pending=10**6))).start()
    ready.put((server.address, server.max_receive_bytes))
    stop.wait()
    server.stop(0)


def bench_flood(args) -> None:
    import multiprocessing as mp

    import grpc
    import numpy as np

    from actor.client import LearnerClient
    from protos import codec
    from protos.wsrl.v1 import learner_pb2 as pb

    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_serve, args=(ready, stop, args.max_batch_size))
    child.start()
    address, limit = ready.get(timeout=300)
    client = LearnerClient(address)
    spec = codec.spec_to_proto({"task": "pointmass-goal", "observation_dim": 2, "action_dim": 2, "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0]})
    client.handshake(pb.HandshakeRequest(protocol_version=codec.PROTOCOL_VERSION, spec=spec, actor_id="flood", run_id="f" * 32))
    time.sleep(1.0)
    rest = rss_mb(child.pid)
    print(f"load average {os.getloadavg()[0]:.1f}; receive limit {limit} bytes ({limit / 1024:.0f} KiB; was 64 MiB)")
    print(f"learner at rest: {rest:.0f} MB resident")

    def flood(make, label: str) -> None:
        codes: dict = {}
        peak = [rest]

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(child.pid))
                time.sleep(0.01)

        def one(i: int):
            try:
                client.stub.PushTransitions(make(i), timeout=120)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.RpcError as e:
                codes[e.code().name] = codes.get(e.code().name, 0) + 1

        done = threading.Event()
        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.0)
        done.set()
        watcher.join()
        after = rss_mb(child.pid)
        time.sleep(6.0)  # the learner's MemoryKeeper looks every 5 s
        print(f"{label}: answers {codes}; peak {peak[0]:.0f} MB, 1 s after {after:.0f} MB, 7 s after {rss_mb(child.pid):.0f} MB")

    big = pb.TransitionBatch(actor_id="flood", run_id="f" * 32, observations=pb.Tensor(dtype="float32", shape=[1, 2], data=bytes(60 << 20)))
    flood(lambda i: big, "64 concurrent 60 MB pushes")
    n = args.max_batch_size
    rng = np.random.default_rng(0)
    batches = []
    for i in range(64):
        fields = {"observations": rng.uniform(-1, 1, (n, 2)), "actions": rng.uniform(-1, 1, (n, 2)), "rewards": rng.normal(size=n),
                  "next_observations": rng.uniform(-1, 1, (n, 2))}
        # One actor id per push: the learner keeps at most max_runs_per_actor (64) runs of one id,
        # and the first flood's run already holds one of "flood"'s.
        client.handshake(pb.HandshakeRequest(protocol_version=codec.PROTOCOL_VERSION, spec=spec, actor_id=f"flood-{i}", run_id=f"{i:032d}"))
        batches.append(pb.TransitionBatch(actor_id=f"flood-{i}", run_id=f"{i:032d}", sequence=0,
                                          **{k: codec.encode_tensor(v.astype(np.float32)) for k, v in fields.items()},
                                          terminals=codec.encode_tensor(np.zeros(n, bool)), episode_ends=codec.encode_tensor(np.zeros(n, bool))))
    print(f"largest legitimate batch: {batches[0].ByteSize()} bytes")
    flood(lambda i: batches[i], f"64 concurrent pushes of {n} transitions")
    client.close()
    stop.set()
    child.join(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("save")
    p.add_argument("--fill", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--every", type=float, default=5.0)
    p = sub.add_parser("flood")
    p.add_argument("--max-batch-size", type=int, default=1024)
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    bench_save(args) if args.what == "save" else bench_flood(args)


if __name__ == "__main__":
    main()
