"""Serves one learner run to its end, for `wsrl learner` and the learner process of `wsrl run`.

The run directory, the learner state it saves and resumes, the evaluations, the final
checkpoint and summary.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

from learner.distributed.launch import LAUNCH_FILE

STATE_DIR = "learner_state"
# How long a learner that has its env steps waits for the actors seen lately to ask once more
# (and hear that it is done) before it stops.
FINISH_NOTICE_S = 5.0


def resumed_config(run_dir: str):
    """The config of the learner run saved in `run_dir` (from its latest agent file)."""
    from learner.checkpoint import CheckpointError, read_checkpoint

    files = sorted(Path(run_dir, STATE_DIR).glob("agent-*.ckpt"))
    if not files:
        raise CheckpointError(f"--resume {run_dir!r}: no learner state in {str(Path(run_dir, STATE_DIR))!r}")
    return read_checkpoint(files[-1]).config


def learner_spec(config) -> dict:
    """The env spec the learner serves: the task's, or the checkpoint's for a user env."""
    from envs.tasks import TASKS

    if config.task in TASKS:
        return TASKS[config.task].spec()
    if config.finetune.checkpoint:
        from learner.checkpoint import read_checkpoint

        return read_checkpoint(config.finetune.checkpoint).spec
    raise ValueError(f"config field 'task': {config.task!r} is not a built-in task; give finetune.checkpoint so its spec can be used")


def serve_learner(
    config,
    settings,
    address: str = "127.0.0.1:50051",
    run_dir: Optional[str] = None,
    token: Optional[str] = None,
    status_token: Optional[str] = None,
    tls_cert: Optional[str] = None,
    tls_key: Optional[str] = None,
    stop_at_num_steps: bool = True,
    ready: Optional[Callable[..., None]] = None,
    stop: Any = None,
    quiet: bool = False,
    resume: Optional[str] = None,
    command: str = "learner",
    actor_tokens: Optional[str] = None,
    launch: Optional[dict] = None,
    admin_token: Optional[str] = None,
) -> Path:
    """Runs the learner server until `stop` (a threading.Event; `wsrl learner` sets it on
    SIGINT/SIGTERM) is set or (with `stop_at_num_steps`) `finetune.num_steps` env steps have
    been trained on. Writes the run's logs, the learner state, the final checkpoint and
    `summary.json` into the run directory; returns it. `ready(address, banner)` is called once
    the server listens. `actor_tokens`: a per-actor tokens file (`server.read_actor_tokens`).
    `launch`: the command's launch settings, saved as RUN_DIR/launch.json for `--resume`.
    `admin_token`: the token of ActorCommand (`wsrl pause|resume|estop`).
    A start that fails leaves the run directory as it was."""
    import threading

    from learner.checkpoint import save_checkpoint
    from learner.config import to_dict
    from learner.distributed.auth import read_actor_tokens
    from learner.distributed.server import LearnerServer
    from learner.distributed.trainer import Trainer
    from learner.networks import describe_matmul_dtype
    from learner.run_logger import RunLogger
    from learner.runs import describe_device, prepare_run_dir, resolve_run_dir
    from learner.startup import RunDirGuard
    from learner.summary import print_result, run_summary, write_summary

    f = config.finetune
    stop = stop if stop is not None else threading.Event()
    tokens = read_actor_tokens(actor_tokens) if actor_tokens else None  # (a bad file: nothing written)
    guard = RunDirGuard(Path(resume) if resume else resolve_run_dir(config, "learner", run_dir))
    with guard:
        path = Path(resume) if resume else prepare_run_dir(config, "learner", run_dir)
        spec = learner_spec(config)
        # The full learner state (agent, replay, counters, actor sequence numbers) is saved at
        # start, every finetune.checkpoint_every env steps, every settings.state_every_s seconds
        # (while data arrives) and at stop, so `--resume` continues exactly after any kill.
        settings = dataclasses.replace(settings, state_dir=str(path / STATE_DIR), state_every=f.checkpoint_every)
        logger = RunLogger(path, config.logging, to_dict(config), path.name)
        try:
            # Resuming: a fresh template agent (the saved state replaces it, RNG included).
            agent = None
            if resume:
                from learner.agents import make_agent, observation_spec_of

                agent = make_agent(f.algorithm, config.agent, observation_spec_of(spec), spec["action_dim"], config.seed)
            trainer = Trainer(config, spec, settings, agent=agent, logger=logger)
            trainer.budget_steps = f.num_steps if stop_at_num_steps else 0
            if resume:
                trainer.resume(settings.state_dir)
                # Rows after the saved step are replaced, not duplicated; the counters row at the
                # saved step is written again as the resumed learner starts.
                logger.resume_at(trainer.processed, restart_groups=("learner",))
                trainer.evaluations.restore(_csv_rows(path / "eval.csv"))
            server = LearnerServer(trainer, address, token, status_token, tls_cert, tls_key, actor_tokens=tokens, admin_token=admin_token).start()
        except BaseException:
            logger.close()
            raise
        if launch is not None:  # what `--resume` restores (a resume saves what it now runs with)
            import json

            from envs.atomic_files import atomic_write_bytes

            atomic_write_bytes(path / LAUNCH_FILE, (json.dumps(launch, indent=1) + "\n").encode())
        if not resume:
            guard.keep()
    checkpoint = path / "checkpoint.ckpt"
    started = time.perf_counter()
    source = f"resumed at {trainer.processed} env steps" if resume else (f"from {f.checkpoint}" if f.checkpoint else "from scratch")
    banner = (f"{f.algorithm} on {config.task} {source}; {settings.mode} mode, warmup {f.warmup_steps}, UTD {f.utd_ratio}; "
              f"{describe_device()}, {describe_matmul_dtype(config.agent.critic_matmul_dtype)}")
    if not quiet:
        print(f"[wsrl learner] {banner}; serving policy version {trainer.latest_policy()[0]} on {server.address} -> {path}", flush=True)
        when = f"env step 0, every {f.eval_every} and at {f.num_steps}" if f.eval_every else f"env steps 0 and {f.num_steps}"
        from envs.tasks import TASKS

        alone = ("without one only the final evaluation is made" if config.task in TASKS
                 else "without one none is made (the learner cannot drive a robot env itself)")
        print(f"[wsrl learner] evaluations at {when} (eval.csv): attach an evaluator with "
              f"`wsrl actor --evaluate --learner {server.address} --env {config.task}`; {alone}", flush=True)
    if ready is not None:
        ready(server.address, banner)
    ok = False
    with logger:
        try:
            while not stop.wait(0.2):
                status = trainer.status()
                if trainer.error is not None:
                    raise RuntimeError("the training thread failed (see above)")
                if stop_at_num_steps and status["processed_steps"] >= f.num_steps:
                    # An attached evaluator finishes what is pending; the actors seen lately
                    # hear that the learner is done (at their next push or state report, so a
                    # robot stops instead of driving on against a learner that is gone).
                    deadline = time.monotonic() + FINISH_NOTICE_S
                    while ((trainer.evaluations.pending and trainer.evaluations.evaluator_active())
                           or (trainer.actors_not_told() and time.monotonic() < deadline)) and not stop.wait(0.2):
                        pass
                    break
            ok = True
        finally:
            server.stop()  # the trainer finishes what it accepted and saves its state
            status = trainer.status()
            wall = time.perf_counter() - started
            finished = ok and trainer.error is None and status["processed_steps"] >= f.num_steps
            if finished:
                _final_evaluation(config, trainer, status)
            save_checkpoint(checkpoint, trainer.agent, config, spec, _counters(status))
            summary = run_summary(command, config, trainer.evaluations.history(), trainer.warmup_env_steps, status["processed_steps"],
                                  status["updates"], wall, interrupted=not finished)
            write_summary(path, summary)
    if not quiet:
        print(f"[wsrl learner] {'done' if finished else 'stopped'}: {status['processed_steps']} env steps, {status['updates']} updates "
              f"(UTD {status['achieved_utd']:.2f}), policy version {status['policy_version']}; state {path / STATE_DIR}, checkpoint {checkpoint}", flush=True)
        print_result(summary, path, "[wsrl learner]")
    return path


def _csv_rows(path: Path) -> list[dict]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _final_evaluation(config, trainer, status: dict) -> None:
    """The evaluation at the last trained env step, made here when no evaluator reported it
    (`wsrl learner` alone): of the snapshot taken there, else of the current policy."""
    from envs.tasks import TASKS

    e = trainer.evaluations
    step = status["processed_steps"]
    evaluated = dict(e.history())
    # One final evaluation: none more when the one at finetune.num_steps was made (an actor's
    # last batch may carry the counters a little past it).
    if step in evaluated or any(s >= config.finetune.num_steps for s in evaluated) or config.task not in TASKS:
        return  # (a robot env: only an evaluator can drive it)
    version, updates, params = e.pending.get(step, (status["policy_version"], status["updates"], trainer.agent.policy_params()))
    e.record_local(step, _evaluate(config, params), version, updates)


def _counters(status: dict) -> dict:
    return {k: status[k] for k in ("env_steps", "processed_steps", "updates", "policy_version", "episodes")}


def _evaluate(config, params) -> dict:
    from actor.evaluation import evaluate
    from actor.policy import Policy
    from envs.observations import observation_spec_of
    from envs.tasks import TASKS

    if config.task not in TASKS:
        return {"return": float("nan"), "success_rate": float("nan")}
    task = TASKS[config.task]
    policy = Policy(config.agent, task.spec()["action_dim"], observation_spec_of(task.spec()))
    env = task.make_env(config.seed + 10_000, training=False)
    return evaluate(lambda o: policy(params, o, None, deterministic=True), env, config.finetune.eval_episodes, config.seed + 10_000, task.normalizer)
