"""Transport benchmark of the distributed learner (loopback, this machine).

Prints: validated inserts/s at batch 1, 64 and 256 (PushTransitions into a learner whose
warmup is never reached, so only validation + ingest is timed); publish+pull latency of a
locomotion-sized policy (17 -> 2x256 -> 6, ~0.3 MB; `--hidden 512` for ~1.2 MB). Medians;
the machine is shared, compare within a run. (Not done yet: `wsrl run` env steps/s with 1
and 2 actors against `wsrl finetune`.)

    PYTHONPATH=. python benchmarks/transport.py [--seconds 3] [--hidden 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def inserts_per_second(batch_size: int, seconds: float) -> float:
    from actor.client import LearnerClient
    from envs.tasks import get_task
    from learner.config import Config, FinetuneConfig, LoggingConfig
    from learner.distributed.server import LearnerServer
    from learner.distributed.trainer import DistributedSettings, Trainer
    from protos import codec
    from protos.wsrl.v1 import learner_pb2 as pb

    spec = get_task("pointmass-goal").spec()
    config = Config(finetune=FinetuneConfig(warmup_steps=10**9, num_steps=2_000_000), logging=LoggingConfig(tensorboard=False, progress=False))
    server = LearnerServer(Trainer(config, spec, DistributedSettings(mode="async", max_batch_size=256, max_pending=1 << 22))).start()
    client = LearnerClient(server.address)
    client.handshake(pb.HandshakeRequest(protocol_version=1, spec=codec.spec_to_proto(spec), actor_id="bench", run_id="r"))
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
        client.push(pb.TransitionBatch(actor_id="bench", run_id="r", sequence=seq, **tensors))
        seq, sent = seq + 1, sent + n
    elapsed = time.perf_counter() - started
    client.close()
    server.stop(grace=0)
    return sent / elapsed


def pull_latency_ms(hidden: int, rounds: int = 30) -> tuple[float, int]:
    """Median ms to serialize a freshly published version and pull it over loopback."""
    import jax

    from actor.client import LearnerClient
    from learner.distributed.server import PolicyStore
    from protos import codec

    rng = np.random.default_rng(0)
    params = {f"Dense_{i}": {"kernel": rng.normal(size=s).astype(np.float32), "bias": np.zeros(s[1], np.float32)} for i, s in enumerate([(17, hidden), (hidden, hidden), (hidden, 12)])}
    params = jax.tree_util.tree_map(jax.numpy.asarray, params)

    class FakeTrainer:  # stands in for a Trainer: only latest_policy() is used
        version = 0

        def latest_policy(self):
            return self.version, params

    from concurrent import futures

    import grpc

    from protos.wsrl.v1 import learner_pb2_grpc as pb_grpc

    trainer = FakeTrainer()
    store = PolicyStore(trainer)

    class Service(pb_grpc.LearnerServicer):
        def PullPolicy(self, request, context):
            version, payload = store.payload()
            yield from codec.policy_chunks(version, payload)

    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_LearnerServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = LearnerClient(f"127.0.0.1:{port}")
    times, size = [], 0
    for i in range(rounds + 3):
        trainer.version = i + 1  # publish: the next pull serializes anew
        t = time.perf_counter()
        version, got = client.pull("bench", i)
        times.append(time.perf_counter() - t)
        size = len(codec.serialize_params(got))
    client.close()
    server.stop(0)
    return statistics.median(times[3:]) * 1e3, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    for batch in (1, 64, 256):
        print(f"validated inserts/s at batch {batch:3d}: {inserts_per_second(batch, args.seconds):,.0f}", flush=True)
    ms, size = pull_latency_ms(args.hidden)
    print(f"publish+pull of a {size / 1e6:.2f} MB policy: {ms:.2f} ms (median)")


if __name__ == "__main__":
    main()
