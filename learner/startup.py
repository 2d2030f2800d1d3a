"""Start-up checks of the training commands, run before anything is spawned or written: the
run directory is usable, the checkpoint exists, loads and fits the task, the offline dataset
can be found, the bind address is allowed. A failed check raises one of the errors the CLI
prints as one line (exit status 2) and leaves the file system as it was.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from learner.config import Config, ConfigError

# The task families `wsrl dataset generate` makes data for (lab/dataset_commands.py).
GENERATED_FAMILIES = ("builtin", "maze", "antmaze", "kitchen", "locomotion")
# Where `wsrl dataset generate` is told to write a task's data, and where a later run finds it.
DATASET_DIR = "datasets"


def default_dataset_path(task_name: str) -> Path:
    return Path(DATASET_DIR) / f"{task_name}.hdf5"


def generate_command(task) -> Optional[str]:
    """The `wsrl dataset generate ...` command that makes `task`'s data, or None when no local
    generator covers its family."""
    if task.family not in GENERATED_FAMILIES or task.family == "builtin":
        return None
    command = f"wsrl dataset generate --task {task.name} --out {default_dataset_path(task.name)}"
    if task.family == "locomotion":  # the behaviour SAC is cached and reused by the robot's other kinds
        command += f" --behaviour-dir {Path(DATASET_DIR) / (task.name.split('-')[0] + '-behaviour')}"
    return command


def resolve_dataset(config: Config, announce: bool = True) -> Config:
    """The config with `pretrain.dataset` resolved where it is `builtin` for a task without a
    built-in generator: the file `wsrl dataset generate` was told to write (datasets/<task>.hdf5),
    if it exists; else ConfigError naming the exact command that makes it."""
    from envs.tasks import TASKS

    task = TASKS.get(config.task)
    source = config.pretrain.dataset
    if task is None:
        return config
    if source == "builtin":
        if task.builtin_dataset is not None:
            return config
        cached = default_dataset_path(task.name)
        if cached.is_file():
            if announce:
                print(f"[wsrl] pretrain.dataset: using {cached} (made earlier by `wsrl dataset generate`)", flush=True)
            return dataclasses.replace(config, pretrain=dataclasses.replace(config.pretrain, dataset=str(cached)))
        command = generate_command(task)
        if command is None:
            raise ConfigError(f"config field 'pretrain.dataset': task {task.name!r} has no built-in dataset and no local generator; "
                              f"give its D4RL .hdf5 file or Minari dataset, e.g. pretrain.dataset={task.d4rl_dataset or task.name}.hdf5")
        estimate = {"locomotion": " (it trains a behaviour SAC, 1M steps by default: 2.5-4 h on 2 CPU cores, a progress bar shows the "
                                  "time left; add --train-steps 100000 for a tenth, see docs/datasets.md)",
                    "antmaze": " (minutes)", "maze": " (seconds)"}.get(task.family, "")
        raise ConfigError(f"config field 'pretrain.dataset': task {task.name!r} has no built-in dataset; make it first with "
                          f"`{command}`{estimate}, then run again (the file is found there), or give pretrain.dataset=PATH")
    looks_like_path = os.sep in source or source.endswith((".hdf5", ".h5"))
    if looks_like_path and not Path(source).exists():
        raise ConfigError(f"config field 'pretrain.dataset': {source!r} does not exist; expected a D4RL .hdf5 file or a Minari dataset directory")
    return config


def needs_offline_data(config: Config, pretrain_first: bool) -> bool:
    f = config.finetune
    pretraining = pretrain_first and not f.checkpoint and f.init != "scratch"
    return pretraining or f.offline_mixing_ratio > 0 or (f.warmup == "dataset" and f.warmup_steps > 0)


def check_checkpoint(config: Config) -> None:
    """finetune.checkpoint exists, is a wsrl checkpoint, and fits the task and the agent;
    a checkpoint whose pre-training had not settled gets one warning (the run still starts)."""
    from envs.tasks import TASKS
    from learner.checkpoint import check_compatible, read_checkpoint

    path = config.finetune.checkpoint
    if not path:
        return
    checkpoint = read_checkpoint(path)  # CheckpointError (a ValueError) names the problem
    spec = TASKS[config.task].spec() if config.task in TASKS else checkpoint.spec
    check_compatible(checkpoint, config.agent, spec)
    warn_if_unsettled(checkpoint.readiness, path)


def warn_if_unsettled(readiness: Optional[dict], checkpoint: str) -> None:
    """Prints (stderr) the warning for fine-tuning from a pre-training that had not settled."""
    import sys

    from learner.readiness import unsettled_warning

    text = unsettled_warning(readiness, str(checkpoint))
    if text:
        print(text, file=sys.stderr, flush=True)


def check_bind(address: str, token: Optional[str], tls_cert: Optional[str], tls_key: Optional[str]) -> None:
    """The learner's bind address parses, and off loopback comes with a token; TLS files pair."""
    from learner.distributed.server import is_loopback, split_address

    host, _ = split_address(address)
    if not is_loopback(host) and not token:
        raise ValueError(f"--bind {address!r} is not loopback: an auth token is required (--token, --token-file or WSRL_TOKEN)")
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS: give both --tls-cert and --tls-key, or neither")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"{flag}: {path!r} does not exist")
    check_port(address)


