"""Run directories and the data sources the training loops share."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from envs.dataset_checks import DatasetError
from envs.dataset_io import read_dataset
from envs.datasets import OfflineDataset, mc_returns
from envs.observations import observation_spec_of
from envs.tasks import Task
from learner.agents import make_agent, observation_spec_of
from learner.agents.common import configure_cpu_malloc
from learner.checkpoint import atomic_write_bytes, read_checkpoint, restore_agent
from learner.config import Config, ConfigError, dump_yaml
from learner.replay_buffer import InterventionSampler, MixedSampler, ReplayBuffer


def keep_freed_memory() -> bool:
    """What the training commands (pretrain, finetune, learner) do first: on JAX's CPU backend,
    `configure_cpu_malloc()`, so that glibc keeps freed memory for reuse and XLA's per-call
    scratch buffer is not page-faulted in afresh on every update (locomotion fused update on
    2 cores: ~7k faults per call -> under 2.6k, 53.9 -> 44.9 ms best of 3 rounds; see
    benchmarks/HISTORY.md, learner_throughput.py). The process's resident memory then stays at its peak. Not on
    GPUs/TPUs, whose scratch is device memory; off with WSRL_KEEP_FREED_MEMORY=0. Returns
    whether it applied."""
    if os.environ.get("WSRL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    import jax

    return jax.default_backend() == "cpu" and configure_cpu_malloc()


def describe_device() -> str:
    """The device JAX trains on, for a run's start-up line: "device cpu" or e.g. "device gpu
    (NVIDIA H200)"."""
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", "") or ""
    return f"device {device.platform}" + (f" ({kind})" if kind and kind.lower() != device.platform else "")


def resolve_run_dir(config: Config, phase: str, run_dir: Optional[str] = None) -> Path:
    """The run directory a command will use: `run_dir`, `logging.run_dir`, or
    runs/<task>-<variant>-<phase>-<time>."""
    chosen = run_dir or config.logging.run_dir
    if not chosen:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        chosen = f"runs/{config.task}-{config.variant}-{phase}-{stamp}"
    return Path(chosen)


def check_run_dir(path: Path) -> None:
    """Raises FileExistsError if `path` already holds a run, NotADirectoryError /
    PermissionError (as ValueError) if it cannot be one. Creates nothing."""
    if (path / "config.yaml").exists():
        raise FileExistsError(f"run directory {str(path)!r} already holds a run (config.yaml exists); choose another --run-dir")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--run-dir: {str(path)!r} exists and is not a directory")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--run-dir: cannot create or write {str(path)!r} ({str(parent)!r} is not a writable directory)")


def prepare_run_dir(config: Config, phase: str, run_dir: Optional[str] = None) -> Path:
    """Creates the run directory and writes the resolved config into it (with
    `logging.run_dir` set to the directory used).

    Refuses a directory that already holds a run, so nothing is overwritten.
    """
    import dataclasses

    path = resolve_run_dir(config, phase, run_dir)
    check_run_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, logging=dataclasses.replace(config.logging, run_dir=str(path)))
    atomic_write_bytes(path / "config.yaml", dump_yaml(config).encode())
    return path


def load_offline_dataset(config: Config, task: Task) -> OfflineDataset:
    """The pre-training dataset with the task's training reward convention applied.

    `pretrain.dataset`: "builtin" (the task's embedded generator, `pretrain.dataset_episodes`
    episodes), a D4RL `.hdf5`/`.h5` file, a Minari dataset directory, or a Minari dataset id
    under MINARI_DATASETS_PATH / ~/.minari/datasets. Files hold the task's raw (unscaled)
    rewards, as D4RL's and `wsrl dataset generate`'s do.
    """
    source = config.pretrain.dataset
    if source == "builtin":
        if task.builtin_dataset is None:
            raise ConfigError(
                f"config field 'pretrain.dataset': task {task.name!r} has no builtin dataset; expected a "
                "D4RL .hdf5 file or a Minari dataset (directory or id)"
                + (f", e.g. {task.d4rl_dataset}.hdf5" if task.d4rl_dataset else "")
            )
        dataset = task.builtin_dataset(config.pretrain.dataset_episodes, config.seed)
    else:
        spec = task.spec()
        observations = observation_spec_of(spec)
        try:
            dataset = read_dataset(
                source,
                observation_keys=task.observation_keys if observations.is_flat else None,
                observation_dim=spec["observation_dim"] if observations.is_flat else None,
                action_dim=spec["action_dim"],
                observation_spec=None if observations.is_flat else observations,
            )
        except DatasetError as e:
            raise ConfigError(f"config field 'pretrain.dataset': {e}") from e
    return task.training_rewards(dataset)


