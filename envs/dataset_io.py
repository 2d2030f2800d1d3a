"""Offline datasets on disk: D4RL HDF5 files and Minari datasets in, D4RL HDF5 (and Minari) out.

Everything returns the in-memory `OfflineDataset` (envs/datasets.py): flat float32 arrays of
transitions with `terminals` (true terminals only) and `episode_ends` (terminal or time limit).
No transition ever crosses from one episode into the next.

Observations with camera images (envs/observations.py) are named parts in both layouts: a
group `observations/<part>` (D4RL: also `next_observations/<part>`; Minari: per episode, T + 1
rows) holding a float32 "state" (steps, d) and uint8 frames (steps, H, W, C), the frames
chunked (whole frames, ~256 KiB a chunk) and gzip-compressed, so they read back bit for bit
as dict observations. Flat files are read and written exactly as before.

D4RL HDF5 (`read_d4rl_hdf5`): keys `observations`, `actions`, `rewards`, `terminals`,
optionally `timeouts` and `next_observations`; `infos/*` and other keys are ignored.

- Without `next_observations` (most D4RL files, e.g. antmaze): next_obs[i] = obs[i + 1]. A step
  flagged `timeouts` is dropped, because obs[i + 1] already belongs to the next episode; the
  step before it becomes an episode end (a time limit, not a terminal). The file's last step
  has no successor either: it is dropped unless it is a terminal. A terminal's successor is
  never bootstrapped from, so terminals are kept and get next_obs = their own observation
  (rather than the first observation of the next episode, which obs[i + 1] is in D4RL files).
- With `next_observations`: every step is kept; episode ends = terminals | timeouts.
- Old files without `timeouts`: only terminals split episodes. With `next_observations`, a
  step whose next_obs differs from the following step's obs also ends an episode (a time
  limit the file did not flag). Without either, an unflagged time limit cannot be detected.

Minari (`read_minari`): a dataset directory `<dir>/data/metadata.json` + `main_data.hdf5`
(one group `episode_{i}` per episode: `observations` with T + 1 rows, `actions`, `rewards`,
`terminations`, `truncations` with T rows) or, with `data_format: arrow`, one folder of Arrow
files per episode (needs pyarrow). Transitions: obs = observations[:-1], next_obs =
observations[1:], terminals = terminations; an episode ends at its last step (and at any
step flagged terminated or truncated, so nothing crosses a flag). Dict observations are
flattened as envs/spaces.py does for the live envs: the `observation_keys` in order, a nested
group's sub-keys sorted, each leaf raveled per step. Box (already flat) observations are taken
as they are, with or without `observation_keys`.

Errors are `DatasetError` (a ValueError) naming the file, the episode where there is one,
and the key. Writers go through a temp file in the target directory, fsync and `os.replace`,
so a crash never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import h5py
import numpy as np

from envs.atomic_files import atomic_path, atomic_write_bytes
from envs.datasets import OfflineDataset, all_finite
from envs.observations import IMAGE_DTYPE, STATE_DTYPE, ObservationPart, ObservationSpec

PathLike = Union[str, os.PathLike]

D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
MINARI_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")
MINARI_MAIN_FILE = "main_data.hdf5"
MINARI_METADATA_FILE = "metadata.json"
# Rows per block when copying a large array out of an HDF5 file: the copy never holds more
# than the outputs plus one block of about this many bytes.
BLOCK_BYTES = 2 << 20
# Camera frames are written gzip-compressed (HDF5's built-in filter: every HDF5 reader has it)
# in chunks of about this many bytes (whole frames), so reading a few frames decompresses little.
IMAGE_COMPRESSION = "gzip"
IMAGE_COMPRESSION_LEVEL = 4
IMAGE_CHUNK_BYTES = 256 << 10


class DatasetError(ValueError):
    """A dataset file is missing keys, malformed or does not fit the task."""


# --------------------------------------------------------------------------------------------
# D4RL HDF5
# --------------------------------------------------------------------------------------------


def read_d4rl_hdf5(
    path: PathLike,
    observation_dim: Optional[int] = None,
    action_dim: Optional[int] = None,
    observation_spec: Optional[ObservationSpec] = None,
) -> OfflineDataset:
    """Reads a D4RL-layout HDF5 file into an `OfflineDataset` (see the module docstring for
    how episodes are split). `observation_dim` / `action_dim` / `observation_spec`, when
    given, must match. A file whose `observations` is a group of named parts (camera images)
    gives dict observations; `observation_dim` does not describe those (pass the spec)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"D4RL dataset file {str(path)!r} does not exist")
    where = f"file {path}"
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{where}: not a readable HDF5 file ({error})") from None
    with file:
        _check_d4rl_keys(file, where)
        if isinstance(file["observations"], h5py.Group):
            return _read_d4rl_parts(file, where, observation_dim, action_dim, observation_spec)
        if observation_spec is not None and not observation_spec.is_flat:
            raise DatasetError(
                f"{where}: key 'observations' is a flat array, the task expects named parts {observation_spec.to_json()}"
            )
        if observation_spec is not None:
            observation_dim = observation_spec.parts[0].shape[0]
        obs_ds = _array(file["observations"], "observations", where, rank=2)
        num_steps = obs_ds.shape[0]
        if num_steps == 0:
            raise DatasetError(f"{where}: key 'observations' has no rows")
        obs_dim = obs_ds.shape[1]
        _check_dim(where, "observations", obs_dim, observation_dim)
        act_ds = _array(file["actions"], "actions", where, rank=2, rows=num_steps)
        _check_dim(where, "actions", act_ds.shape[1], action_dim)
        rewards = _read_vector(file, "rewards", where, num_steps).astype(np.float32)
        terminals = _read_flags(file, "terminals", where, num_steps)
        timeouts = _read_flags(file, "timeouts", where, num_steps) if "timeouts" in file else None
        if "next_observations" in file:
            next_ds = _array(file["next_observations"], "next_observations", where, rank=2, rows=num_steps)
            if next_ds.shape[1] != obs_dim:
                raise DatasetError(
                    f"{where}: key 'next_observations' has dim {next_ds.shape[1]}, 'observations' has {obs_dim}"
                )
            return _d4rl_with_next(where, obs_ds, next_ds, act_ds, rewards, terminals, timeouts)
        return _d4rl_without_next(where, obs_ds, act_ds, rewards, terminals, timeouts)


