"""D4RL HDF5 files in: `read_d4rl_hdf5` reads one into an `OfflineDataset`, episodes split as below.

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

Observations with camera images are a group `observations/<part>` (and
`next_observations/<part>`), read part by part under the same rules (envs/dataset_io.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from envs.dataset_checks import (
    DatasetError,
    PathLike,
    _array,
    _check_dim,
    _group_spec,
    _read_flags,
    _read_parts,
    _read_rows,
    _read_vector,
    _rows_differ,
)
from envs.datasets import OfflineDataset
from envs.observations import ObservationSpec

D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


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
