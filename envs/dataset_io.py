"""Offline datasets on disk, the front door: `read_dataset` picks the reader by the format.

Everything returns the in-memory `OfflineDataset` (envs/datasets.py): flat float32 arrays of
transitions with `terminals` (true terminals only) and `episode_ends` (terminal or time limit).
No transition ever crosses from one episode into the next.

Observations with camera images (envs/observations.py) are named parts in both layouts: a
group `observations/<part>` (D4RL: also `next_observations/<part>`; Minari: per episode, T + 1
rows) holding a float32 "state" (steps, d) and uint8 frames (steps, H, W, C), the frames
chunked (whole frames, ~256 KiB a chunk) and gzip-compressed, so they read back bit for bit
as dict observations. Flat files are read and written exactly as before.

One job a file: envs/d4rl_reader.py (D4RL HDF5 in: `read_d4rl_hdf5`, and how episodes are
split), envs/minari_reader.py (Minari in: `read_minari`), envs/minari_files.py (finding a
Minari dataset, its metadata), envs/dataset_writers.py (D4RL HDF5 and Minari out),
envs/dataset_card.py (the JSON card beside a written file and its statistics) and
envs/dataset_checks.py (`DatasetError` and the checked HDF5 reads the readers share).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from envs.d4rl_reader import read_d4rl_hdf5
from envs.dataset_checks import DatasetError, PathLike
from envs.datasets import OfflineDataset
from envs.minari_reader import read_minari
from envs.observations import ObservationSpec


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