def offline_replay(config: Config, task: Task) -> ReplayBuffer:
    """The offline dataset as a full replay buffer, with CalQL's MC returns-to-go."""
    dataset = load_offline_dataset(config, task)
    returns = mc_returns(dataset.rewards, dataset.episode_ends, config.agent.discount, task.sparse_failure_reward)
    return ReplayBuffer.from_dataset(dataset, returns)


def initial_agent(config: Config, spec: dict):
    """The online agent at the start of fine-tuning, as `finetune.init` says.

    With `finetune.checkpoint`: "pretrained" takes every network the two algorithms share with
    its optimizer state (WSRL, Appendix I); "actor" only the policy with its optimizer state,
    the critics and temperature fresh (JSRL). Without a checkpoint, or with "scratch", a fresh
    agent (SAC(fast), RLPD).
    """
    f = config.finetune
    if f.init == "scratch" and f.checkpoint:
        raise ConfigError(
            f"config field 'finetune.checkpoint': got {f.checkpoint!r} with finetune.init='scratch'; "
            "expected no checkpoint (or finetune.init 'pretrained' / 'actor')"
        )
    if f.jsrl and not f.checkpoint:
        raise ConfigError("config field 'finetune.checkpoint': JSRL (finetune.jsrl=true) needs the pre-trained policy's checkpoint")
    fresh = make_agent(f.algorithm, config.agent, observation_spec_of(spec), spec["action_dim"], config.seed)
    if not f.checkpoint:
        return fresh
    restored = restore_agent(read_checkpoint(f.checkpoint), f.algorithm, config.agent, spec, config.seed)
    if f.init == "actor":
        # With cameras the policy reads the critic encoder's features: it comes with it.
        return fresh.replace(actor=restored.actor, encoder=restored.encoder)
    return restored


def online_replay(config: Config, task: Task, spec: dict) -> tuple[ReplayBuffer, object, int]:
    """(online buffer, the sampler updates draw from, warmup env steps) for fine-tuning.

    The sampler is the buffer itself, or with `offline_mixing_ratio` > 0 a `MixedSampler`
    over it and the offline dataset (retention baselines, RLPD); with `intervention_ratio` > 0
    an `InterventionSampler` around that (a share from the human-intervention transitions). With `finetune.warmup:
    dataset` the buffer starts with K = `warmup_steps` transitions drawn uniformly without
    replacement from the offline dataset (Appendix J) and there are no warmup env steps;
    otherwise the first K env steps are warmup (frozen policy or random actions).
    """
    f = config.finetune
    dataset_warmup = f.warmup == "dataset" and f.warmup_steps > 0
    capacity = (f.replay_capacity or f.num_steps) + (f.warmup_steps if dataset_warmup else 0)
    replay = ReplayBuffer(capacity, observation_spec_of(spec), spec["action_dim"])
    offline = offline_replay(config, task) if f.offline_mixing_ratio > 0 or dataset_warmup else None
    sampler = MixedSampler(replay, offline, f.offline_mixing_ratio) if f.offline_mixing_ratio > 0 else replay
    if f.intervention_ratio > 0:
        sampler = InterventionSampler(sampler, replay, f.intervention_ratio)
    if dataset_warmup:
        picks = np.random.default_rng(config.seed + 2).choice(len(offline), min(f.warmup_steps, len(offline)), replace=False)
        replay.add_from(offline, np.sort(picks))
    return replay, sampler, 0 if f.warmup == "dataset" else f.warmup_steps


def make_diagnostics(config: Config, task: Optional[Task], agent):
    """Forgetting diagnostics (learner/diagnostics.py) against `agent` as fine-tuning starts,
    with a held-out sample of the task's offline dataset (training rewards) when it has one."""
    from learner.diagnostics import ForgettingDiagnostics, held_out_sample

    offline = None
    try:
        if task is not None:
            offline = held_out_sample(offline_replay(config, task), 2 * config.finetune.diagnostics_states, config.seed)
    except ValueError as e:  # ConfigError / DatasetError: no dataset; the offline keys stay NaN
        reason = str(e).split(": ", 1)[-1] if "has no builtin dataset" not in str(e) else f"task {task.name!r} has no built-in dataset and pretrain.dataset names none"
        print(f"[wsrl] note: the forgetting diagnostics (diagnostics.csv) compare with online data only; their offline columns "
              f"stay empty because no offline dataset is available ({reason})", flush=True)
    return ForgettingDiagnostics.from_agent(agent, offline, num_states=config.finetune.diagnostics_states, seed=config.seed)
