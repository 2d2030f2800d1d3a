"""Preallocated ring-buffer replay with O(1) inserts and M batches sampled in one draw.

Observations follow envs/observations.py: a flat spec (an int dimension) keeps plain float32
arrays (N, d), exactly as before named parts existed. A spec with camera images stores each
distinct frame once (see `FramePool`): a transition holds, per camera, the index of its
observation's frame and of its next observation's frame in a shared pool, so a transition's
next frame and the following step's observation frame are one stored frame (as SERL's
memory-efficient buffer does), while a sampled batch still gets full uint8 images.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Mapping, Optional, Union

import numpy as np

from envs.datasets import OfflineDataset
from envs.observations import ObservationSpec, batch_size_of, index_observations

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns")
OBSERVATION_FIELDS = ("observations", "next_observations")


class FramePool:
    """The distinct frames of one camera, each stored once, with reference counts.

    A frame is found again by its content (a CRC-32 of its bytes, confirmed by comparing the
    bytes), so sharing never depends on which actor sent a transition or in which order
    transitions arrive: a transition whose observation frame is byte-identical to a frame
    already held (normally the previous step's next frame, from the same actor) refers to it
    instead of storing a copy. A frame is freed when no transition refers to it any more
    (its transitions were overwritten by the ring), never earlier, so after any wrap-around a
    transition only ever refers to the frames it was given.

    Memory: one frame per distinct live frame. A stream of episodes of T steps costs T + 1
    frames per episode (the last next frame is not the next episode's reset frame), i.e.
    1 + 1/T frames per transition, however the actors' transitions interleave; transitions
    whose next frame never comes back as an observation (a codec that changes bytes, a
    dropped batch, one-step episodes) cost 2. The pool starts at `capacity` frames and grows
    (a copy, by a quarter) when needed, up to `max_capacity` (2 per transition).
    """

    def __init__(self, shape: tuple[int, ...], capacity: int, max_capacity: int):
        self.shape = tuple(shape)
        self.max_capacity = max(int(max_capacity), 1)
        self.frames = np.zeros((min(max(int(capacity), 1), self.max_capacity), *self.shape), np.uint8)
        self.refcount = np.zeros(len(self.frames), np.int64)
        self.hashes = np.zeros(len(self.frames), np.int64)
        self.top = 0  # slots [0, top) have been used; the rest never were
        self.free: list[int] = []  # freed slots below top, reused last-freed first
        self.index: dict[int, int] = {}  # content hash -> a live slot holding such a frame

    @property
    def live(self) -> int:
        """Frames referred to by at least one transition."""
        return self.top - len(self.free)

    def put(self, frame: np.ndarray) -> int:
        """The slot of a frame equal to `frame` (stored now if none is held), referenced once more."""
        frame = np.ascontiguousarray(frame)
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"frame: {frame.dtype} of shape {frame.shape}, expected uint8 of shape {self.shape}")
        h = zlib.crc32(frame)
        slot = self.index.get(h)
        if slot is not None and self.frames[slot].tobytes() == frame.tobytes():
            self.refcount[slot] += 1
            return slot
        slot = self._allocate()
        self.frames[slot] = frame
        self.refcount[slot] = 1
        self.hashes[slot] = h
        self.index[h] = slot  # (a hash collision only loses sharing with the older frame)
        return slot

    def release(self, slot: int) -> None:
        """Drops one reference to `slot`; frees it when none are left."""
        self.refcount[slot] -= 1
        if self.refcount[slot] == 0:
            self.free.append(int(slot))
            h = int(self.hashes[slot])
            if self.index.get(h) == slot:
                del self.index[h]

    def _allocate(self) -> int:
        if self.free:
            return self.free.pop()
        if self.top == len(self.frames):
            self._grow()
        self.top += 1
        return self.top - 1

    def _grow(self) -> None:
        size = len(self.frames)
        if size >= self.max_capacity:  # cannot happen: callers hold at most max_capacity refs
            raise RuntimeError(f"frame pool full at {size} frames")
        new = min(self.max_capacity, size + max(size // 4, 64))
        frames = np.zeros((new, *self.shape), np.uint8)
        frames[:size] = self.frames
        self.frames = frames
        self.refcount = np.concatenate([self.refcount, np.zeros(new - size, np.int64)])
        self.hashes = np.concatenate([self.hashes, np.zeros(new - size, np.int64)])

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.refcount.nbytes + self.hashes.nbytes


def take_rows(storage: Mapping, idx) -> dict:
    """The batch dict of transitions `idx` (any int array shape, leading dims of every field)
    from a `ReplayBuffer.storage()` pytree. Plain indexing only, so it works the same on numpy
    arrays on the host and on jax arrays on the device (inside a jitted function)."""
    data = storage["data"]
    batch = {}
    for name in FIELDS:
        if name in OBSERVATION_FIELDS and storage["frames"]:
            parts = {part: array[idx] for part, array in data[name].items()}
            for part, refs in storage["frame_refs"][name].items():
                parts[part] = storage["frames"][part][refs[idx]]
            batch[name] = dict(sorted(parts.items()))
        else:
            batch[name] = data[name][idx]
    return batch


class ReplayBuffer:
    """Transitions in fixed-size numpy arrays; the oldest are overwritten when full.

    `observation_dim` is an int (flat observations of that dimension: `data` holds float32
    arrays (capacity, d) for observations and next observations, as always) or an
    `ObservationSpec`; a spec with images keeps the state part in `data["observations"]` /
    `data["next_observations"]` (dicts {"state": (capacity, d)}, or empty) and the camera
    frames in one `FramePool` per camera (`frames`), referenced by `frame_refs[field][camera]`
    (capacity,) slot indices. Read batches with `sample`, `rows` or `storage` + `take_rows`.

    `mc_returns` hold CalQL's Monte-Carlo return-to-go; online transitions get -inf (no
    lower bound) until their episode ends and `set_mc_returns` fills them in.
    """

    def __init__(self, capacity: int, observation_dim: Union[int, ObservationSpec], action_dim: int):
        """`observation_dim`: an int (flat observations of that length) or an `ObservationSpec`."""
        if capacity < 1:
            raise ValueError(f"replay capacity: got {capacity}, expected an integer >= 1")
        if isinstance(observation_dim, ObservationSpec):
            spec = observation_dim
        elif isinstance(observation_dim, (int, np.integer)) and not isinstance(observation_dim, bool):
            spec = ObservationSpec.flat(int(observation_dim))
        else:
            raise ValueError(f"replay observation_dim: got {observation_dim!r}, expected an int or an ObservationSpec")
        self.capacity = capacity
        self.spec = spec
        self.action_dim = action_dim
        self.observation_dim = spec.parts[0].shape[0] if spec.is_flat else spec.state_dim
        if spec.is_flat:
            observations = lambda: np.zeros((capacity, self.observation_dim), np.float32)  # noqa: E731
        else:
            observations = lambda: {p.name: np.zeros((capacity, *p.shape), np.float32) for p in spec.parts if not p.is_image}  # noqa: E731
        self.data = {
            "observations": observations(),
            "actions": np.zeros((capacity, action_dim), np.float32),
            "rewards": np.zeros((capacity,), np.float32),
            "next_observations": observations(),
            "terminals": np.zeros((capacity,), np.float32),
            "mc_returns": np.full((capacity,), -np.inf, np.float32),
        }
        # Each slot refers to two frames at most, so 2 x capacity (+2 while a slot is being
        # rewritten) bounds a pool; it starts at one frame per slot plus a sixteenth (episodes of
        # 16+ steps from a few actors never make it grow).
        self.frames = {
            p.name: FramePool(p.shape, capacity + capacity // 16 + 2, 2 * capacity + 2) for p in spec.images
        }
        ref_dtype = np.int32 if 2 * capacity + 2 < 2**31 else np.int64
        self.frame_refs = {
            field: {name: np.full((capacity,), -1, ref_dtype) for name in self.frames} for field in OBSERVATION_FIELDS
        }
        # Which slots hold a transition whose action a human chose (robot interventions); kept
        # beside `data` (never part of a sampled batch) for `InterventionSampler`.
        self.interventions = np.zeros((capacity,), bool)
        self._next = 0  # slot the next insert writes
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Host bytes held by the buffer's arrays (frame pools at their current size)."""
        arrays = [self.interventions]
        for value in self.data.values():
            arrays.extend(value.values() if isinstance(value, dict) else [value])
        for refs in self.frame_refs.values():
            arrays.extend(refs.values())
        return sum(a.nbytes for a in arrays) + sum(pool.nbytes for pool in self.frames.values())

    def _write_observation(self, field: str, i: int, observation) -> None:
        if self.spec.is_flat:
            self.data[field][i] = observation
            return
        for name, array in self.data[field].items():
            array[i] = observation[name]
        refs = self.frame_refs[field]
        for name, pool in self.frames.items():
            new = pool.put(observation[name])  # before releasing the old: an equal frame is kept, not rewritten
            old = refs[name][i]
            refs[name][i] = new
            if old >= 0:
                pool.release(old)

    def add(self, observation, action, reward: float, next_observation, terminal: bool, intervention: bool = False) -> int:
        """Stores one transition; returns the slot it was written to. With images, the
        observations are dicts {part: array (shape)} (uint8 frames, stored once)."""
        i = self._next
        d = self.data
        if not self.spec.is_flat:  # refuse a bad transition before any part of it is written
            self.spec.check(observation, batch_ndim=0, where="replay observation")
            self.spec.check(next_observation, batch_ndim=0, where="replay next_observation")
        self._write_observation("observations", i, observation)
        d["actions"][i] = action
        d["rewards"][i] = reward
        self._write_observation("next_observations", i, next_observation)
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
        if self.spec.is_flat:
            for name, array in self.data.items():
                array[slots] = source.data[name][indices]
        else:
            if source.spec != self.spec:
                raise ValueError(f"replay add_from: source spec {source.spec.to_json()}, expected {self.spec.to_json()}")
            for start in range(0, len(indices), 1024):  # a bounded number of frames gathered at a time
                part = slice(start, start + 1024)
                rows = source.rows(indices[part])
                for k, slot in enumerate(slots[part]):
                    for field in OBSERVATION_FIELDS:
                        self._write_observation(field, slot, index_observations(rows[field], k))
                for name in ("actions", "rewards", "terminals", "mc_returns"):
                    self.data[name][slots[part]] = rows[name]
        self.interventions[slots] = source.interventions[indices]
        self._next = int((self._next + len(indices)) % self.capacity)
        self._size = min(self._size + len(indices), self.capacity)
        return slots

    def set_mc_returns(self, slots: np.ndarray, values: np.ndarray) -> None:
        self.data["mc_returns"][slots] = values

    def storage(self, size: Optional[int] = None) -> dict:
        """The buffer's arrays as one pytree {"data", "frames", "frame_refs"} (the first `size`
        slots, default all), views not copies: `take_rows(storage, idx)` gathers batches from it,
        on the host or, after `jax.device_put`, on the device (each frame travels once)."""
        n = self.capacity if size is None else size
        cut = lambda v: {k: a[:n] for k, a in v.items()} if isinstance(v, dict) else v[:n]  # noqa: E731
        return {
            "data": {name: cut(value) for name, value in self.data.items()},
            "frames": {name: pool.frames[: pool.top] for name, pool in self.frames.items()},
            "frame_refs": {field: cut(refs) for field, refs in self.frame_refs.items()} if self.frames else {},
        }

    def rows(self, idx) -> dict:
        """The batch dict of the transitions in slots `idx` (an int array of any shape)."""
        if self.spec.is_flat:
            return {name: array[idx] for name, array in self.data.items()}
        return take_rows(self.storage(), idx)

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict[str, Any]:
        """`num_batches` independent uniform batches, each field shaped (M, B, ...) (for
        images, observations are dicts of such arrays)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self._size, size=(num_batches, batch_size))
        return self.rows(idx)

    # ---- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The filled part for a learner checkpoint: {"data", "interventions", "next", "size",
        "capacity"} (what the learner state has always held for flat observations), plus for
        images "observation_spec", "frames" (the live frames only, renumbered) and "frame_refs"."""
        n = self._size
        state = {
            "data": {k: ({p: a[:n] for p, a in v.items()} if isinstance(v, dict) else v[:n]) for k, v in self.data.items()},
            "interventions": self.interventions[:n],
            "next": self._next,
            "size": n,
            "capacity": self.capacity,
        }
        if self.frames:
            state["observation_spec"] = json.dumps(self.spec.to_json())  # (a string: msgpack-safe)
            state["frames"], state["frame_refs"] = {}, {field: {} for field in OBSERVATION_FIELDS}
            for name, pool in self.frames.items():
                refs = np.concatenate([self.frame_refs[field][name][:n] for field in OBSERVATION_FIELDS])
                live, renumbered = np.unique(refs, return_inverse=True)
                state["frames"][name] = pool.frames[live]
                for k, field in enumerate(OBSERVATION_FIELDS):
                    state["frame_refs"][field][name] = renumbered[k * n : (k + 1) * n].astype(np.int32)
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restores `state_dict()` output into this (empty, same capacity and spec) buffer;
        raises ValueError naming both when they differ."""
        capacity = int(state.get("capacity", batch_size_of(state["data"]["observations"])))
        saved = state["data"]["observations"]
        if self.spec.is_flat:
            shape_ok = not isinstance(saved, Mapping) and np.shape(saved)[1:] == self.data["observations"].shape[1:]
        else:
            saved_spec = state.get("observation_spec")
            if isinstance(saved_spec, str):
                saved_spec = json.loads(saved_spec)
            shape_ok = saved_spec is not None and ObservationSpec.from_json(saved_spec) == self.spec
        if capacity != self.capacity or not shape_ok:
            raise ValueError(
                f"replay state: capacity {capacity} with observations {_describe(state)}, this buffer has capacity "
                f"{self.capacity} with {self.spec.to_json()}"
            )
        n = int(state["size"])
        for name, value in state["data"].items():
            if isinstance(value, Mapping):
                for part, array in value.items():
                    self.data[name][part][:n] = array
            else:
                self.data[name][: len(value)] = value
        if "interventions" in state:  # (states saved before interventions travelled have none)
            self.interventions[: len(state["interventions"])] = state["interventions"]
        for name, pool in self.frames.items():
            frames = np.asarray(state["frames"][name])
            fresh = FramePool(pool.shape, max(len(frames), len(pool.frames)), pool.max_capacity)
            fresh.frames[: len(frames)] = frames
            fresh.top = len(frames)
            fresh.hashes[: len(frames)] = [zlib.crc32(np.ascontiguousarray(f)) for f in frames]
            for k in range(len(frames)):
                fresh.index[int(fresh.hashes[k])] = k
            for field in OBSERVATION_FIELDS:
                refs = np.asarray(state["frame_refs"][field][name])
                self.frame_refs[field][name][:] = -1
                self.frame_refs[field][name][:n] = refs
                fresh.refcount[: len(frames)] += np.bincount(refs, minlength=len(frames))[: len(frames)]
            fresh.free = [int(k) for k in np.flatnonzero(fresh.refcount[: len(frames)] == 0)]
            self.frames[name] = fresh
        self._next, self._size = int(state["next"]), n

    @classmethod
    def from_dataset(cls, dataset: OfflineDataset, mc_returns: Optional[np.ndarray] = None) -> "ReplayBuffer":
        """A full buffer holding an offline dataset (its rewards as given); with images, each
        distinct frame once (next_observations[i] == observations[i + 1] share theirs)."""
        n = len(dataset)
        spec = dataset.observation_spec
        buffer = cls(max(n, 1), spec.parts[0].shape[0] if spec.is_flat else spec, dataset.actions.shape[1])
        if spec.is_flat:
            for name in FIELDS[:-1]:
                buffer.data[name][:n] = getattr(dataset, name)
        else:
            for name in ("actions", "rewards", "terminals"):
                buffer.data[name][:n] = getattr(dataset, name)
            for field in OBSERVATION_FIELDS:
                for part, array in buffer.data[field].items():
                    array[:n] = getattr(dataset, field)[part]
            for name in list(buffer.frames):
                buffer.frames[name] = _dataset_pool(buffer, name, dataset.observations[name], dataset.next_observations[name])
        if mc_returns is not None:
            buffer.data["mc_returns"][:n] = mc_returns
        buffer._size, buffer._next = n, n % buffer.capacity
        return buffer


def _dataset_pool(buffer: ReplayBuffer, name: str, frames: np.ndarray, next_frames: np.ndarray) -> FramePool:
    """The pool of one camera of a dataset, built in bulk: every observation frame, plus the
    next frames that are not the following row's observation frame (episode ends), so a
    dataset costs 1 + 1/T frames per transition as inserting it would. These frames are not
    indexed by content: later inserts store their own copies (correct, just not shared)."""
    n = len(frames)
    same = np.zeros(n, bool)
    for start in range(0, n - 1, 4096):  # in blocks: no (N, H, W, C) boolean temporary
        stop = min(start + 4096, n - 1)
        a, b = next_frames[start:stop], frames[start + 1 : stop + 1]
        same[start:stop] = np.all((a == b).reshape(len(a), -1), axis=1)
    extra = np.flatnonzero(~same)
    old = buffer.frames[name]
    pool = FramePool(old.shape, max(len(old.frames), n + len(extra)), old.max_capacity)
    pool.frames[:n] = frames
    pool.frames[n : n + len(extra)] = next_frames[extra]
    pool.top = n + len(extra)
    refs_next = np.arange(1, n + 1)
    refs_next[extra] = n + np.arange(len(extra))
    buffer.frame_refs["observations"][name][:n] = np.arange(n)
    buffer.frame_refs["next_observations"][name][:n] = refs_next
    pool.refcount[: pool.top] = np.bincount(np.concatenate([np.arange(n), refs_next]), minlength=pool.top)
    return pool


def _describe(state: Mapping) -> str:
    saved = state["data"]["observations"]
    if isinstance(saved, Mapping):
        return str(state.get("observation_spec", sorted(saved)))
    return f"of dim {np.shape(saved)[1:]}"


def _concat(a, b):
    """Joins two batches' fields along the batch axis (axis 1), observation dicts part by part."""
    if isinstance(a, Mapping):
        return {k: np.concatenate([a[k], b[k]], axis=1) for k in a}
    return np.concatenate([a, b], axis=1)


class MixedSampler:
    """Batches that take a fixed share from an offline buffer (the retention baselines:
    50% on most tasks, 25% on kitchen) and the rest from the online buffer."""

    def __init__(self, online: ReplayBuffer, offline: ReplayBuffer, offline_ratio: float):
        if not 0.0 <= offline_ratio < 1.0:
            raise ValueError(f"offline_mixing_ratio: got {offline_ratio}, expected a number in [0, 1)")
        self.online, self.offline, self.offline_ratio = online, offline, offline_ratio

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict[str, Any]:
        num_offline = int(round(batch_size * self.offline_ratio))
        online = self.online.sample(rng, num_batches, batch_size - num_offline)
        if num_offline == 0:
            return online
        offline = self.offline.sample(rng, num_batches, num_offline)
        return {k: _concat(online[k], offline[k]) for k in online}


class InterventionSampler:
    """HIL-SERL's recipe for human interventions: a fixed share of every batch is drawn from the
    transitions whose action a human chose (`ReplayBuffer.interventions`), the rest from `base`
    (the online buffer or a MixedSampler). While there are none, batches are `base`'s alone.
    Off by default (`finetune.intervention_ratio: 0`): WSRL itself treats them as any data."""

    def __init__(self, base, replay: ReplayBuffer, share: float):
        if not 0.0 < share < 1.0:
            raise ValueError(f"intervention_ratio: got {share}, expected a number in (0, 1)")
        self.base, self.replay, self.share = base, replay, share

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int) -> dict[str, Any]:
        flagged = np.flatnonzero(self.replay.interventions[: len(self.replay)])
        num_flagged = int(round(batch_size * self.share))
        if num_flagged == 0 or flagged.size == 0:
            return self.base.sample(rng, num_batches, batch_size)
        rest = self.base.sample(rng, num_batches, batch_size - num_flagged)
        idx = flagged[rng.integers(0, flagged.size, size=(num_batches, num_flagged))]
        picked = self.replay.rows(idx)
        return {k: _concat(rest[k], picked[k]) for k in rest}
