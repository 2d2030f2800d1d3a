"""Learner state saves and `--resume`: when a save is due, the state file, and writing and loading it.

Durability: the per-run sequence numbers stored in the last saved state are the "durable"
watermark answered with every push; an actor keeps acknowledged batches above it, so a learner
killed between two state saves gets them again after `--resume` (see `actor.loop`). The state
is saved at start, every `state_every` inserted env steps, every `state_every_s` seconds
(while something new arrived) and at stop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from learner.distributed.ledger import ActorRecord

STATE_FORMAT = "wsrl-learner-state-v2"
# v1 (before the per-run digests) still loads; its batches get no duplicate check.
READABLE_STATE_FORMATS = ("wsrl-learner-state-v1", STATE_FORMAT)
STATE_FILE = "learner_state.msgpack"


class StateSaves:
    """The `Trainer`'s periodic state saves (on its training thread) and its resume; the
    counters it keeps are set up by `Trainer.__init__`."""

    def _save_due(self) -> bool:
        """Whether a periodic state save is due: `state_every` inserted env steps, or
        `state_every_s` seconds with something accepted since the last save."""
        s = self.settings
        if not s.state_dir:
            return False
        if s.state_every and self.processed - self._saved_at >= s.state_every:
            return True
        return bool(s.state_every_s) and self.env_steps != self._saved_env_steps and time.monotonic() - self._saved_time >= s.state_every_s

    def _save_wait(self) -> Optional[float]:
        """How long an idle training thread may sleep before a timed save may be due."""
        s = self.settings
        if not (s.state_dir and s.state_every_s):
            return None
        return max(0.01, min(1.0, self._saved_time + s.state_every_s - time.monotonic()))

    def _maybe_save_state(self) -> None:
        if self._save_due():
            self._save_state()

    def _save_state(self, final: bool = False) -> None:
        """Runs on the trainer thread between batches, so agent and replay are consistent
        with the ledger and the queue copied under the lock."""
        if self.settings.state_dir:
            with self.cond:
                env_steps = self.env_steps
            save_learner_state(self, self.settings.state_dir)
            self._saved_at, self._saved_time, self._saved_env_steps = self.processed, time.monotonic(), env_steps

    def resume(self, directory: str) -> None:
        """Loads a `save_learner_state` directory into this (not yet started) trainer."""
        load_learner_state(self, directory)
        self._saved_at, self._saved_env_steps, self._saved_time = self.processed, self.env_steps, time.monotonic()
        self.evaluations.resume_at(self.processed)


def save_learner_state(trainer: StateSaves, directory: str) -> Path:
    """Writes the agent (the checkpoint format, its own file per update count) and then, by
    atomic rename, `learner_state.msgpack` naming it: replay, counters, sample RNG, per-actor
    sequence numbers, accepted-but-not-inserted batches and open episodes. A kill at any
    point leaves the previous pair loadable; older agent files are removed afterwards. Only the
    filled rows of the replay buffer are written (a save early in a run is small)."""
    import json

    from flax import serialization

    from learner.checkpoint import atomic_write_bytes, save_checkpoint

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with trainer.cond:
        counters = {k: getattr(trainer, k) for k in ("env_steps", "processed", "updates", "episodes", "policy_version", "rejected", "duplicates", "conflicts",
                                                     "intervention_steps")}
        actors = {
            a: {"next_sequence": dict(r.next_sequence), "run_id": r.run_id, "accepted": r.accepted,
                "digests": {run: [[int(q), d.hex()] for q, d in table.items()] for run, table in r.digests.items()}}
            for a, r in trainer.actors.items()
        }
        queue = [{"actor_id": a, "run_id": r, "arrays": arrays} for a, r, arrays in trainer.queue]
    agent_file = f"agent-{counters['updates']:010d}.ckpt"
    save_checkpoint(path / agent_file, trainer.agent, trainer.config, trainer.spec, counters)
    replay = trainer.replay
    state = {
        "format": STATE_FORMAT,
        "agent_file": agent_file,
        "counters": json.dumps(counters),
        "actors": json.dumps(actors),
        "sample_rng": json.dumps(trainer.sample_rng.bit_generator.state),
        "replay": replay.state_dict(),  # (camera frames: each live frame once)
        "queue": {str(i): q for i, q in enumerate(queue)},
        "open_episodes": json.dumps([[a, r, [int(x) for x in slots], rewards] for (a, r), (slots, rewards) in trainer._episodes.items()]),
    }
    atomic_write_bytes(path / STATE_FILE, serialization.msgpack_serialize(state))
    # Only now (the state file renamed into place) are these batches safe from a learner kill.
    with trainer.cond:
        trainer.durable = {(a, run): int(seq) for a, r in actors.items() for run, seq in r["next_sequence"].items()}
    for old in path.glob("agent-*.ckpt"):
        if old.name != agent_file:
            old.unlink(missing_ok=True)
    return path / STATE_FILE


def load_learner_state(trainer: StateSaves, directory: str) -> None:
    """Restores what `save_learner_state` wrote (agent with its RNG and optimizer states)."""
    import json

    from flax import serialization

    from learner.checkpoint import CheckpointError, check_compatible, read_checkpoint

    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"learner state {str(path)!r} does not exist")
    state = serialization.msgpack_restore(path.read_bytes())
    if not isinstance(state, dict) or state.get("format") not in READABLE_STATE_FORMATS:
        raise CheckpointError(f"learner state {str(path)!r}: format {state.get('format') if isinstance(state, dict) else None!r}, expected {STATE_FORMAT!r}")
    ckpt = read_checkpoint(Path(directory) / state["agent_file"])
    check_compatible(ckpt, trainer.config.agent, trainer.spec)
    if ckpt.algorithm != trainer.agent.algorithm:
        raise CheckpointError(f"learner state {str(path)!r}: algorithm {ckpt.algorithm!r}, this run has {trainer.agent.algorithm!r}")
    trainer.agent = serialization.from_state_dict(trainer.agent, ckpt.state)
    counters = json.loads(state["counters"])
    try:
        trainer.replay.load_state_dict(state["replay"])
    except ValueError as e:
        raise CheckpointError(f"learner state {str(path)!r}: {e} (finetune.replay_capacity / num_steps differ)") from None
    trainer.sample_rng.bit_generator.state = json.loads(state["sample_rng"])
    with trainer.cond:
        for key in ("env_steps", "processed", "updates", "episodes", "rejected", "duplicates", "conflicts", "intervention_steps"):
            setattr(trainer, key, int(counters.get(key, 0)))
        # The restored agent is served at once; versions keep counting fused updates.
        trainer.policy_version, trainer.policy_params = trainer.updates, trainer.agent.policy_params()
        now = time.monotonic()  # idle times restart with the resumed learner
        trainer.actors = {
            a: ActorRecord(next_sequence={k: int(v) for k, v in r["next_sequence"].items()}, run_id=r["run_id"], accepted=int(r["accepted"]),
                           last_seen=now, run_seen={k: now for k in r["next_sequence"]},
                           digests={run: {int(q): bytes.fromhex(d) for q, d in table} for run, table in r.get("digests", {}).items()})
            for a, r in json.loads(state["actors"]).items()
        }
        size = trainer.replay._size
        trainer.max_abs_reward = float(np.max(np.abs(trainer.replay.data["rewards"][:size]))) if size else 0.0
        trainer.queue.clear()
        trainer.queued = 0
        for i in range(len(state["queue"])):
            item = state["queue"][str(i)]
            trainer.queue.append((item["actor_id"], item["run_id"], item["arrays"]))
            n = len(item["arrays"]["rewards"])
            trainer.queued += n
            trainer.actors[item["actor_id"]].pending += n
        trainer._episodes = {(a, r): (list(slots), list(rewards)) for a, r, slots, rewards in json.loads(state["open_episodes"])}
        trainer.durable = {(a, run): seq for a, r in trainer.actors.items() for run, seq in r.next_sequence.items()}
