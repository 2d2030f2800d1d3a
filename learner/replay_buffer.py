"""Preallocated ring-buffer replay with O(1) inserts and M batches sampled in one draw."""

from __future__ import annotations

from typing import Optional

import numpy as np

from envs.datasets import OfflineDataset

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns")


class ReplayBuffer:
    """Transitions in fixed-size numpy arrays; the oldest are overwritten when full.

    `mc_returns` hold CalQL's Monte-Carlo return-to-go; online transitions get -inf (no
    lower bound) until their episode ends and `set_mc_returns` fills them in.
    """

    def __init__(self, capacity: int, observation_dim: int, action_dim: int):
        if capacity < 1:
            raise ValueError(f"replay capacity: got {capacity}, expected an integer >= 1")
        self.capacity = capacity
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.data = {
            "observations": np.zeros((capacity, observation_dim), np.float32),
            "actions": np.zeros((capacity, action_dim), np.float32),
            "rewards": np.zeros((capacity,), np.float32),
            "next_observations": np.zeros((capacity, observation_dim), np.float32),
            "terminals": np.zeros((capacity,), np.float32),
            "mc_returns": np.full((capacity,), -np.inf, np.float32),
        }
        # Which slots hold a transition whose action a human chose (robot interventions); kept
        # beside `data` (never part of a sampled batch) for `InterventionSampler`.
        self.interventions = np.zeros((capacity,), bool)
        self._next = 0  # slot the next insert writes
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, observation, action, reward: float, next_observation, terminal: bool, intervention: bool = False) -> int:
        """Stores one transition; returns the slot it was written to."""
        i = self._next
        d = self.data
        d["observations"][i] = observation
        d["actions"][i] = action
        d["rewards"][i] = reward
        d["next_observations"][i] = next_observation
        d["terminals"][i] = float(terminal)
        d["mc_returns"][i] = -np.inf
        self.interventions[i] = intervention
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        return i

    def add_from(self, source: "ReplayBuffer", indices: np.ndarray) -> np.ndarray:
        """Stores `source`'s transitions at `indices` (MC returns included), in order; returns
        their slots. Dataset warmup seeds the online buffer this way."""
        indices = np.asarray(indices, np.int64)
        slots = (self._next + np.arange(len(indices))) % self.capacity
        for name, array in self.data.items():
            array[slots] = source.data[name][indices]
        self.interventions[slots] = source.interventions[indices]
        self._next = int((self._next + len(indices)) % self.capacity)
        self._size = min(self._size + len(indices), self.capacity)
        return slots

    def set_mc_returns(self, slots: np.ndarray, values: np.ndarray) -> None:
        self.data["mc_returns"][slots] = values

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        """`num_batches` independent uniform batches, each field shaped (M, B, ...)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self._size, size=(num_batches, batch_size))
        return {name: array[idx] for name, array in self.data.items()}

    @classmethod
    def from_dataset(cls, dataset: OfflineDataset, mc_returns: Optional[np.ndarray] = None) -> "ReplayBuffer":
        """A full buffer holding an offline dataset (its rewards as given)."""
        n = len(dataset)
        buffer = cls(max(n, 1), dataset.observations.shape[1], dataset.actions.shape[1])
        for name in FIELDS[:-1]:
            buffer.data[name][:n] = getattr(dataset, name)
        if mc_returns is not None:
            buffer.data["mc_returns"][:n] = mc_returns
        buffer._size, buffer._next = n, n % buffer.capacity
        return buffer


class MixedSampler:
    """Batches that take a fixed share from an offline buffer (the retention baselines:
    50% on most tasks, 25% on kitchen) and the rest from the online buffer."""

    def __init__(self, online: ReplayBuffer, offline: ReplayBuffer, offline_ratio: float):
        if not 0.0 <= offline_ratio < 1.0:
            raise ValueError(f"offline_mixing_ratio: got {offline_ratio}, expected a number in [0, 1)")
        self.online, self.offline, self.offline_ratio = online, offline, offline_ratio

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        num_offline = int(round(batch_size * self.offline_ratio))
        online = self.online.sample(rng, num_batches, batch_size - num_offline)
        if num_offline == 0:
            return online
        offline = self.offline.sample(rng, num_batches, num_offline)
        return {k: np.concatenate([online[k], offline[k]], axis=1) for k in online}


class InterventionSampler:
    """HIL-SERL's recipe for human interventions: a fixed share of every batch is drawn from the
    transitions whose action a human chose (`ReplayBuffer.interventions`), the rest from `base`
    (the online buffer or a MixedSampler). While there are none, batches are `base`'s alone.
    Off by default (`finetune.intervention_ratio: 0`): WSRL itself treats them as any data."""

    def __init__(self, base, replay: ReplayBuffer, share: float):
        if not 0.0 < share < 1.0:
            raise ValueError(f"intervention_ratio: got {share}, expected a number in (0, 1)")
        self.base, self.replay, self.share = base, replay, share

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict[str, np.ndarray]:
        flagged = np.flatnonzero(self.replay.interventions[: len(self.replay)])
        num_flagged = int(round(batch_size * self.share))
        if num_flagged == 0 or flagged.size == 0:
            return self.base.sample(rng, num_batches, batch_size)
        rest = self.base.sample(rng, num_batches, batch_size - num_flagged)
        idx = flagged[rng.integers(0, flagged.size, size=(num_batches, num_flagged))]
        return {k: np.concatenate([rest[k], self.replay.data[k][idx]], axis=1) for k in rest}