def check_port(address: str) -> None:
    """The learner can bind `address` now: the host resolves to an address of this machine and
    nothing listens on the port. Raises ValueError naming the problem (in well under a second;
    gRPC itself only fails after its own retries). Binds a plain socket and closes it."""
    import errno
    import socket

    from learner.distributed.server import split_address

    host, port = split_address(address)
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"--bind {address!r}: host {host!r} does not resolve ({e.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # SO_REUSEADDR as servers set it: a port whose last connections are in TIME_WAIT is
        # free; one that a process listens on is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"--bind {address!r}: port {port} is in use (another learner?); stop it or choose another port") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"--bind {address!r}: {host!r} is not an address of this machine") from None
            if e.errno == errno.EACCES:
                raise ValueError(f"--bind {address!r}: port {port} needs privileges; choose a port >= 1024") from None
            raise ValueError(f"--bind {address!r}: cannot bind ({e.strerror})") from None


def check_start(config: Config, command: str, run_dir: Optional[str] = None, pretrain_first: bool = True) -> tuple[Config, Path]:
    """All checks of a `wsrl finetune` / `wsrl learner` / `wsrl run` start. Returns (config
    with the dataset resolved, the run directory to use). Writes nothing."""
    from learner.runs import check_run_dir, resolve_run_dir

    path = resolve_run_dir(config, command, run_dir)
    check_run_dir(path)
    check_checkpoint(config)
    if needs_offline_data(config, pretrain_first):
        config = resolve_dataset(config)
    if command == "run" and pretrain_first and not config.finetune.checkpoint and config.finetune.init != "scratch":
        check_run_dir(path / "pretrain")
    return config, path


class RunDirGuard:
    """Undoes what a failed start wrote into a run directory: removes the entries that were not
    there before (and the directory itself if it did not exist). `keep()` once the run is on."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.existed = self.path.exists()
        self.before = set(os.listdir(self.path)) if self.existed and self.path.is_dir() else set()
        self.kept = False

    def keep(self) -> None:
        self.kept = True

    def undo(self) -> None:
        import shutil

        if self.kept or not self.path.exists():
            return
        if not self.existed:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in set(os.listdir(self.path)) - self.before:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def __enter__(self) -> "RunDirGuard":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.undo()


# What `wsrl pretrain --resume DIR` may change: the budget and when to stop (anything else would
# make the continued run a different pre-training than the one saved), and the display.
RESUMABLE_PRETRAIN_FIELDS = ("pretrain.num_steps", "pretrain.stop_when_settled", "logging.progress")


def resumed_pretrain_config(run_dir: str, overrides: tuple[str, ...] = ()) -> Config:
    """The config of the pre-training saved in `run_dir`, with `overrides` of
    RESUMABLE_PRETRAIN_FIELDS applied. Checks, writing nothing, that there is something to
    continue: a checkpoint with the state to continue from, and steps left to run."""
    import yaml

    from learner.checkpoint import read_checkpoint
    from learner.config import _merge, config_from_dict, parse_override, validate

    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"--resume {run_dir!r}: no pre-training there (no config.yaml)")
    if not (path / "checkpoint.ckpt").is_file():
        raise FileNotFoundError(f"--resume {run_dir!r}: no checkpoint.ckpt to continue from (stopped before its first save)")
    config = config_from_dict(yaml.safe_load((path / "config.yaml").read_text()))
    for text in overrides:
        key = text.split("=", 1)[0]
        if key not in RESUMABLE_PRETRAIN_FIELDS:
            raise ConfigError(f"--resume: {key!r} cannot change when a pre-training continues; expected one of {', '.join(RESUMABLE_PRETRAIN_FIELDS)}")
        config = _merge(config, parse_override(text))
    validate(config)
    saved = read_checkpoint(path / "checkpoint.ckpt")
    done = int(saved.counters.get("pretrain_steps", 0))
    stopped = bool(saved.counters.get("interrupted"))
    if "sample_key" not in saved.counters:
        raise ValueError(f"--resume {run_dir!r}: its checkpoint holds no state to continue from (written before pre-training could resume)")
    if done >= config.pretrain.num_steps:
        raise ValueError(f"--resume {run_dir!r}: the pre-training finished at {done} steps; to pre-train longer give pretrain.num_steps=N "
                         f"with N > {done}")
    if not stopped and config.pretrain.stop_when_settled and (saved.readiness or {}).get("verdict") == "settled":
        raise ValueError(f"--resume {run_dir!r}: the pre-training stopped at step {done} because it had settled; "
                         "add pretrain.stop_when_settled=false to train on to pretrain.num_steps")
    return config
