"""The learner server's knobs (`DistributedSettings`, the CLI flags of `wsrl learner` / `wsrl run`) and their checks."""

from __future__ import annotations

import dataclasses

MODES = ("sync", "async")


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
    """Knobs of the learner server (CLI flags of `wsrl learner` / `wsrl run`)."""

    mode: str = "sync"
    # sync: how many of its transitions an actor may have waiting for the learner (W).
    max_lead: int = 64
    # async: critic updates per post-warmup env step; max 0 means no cap.
    min_utd: float = 0.0
    max_utd: float = 0.0
    # Largest batch one PushTransitions may carry (bigger: RESOURCE_EXHAUSTED).
    max_batch_size: int = 1024
    # Accepted but not yet inserted transitions, all actors together (bounds memory).
    max_pending: int = 65536
    # Publish a new policy version every this many fused updates.
    publish_every: int = 1
    # Save the full learner state (agent, replay, counters, RNG, per-actor sequence numbers)
    # into `state_dir` every this many inserted env steps (0: only at stop); "" disables.
    state_dir: str = ""
    state_every: int = 0
    # ... and every this many seconds when something new was accepted since the last save
    # (0: by env steps only). `wsrl learner` saves every 60 s by default (--save-every).
    state_every_s: float = 0.0
    # Bounds on what the learner remembers of its actors: actor ids, runs per actor id, and the
    # idle time after which an actor's run (or the whole actor, with nothing pending) is forgotten.
    max_actors: int = 1024
    max_runs_per_actor: int = 64
    actor_ttl_s: float = 7 * 24 * 3600.0
    # A run of an actor id is made room for (forgotten for a new run's handshake) only when it
    # has been idle this long with nothing pending: a live run is never evicted, so a burst of
    # handshakes under its id cannot make the learner forget it (and then store its resent
    # batches twice); the handshake is refused instead.
    run_evict_idle_s: float = 300.0
    # Content digests kept per run (the last this many sequence numbers): a resent batch is
    # compared with what was stored; an older one is acknowledged unchecked.
    digest_window: int = 4096
    # PushTransitions calls being handled at once (more: UNAVAILABLE, retried by actors).
    max_inflight_pushes: int = 64

    def __post_init__(self):
        checks = [
            (self.mode in MODES, "mode", self.mode, f"one of {', '.join(MODES)}"),
            (self.max_lead >= 0, "max_lead", self.max_lead, "an integer >= 0"),
            (self.min_utd >= 0, "min_utd", self.min_utd, "a number >= 0"),
            (self.max_utd >= 0, "max_utd", self.max_utd, "a number >= 0 (0: no cap)"),
            (self.max_utd == 0 or self.max_utd >= self.min_utd, "max_utd", self.max_utd, f"0 or >= min_utd={self.min_utd}"),
            (self.max_batch_size >= 1, "max_batch_size", self.max_batch_size, "an integer >= 1"),
            (self.max_pending >= self.max_batch_size, "max_pending", self.max_pending, f">= max_batch_size={self.max_batch_size}"),
            (self.publish_every >= 1, "publish_every", self.publish_every, "an integer >= 1"),
            (self.state_every >= 0, "state_every", self.state_every, "an integer >= 0"),
            (self.state_every_s >= 0, "state_every_s", self.state_every_s, "a number of seconds >= 0"),
            (self.max_actors >= 1, "max_actors", self.max_actors, "an integer >= 1"),
            (self.max_runs_per_actor >= 1, "max_runs_per_actor", self.max_runs_per_actor, "an integer >= 1"),
            (self.actor_ttl_s > 0, "actor_ttl_s", self.actor_ttl_s, "a number of seconds > 0"),
            (self.digest_window >= 1, "digest_window", self.digest_window, "an integer >= 1"),
            (self.max_inflight_pushes >= 1, "max_inflight_pushes", self.max_inflight_pushes, "an integer >= 1"),
        ]
        for ok, name, value, expected in checks:
            if not ok:
                raise ValueError(f"distributed setting '{name}': got {value!r}, expected {expected}")