def _d4rl_with_next(where, obs_ds, next_ds, act_ds, rewards, terminals, timeouts) -> OfflineDataset:
    """Every step kept; episode ends = terminals | timeouts (or discontinuities, see module doc)."""
    (observations,) = _read_rows(obs_ds, where, "observations", [None])
    (next_observations,) = _read_rows(next_ds, where, "next_observations", [None])
    (actions,) = _read_rows(act_ds, where, "actions", [None])
    if timeouts is not None:
        ends = terminals | timeouts
    else:
        ends = terminals.copy()
        ends[:-1] |= _rows_differ(next_observations[:-1], observations[1:])
    return OfflineDataset(
        observations=observations,
        actions=actions,
        rewards=rewards,
        next_observations=next_observations,
        terminals=terminals.astype(np.float32),
        episode_ends=ends,
    )


def _d4rl_without_next(where, obs_ds, act_ds, rewards, terminals, timeouts) -> OfflineDataset:
    """next_obs[i] = obs[i + 1]; steps without a successor in their own episode are dropped."""
    num_steps = len(rewards)
    no_successor = timeouts.copy() if timeouts is not None else np.zeros(num_steps, bool)
    no_successor[-1] = True
    keep = ~no_successor | terminals
    if not keep.any():
        raise DatasetError(f"{where}: no step has a next observation (every step is a timeout)")
    # A terminal's successor is never bootstrapped from: it points at its own row (step 0).
    observations, next_observations = _read_rows(
        obs_ds, where, "observations", [(keep, None), (keep, ~terminals)]
    )
    (actions,) = _read_rows(act_ds, where, "actions", [(keep, None)])
    # A kept step ends its episode if it is terminal or the next file step was dropped.
    ends = terminals | ~np.append(keep[1:], False)
    return OfflineDataset(
        observations=observations,
        actions=actions,
        rewards=rewards[keep],
        next_observations=next_observations,
        terminals=terminals[keep].astype(np.float32),
        episode_ends=ends[keep],
    )


def _read_d4rl_parts(file, where, observation_dim, action_dim, observation_spec) -> OfflineDataset:
    """A D4RL file with `observations/<part>` (and `next_observations/<part>`): the same episode
    rules as the flat layout, part by part; images come back uint8, bit for bit."""
    spec, num_steps = _group_spec(file["observations"], where, "observations")
    if observation_spec is not None and spec != observation_spec:
        raise DatasetError(f"{where}: key 'observations' has parts {spec.to_json()}, the task expects {observation_spec.to_json()}")
    if observation_dim is not None and observation_spec is None:
        raise DatasetError(
            f"{where}: key 'observations' holds named parts {spec.to_json()}, the task expects flat observations of dim "
            f"{observation_dim}"
        )
    act_ds = _array(file["actions"], "actions", where, rank=2, rows=num_steps)
    _check_dim(where, "actions", act_ds.shape[1], action_dim)
    rewards = _read_vector(file, "rewards", where, num_steps).astype(np.float32)
    terminals = _read_flags(file, "terminals", where, num_steps)
    timeouts = _read_flags(file, "timeouts", where, num_steps) if "timeouts" in file else None
    observations = _read_parts(file["observations"], spec, where, "observations")
    (actions,) = _read_rows(act_ds, where, "actions", [None])
    if "next_observations" in file:
        next_spec, next_steps = _group_spec(file["next_observations"], where, "next_observations")
        if next_spec != spec or next_steps != num_steps:
            raise DatasetError(
                f"{where}: key 'next_observations' has parts {next_spec.to_json()} x {next_steps} rows, "
                f"'observations' {spec.to_json()} x {num_steps}"
            )
        next_observations = _read_parts(file["next_observations"], spec, where, "next_observations")
        if timeouts is not None:
            ends = terminals | timeouts
        else:
            ends = terminals.copy()
            for name in spec.names:
                a, b = next_observations[name][:-1], observations[name][1:]
                ends[:-1] |= np.any((a != b).reshape(len(a), -1), axis=1)
        return OfflineDataset(observations, actions, rewards, next_observations, terminals.astype(np.float32), ends)
    no_successor = timeouts.copy() if timeouts is not None else np.zeros(num_steps, bool)
    no_successor[-1] = True
    keep = ~no_successor | terminals
    if not keep.any():
        raise DatasetError(f"{where}: no step has a next observation (every step is a timeout)")
    rows = np.flatnonzero(keep)
    successors = rows + ~terminals[rows]  # a terminal's successor is its own row (never used)
    ends = terminals | ~np.append(keep[1:], False)
    return OfflineDataset(
        observations={k: v[rows] for k, v in observations.items()},
        actions=actions[rows],
        rewards=rewards[rows],
        next_observations={k: v[successors] for k, v in observations.items()},
        terminals=terminals[rows].astype(np.float32),
        episode_ends=ends[rows],
    )


