"""`wsrl learner`, `wsrl actor`, `wsrl run` and `wsrl status`: argument parsing and commands.

`learner.cli` calls `add_commands` to register the subcommands and `run_command` to run one.
Module-level imports stay light (no jax, no grpc) so `wsrl --help` is fast and a spawned
actor process decides its JAX platform before jax loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

COMMANDS = ("learner", "actor", "run", "status")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="pointmass", help="config family in configs/ or a YAML path (default: pointmass)")
    parser.add_argument("--variant", default="wsrl", help="variant in that file (default: wsrl)")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value", help="override any config field")


def _add_learner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="pre-trained checkpoint (same as finetune.checkpoint=PATH)")
    p.add_argument("--run-dir", default=None, help="results directory (default: runs/<task>-<variant>-<command>-<time>)")
    p.add_argument("--mode", choices=("sync", "async"), default="sync", help="sync: exactly M critic updates per env step, actors held back beyond --max-lead (Algorithm 1); async: actors never wait, UTD within --min-utd/--max-utd (default: sync)")
    p.add_argument("--max-lead", type=int, default=64, help="sync: env steps an actor may be ahead of the learner (W, default 64)")
    p.add_argument("--min-utd", type=float, default=0.0, help="async: warn when critic updates per env step fall below this")
    p.add_argument("--max-utd", type=float, default=0.0, help="async: at most this many critic updates per env step (0: no cap)")
    p.add_argument("--max-batch-size", type=int, default=1024, help="largest transition batch accepted per push (default 1024)")
    p.add_argument("--publish-every", type=int, default=1, help="publish a policy version every N fused updates (default 1)")
    p.add_argument("--save-every", type=float, default=60.0, metavar="SECONDS", help="save the learner state (for --resume) at least this often while data arrives, "
                   "besides every finetune.checkpoint_every env steps, at start and at stop (default 60; 0: by env steps only)")


def _add_auth_args(p: argparse.ArgumentParser, server: bool) -> None:
    p.add_argument("--token", default=None, help="auth token (default: $WSRL_TOKEN); required to bind off loopback")
    p.add_argument("--token-file", default=None, help="read the auth token from this file")
    if server:
        p.add_argument("--status-token", default=None, help="token for GetStatus (default: $WSRL_STATUS_TOKEN); off loopback status is refused without one")
        p.add_argument("--tls-cert", default=None, help="PEM server certificate (with --tls-key) to serve TLS")
        p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
        p.add_argument("--actor-tokens", default=None, metavar="FILE", help="per-actor tokens: lines 'ACTOR_ID TOKEN'; a call with one of them is served for that actor id only")
    else:
        p.add_argument("--tls-ca", default=None, help="PEM root certificate to connect over TLS")


def add_commands(subparsers: Any, add_config_args: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> None:
    """Registers the distributed subcommands on the `wsrl` parser's subparsers."""
    add_config = add_config_args or _add_config_args

    p = subparsers.add_parser("learner", help="serve the learner: actors connect over gRPC (run it on the GPU box)")
    add_config(p)
    _add_learner_args(p)
    _add_auth_args(p, server=True)
    p.add_argument("--bind", default="127.0.0.1:50051", help="HOST:PORT to listen on (default 127.0.0.1:50051; another host needs --token)")
    p.add_argument("--forever", action="store_true", help="keep serving after finetune.num_steps env steps (default: stop there)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the learner run in DIR (its config, agent, replay, counters and actor sequence numbers); config arguments are ignored")

    p = subparsers.add_parser("actor", help="run one actor against a learner")
    p.add_argument("--learner", required=True, metavar="HOST:PORT", help="the learner's address")
    p.add_argument("--env", default="pointmass-goal", help="task name, gymnasium id or 'module:EnvClass' entry point (default pointmass-goal)")
    p.add_argument("--actor-id", default="", help="stable id of this actor across restarts (default: hostname)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-steps", type=int, default=0, help="env steps to take (default 0: until stopped)")
    p.add_argument("--batch-size", type=int, default=32, help="transitions per push (default 32)")
    p.add_argument("--max-latency", type=float, default=0.5, help="seconds before a partial batch is sent (default 0.5)")
    p.add_argument("--pull-every", type=int, default=10, help="env steps between policy pulls (default 10; 0: episode ends only)")
    p.add_argument("--no-pull-at-episode-end", action="store_true", help="do not pull at episode ends")
    p.add_argument("--max-episode-steps", type=int, default=0, help="time limit for gymnasium envs")
    p.add_argument("--spool-dir", default="", help="keep unacknowledged (and not yet checkpointed) batches on disk here (survives a restart)")
    p.add_argument("--step-period", type=float, default=0.0, metavar="SECONDS", help="at least this long per env step (a control period; default 0: as fast as possible)")
    p.add_argument("--max-backoff", type=float, default=5.0, metavar="SECONDS", help="longest wait between reconnection attempts to the learner (default 5)")
    robot = p.add_argument_group("robot mode (docs/robot.md)")
    robot.add_argument("--robot", action="store_true", help="fixed-rate control loop never blocked by the learner: batches are spooled and sent in the background, "
                       "policies switch at episode ends; SIGUSR1 pauses, SIGUSR2 resumes, SIGQUIT is an emergency stop (needs --spool-dir)")
    robot.add_argument("--control-hz", type=float, default=0.0, metavar="HZ", help="robot mode: control steps per second (default: the env's control_hz)")
    robot.add_argument("--max-action-change", type=float, default=0.0, metavar="DELTA", help="robot mode: largest per-step change of each action component, policy units [-1, 1] (default 0: no limit)")
    robot.add_argument("--switch-mid-episode", action="store_true", help="robot mode: adopt new policy versions at any step (default: only when an episode starts)")
    robot.add_argument("--status-every", type=float, default=10.0, metavar="SECONDS", help="robot mode: seconds between status lines, with the control-period statistics (default 10; 0: none)")
    robot.add_argument("--teleop", default="", metavar="DEVICE", help="robot mode: a human takeover device, polled every step: keyboard (this terminal), "
                       "spacemouse (pip install 'wsrl[spacemouse]'), or 'module:function' f(observation) -> action in [-1, 1] or None")
    robot.add_argument("--workspace-low", type=_floats, default=(), metavar="X,Y,...", help="robot mode: lower workspace limits on the env's "
                       "info['workspace_position'], written --workspace-low=-1,-0.5 (default: the env's workspace_bounds, if any)")
    robot.add_argument("--workspace-high", type=_floats, default=(), metavar="X,Y,...", help="robot mode: upper workspace limits (with --workspace-low)")
    robot.add_argument("--workspace-mode", choices=("stop", "project"), default="stop", help="robot mode: outside the workspace is a safety stop (stop, default), "
                       "or actions are limited to stay inside (project: needs the env's workspace_action_scale)")
    _add_auth_args(p, server=False)

    p = subparsers.add_parser("run", help="one learner + N actor processes on this machine (pre-trains first without a checkpoint)")
    add_config(p)
    _add_learner_args(p)
    p.add_argument("--num-actors", type=int, default=1, help="actor processes (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="actor transitions per push (default 32)")
    p.add_argument("--pull-every", type=int, default=10, help="actor env steps between policy pulls (default 10)")
    p.add_argument("--no-pretrain", action="store_true", help="without a checkpoint, fine-tune from scratch instead of pre-training first")

    p = subparsers.add_parser("status", help="print a learner's state")
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--token", default=None, help="status token (default: $WSRL_STATUS_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="PEM root certificate to connect over TLS")


def _floats(text: str) -> tuple:
    """'0.1,-2,3' -> (0.1, -2.0, 3.0), for argparse."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected comma-separated numbers such as -0.5,0,0.2") from None


def _token(args: argparse.Namespace, env: str = "WSRL_TOKEN") -> Optional[str]:
    if getattr(args, "token_file", None):
        return Path(args.token_file).read_text().strip()
    return getattr(args, "token", None) or os.environ.get(env) or None


def settings_from_args(args: argparse.Namespace):
    from learner.distributed.trainer import DistributedSettings

    return DistributedSettings(
        mode=args.mode,
        max_lead=args.max_lead,
        min_utd=args.min_utd,
        max_utd=args.max_utd,
        max_batch_size=args.max_batch_size,
        publish_every=args.publish_every,
        state_every_s=args.save_every,
    )


def run_command(args: argparse.Namespace, config: Any = None) -> int:
    """Runs one of COMMANDS; `config` is the resolved Config for learner/run (else None)."""
    if getattr(args, "checkpoint", None) and config is not None:
        config = _with_finetune(config, checkpoint=args.checkpoint)
    if args.command in ("learner", "run"):
        from learner.runs import keep_freed_memory

        keep_freed_memory()  # the learner's process (and, for run, the pre-training before it)
    if args.command == "learner":
        if args.resume:
            config = resumed_config(args.resume)
        serve_learner(
            config,
            settings_from_args(args),
            address=args.bind,
            run_dir=args.run_dir,
            token=_token(args),
            status_token=args.status_token or os.environ.get("WSRL_STATUS_TOKEN") or None,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            actor_tokens=args.actor_tokens,
            stop_at_num_steps=not args.forever,
            resume=args.resume,
        )
        return 0
    if args.command == "actor":
        from actor.loop import ActorError, ActorSettings, exit_status, run_actor

        settings = ActorSettings(
            learner=args.learner, env=args.env, actor_id=args.actor_id, seed=args.seed, num_steps=args.num_steps,
            batch_size=args.batch_size, max_latency_s=args.max_latency, pull_every=args.pull_every,
            pull_at_episode_end=not args.no_pull_at_episode_end, max_episode_steps=args.max_episode_steps,
            token=_token(args) or "", tls_ca=args.tls_ca or "", spool_dir=args.spool_dir,
            step_period_s=args.step_period, max_backoff_s=args.max_backoff,
            robot=args.robot, control_hz=args.control_hz, max_action_change=args.max_action_change,
            switch_mid_episode=args.switch_mid_episode, status_every_s=args.status_every, teleop=args.teleop,
            workspace_low=args.workspace_low, workspace_high=args.workspace_high, workspace_mode=args.workspace_mode,
        )
        try:
            result = run_actor(settings)
        except (ActorError, ValueError) as e:
            print(f"wsrl actor: error: {e}", file=sys.stderr)
            return 1
        return exit_status(result)
    if args.command == "status":
        return print_status(args.address, args.token or os.environ.get("WSRL_STATUS_TOKEN"), args.tls_ca)
    if args.command == "run":
        run_local(config, settings_from_args(args), args.num_actors, args.run_dir, pretrain_first=not args.no_pretrain,
                  batch_size=args.batch_size, pull_every=args.pull_every)
        return 0
    raise ValueError(f"command: got {args.command!r}, expected one of {', '.join(COMMANDS)}")


def _with_finetune(config, **changes):
    return dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, **changes))


# ---- wsrl status --------------------------------------------------------------------------


def format_status(s: Any) -> str:
    """A StatusResponse as a few human-readable lines."""
    lines = [
        f"mode {s.mode}; env steps {s.env_steps} (processed {s.processed_steps}, warmup {s.warmup_steps}{', training' if s.training else ', warming up'})",
        f"updates {s.updates} fused ({s.critic_updates} critic); achieved UTD {s.achieved_utd:.2f}; policy version {s.policy_version}",
        f"buffer {s.buffer_size}; episodes {s.episodes} (recent return {s.recent_return:.2f}); rejected batches {s.rejected_batches}, duplicates {s.duplicate_batches}",
        f"connected actors: {len(s.actors)}",
    ]
    for a in s.actors:
        lines.append(f"  {a.actor_id} (run {a.run_label}): {a.env_steps} env steps, {a.pending} pending, seen {a.seconds_since_seen:.1f} s ago")
    return "\n".join(lines)


def print_status(address: str, token: Optional[str] = None, tls_ca: Optional[str] = None) -> int:
    """`wsrl status HOST:PORT`: prints the learner's state; 1 if it cannot be reached."""
    import grpc

    from actor.client import LearnerClient, connection_hint

    client = LearnerClient(address, token, tls_ca)
    try:
        print(format_status(client.status()))
        return 0
    except grpc.RpcError as e:
        hint = connection_hint(address, tls_ca) if e.code() == grpc.StatusCode.UNAVAILABLE else ""
        print(f"wsrl status: {address}: {e.code().name}: {e.details()}" + (f"\nwsrl status: {hint}" if hint else ""), file=sys.stderr)
        return 1
    finally:
        client.close()


# ---- wsrl learner ---------------------------------------------------------------------------


def resumed_config(run_dir: str):
    """The config of the learner run saved in `run_dir` (from its latest agent file)."""
    from learner.checkpoint import CheckpointError, read_checkpoint

    files = sorted(Path(run_dir, STATE_DIR).glob("agent-*.ckpt"))
    if not files:
        raise CheckpointError(f"--resume {run_dir!r}: no learner state in {str(Path(run_dir, STATE_DIR))!r}")
    return read_checkpoint(files[-1]).config


STATE_DIR = "learner_state"


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
    ready: Optional[Callable[[str], None]] = None,
    stop: Any = None,
    quiet: bool = False,
    resume: Optional[str] = None,
    actor_tokens: Optional[str] = None,
) -> Path:
    """Runs the learner server until SIGINT/SIGTERM, `stop` (an Event) is set, or (with
    `stop_at_num_steps`) `finetune.num_steps` env steps have been trained on. Writes the
    run's logs and final checkpoint into the run directory; returns it. `actor_tokens`: a
    per-actor tokens file (`server.read_actor_tokens`)."""
    import signal
    import threading

    from learner.checkpoint import save_checkpoint
    from learner.config import to_dict
    from learner.distributed.server import LearnerServer
    from learner.distributed.trainer import Trainer
    from learner.run_logger import RunLogger
    from learner.runs import prepare_run_dir

    from learner.distributed.server import read_actor_tokens

    f = config.finetune
    tokens = read_actor_tokens(actor_tokens) if actor_tokens else None  # (a bad file: nothing written)
    path = Path(resume) if resume else prepare_run_dir(config, "learner", run_dir)
    spec = learner_spec(config)
    # The full learner state (agent, replay, counters, actor sequence numbers) is saved at start,
    # every finetune.checkpoint_every env steps, every settings.state_every_s seconds (while
    # data arrives) and at stop, so `--resume` continues exactly after any kill.
    settings = dataclasses.replace(settings, state_dir=str(path / STATE_DIR), state_every=f.checkpoint_every)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    checkpoint = path / "checkpoint.ckpt"
    with RunLogger(path, config.logging, to_dict(config), path.name) as logger:
        # Resuming: a fresh template agent (the saved state replaces it, RNG included).
        agent = None
        if resume:
            from learner.agents import make_agent

            agent = make_agent(f.algorithm, config.agent, spec["observation_dim"], spec["action_dim"], config.seed)
        trainer = Trainer(config, spec, settings, agent=agent, logger=logger)
        if resume:
            trainer.resume(settings.state_dir)
        server = LearnerServer(trainer, address, token, status_token, tls_cert, tls_key, actor_tokens=tokens).start()
        if not quiet:
            from learner.networks import describe_matmul_dtype

            source = f"resumed at {trainer.processed} env steps" if resume else (f"from {f.checkpoint}" if f.checkpoint else "from scratch")
            print(f"[wsrl learner] {f.algorithm} on {config.task} {source}; {settings.mode} mode, warmup {f.warmup_steps}, "
                  f"UTD {f.utd_ratio}, {describe_matmul_dtype(config.agent.critic_matmul_dtype)}; serving policy version {trainer.latest_policy()[0]} on {server.address} -> {path}", flush=True)
        if ready is not None:
            ready(server.address)
        try:
            while not stop.wait(0.2):
                status = trainer.status()
                if trainer.error is not None:
                    raise RuntimeError("the training thread failed (see above)")
                if stop_at_num_steps and status["processed_steps"] >= f.num_steps:
                    break
        finally:
            server.stop()
            status = trainer.status()
            final = _evaluate(config, trainer.agent.actor.params)
            logger.log("eval", status["processed_steps"], {**final, "updates": status["updates"]})
            save_checkpoint(checkpoint, trainer.agent, config, spec, _counters(status))
    if not quiet:
        print(f"[wsrl learner] done: {status['processed_steps']} env steps, {status['updates']} updates (UTD {status['achieved_utd']:.2f}), "
              f"policy version {status['policy_version']}; eval return {final['return']:.3f}, success {final['success_rate']:.2f}; checkpoint {checkpoint}", flush=True)
    return path


