"""Datasets out: `write_d4rl_hdf5` (and its card) and `write_minari` write an `OfflineDataset`.

Both layouts read back to the same arrays (envs/d4rl_reader.py, envs/minari_reader.py).
Observations with camera images are written as named parts: a group `observations/<part>`
(D4RL: also `next_observations/<part>`; Minari: per episode, T + 1 rows) holding a float32
"state" (steps, d) and uint8 frames (steps, H, W, C), the frames chunked (whole frames,
~256 KiB a chunk) and gzip-compressed, so they read back bit for bit.

Writers go through a temp file in the target directory, fsync and `os.replace`, so a crash
never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import h5py
import numpy as np

from envs.atomic_files import atomic_path, atomic_write_bytes
from envs.dataset_card import CARD_STATS, card_path, dataset_stats
from envs.dataset_checks import PathLike, _rows_differ
from envs.datasets import OfflineDataset
from envs.minari_files import MINARI_MAIN_FILE, MINARI_METADATA_FILE
from envs.observations import ObservationSpec

# Camera frames are written gzip-compressed (HDF5's built-in filter: every HDF5 reader has it)
# in chunks of about this many bytes (whole frames), so reading a few frames decompresses little.
IMAGE_COMPRESSION = "gzip"
IMAGE_COMPRESSION_LEVEL = 4
IMAGE_CHUNK_BYTES = 256 << 10


def _write_observations(group: h5py.Group, key: str, observations) -> None:
    """`observations` under `key`: a float32 array, or a group with one array per part, camera
    frames uint8 in chunks of whole frames, gzip-compressed (lossless: read back bit for bit)."""
    if not isinstance(observations, Mapping):
        group.create_dataset(key, data=np.asarray(observations, np.float32))
        return
    parts = group.create_group(key)
    for name, array in observations.items():
        array = np.asarray(array)
        if array.ndim == 4:
            rows = max(1, min(len(array), IMAGE_CHUNK_BYTES // max(1, array[0].nbytes)))
            parts.create_dataset(
                name, data=array, chunks=(rows, *array.shape[1:]),
                compression=IMAGE_COMPRESSION, compression_opts=IMAGE_COMPRESSION_LEVEL,
            )
        else:
            parts.create_dataset(name, data=array.astype(np.float32, copy=False))


def write_d4rl_hdf5(
    dataset: OfflineDataset, path: PathLike, card: Optional[Mapping] = None, overwrite: bool = False
) -> Path:
    """Writes `dataset` in D4RL's HDF5 layout and a JSON card beside it; returns `path`.

    Keys: observations, actions, rewards, next_observations (float32), terminals and
    timeouts = episode_ends & ~terminals (bool), so `read_d4rl_hdf5` gives back the same
    arrays. Dict observations (camera images) go to groups `observations/<part>` and
    `next_observations/<part>`: images uint8 (N, H, W, C), chunked and gzip-compressed (each
    frame is in the file twice, as an observation and as the previous step's next
    observation; the Minari layout holds it once). The card (`card_path(path)`) holds `card`'s entries plus `dataset_stats` (with
    `card["success_threshold"]`, if set) and the file's name and size. Both files are written
    atomically; existing ones are refused unless `overwrite`.
    """
    path = Path(path)
    card = dict(card or {})
    clash = sorted(set(card) & set(CARD_STATS))
    if clash:
        raise ValueError(f"card key(s) {clash} are computed by the writer; remove them from the card")
    json.dumps(card, default=_json_default)  # an unserializable card fails before any file is written
    _check_writable(dataset)
    json_card = card_path(path)
    _refuse_existing([path, json_card], overwrite)
    stats = dataset_stats(dataset, card.get("success_threshold"))
    ends = dataset.episode_ends.astype(bool)
    terminals = dataset.terminals != 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as file:
        _write_observations(file, "observations", dataset.observations)
        file.create_dataset("actions", data=np.asarray(dataset.actions, np.float32))
        file.create_dataset("rewards", data=np.asarray(dataset.rewards, np.float32))
        _write_observations(file, "next_observations", dataset.next_observations)
        file.create_dataset("terminals", data=terminals)
        file.create_dataset("timeouts", data=ends & ~terminals)
    full_card = {**card, "format": "d4rl-hdf5", "file": path.name, "file_bytes": path.stat().st_size, **stats}
    atomic_write_bytes(json_card, (json.dumps(full_card, indent=2, default=_json_default) + "\n").encode())
    return path


def write_minari(
    dataset: OfflineDataset,
    directory: PathLike,
    dataset_id: Optional[str] = None,
    metadata: Optional[Mapping] = None,
    overwrite: bool = False,
) -> Path:
    """Writes `dataset` as a Minari HDF5 dataset: `<directory>/data/main_data.hdf5` (one
    `episode_{i}` group per trajectory, observations with the final next observation
    appended) and `<directory>/data/metadata.json`; returns `directory`.

    Box spaces are recorded as unbounded observations and actions in [-1, 1] (dict
    observations: a Dict space, camera frames uint8 per part, chunked and gzip-compressed,
    each frame once) unless `metadata` gives `observation_space` / `action_space` (Minari's JSON form); `metadata`
    may add e.g. `ref_min_score`, `ref_max_score`, `author`. `dataset_id` defaults to the
    directory's name. Needs next_obs[i] == obs[i + 1] within each trajectory (that is how
    Minari stores them). metadata.json is written last, so it marks a complete dataset.
    """
    directory = Path(directory)
    data_dir = directory / "data"
    metadata = dict(metadata or {})
    reserved = sorted(set(metadata) & {"total_episodes", "total_steps", "data_format"})
    if reserved:
        raise ValueError(f"metadata key(s) {reserved} are computed by the writer; remove them")
    _check_writable(dataset)
    ends = dataset.episode_ends.astype(bool)
    spec = dataset.observation_spec
    if spec.is_flat:
        differ = _rows_differ(dataset.next_observations[:-1], dataset.observations[1:])
    else:
        differ = np.zeros(max(len(dataset) - 1, 0), bool)
        for name in spec.names:
            a, b = dataset.next_observations[name][:-1], dataset.observations[name][1:]
            differ |= np.any((a != b).reshape(len(a), -1), axis=1)
    broken = np.flatnonzero(differ & ~ends[:-1])
    if len(broken):
        raise ValueError(
            f"dataset: next_observations[{broken[0]}] differs from observations[{broken[0] + 1}] inside a "
            "trajectory; Minari stores one observation sequence per episode, so it cannot hold this dataset"
        )
    _refuse_existing([data_dir / MINARI_MAIN_FILE, data_dir / MINARI_METADATA_FILE], overwrite)
    data_dir.mkdir(parents=True, exist_ok=True)
    terminals = dataset.terminals != 0
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    stops = np.flatnonzero(ends) + 1
    with atomic_path(data_dir / MINARI_MAIN_FILE) as tmp, h5py.File(tmp, "w", track_order=True) as file:
        for i, (start, stop) in enumerate(zip(starts, stops)):
            group = file.create_group(f"episode_{i}")
            group.attrs["id"] = i
            group.attrs["total_steps"] = stop - start
            # Minari keeps T + 1 observations: the trajectory's, then its final next observation
            if spec.is_flat:
                observations = np.concatenate([dataset.observations[start:stop], dataset.next_observations[stop - 1 : stop]])
            else:
                observations = {
                    name: np.concatenate([dataset.observations[name][start:stop], dataset.next_observations[name][stop - 1 : stop]])
                    for name in spec.names
                }
            _write_observations(group, "observations", observations)
            group.create_dataset("actions", data=np.asarray(dataset.actions[start:stop], np.float32))
            group.create_dataset("rewards", data=np.asarray(dataset.rewards[start:stop], np.float64))
            group.create_dataset("terminations", data=terminals[start:stop])
            group.create_dataset("truncations", data=ends[start:stop] & ~terminals[start:stop])
            group.create_group("infos")
    act_dim = dataset.actions.shape[1]
    full = {
        "dataset_id": dataset_id or directory.name,
        "minari_version": ">=0.5.0",
        "observation_space": _space_json(spec),
        "action_space": _box_json(act_dim, -1.0, 1.0),
        **metadata,
        "total_episodes": len(starts),
        "total_steps": len(dataset),
        "data_format": "hdf5",
    }
    atomic_write_bytes(data_dir / MINARI_METADATA_FILE, json.dumps(full, default=_json_default).encode())
    return directory


def _box_json(dim: int, low: float, high: float) -> str:
    """Minari's serialization of a float32 Box((dim,), low, high)."""
    return json.dumps(_box(dim, low, high))


