"""`wsrl record`: episodes from any env (a robot, a task, a gymnasium id) written as an offline
dataset that `wsrl pretrain` reads (D4RL HDF5 file or Minari directory).

Who acts: a `--policy module:function` callable `f(observation) -> action` in the policy's
[-1, 1] units (e.g. a scripted controller), or nobody (zero actions). A human takes over
through either hook, and the takeover is what gets stored:

- `--teleop keyboard|spacemouse|module:function` (actor/teleop.py): a terminal's keys, a
  SpaceMouse, or any `f(observation) -> action or None` (policy units), polled every step
  before acting; an action replaces the policy's.
- the robot env's own `info["intervention_action"]` (env units, envs/robot.py): what the robot
  executed instead; converted to policy units for storage.

Every completed episode is saved at once (the whole file rewritten atomically), so stopping
the recorder (Ctrl-C, SIGTERM, a crash) keeps every finished episode; the card beside the file
counts episodes, interventions and successes. Imports no training code.

Envs with a `Dict` observation space (camera images + a state vector, envs/observations.py)
are recorded as named parts: frames stay uint8 and are stored chunked and gzip-compressed
(envs/dataset_writers.py), the Minari layout holding each frame once. Each save rewrites (and
recompresses) everything recorded so far: record long camera sessions in several outputs.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from actor.envs import load_callable, make_actor_env, to_policy_units
from envs.dataset_writers import write_d4rl_hdf5, write_minari
from envs.datasets import OfflineDataset
from envs.observations import ObservationSpec, observation_spec_of
from actor.teleop import close_teleop, make_teleop
from envs.robot import INTERVENTION_KEY, find_attribute, intervention_action


class Recorder:
    """Rolls episodes, keeps them, and rewrites the output after each one."""

    def __init__(
        self,
        env_name: str,
        out: str,
        policy: Optional[Callable] = None,
        teleop: Union[Callable, str, None] = None,
        seed: int = 0,
        max_episode_steps: int = 0,
        control_hz: float = 0.0,
        overwrite: bool = False,
    ):
        self.env, self.spec = make_actor_env(env_name, seed, max_episode_steps)
        # Named parts (cameras) for a Dict observation space; None for a flat vector.
        spec = observation_spec_of(self.spec)
        self.observation_spec: Optional[ObservationSpec] = None if spec.is_flat else spec
        self.out = Path(out)
        self.is_file = self.out.suffix in (".hdf5", ".h5")
        if not overwrite and (self.out.exists() if self.is_file else (self.out / "data").exists()):
            raise FileExistsError(f"output {str(self.out)!r} exists; pass --overwrite to replace it")
        self.first_write_overwrite = overwrite  # later writes replace the recorder's own file
        # A device name or entry point (make_teleop) is opened once the action size is known.
        self.policy = policy
        self.teleop = make_teleop(teleop, self.spec["action_dim"]) if isinstance(teleop, str) and teleop else (teleop or None)
        self.env_name, self.seed = env_name, seed
        self.period = 1.0 / control_hz if control_hz > 0 else 0.0
        base = self.env.unwrapped
        self.env_low = np.asarray(base.action_space.low, np.float64)
        self.env_high = np.asarray(base.action_space.high, np.float64)
        self.columns: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")}
        self.episodes = self.interventions = self.successes = 0
        self._written = False

    def _act(self, observation: np.ndarray) -> tuple[np.ndarray, bool]:
        if self.teleop is not None:
            human = self.teleop(observation)
            if human is not None:
                return np.clip(np.asarray(human, np.float32), -1.0, 1.0), True
        if self.policy is not None:
            return np.clip(np.asarray(self.policy(observation), np.float32), -1.0, 1.0), False
        return np.zeros(self.spec["action_dim"], np.float32), False

    def record_episode(self, stop: Optional[threading.Event] = None) -> dict:
        """One episode; returns its stats. Stopping mid-episode drops that episode only."""
        wait_for_reset = find_attribute(self.env, "wait_for_operator_reset")
        if callable(wait_for_reset):
            wait_for_reset()
        observation, _ = self.env.reset(seed=self.seed + self.episodes)
        observation = self._keep(observation)
        rows: list[tuple] = []
        total, success, interventions = 0.0, False, 0
        next_tick = time.monotonic()
        while True:
            if stop is not None and stop.is_set():
                return {"stopped": True}
            action, by_human = self._act(observation)
            next_observation, reward, terminated, truncated, info = self.env.step(action)
            next_observation = self._keep(next_observation)  # before the env's next step reuses its buffers
            executed = intervention_action(info, self.env.unwrapped.action_space) if INTERVENTION_KEY in info else None
            if executed is not None:
                action, by_human = to_policy_units(executed, self.env_low, self.env_high), True
            interventions += int(by_human)
            success = success or bool(info.get("success", False))
            done = terminated or truncated
            rows.append((observation, action, reward, next_observation, float(terminated), done))
            total += float(reward)
            observation = next_observation
            if done:
                break
            if self.period:
                next_tick += self.period
                time.sleep(max(0.0, next_tick - time.monotonic()))
        for row in rows:
            for name, value in zip(self.columns, row):
                self.columns[name].append(value)
        self.episodes += 1
        self.interventions += interventions
        self.successes += int(success)
        self.save()
        return {"return": total, "length": len(rows), "success": success, "interventions": interventions}

    def _keep(self, observation):
        """A copy of a dict observation checked against the spec (an env may reuse its frame
        buffers between steps); flat observations as they are."""
        if self.observation_spec is None:
            return observation
        checked = self.observation_spec.check(observation, batch_ndim=0, where="env observation")
        return {name: np.array(value) for name, value in checked.items()}

    def dataset(self) -> OfflineDataset:
        c = self.columns
        if self.observation_spec is not None:
            return OfflineDataset.from_columns(c)
        return OfflineDataset(
            observations=np.asarray(c["observations"], np.float32).reshape(len(c["observations"]), -1),
            actions=np.asarray(c["actions"], np.float32),
            rewards=np.asarray(c["rewards"], np.float32),
            next_observations=np.asarray(c["next_observations"], np.float32).reshape(len(c["observations"]), -1),
            terminals=np.asarray(c["terminals"], np.float32),
            episode_ends=np.asarray(c["episode_ends"], bool),
        )

    def save(self) -> None:
        """Writes everything recorded so far (atomically: the previous file stays until then)."""
        overwrite = self.first_write_overwrite or self._written
        card = {
            "env": self.env_name,
            "generator": "wsrl record",
            "seed": self.seed,
            "recorded_episodes": self.episodes,
            "interventions": self.interventions,
            "successful_episodes": self.successes,
        }
        if self.is_file:
            write_d4rl_hdf5(self.dataset(), self.out, card, overwrite=overwrite)
        else:
            write_minari(self.dataset(), self.out, metadata={"wsrl_card": card}, overwrite=overwrite)
        self._written = True

    def close(self) -> None:
        close_teleop(self.teleop)
        stop_robot = find_attribute(self.env, "emergency_stop")
        if callable(stop_robot):
            stop_robot()
        self.env.close()


def record(
    env_name: str, out: str, episodes: int, policy: str = "", teleop: str = "", seed: int = 0,
    max_episode_steps: int = 0, control_hz: float = 0.0, overwrite: bool = False,
) -> dict:
    """`wsrl record`: records `episodes` episodes (SIGINT/SIGTERM stop after saving what is done)."""
    if episodes < 1:
        raise ValueError(f"field '--episodes': got {episodes}, expected an integer >= 1")
    recorder = Recorder(
        env_name, out, load_callable(policy) if policy else None, teleop or None,
        seed, max_episode_steps, control_hz, overwrite,
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(episodes):
            stats = recorder.record_episode(stop)
            if stats.get("stopped"):
                break
            print(
                f"[wsrl record] episode {recorder.episodes}/{episodes}: return {stats['return']:.3g}, "
                f"{stats['length']} steps, {stats['interventions']} interventions"
                + (", success" if stats["success"] else ""),
                flush=True,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        recorder.close()
    summary = {"episodes": recorder.episodes, "transitions": len(recorder.columns["rewards"]),
               "interventions": recorder.interventions, "out": str(recorder.out)}
    print(f"[wsrl record] saved {summary['episodes']} episodes ({summary['transitions']} transitions, "
          f"{summary['interventions']} interventions) -> {summary['out']}")
    return summary


def add_commands(sub) -> None:
    """Adds `wsrl record` to the top-level subparsers."""
    p = sub.add_parser("record", help="record episodes of any env (with teleop / interventions) as an offline dataset")
    p.add_argument("--env", required=True, help="task name, gymnasium id or 'module:Class' entry point (a robot env)")
    p.add_argument("--out", required=True, help="a .hdf5/.h5 file (D4RL layout + card) or a Minari dataset directory")
    p.add_argument("--episodes", type=int, default=10, help="episodes to record (default 10)")
    p.add_argument("--policy", default="", help="'module:function' acting as f(observation) -> action in [-1, 1] (default: zero actions)")
    p.add_argument("--teleop", default="", metavar="DEVICE", help="a human takeover, polled every step: keyboard (this terminal), spacemouse "
                   "(pip install 'wsrl[spacemouse]'), or 'module:function' f(observation) -> action in [-1, 1] or None")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-episode-steps", type=int, default=0, help="time limit for gymnasium envs (tasks bring their own)")
    p.add_argument("--control-hz", type=float, default=0.0, help="hold this step rate (default 0: as fast as the env steps)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run_command(args) -> int:
    if not args.policy and not args.teleop:
        print("[wsrl record] note: no --policy and no --teleop: the actions are zero unless the env's own intervention hook "
              "(info['intervention_action']) supplies them; for the simulated robot, --policy envs.sim_robot:pointmass_teleop "
              "drives it to the goal", flush=True)
    record(args.env, args.out, args.episodes, args.policy, args.teleop, args.seed,
           args.max_episode_steps, args.control_hz, args.overwrite)
    return 0