def _counters(status: dict) -> dict:
    return {k: status[k] for k in ("env_steps", "processed_steps", "updates", "policy_version", "episodes")}


def _evaluate(config, params) -> dict:
    from envs.tasks import TASKS
    from actor.policy import Policy
    from learner.evaluation import evaluate

    if config.task not in TASKS:
        return {"return": float("nan"), "success_rate": float("nan")}
    task = TASKS[config.task]
    policy = Policy(config.agent, task.spec()["action_dim"])
    env = task.make_env(config.seed + 10_000, training=False)
    return evaluate(lambda o: policy(params, o, None, deterministic=True), env, config.finetune.eval_episodes, config.seed + 10_000, task.normalizer)


# ---- wsrl run ---------------------------------------------------------------------------------


def _learner_process(config_dict: dict, settings_dict: dict, run_dir: str, ready, stop) -> None:
    """Spawned: the learner (its gRPC server is created here, after the process started)."""
    from learner.config import config_from_dict
    from learner.distributed.trainer import DistributedSettings
    from learner.runs import keep_freed_memory

    try:
        keep_freed_memory()
        serve_learner(config_from_dict(config_dict), DistributedSettings(**settings_dict), "127.0.0.1:0", run_dir,
                      stop_at_num_steps=False, ready=ready.put, stop=stop, quiet=True)
    except BaseException as e:
        ready.put(f"error: {type(e).__name__}: {e}")
        raise


