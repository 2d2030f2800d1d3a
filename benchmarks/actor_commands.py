"""Latency of a remote operator command (`wsrl pause|resume|estop`): from the ActorCommand call
to the robot actor carrying it out (its pause flag set) and to the learner having its
acknowledgement (the call's answer), over loopback with the simulated robot at 20 Hz.

The robot actor reports its state every 0.5 s (actor/robot_controls.py STATE_EVERY_S) and gets queued
commands in the answer, so a command waits 0.25 s on average, 0.5 s at most, plus one round
trip; the acknowledgement follows at once.

    python benchmarks/actor_commands.py [--pairs 10]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from actor.client import LearnerClient  # noqa: E402
from actor.loop import ActorSettings  # noqa: E402
from actor.robot import RobotActor  # noqa: E402
from envs.tasks import get_task  # noqa: E402
from learner.agents import make_agent  # noqa: E402
from learner.checkpoint import save_checkpoint  # noqa: E402
from learner.config import load_config  # noqa: E402
from learner.distributed.server import LearnerServer  # noqa: E402
from learner.distributed.settings import DistributedSettings  # noqa: E402
from learner.distributed.trainer import Trainer  # noqa: E402
from protos.wsrl.v1 import learner_pb2 as pb  # noqa: E402

ROBOT = "envs.sim_robot:SimulatedPointMassRobot"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10, help="pause/resume pairs (default 10)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wsrl-commands-"))
    spec = {**get_task("pointmass-goal").spec(), "task": ROBOT}
    config = load_config("pointmass", "wsrl", ["finetune.warmup_steps=1000000"])  # no training: only the commands are timed
    checkpoint = save_checkpoint(tmp / "pre.ckpt", make_agent(config.finetune.algorithm, config.agent, 2, 2, seed=0), config, spec)
    config = load_config("pointmass", "wsrl", ["finetune.warmup_steps=1000000", f"finetune.checkpoint={checkpoint}"])
    server = LearnerServer(Trainer(config, spec, DistributedSettings(mode="async")), "127.0.0.1:0").start()
    actor = RobotActor(ActorSettings(learner=server.address, env=ROBOT, actor_id="arm-1", robot=True, spool_dir=str(tmp / "spool"), status_every_s=0))
    client = LearnerClient(server.address)
    try:
        actor.connect()
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(actor.run(0)), daemon=True)
        thread.start()
        while actor.env_steps < 20:
            time.sleep(0.01)
        acted, acked = [], []
        for i in range(2 * args.pairs):
            kind, want = (pb.ACTOR_COMMAND_PAUSE, True) if i % 2 == 0 else (pb.ACTOR_COMMAND_RESUME, False)
            time.sleep(0.137 * (1 + i % 3))  # land at various points of the report cycle
            started = time.monotonic()
            done: dict = {}

            def watch():
                while actor.paused != want:
                    time.sleep(0.001)
                done["t"] = time.monotonic() - started

            watcher = threading.Thread(target=watch)
            watcher.start()
            answer = client.actor_command(pb.ActorCommandRequest(actor_id="arm-1", kind=kind, wait_s=5.0))
            watcher.join(5.0)
            acted.append(done["t"])
            acked.append(answer.seconds)
        started = time.monotonic()
        answer = client.actor_command(pb.ActorCommandRequest(actor_id="arm-1", kind=pb.ACTOR_COMMAND_ESTOP, wait_s=5.0))
        thread.join(30)
        stopped = actor.emergency_stop_at - started if actor.emergency_stop_at else float("nan")
        print(f"pause/resume ({len(acted)} commands): carried out after median {1e3 * statistics.median(acted):.0f} ms, max {1e3 * max(acted):.0f} ms; "
              f"acknowledged to the caller after median {1e3 * statistics.median(acked):.0f} ms, max {1e3 * max(acked):.0f} ms")
        print(f"estop: acknowledged after {1e3 * answer.seconds:.0f} ms; the env's emergency_stop() called {1e3 * stopped:.0f} ms after the call; "
              f"run ended with emergency_stopped={result.get('emergency_stopped')}")
    finally:
        client.close()
        actor.close()
        server.stop(grace=0)


if __name__ == "__main__":
    main()
