"""`wsrl run`: a learner, actors and an evaluator as supervised child processes on this machine.

It pre-trains first when there is no checkpoint and shows one progress display; `--resume`
continues a stopped run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Optional

from learner.distributed.children import _actor_process, _evaluator_process, _last_line, _learner_process
from learner.distributed.launch import _with_finetune, settings_from_args, with_launch_defaults
from learner.distributed.serving import STATE_DIR, resumed_config


def run_local_command(args: argparse.Namespace, config: Any) -> int:
    """`wsrl run`: the checks, then `run_local` (or `--resume DIR`: the stopped run in DIR).
    Returns the exit status: 0, or 128 + the signal number after a SIGINT/SIGTERM stop."""
    from actor.interrupts import GracefulStop
    from learner.startup import check_start

    if args.resume:
        return _resume_run(args)
    args = with_launch_defaults(args)
    config, _ = check_start(config, "run", args.run_dir, pretrain_first=not args.no_pretrain)
    from learner.runs import keep_freed_memory

    keep_freed_memory()  # the pre-training before the learner runs in this process
    stop = GracefulStop("wsrl run", "stopping: actors flush, then the learner saves its state and final checkpoint")
    run_local(config, settings_from_args(args, config), args.num_actors, args.run_dir, pretrain_first=not args.no_pretrain,
              batch_size=args.batch_size, pull_every=args.pull_every, evaluator=not args.no_evaluator, interrupts=stop)
    return stop.exit_status


RUN_FILE = "run.json"  # what `wsrl run --resume` restores: the run's own settings


def _resume_run(args: argparse.Namespace) -> int:
    """`wsrl run --resume DIR`: checks there is a stopped run to continue (writing nothing),
    then continues it with the config and settings saved in DIR."""
    import json

    from actor.interrupts import GracefulStop
    from learner.config import config_from_dict
    from learner.distributed.settings import DistributedSettings
    from learner.runs import keep_freed_memory

    path = Path(args.resume)
    given = [f"--{k.replace('_', '-')}" for k in ("config", "variant", "checkpoint", "run_dir") if getattr(args, k, None) not in (None, "pointmass", "wsrl")]
    if args.overrides or given:
        raise ValueError(f"--resume {args.resume!r}: config arguments ({' '.join(given + list(args.overrides))}) are not applied to a resumed run; "
                         "it continues with the config it was started with")
    if not (path / RUN_FILE).is_file():
        hint = " (a `wsrl learner` run: continue it with `wsrl learner --resume`)" if (path / STATE_DIR).is_dir() else ""
        raise FileNotFoundError(f"--resume {args.resume!r}: no stopped `wsrl run` there (no {RUN_FILE}){hint}")
    saved = json.loads((path / RUN_FILE).read_text())
    summary = path / "summary.json"
    if summary.is_file() and not json.loads(summary.read_text()).get("interrupted", True):
        raise ValueError(f"--resume {args.resume!r}: the run finished; start a new one with another --run-dir")
    config = config_from_dict(saved["config"])
    if (path / STATE_DIR).is_dir():
        config = resumed_config(str(path))
    keep_freed_memory()
    stop = GracefulStop("wsrl run", "stopping: actors flush, then the learner saves its state and final checkpoint")
    print(f"[wsrl run] --resume {path}: continuing with the config and settings it was started with", flush=True)
    run_local(config, DistributedSettings(**saved["settings"]), saved["num_actors"], str(path), pretrain_first=saved["pretrain_first"],
              batch_size=saved["batch_size"], pull_every=saved["pull_every"], evaluator=saved["evaluator"], interrupts=stop, resume=True)
    return stop.exit_status


def _pretraining_finished(pretrain_dir: Path) -> bool:
    """Whether the pre-training in `pretrain_dir` ran to its end (not stopped)."""
    import json

    summary = pretrain_dir / "summary.json"
    return summary.is_file() and not json.loads(summary.read_text()).get("interrupted", False)


class _EvalFollower:
    """Reads new rows of eval.csv, for the progress display."""

    def __init__(self, path: Path, skip_existing: bool = False):
        self.path, self.seen, self.last = path, 0, None
        if skip_existing:  # a resumed run: the rows from before were shown then
            self.new_rows()

    def new_rows(self) -> list[dict]:
        import csv

        try:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError:
            return []
        fresh, self.seen = rows[self.seen:], len(rows)
        if fresh:
            self.last = fresh[-1]
        return fresh


def _eval_line(row: dict) -> str:
    metric = "normalized score" if row.get("normalized_score") not in (None, "") else "success rate"
    value = float(row["normalized_score"] if metric == "normalized score" else row["success_rate"])
    return f"[wsrl run] evaluation at env step {row['step']} (policy version {float(row.get('policy_version') or 0):.0f}): {metric} {value:.3g}"


# The time left is measured over 100 env steps with updates and at least ETA_MIN_S seconds,
# after the first ETA_SKIP updates (which include compiling the update): the first seconds of
# training run faster than the rest (the actor's queue is full, the evaluator not yet busy).
ETA_SKIP = 20
ETA_MIN_S = 20.0


def run_local(config, settings, num_actors: int, run_dir: Optional[str] = None, pretrain_first: bool = True,
              batch_size: int = 32, pull_every: int = 10, evaluator: bool = True, interrupts: Any = None, resume: bool = False) -> Path:
    """`wsrl run`: pre-trains if needed, then one learner, `num_actors` actor processes and an
    evaluator (multiprocessing spawn; every gRPC channel is made after the processes start),
    one progress display and one results directory. The env steps `finetune.num_steps` are
    split evenly across the actors. Returns the results directory.

    Stops: the children ignore SIGINT/SIGTERM and this process decides. On the first signal
    (`interrupts`, an `actor.interrupts.GracefulStop`) the actors flush and stop, the
    evaluator is dropped, then the learner saves its state and final checkpoint; a second
    signal kills them all at once. A child whose parent dies stops on its own. A signal during
    the pre-training saves it to continue from. `resume`: continue the stopped run in
    `run_dir` (`wsrl run --resume`): its pre-training if that was stopped, else its learner
    (state, replay, counters) with actors for the env steps still to come."""
    import json
    import multiprocessing as mp
    import signal

    from actor.interrupts import GracefulStop
    from learner.config import to_dict
    from learner.run_logger import progress_bar, write_line
    from learner.runs import resolve_run_dir
    from learner.startup import RunDirGuard
    from learner.summary import print_result

    if num_actors < 1:
        raise ValueError(f"--num-actors: got {num_actors}, expected an integer >= 1")
    f = config.finetune
    interrupts = interrupts if interrupts is not None else GracefulStop("wsrl run")
    path = resolve_run_dir(config, "run", run_dir)
    if not resume and (path / "config.yaml").exists():
        raise FileExistsError(f"run directory {str(path)!r} already holds a run (config.yaml exists); choose another --run-dir")
    guard = RunDirGuard(path)
    learner_resumes = resume and (path / STATE_DIR).is_dir()
    interrupts.install()  # a signal during the pre-training stops it with a checkpoint
    if not resume:
        from envs.atomic_files import atomic_write_bytes

        path.mkdir(parents=True, exist_ok=True)
        run_file = {"config": to_dict(config), "settings": dataclasses.asdict(settings), "num_actors": num_actors, "pretrain_first": pretrain_first,
                    "batch_size": batch_size, "pull_every": pull_every, "evaluator": evaluator}
        atomic_write_bytes(path / RUN_FILE, (json.dumps(run_file, indent=1) + "\n").encode())
    if not learner_resumes and not f.checkpoint and pretrain_first and f.init != "scratch":
        from learner.pretrain import pretrain

        pretrain_dir = path / "pretrain"
        try:
            if resume and _pretraining_finished(pretrain_dir):
                checkpoint = pretrain_dir / "checkpoint.ckpt"
            else:
                if resume and pretrain_dir.is_dir() and not (pretrain_dir / "checkpoint.ckpt").is_file():
                    import shutil

                    shutil.rmtree(pretrain_dir)  # killed before its first save: nothing to continue from, start it again
                message, interrupts.message = interrupts.message, "stopping after this dispatch: saving the pre-training to continue from"
                checkpoint = pretrain(config, str(pretrain_dir), stop=interrupts, resume=resume and (pretrain_dir / "checkpoint.ckpt").is_file(),
                                      resume_command=f"wsrl run --resume {path}")
                interrupts.message = message
        except BaseException:
            if not (pretrain_dir / "checkpoint.ckpt").is_file():
                guard.undo()  # a pre-training that failed to start leaves nothing behind
            interrupts.restore()
            raise
        if interrupts.requested.is_set():
            interrupts.restore()
            return path
        config = _with_finetune(config, checkpoint=str(checkpoint))
        from learner.checkpoint import read_checkpoint
        from learner.startup import warn_if_unsettled

        warn_if_unsettled(read_checkpoint(config.finetune.checkpoint).readiness, config.finetune.checkpoint)
    logs = path / "logs"
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    learner_stop, actors_stop = ctx.Event(), ctx.Event()
    processes: list = []

    def kill_all() -> None:  # the second Ctrl-C
        for p in processes:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)

    interrupts.on_force = kill_all

    def spawn(target, args, name):
        # Started with SIGINT/SIGTERM ignored, so that a Ctrl-C during their start-up (before
        # their own first line runs) cannot kill them half-way.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            process = ctx.Process(target=target, args=args, name=name)
            process.start()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        processes.append(process)
        return process

    learner = spawn(_learner_process, (to_dict(config), dataclasses.asdict(settings), str(path), str(logs / "learner.log"), ready, learner_stop,
                                       learner_resumes), "wsrl-learner")
    actors: list = []
    evaluator_process = None
    client = None
    bar = None
    completed = False
    try:
        while True:
            try:
                kind, address, banner = ready.get(timeout=0.5)
                break
            except Exception:  # queue.Empty
                if interrupts.requested.is_set():
                    raise KeyboardInterrupt from None
                if not learner.is_alive():
                    kind, address, banner = "error", f"exited with code {learner.exitcode}", ""
                    break
        if kind == "error":
            learner.join(timeout=30)
            last = _last_line(logs / "learner.log")
            if not resume and not (path / "pretrain" / "checkpoint.ckpt").is_file():
                guard.undo()  # a failed start leaves the run directory as it was (a pre-training is kept)
            raise RuntimeError(f"the learner failed to start: {address}" + (f" ({last})" if last and last not in address else ""))
        from actor.client import LearnerClient

        client = LearnerClient(address)
        # A resumed learner already holds some env steps: the actors bring the rest (with other
        # seeds than the first actors, so they do not replay the same episodes).
        received = client.status().env_steps if learner_resumes else 0
        left = max(0, f.num_steps - received)
        shares = [left // num_actors + (i < left % num_actors) for i in range(num_actors)]
        for i, steps in enumerate(shares):
            if steps == 0:
                continue
            actor_settings = {
                "learner": address, "env": config.task, "actor_id": f"actor-{i}", "seed": config.seed + 1000 * i + received,
                "num_steps": steps, "batch_size": batch_size, "pull_every": pull_every,
            }
            actors.append(spawn(_actor_process, (actor_settings, str(logs / f"actor-{i}.log"), actors_stop), f"wsrl-actor-{i}"))
        if evaluator:
            evaluator_settings = {"learner": address, "env": config.task, "evaluator_id": "evaluator-0"}
            evaluator_process = spawn(_evaluator_process, (evaluator_settings, str(logs / "evaluator.log"), actors_stop), "wsrl-evaluator")
        print(f"[wsrl run] learner: {banner}", flush=True)
        print(f"[wsrl run] learner on {address} ({settings.mode} mode), {num_actors} actor(s){', 1 evaluator' if evaluator else ''}, "
              f"{f.num_steps} env steps" + (f" ({received} done before)" if learner_resumes else "")
              + f" -> {path} (process logs in {logs})", flush=True)
        bar = progress_bar(f.num_steps, f"run {f.algorithm} x{num_actors}", config.logging.progress, initial=received)
        follower = _EvalFollower(path / "eval.csv", skip_existing=learner_resumes)
        done, eta_from, postfix = received, None, {}
        while not interrupts.requested.is_set():
            failed = [a for a in actors if a.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"actor process {failed[0].name} exited with code {failed[0].exitcode} (see {logs / (failed[0].name[5:] + '.log')})")
            if not learner.is_alive():
                raise RuntimeError(f"the learner process exited early (code {learner.exitcode}; see {logs / 'learner.log'})")
            try:
                s = client.status()
                bar.update(s.processed_steps - done)
                done = s.processed_steps
                postfix = dict(updates=s.updates, utd=f"{s.achieved_utd:.2f}", version=s.policy_version, ret=f"{s.recent_return:.1f}")
                if s.updates >= ETA_SKIP and eta_from is None:  # past the first (compiling) updates
                    eta_from = (time.perf_counter(), s.processed_steps)
                elif (eta_from is not None and len(eta_from) == 2 and s.processed_steps - eta_from[1] >= 100
                      and time.perf_counter() - eta_from[0] >= ETA_MIN_S):
                    rate = (s.processed_steps - eta_from[1]) / (time.perf_counter() - eta_from[0])
                    write_line(bar, f"[wsrl run] {rate:.1f} env steps/s with updates: about {(f.num_steps - s.processed_steps) / rate / 60:.1f} min left")
                    eta_from = (*eta_from, True)
            except Exception:  # the display is best effort
                s = None
            for row in follower.new_rows():
                write_line(bar, _eval_line(row))
            if follower.last is not None:
                postfix["eval"] = f"{float(follower.last.get('normalized_score') or follower.last['success_rate']):.3g}"
            bar.set_postfix(**postfix, refresh=False)
            if not any(a.is_alive() for a in actors) and s is not None and s.processed_steps >= s.env_steps:
                break
            interrupts.requested.wait(0.5)
        if not interrupts.requested.is_set() and evaluator_process is not None and evaluator_process.is_alive():
            write_line(bar, "[wsrl run] training done; waiting for the last evaluation(s)")
            while evaluator_process.is_alive() and learner.is_alive() and not interrupts.requested.wait(0.5):
                for row in follower.new_rows():
                    write_line(bar, _eval_line(row))
        for row in follower.new_rows():
            write_line(bar, _eval_line(row))
        if follower.last is not None:
            postfix["eval"] = f"{float(follower.last.get('normalized_score') or follower.last['success_rate']):.3g}"
        bar.set_postfix(**postfix, refresh=False)
        completed = not interrupts.requested.is_set()
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
        # Actors first (they flush to the live learner), the evaluator (dropped when
        # interrupted), then the learner saves its state and final checkpoint.
        actors_stop.set()
        deadline = time.monotonic() + 15.0
        for a in actors:
            a.join(timeout=max(0.1, deadline - time.monotonic()))
            if a.is_alive():
                a.kill()
                a.join(timeout=5)
        if evaluator_process is not None:
            if not completed:  # interrupted or failed: the evaluation in progress is dropped
                evaluator_process.kill()
            evaluator_process.join(timeout=30)
            if evaluator_process.is_alive():
                evaluator_process.kill()
        learner_stop.set()
        learner.join()
        interrupts.restore()
    if learner.exitcode != 0:
        raise RuntimeError(f"the learner process exited with code {learner.exitcode} (see {logs / 'learner.log'})")
    import json

    summary = json.loads((path / "summary.json").read_text())
    state = "stopped" if summary.get("interrupted") else "done"  # a stop after the last step still finished the run
    print(f"[wsrl run] {state}: learner state {path / STATE_DIR}, checkpoint {path / 'checkpoint.ckpt'}", flush=True)
    print_result(summary, path, "[wsrl run]")
    if state == "stopped":
        print(f"[wsrl run] continue with: wsrl run --resume {path}", flush=True)
    return path
