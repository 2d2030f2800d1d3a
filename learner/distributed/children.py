"""The child processes of `wsrl run`: the learner, actor and evaluator entry points.

Each sets itself up to leave stop decisions to the parent and to write into its log file.

Module-level imports stay light (no jax, no grpc): a spawned actor process decides its JAX
platform before jax loads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from learner.distributed.launch import LAUNCH_DEFAULTS
from learner.distributed.serving import serve_learner


def _child_setup(log_file: str):
    """First thing in a spawned `wsrl run` child: the parent handles SIGINT/SIGTERM (a
    terminal's Ctrl-C reaches the whole process group); output goes to the run's log file so
    that nothing is glued onto the parent's progress bar."""
    from actor.interrupts import ignore_stop_signals

    ignore_stop_signals()
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _child_stop(stop_event) -> Any:
    """A threading.Event set when the parent sets `stop_event` or dies."""
    import threading

    from actor.interrupts import watch_event, watch_parent

    stop = threading.Event()
    watch_event(stop_event, stop)
    watch_parent(stop)
    return stop


def _learner_process(config_dict: dict, settings_dict: dict, run_dir: str, log_file: str, ready, stop_event, resume: bool = False) -> None:
    """Spawned: the learner (its gRPC server is created here, after the process started);
    `resume`: continue the learner state saved in `run_dir`. Its own lines go to `log_file`."""
    _child_setup(log_file)
    from learner.config import config_from_dict
    from learner.distributed.settings import DistributedSettings
    from learner.runs import keep_freed_memory

    try:
        keep_freed_memory()
        serve_learner(config_from_dict(config_dict), DistributedSettings(**settings_dict), "127.0.0.1:0", run_dir,
                      stop_at_num_steps=False, ready=lambda address, banner: ready.put(("ready", address, banner)),
                      stop=_child_stop(stop_event), command="run", resume=run_dir if resume else None,
                      launch={**LAUNCH_DEFAULTS, **{k: v for k, v in _launch_of(settings_dict).items()}})
    except BaseException as e:
        ready.put(("error", f"{type(e).__name__}: {e}", ""))
        raise


def _launch_of(settings_dict: dict) -> dict:
    """The `wsrl learner` launch settings (launch.json) of a `wsrl run` learner's settings, so
    that `wsrl learner --resume RUN_DIR` starts it as `wsrl run` did (on the default bind)."""
    keys = {"mode": "mode", "max_lead": "max_lead", "min_utd": "min_utd", "max_utd": "max_utd", "max_batch_size": "max_batch_size",
            "publish_every": "publish_every", "save_every": "state_every_s"}
    return {key: settings_dict[field] for key, field in keys.items() if field in settings_dict}


def _actor_process(settings_dict: dict, log_file: str, stop_event) -> None:
    """Spawned: one actor, on the CPU (the GPU, if any, belongs to the learner)."""
    _child_setup(log_file)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from actor.loop import ActorSettings
    from actor.process import run_actor

    result = run_actor(ActorSettings(**settings_dict), install_signal_handlers=False, stop=_child_stop(stop_event))
    sys.exit(0 if result["delivered"] else 1)


def _evaluator_process(settings_dict: dict, log_file: str, stop_event) -> None:
    """Spawned: the evaluator, on the CPU."""
    _child_setup(log_file)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from actor.evaluator import EvaluatorSettings, run_evaluator

    run_evaluator(EvaluatorSettings(**settings_dict), _child_stop(stop_event))


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
