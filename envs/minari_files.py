"""Finding a Minari dataset on disk (a directory or a local id) and reading its metadata.

A Minari dataset directory holds `data/metadata.json` and `data/main_data.hdf5` (or, with
`data_format: arrow`, one folder of Arrow files per episode). Ids are looked up under
`minari_datasets_root()`; nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np

from envs.dataset_checks import DatasetError, PathLike

MINARI_MAIN_FILE = "main_data.hdf5"
MINARI_METADATA_FILE = "metadata.json"


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
