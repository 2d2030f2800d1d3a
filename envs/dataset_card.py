"""The JSON card beside a written dataset file: where it goes and the statistics it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from envs.dataset_checks import PathLike
from envs.datasets import OfflineDataset


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