def _group_spec(group, where: str, key: str) -> tuple[ObservationSpec, int]:
    """The spec of a group of per-step part arrays (2-D float "state", 4-D uint8 images) and
    its row count, every part checked (nothing read)."""
    parts, num_rows = [], None
    for name in sorted(group.keys()):
        node = group[name]
        if not isinstance(node, h5py.Dataset):
            raise DatasetError(f"{where}: key '{key}/{name}' is a group, expected an array")
        if node.ndim == 4:
            if node.dtype != np.uint8:
                raise DatasetError(f"{where}: key '{key}/{name}' has dtype {node.dtype}, expected uint8 (a camera image)")
            dtype = IMAGE_DTYPE
        elif node.ndim == 2:
            if node.dtype.kind not in "biuf":
                raise DatasetError(f"{where}: key '{key}/{name}' has dtype {node.dtype}, expected numbers")
            dtype = STATE_DTYPE
        else:
            raise DatasetError(
                f"{where}: key '{key}/{name}' has shape {node.shape}, expected (steps, dim) for the state or "
                "(steps, H, W, C) for an image"
            )
        if num_rows is None:
            num_rows = node.shape[0]
        elif node.shape[0] != num_rows:
            raise DatasetError(f"{where}: key '{key}/{name}' has {node.shape[0]} rows, expected {num_rows} like the other parts")
        parts.append(ObservationPart(name, tuple(int(n) for n in node.shape[1:]), dtype))
    if not parts:
        raise DatasetError(f"{where}: key '{key}' is an empty group, expected one array per observation part")
    try:
        spec = ObservationSpec(tuple(parts))
    except ValueError as error:
        raise DatasetError(f"{where}: key '{key}': {error}") from None
    if num_rows == 0:
        raise DatasetError(f"{where}: key '{key}' has no rows")
    return spec, num_rows


def _read_parts(group, spec: ObservationSpec, where: str, key: str) -> dict:
    """Each part of `group` in full: images as stored (uint8), the state as finite float32."""
    out = {}
    for part in spec.parts:
        array = group[part.name][()]
        if not part.is_image:
            array = array.astype(np.float32, copy=False)
            if not all_finite(array):
                row = int(np.argmax(~np.isfinite(array).all(axis=1)))
                raise DatasetError(f"{where}: key '{key}/{part.name}' contains NaN or inf (first at row {row})")
        out[part.name] = array
    return out


def _check_d4rl_keys(file: h5py.File, where: str) -> None:
    missing = [key for key in D4RL_REQUIRED_KEYS if key not in file]
    if not missing:
        return
    hint = ""
    if any(key.startswith("episode_") for key in file):
        hint = "; it looks like a Minari main_data.hdf5: pass its dataset directory to read_minari"
    raise DatasetError(
        f"{where}: missing required key(s) {', '.join(repr(k) for k in missing)} "
        f"(it has {sorted(file.keys())}){hint}"
    )


def _array(
    value, key: str, where: str, rank: int, rows: Optional[int] = None, like: str = "observations"
) -> h5py.Dataset:
    """`value` (the HDF5 node at `key`) as a numeric dataset of the given rank and row count
    (that of `like`)."""
    if not isinstance(value, h5py.Dataset):
        raise DatasetError(f"{where}: key '{key}' is a group, expected an array")
    if value.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: key '{key}' has dtype {value.dtype}, expected numbers")
    if value.ndim != rank:
        expected = "(steps, dim)" if rank == 2 else "(steps,)"
        raise DatasetError(f"{where}: key '{key}' has shape {value.shape}, expected {expected}")
    if rows is not None and value.shape[0] != rows:
        raise DatasetError(f"{where}: key '{key}' has {value.shape[0]} rows, expected {rows} (as '{like}')")
    return value


def _read_vector(group: h5py.Group, key: str, where: str, rows: int) -> np.ndarray:
    """A per-step scalar key, shaped (steps,) or (steps, 1), as a finite 1-D array."""
    value = group[key]
    if isinstance(value, h5py.Dataset) and value.ndim == 2 and value.shape[1] == 1:
        values = _array(value, key, where, rank=2, rows=rows)[:, 0]
    else:
        values = _array(value, key, where, rank=1, rows=rows)[()]
    bad = ~np.isfinite(values) if values.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise DatasetError(f"{where}: key '{key}' contains NaN or inf (first at row {int(np.argmax(bad))})")
    return values


def _read_flags(group: h5py.Group, key: str, where: str, rows: int) -> np.ndarray:
    """A 0/1 per-step key as a bool array."""
    values = _read_vector(group, key, where, rows)
    if values.dtype != bool:
        bad = (values != 0) & (values != 1)
        if bad.any():
            row = int(np.argmax(bad))
            raise DatasetError(f"{where}: key '{key}' has value {values[row]} at row {row}, expected 0 or 1")
    return values.astype(bool)


def _check_dim(where: str, key: str, dim: int, expected: Optional[int]) -> None:
    if expected is not None and dim != expected:
        raise DatasetError(f"{where}: key '{key}' has dim {dim}, the task expects {expected}")


