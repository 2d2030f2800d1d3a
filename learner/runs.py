"""Run directories and the data sources the training loops share."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from envs.datasets import OfflineDataset, mc_returns
from envs.tasks import Task
from learner.checkpoint import atomic_write_bytes
from learner.config import Config, ConfigError, dump_yaml
from learner.replay_buffer import ReplayBuffer


def prepare_run_dir(config: Config, phase: str, run_dir: Optional[str] = None) -> Path:
    """Creates the run directory and writes the resolved config into it.

    Refuses a directory that already holds a run, so nothing is overwritten.
    """
    chosen = run_dir or config.logging.run_dir
    if not chosen:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        chosen = f"runs/{config.task}-{config.variant}-{phase}-{stamp}"
    path = Path(chosen)
    if (path / "config.yaml").exists():
        raise FileExistsError(
            f"run directory {str(path)!r} already holds a run (config.yaml exists); choose another --run-dir"
        )
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path / "config.yaml", dump_yaml(config).encode())
    return path


def load_offline_dataset(config: Config, task: Task) -> OfflineDataset:
    """The pre-training dataset with the task's training reward convention applied."""
    source = config.pretrain.dataset
    if source != "builtin":
        raise ConfigError(
            f"config field 'pretrain.dataset': got {source!r}, expected 'builtin' "
            "(the only data source in this version: the task's embedded generator)"
        )
    if task.builtin_dataset is None:
        raise ConfigError(f"config field 'pretrain.dataset': task {task.name!r} has no builtin dataset")
    return task.training_rewards(task.builtin_dataset(config.pretrain.dataset_episodes, config.seed))


def offline_replay(config: Config, task: Task) -> ReplayBuffer:
    """The offline dataset as a full replay buffer, with CalQL's MC returns-to-go."""
    dataset = load_offline_dataset(config, task)
    returns = mc_returns(dataset.rewards, dataset.episode_ends, config.agent.discount, task.sparse_failure_reward)
    return ReplayBuffer.from_dataset(dataset, returns)