def _actor_process(settings_dict: dict) -> None:
    """Spawned: one actor, on the CPU (the GPU, if any, belongs to the learner)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from actor.loop import ActorSettings, run_actor

    result = run_actor(ActorSettings(**settings_dict))
    sys.exit(0 if result["delivered"] else 1)


def run_local(config, settings, num_actors: int, run_dir: Optional[str] = None, pretrain_first: bool = True,
              batch_size: int = 32, pull_every: int = 10) -> Path:
    """`wsrl run`: pre-trains if needed, then one learner and `num_actors` actor processes
    (multiprocessing spawn; every gRPC channel is made after the processes start), one
    progress display and one results directory. The env steps `finetune.num_steps` are
    split evenly across the actors. Returns the results directory."""
    import multiprocessing as mp

    from learner.config import to_dict
    from learner.run_logger import progress_bar

    if num_actors < 1:
        raise ValueError(f"--num-actors: got {num_actors}, expected an integer >= 1")
    f = config.finetune
    path = Path(run_dir or config.logging.run_dir or f"runs/{config.task}-{config.variant}-run-{time.strftime('%Y%m%d-%H%M%S')}")
    if (path / "config.yaml").exists():
        raise FileExistsError(f"run directory {str(path)!r} already holds a run (config.yaml exists); choose another --run-dir")
    if not f.checkpoint and pretrain_first and f.init != "scratch":
        from learner.pretrain import pretrain

        config = _with_finetune(config, checkpoint=str(pretrain(config, str(path / "pretrain"))))
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    learner = ctx.Process(target=_learner_process, args=(to_dict(config), dataclasses.asdict(settings), str(path), ready, stop), name="wsrl-learner")
    learner.start()
    actors: list = []
    client = None
    try:
        address = ready.get(timeout=300)
        if address.startswith("error:"):
            raise RuntimeError(f"the learner failed to start: {address[6:]}")
        shares = [f.num_steps // num_actors + (i < f.num_steps % num_actors) for i in range(num_actors)]
        for i, steps in enumerate(shares):
            actor_settings = {
                "learner": address, "env": config.task, "actor_id": f"actor-{i}", "seed": config.seed + 1000 * i,
                "num_steps": steps, "batch_size": batch_size, "pull_every": pull_every,
            }
            actors.append(ctx.Process(target=_actor_process, args=(actor_settings,), name=f"wsrl-actor-{i}"))
            actors[-1].start()
        print(f"[wsrl run] learner on {address} ({settings.mode} mode), {num_actors} actor(s), {f.num_steps} env steps -> {path}", flush=True)
        from actor.client import LearnerClient

        client = LearnerClient(address)
        bar = progress_bar(f.num_steps, f"run {f.algorithm} x{num_actors}", config.logging.progress)
        done = 0
        while True:
            alive = [a for a in actors if a.is_alive()]
            failed = [a for a in actors if a.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"actor process {failed[0].name} exited with code {failed[0].exitcode}")
            if not learner.is_alive():
                raise RuntimeError(f"the learner process exited early (code {learner.exitcode})")
            try:
                s = client.status()
                bar.update(s.processed_steps - done)
                done = s.processed_steps
                bar.set_postfix(updates=s.updates, utd=f"{s.achieved_utd:.2f}", version=s.policy_version, ret=f"{s.recent_return:.1f}", refresh=False)
            except Exception:  # the display is best effort
                s = None
            if not alive and s is not None and s.processed_steps >= s.env_steps:
                break
            time.sleep(0.5)
        bar.close()
    finally:
        stop.set()
        if client is not None:
            client.close()
        learner.join(timeout=600)
        for a in actors:
            if a.is_alive():
                a.terminate()
            a.join(timeout=30)
    if learner.exitcode != 0:
        raise RuntimeError(f"the learner process exited with code {learner.exitcode}")
    print(f"[wsrl run] done -> {path} (checkpoint {path / 'checkpoint.ckpt'})", flush=True)
    return path