def _read_rows(
    ds: h5py.Dataset, where: str, key: str, selections: Sequence[Optional[tuple]]
) -> list[np.ndarray]:
    """One float32 array per selection, reading `ds` (2-D) once, block by block, and checking
    every block is finite. A selection is None (every row) or `(mask, step)`: the output has
    one row per true `mask[i]`, in order, copied from row i + step[i] (`step`: a bool array,
    or None for 0), so e.g. (keep, ~terminals) gathers the successors of the kept steps.

    Working block by block keeps memory at the outputs plus one block: no full-size copy or
    (N,) index array (reading the whole array and then indexing it would hold it twice).
    """
    num_rows, dim = ds.shape
    sizes = [num_rows if sel is None else int(np.count_nonzero(sel[0])) for sel in selections]
    outs = [np.empty((size, dim), np.float32) for size in sizes]
    filled = [0] * len(selections)
    block_rows = max(1, BLOCK_BYTES // max(1, dim * ds.dtype.itemsize))
    # One extra row past each block, so a step's successor is always in the buffer.
    buffer = np.empty((min(block_rows + 1, num_rows), dim), ds.dtype)
    for start in range(0, num_rows, block_rows):
        stop = min(start + block_rows, num_rows)
        read_stop = min(stop + 1, num_rows)
        block = buffer[: read_stop - start]
        ds.read_direct(block, np.s_[start:read_stop], np.s_[0 : read_stop - start])
        rows = block[: stop - start]  # the extra row is checked with the next block
        if not all_finite(rows):
            row = start + int(np.argmax(~np.isfinite(rows).all(axis=1)))
            raise DatasetError(f"{where}: key '{key}' contains NaN or inf (first at row {row})")
        for s, (selection, out) in enumerate(zip(selections, outs)):
            if selection is None:
                out[start:stop] = rows
                continue
            mask, step = selection
            local = np.flatnonzero(mask[start:stop])
            if step is not None:
                local += step[start:stop][local]
            target = out[filled[s] : filled[s] + len(local)]
            if block.dtype == np.float32:
                np.take(block, local, axis=0, out=target)  # no temporary
            else:
                target[...] = block[local]
            filled[s] += len(local)
    return outs


def _rows_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """diff[i] = any(a[i] != b[i]), in blocks (no (N, dim) boolean temporary)."""
    diff = np.empty(len(a), bool)
    block_rows = max(1, BLOCK_BYTES // max(1, a.shape[1] * a.itemsize))
    for start in range(0, len(a), block_rows):
        stop = start + block_rows
        np.any(a[start:stop] != b[start:stop], axis=1, out=diff[start:stop])
    return diff


# --------------------------------------------------------------------------------------------
# Minari
# --------------------------------------------------------------------------------------------


def minari_datasets_root() -> Path:
    """Where Minari keeps datasets: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def resolve_minari_dataset(dataset: PathLike) -> Path:
    """The `data` directory (holding metadata.json / main_data.hdf5) of a Minari dataset.

    `dataset` is a dataset directory (the one holding `data/`, or `data/` itself) or a Minari
    id such as `D4RL/antmaze/large-diverse-v1`, looked up under `minari_datasets_root()`. An id
    without `-vN` picks the highest local version. Never downloads anything.
    """
    path = Path(dataset)
    if path.is_dir():
        return _data_dir(path, f"dataset directory {str(path)!r}")
    dataset_id = str(dataset)
    root = minari_datasets_root()
    candidate = root / dataset_id
    if not candidate.is_dir() and not re.search(r"-v\d+$", dataset_id):
        versions = sorted(
            (int(match.group(1)), p)
            for p in candidate.parent.glob(candidate.name + "-v*")
            if (match := re.fullmatch(re.escape(candidate.name) + r"-v(\d+)", p.name)) and p.is_dir()
        )
        if versions:
            candidate = versions[-1][1]
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"Minari dataset {dataset_id!r} not found: no directory {str(candidate)!r} "
            f"(datasets root {str(root)!r}, from $MINARI_DATASETS_PATH or ~/.minari/datasets). "
            f"Download it where there is network (`minari download {dataset_id}`) and copy it there, "
            "or pass the dataset directory"
        )
    return _data_dir(candidate, f"Minari dataset {dataset_id!r} ({candidate})")


def _data_dir(path: Path, what: str) -> Path:
    for data_dir in (path / "data", path):
        if (data_dir / MINARI_METADATA_FILE).is_file() or (data_dir / MINARI_MAIN_FILE).is_file():
            return data_dir
    raise DatasetError(f"{what}: no Minari data: neither data/{MINARI_METADATA_FILE} nor data/{MINARI_MAIN_FILE}")


def read_minari_metadata(dataset: PathLike) -> dict:
    """A Minari dataset's metadata (metadata.json: `total_episodes`, `total_steps`,
    `data_format`, `ref_min_score` / `ref_max_score` where the dataset has them, ...).
    Datasets from before metadata.json keep it in main_data.hdf5's attributes."""
    return _read_metadata(resolve_minari_dataset(dataset))


def _read_metadata(data_dir: Path) -> dict:
    metadata_path = data_dir / MINARI_METADATA_FILE
    if metadata_path.is_file():
        try:
            metadata = json.loads(metadata_path.read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise DatasetError(f"file {metadata_path}: not valid JSON ({error})") from None
        if not isinstance(metadata, dict):
            raise DatasetError(f"file {metadata_path}: expected a JSON object")
        return metadata
    with h5py.File(data_dir / MINARI_MAIN_FILE, "r") as file:
        return {key: value.item() if isinstance(value, np.generic) else value for key, value in file.attrs.items()}


def read_minari(
    dataset: PathLike,
    observation_keys: Optional[Sequence[str]] = None,
    observation_dim: Optional[int] = None,
    action_dim: Optional[int] = None,
    observation_spec: Optional[ObservationSpec] = None,
) -> OfflineDataset:
    """Reads a Minari dataset (directory or local id, see `resolve_minari_dataset`).

    Dict observations are flattened by `observation_keys` (required for them: the error lists
    the keys there are); Box observations are already flat and ignore them. `observation_dim` / `action_dim`, when
    given, must match the (flattened) data. Dict observations with camera images (uint8
    (steps, H, W, C) members; HDF5 layout) are kept as named parts instead, giving dict
    observations (without `observation_keys`; `observation_spec`, when given, must match).
    """
    data_dir = resolve_minari_dataset(dataset)
    metadata = _read_metadata(data_dir)
    data_format = metadata.get("data_format", "hdf5")
    keys = None if observation_keys is None else tuple(observation_keys)
    if data_format == "hdf5":
        main = data_dir / MINARI_MAIN_FILE
        if not main.is_file():
            raise DatasetError(f"Minari dataset {data_dir}: missing {MINARI_MAIN_FILE}")
        try:
            file = h5py.File(main, "r")
        except OSError as error:
            raise DatasetError(f"file {main}: not a readable HDF5 file ({error})") from None
        with file:
            episodes = _hdf5_episodes(file, f"file {main}", keys)
            _check_total(metadata, data_dir, episodes)
            return _assemble(episodes, f"file {main}", observation_dim, action_dim, observation_spec)
    if data_format == "arrow":
        episodes = _arrow_episodes(data_dir, keys)
        _check_total(metadata, data_dir, episodes)
        return _assemble(episodes, f"Minari dataset {data_dir}", observation_dim, action_dim, observation_spec)
    raise DatasetError(
        f"file {data_dir / MINARI_METADATA_FILE}: key 'data_format' is {data_format!r}, expected 'hdf5' or 'arrow'"
    )


class _Episode(NamedTuple):
    where: str  # "file X: episode 'episode_3'", for errors
    steps: int
    observation_dim: int
    action_dim: int
    load: Callable[[], dict]  # -> the MINARI_EPISODE_KEYS as numpy arrays, observations flat (or parts)
    observation_spec: Optional[ObservationSpec] = None  # named parts (camera images): not flattened


def _check_total(metadata: dict, data_dir: Path, episodes: list) -> None:
    expected = metadata.get("total_episodes")
    if expected is not None and int(expected) != len(episodes):
        raise DatasetError(
            f"Minari dataset {data_dir}: {MINARI_METADATA_FILE} says total_episodes={expected}, "
            f"the data holds {len(episodes)} episodes (incomplete copy?)"
        )


def _assemble(
    episodes: list[_Episode], where: str, observation_dim: Optional[int], action_dim: Optional[int],
    observation_spec: Optional[ObservationSpec] = None,
) -> OfflineDataset:
    """Concatenates episodes into preallocated arrays (shapes were checked before any load)."""
    if not episodes:
        raise DatasetError(f"{where}: no episodes")
    first = episodes[0]
    if first.observation_spec is not None or any(e.observation_spec is not None for e in episodes):
        return _assemble_parts(episodes, where, observation_dim, action_dim, observation_spec)
    if observation_spec is not None:
        if not observation_spec.is_flat:
            raise DatasetError(f"{first.where}: key 'observations' is flat, the task expects named parts {observation_spec.to_json()}")
        observation_dim = observation_spec.state_dim
    _check_dim(first.where, "observations", first.observation_dim, observation_dim)
    _check_dim(first.where, "actions", first.action_dim, action_dim)
    for episode in episodes[1:]:
        for key, dim, first_dim in (
            ("observations", episode.observation_dim, first.observation_dim),
            ("actions", episode.action_dim, first.action_dim),
        ):
            if dim != first_dim:
                raise DatasetError(f"{episode.where}: key '{key}' has dim {dim}, the first episode has {first_dim}")
    total = sum(episode.steps for episode in episodes)
    if total == 0:
        raise DatasetError(f"{where}: no steps (every episode is empty)")
    out = dict(
        observations=np.empty((total, first.observation_dim), np.float32),
        actions=np.empty((total, first.action_dim), np.float32),
        rewards=np.empty(total, np.float32),
        next_observations=np.empty((total, first.observation_dim), np.float32),
        terminals=np.empty(total, np.float32),
        episode_ends=np.empty(total, bool),
    )
    start = 0
    for episode in episodes:
        if episode.steps == 0:
            continue  # a lone reset observation: no transition
        stop = start + episode.steps
        data = episode.load()
        for key in ("observations", "actions", "rewards"):
            if not all_finite(data[key]):
                raise DatasetError(f"{episode.where}: key '{key}' contains NaN or inf")
        out["observations"][start:stop] = data["observations"][:-1]
        out["next_observations"][start:stop] = data["observations"][1:]
        _fill_steps(out, data, start, stop, episode.where)
        start = stop
    return OfflineDataset(**out)


def _assemble_parts(episodes, where, observation_dim, action_dim, observation_spec) -> OfflineDataset:
    """`_assemble` for episodes whose observations are named parts (dicts of arrays)."""
    first = episodes[0]
    spec = first.observation_spec
    for episode in episodes:
        if episode.observation_spec != spec:
            got = None if episode.observation_spec is None else episode.observation_spec.to_json()
            raise DatasetError(f"{episode.where}: key 'observations' has parts {got}, the first episode has {spec.to_json()}")
        if episode.action_dim != first.action_dim:
            raise DatasetError(f"{episode.where}: key 'actions' has dim {episode.action_dim}, the first episode has {first.action_dim}")
    if observation_spec is not None and observation_spec != spec:
        raise DatasetError(f"{first.where}: key 'observations' has parts {spec.to_json()}, the task expects {observation_spec.to_json()}")
    if observation_dim is not None and observation_spec is None:
        raise DatasetError(
            f"{first.where}: key 'observations' holds named parts {spec.to_json()}, the task expects flat observations "
            f"of dim {observation_dim}"
        )
    _check_dim(first.where, "actions", first.action_dim, action_dim)
    total = sum(episode.steps for episode in episodes)
    if total == 0:
        raise DatasetError(f"{where}: no steps (every episode is empty)")
    out = dict(
        observations=spec.zeros((total,)),
        actions=np.empty((total, first.action_dim), np.float32),
        rewards=np.empty(total, np.float32),
        next_observations=spec.zeros((total,)),
        terminals=np.empty(total, np.float32),
        episode_ends=np.empty(total, bool),
    )
    start = 0
    for episode in episodes:
        if episode.steps == 0:
            continue
        stop = start + episode.steps
        data = episode.load()
        for key in ("actions", "rewards"):
            if not all_finite(data[key]):
                raise DatasetError(f"{episode.where}: key '{key}' contains NaN or inf")
        for part in spec.parts:
            values = data["observations"][part.name]
            if not part.is_image and not all_finite(values):
                raise DatasetError(f"{episode.where}: key 'observations/{part.name}' contains NaN or inf")
            out["observations"][part.name][start:stop] = values[:-1]
            out["next_observations"][part.name][start:stop] = values[1:]
        _fill_steps(out, data, start, stop, episode.where)
        start = stop
    return OfflineDataset(**out)


def _fill_steps(out: dict, data: dict, start: int, stop: int, where: str) -> None:
    """Writes one episode's actions, rewards, terminals and episode ends into rows
    [start, stop) of `out` (observations are the caller's: flat or per part)."""
    terminations = _episode_flags(data, "terminations", where)
    truncations = _episode_flags(data, "truncations", where)
    out["actions"][start:stop] = data["actions"]
    out["rewards"][start:stop] = data["rewards"]
    out["terminals"][start:stop] = terminations
    ends = out["episode_ends"][start:stop]
    np.logical_or(terminations, truncations, out=ends)
    ends[-1] = True


def _episode_flags(data: dict, key: str, where: str) -> np.ndarray:
    values = np.asarray(data[key])
    if values.dtype != bool and np.any((values != 0) & (values != 1)):
        raise DatasetError(f"{where}: key '{key}' has values other than 0/1")
    return values.astype(bool)


def _hdf5_episodes(file: h5py.File, where: str, keys: Optional[tuple]) -> list[_Episode]:
    """Every `episode_{i}` group, in order of i, with shapes checked (nothing loaded yet)."""
    names = [name for name in file if name.startswith("episode_")]
    if not names:
        raise DatasetError(f"{where}: no 'episode_{{i}}' groups (it has {sorted(file.keys())[:10]})")
    bad = [name for name in names if not name[len("episode_") :].isdigit()]
    if bad:
        raise DatasetError(f"{where}: group {bad[0]!r} is not named episode_<number>")
    names.sort(key=lambda name: int(name[len("episode_") :]))
    episodes = []
    for name in names:
        group = file[name]
        if not isinstance(group, h5py.Group):
            raise DatasetError(f"{where}: '{name}' is an array, expected an episode group")
        episodes.append(_hdf5_episode(group, f"{where}: episode '{name}'", keys))
    return episodes


def _final_row_error(where: str, key: str, rows: int, steps: int) -> DatasetError:
    return DatasetError(f"{where}: key '{key}' has {rows} rows, expected {steps + 1} (one more than 'rewards': the final observation)")


def _step_columns(nodes, actions, steps: int) -> dict:
    """An HDF5 episode's per-step columns (everything but its observations), read."""
    data = {key: nodes[key][()] for key in ("rewards", "terminations", "truncations")}
    data["actions"] = actions[()].reshape(steps, -1)
    return data


def _hdf5_episode(group: h5py.Group, where: str, keys: Optional[tuple]) -> _Episode:
    members = set(group.keys())  # one listing: h5py lookups cost ~50 us each
    missing = [key for key in MINARI_EPISODE_KEYS if key not in members]
    if missing:
        raise DatasetError(
            f"{where}: missing required key(s) {', '.join(repr(k) for k in missing)} (it has {sorted(members)})"
        )
    nodes = {key: group[key] for key in MINARI_EPISODE_KEYS}
    steps = _array(nodes["rewards"], "rewards", where, rank=1).shape[0]
    for key in ("terminations", "truncations"):
        _array(nodes[key], key, where, rank=1, rows=steps, like="rewards")
    actions = nodes["actions"]
    if not isinstance(actions, h5py.Dataset) or actions.ndim < 1 or actions.shape[0] != steps:
        shape = getattr(actions, "shape", "a group")
        raise DatasetError(f"{where}: key 'actions' has shape {shape}, expected ({steps}, action_dim) like 'rewards'")
    if actions.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: key 'actions' has dtype {actions.dtype}, expected numbers")
    observations = nodes["observations"]
    if keys is None and isinstance(observations, h5py.Group) and _has_images(observations):
        spec, rows = _group_spec(observations, where, "observations")
        if rows != steps + 1:
            raise _final_row_error(where, "observations", rows, steps)

        def load_parts() -> dict:
            return {**_step_columns(nodes, actions, steps), "observations": {p.name: observations[p.name][()] for p in spec.parts}}

        return _Episode(where, steps, 0, _row_size(actions.shape), load_parts, spec)
    leaves = _observation_leaves(observations, keys, where)
    for name, leaf in leaves:
        if leaf.dtype.kind not in "biuf":
            raise DatasetError(f"{where}: key '{name}' has dtype {leaf.dtype}, expected numbers")
        if leaf.ndim < 1 or leaf.shape[0] != steps + 1:
            raise _final_row_error(where, name, leaf.shape[0] if leaf.ndim else 0, steps)

    def load() -> dict:
        return {**_step_columns(nodes, actions, steps), "observations": _concat_leaves([leaf[()] for _, leaf in leaves], steps + 1)}

    return _Episode(where, steps, _leaves_dim(leaf.shape for _, leaf in leaves), _row_size(actions.shape), load)


def _has_images(group: h5py.Group) -> bool:
    """Whether a dict observation group holds a camera image (uint8, steps x H x W x C)."""
    return any(isinstance(node, h5py.Dataset) and node.ndim == 4 and node.dtype == np.uint8 for node in group.values())


def _observation_leaves(observations, keys: Optional[tuple], where: str) -> list[tuple[str, Any]]:
    """(name, HDF5 dataset) per leaf of the flattened observation, in flattening order."""
    if isinstance(observations, h5py.Dataset):
        return [("observations", observations)]  # a Box space: already flat, keys do not apply
    if keys is None:
        raise DatasetError(
            f"{where}: key 'observations' is a dict with keys {sorted(observations.keys())}; "
            "pass observation_keys to choose which to concatenate, in order"
        )
    missing = [key for key in keys if key not in observations]
    if missing:
        raise DatasetError(
            f"{where}: key 'observations' has no key(s) {missing}; it has {sorted(observations.keys())}"
        )
    return [leaf for key in keys for leaf in _hdf5_leaves(observations[key], f"observations/{key}")]


def _hdf5_leaves(node, name: str) -> list[tuple[str, Any]]:
    if isinstance(node, h5py.Group):
        return [leaf for key in sorted(node.keys()) for leaf in _hdf5_leaves(node[key], f"{name}/{key}")]
    return [(name, node)]


def _row_size(shape: Sequence[int]) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def _leaves_dim(shapes) -> int:
    return sum(_row_size(shape) for shape in shapes)


def _concat_leaves(leaves: list[np.ndarray], rows: int) -> np.ndarray:
    if len(leaves) == 1:
        return leaves[0].reshape(rows, -1)
    return np.concatenate([leaf.reshape(rows, -1).astype(np.float32, copy=False) for leaf in leaves], axis=1)


# Arrow layout (Minari's ArrowStorage): data/<episode id>/*.arrow, one row per observation
# (T + 1); actions, rewards and flags are padded with one trailing row, dropped here. Box
# values are fixed-size lists (flattened), dict observations structs.


def _arrow_episodes(data_dir: Path, keys: Optional[tuple]) -> list[_Episode]:
    try:
        import pyarrow.dataset as pa_dataset
    except ImportError:
        raise ImportError(
            f"Minari dataset {data_dir} is stored as Arrow (metadata.json data_format 'arrow'), "
            "which needs pyarrow: pip install pyarrow"
        ) from None
    ids = sorted((int(p.name), p) for p in data_dir.iterdir() if p.is_dir() and p.name.isdigit())
    episodes = []
    for episode_id, episode_dir in ids:
        where = f"Minari dataset {data_dir}: episode {episode_id} ({episode_dir})"
        source = pa_dataset.dataset(str(episode_dir), format="arrow", ignore_prefixes=["_", ".", MINARI_METADATA_FILE])
        schema = source.schema
        missing = [key for key in MINARI_EPISODE_KEYS if key not in schema.names]
        if missing:
            raise DatasetError(
                f"{where}: missing required key(s) {', '.join(repr(k) for k in missing)} (it has {schema.names})"
            )
        observation_dim = _arrow_dim(_arrow_observation_fields(schema.field("observations").type, keys, where))
        action_dim = _arrow_dim([schema.field("actions").type])
        steps = source.count_rows() - 1
        load = _arrow_loader(source, keys, steps)
        episodes.append(_Episode(where, max(steps, 0), observation_dim, action_dim, load))
    return episodes


def _arrow_loader(source, keys: Optional[tuple], steps: int) -> Callable[[], dict]:
    def load() -> dict:
        table = source.to_table()
        columns = {name: table.column(name).combine_chunks() for name in MINARI_EPISODE_KEYS}
        # the step columns carry one padding row (the observation column's final row): drop it
        data = {
            name: _arrow_numpy(columns[name])[:steps] for name in ("actions", "rewards", "terminations", "truncations")
        }
        data["actions"] = data["actions"].reshape(steps, -1)
        observations = columns["observations"]
        leaves = _arrow_observation_leaves(observations, keys)
        data["observations"] = _concat_leaves([_arrow_numpy(leaf) for leaf in leaves], steps + 1)
        return data

    return load


def _arrow_observation_fields(obs_type, keys: Optional[tuple], where: str) -> list:
    """The Arrow types of the flattened observation's leaves, in flattening order."""
    import pyarrow as pa

    if not pa.types.is_struct(obs_type):
        return [obs_type]  # a Box space: already flat, keys do not apply
    names = [obs_type.field(i).name for i in range(obs_type.num_fields)]
    if keys is None:
        raise DatasetError(
            f"{where}: key 'observations' is a dict with keys {sorted(names)}; "
            "pass observation_keys to choose which to concatenate, in order"
        )
    missing = [key for key in keys if key not in names]
    if missing:
        raise DatasetError(f"{where}: key 'observations' has no key(s) {missing}; it has {sorted(names)}")

    def leaves(field_type) -> list:
        if pa.types.is_struct(field_type):
            sub = sorted(field_type.field(i).name for i in range(field_type.num_fields))
            return [leaf for name in sub for leaf in leaves(field_type.field(name).type)]
        return [field_type]

    return [leaf for key in keys for leaf in leaves(obs_type.field(key).type)]


def _arrow_observation_leaves(array, keys: Optional[tuple]) -> list:
    import pyarrow as pa

    if not pa.types.is_struct(array.type):
        return [array]

    def children(value) -> dict:
        # flatten() (unlike field()) applies the struct's own offset to its children
        names = [value.type.field(i).name for i in range(value.type.num_fields)]
        return dict(zip(names, value.flatten()))

    def leaves(value) -> list:
        if pa.types.is_struct(value.type):
            sub = children(value)
            return [leaf for name in sorted(sub) for leaf in leaves(sub[name])]
        return [value]

    top = children(array)
    return [leaf for key in keys for leaf in leaves(top[key])]


def _arrow_dim(types: list) -> int:
    import pyarrow as pa

    dim = 0
    for arrow_type in types:
        size = 1
        while pa.types.is_fixed_size_list(arrow_type):
            size *= arrow_type.list_size
            arrow_type = arrow_type.value_type
        dim += size
    return dim


def _arrow_numpy(array) -> np.ndarray:
    """A (nested) fixed-size-list or plain numeric Arrow array as (rows, -1) / (rows,) numpy."""
    import pyarrow as pa

    rows = len(array)
    if not pa.types.is_fixed_size_list(array.type):
        return array.to_numpy(zero_copy_only=False)
    while pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(rows, -1)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


def read_dataset(
    path_or_id: PathLike,
    observation_keys: Optional[Sequence[str]] = None,
    observation_dim: Optional[int] = None,
    action_dim: Optional[int] = None,
    observation_spec: Optional[ObservationSpec] = None,
) -> OfflineDataset:
    """Reads a `.hdf5`/`.h5` file as D4RL, a directory or anything else as a Minari dataset
    (directory or local id). `observation_keys` flatten dict observations (Minari); flat
    (Box) observations are taken as they are; observations with camera images come back as
    dicts of named parts (checked against `observation_spec` when given)."""
    path = Path(path_or_id)
    if path.suffix in (".hdf5", ".h5"):
        return read_d4rl_hdf5(path, observation_dim, action_dim, observation_spec)
    if path.is_file():
        raise DatasetError(
            f"file {path}: unknown dataset format; expected a D4RL .hdf5/.h5 file, "
            "a Minari dataset directory or a Minari dataset id"
        )
    return read_minari(path_or_id, observation_keys, observation_dim, action_dim, observation_spec)


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def card_path(path: PathLike) -> Path:
    """Where `write_d4rl_hdf5` puts the JSON card of the dataset file `path`."""
    path = Path(path)
    return path.with_name(path.stem + ".card.json") if path.suffix else path.with_name(path.name + ".card.json")


# Card keys the writer computes; a caller's card may not set them.
CARD_STATS = (
    "format",
    "file",
    "file_bytes",
    "num_transitions",
    "num_episodes",
    "num_terminal_episodes",
    "observation_dim",
    "observation_spec",
    "action_dim",
    "episode_length_mean",
    "episode_length_min",
    "episode_length_max",
    "return_mean",
    "return_std",
    "return_min",
    "return_max",
    "success_rate",
)


def dataset_stats(dataset: OfflineDataset, success_threshold: Optional[float] = None) -> dict:
    """Size and per-episode return statistics; `success_rate` is the fraction of episodes
    whose return is >= `success_threshold` (only when one is given: whether a terminal is a
    success or a failure depends on the task)."""
    returns = dataset.episode_returns().astype(np.float64)
    end_rows = np.flatnonzero(dataset.episode_ends)
    lengths = np.diff(np.concatenate([[-1], end_rows]))
    stats = {
        "num_transitions": len(dataset),
        "num_episodes": dataset.num_episodes,
        "num_terminal_episodes": int(np.count_nonzero(dataset.terminals[end_rows])),
        **_observation_stats(dataset),
        "action_dim": int(dataset.actions.shape[1]),
        "episode_length_mean": float(lengths.mean()),
        "episode_length_min": int(lengths.min()),
        "episode_length_max": int(lengths.max()),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
    }
    if success_threshold is not None:
        stats["success_rate"] = float(np.mean(returns >= success_threshold))
    return stats


def _observation_stats(dataset: OfflineDataset) -> dict:
    """`observation_dim` for flat observations; `observation_spec` (its JSON) for named parts."""
    spec = dataset.observation_spec
    if spec.is_flat:
        return {"observation_dim": spec.state_dim}
    return {"observation_spec": spec.to_json()}


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