def _box(dim: int, low: float, high: float) -> dict:
    return {"type": "Box", "dtype": "float32", "shape": [dim], "low": [low] * dim, "high": [high] * dim}


def _space_json(spec: ObservationSpec) -> str:
    """Minari's serialization of the observation space: a Box when flat, else a Dict of an
    unbounded float32 "state" Box and uint8 Boxes in [0, 255] for the cameras."""
    if spec.is_flat:
        return _box_json(spec.state_dim, -math.inf, math.inf)
    subspaces = {}
    for p in spec.parts:
        if p.is_image:
            low, high = np.zeros(p.shape, int).tolist(), np.full(p.shape, 255).tolist()  # nested, as Minari's tolist()
            subspaces[p.name] = {"type": "Box", "dtype": "uint8", "shape": list(p.shape), "low": low, "high": high}
        else:
            subspaces[p.name] = _box(p.shape[0], -math.inf, math.inf)
    return json.dumps({"type": "Dict", "subspaces": subspaces})


def _check_writable(dataset: OfflineDataset) -> None:
    """What the file layouts cannot represent: no data, or a terminal inside a trajectory."""
    if len(dataset) == 0:
        raise ValueError("dataset: no transitions to write")
    inner_terminals = np.flatnonzero((dataset.terminals != 0) & ~dataset.episode_ends.astype(bool))
    if len(inner_terminals):
        raise ValueError(
            f"dataset: terminals[{inner_terminals[0]}] is set but episode_ends[{inner_terminals[0]}] is not; "
            "a terminal must end its trajectory"
        )


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); pass overwrite=True to replace")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"card value {value!r} of type {type(value).__name__} is not JSON serializable")
