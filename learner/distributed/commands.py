"""`wsrl learner`, `wsrl actor`, `wsrl run`, `wsrl status` and the operator commands `wsrl pause`,
`wsrl resume` and `wsrl estop`: argument parsing and commands.

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

COMMANDS = ("learner", "actor", "run", "status", "pause", "resume", "estop")
# The operator commands to a robot actor (ActorCommand) and what each does there.
ACTOR_COMMANDS = {"pause": "hold the robot (as SIGUSR1)", "resume": "continue after a pause or a safety stop (as SIGUSR2)",
                  "estop": "emergency stop: the actor stops the robot, flushes and exits with status 3 (as SIGQUIT)"}


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="pointmass", help="config family in configs/ or a YAML path (default: pointmass)")
    parser.add_argument("--variant", default="wsrl", help="variant in that file (default: wsrl)")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value", help="override any config field")


def _add_learner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="pre-trained checkpoint (same as finetune.checkpoint=PATH)")
    p.add_argument("--run-dir", default=None, help="results directory (default: runs/<task>-<variant>-<command>-<time>)")
    p.add_argument("--mode", choices=("sync", "async"), default=None, help="sync: exactly M critic updates per env step, actors held back beyond --max-lead (Algorithm 1); async: actors never wait, UTD within --min-utd/--max-utd (default: sync)")
    p.add_argument("--max-lead", type=int, default=None, help="sync: env steps an actor may be ahead of the learner (W, default 64)")
    p.add_argument("--min-utd", type=float, default=None, help="async: warn when critic updates per env step fall below this")
    p.add_argument("--max-utd", type=float, default=None, help="async: at most this many critic updates per env step after warmup "
                   "(default: finetune.utd_ratio, the paper's M; 0: no cap, with a warning)")
    p.add_argument("--max-batch-size", type=int, default=None, help="largest transition batch accepted per push (default 1024)")
    p.add_argument("--publish-every", type=int, default=None, help="publish a policy version every N fused updates (default 1)")
    p.add_argument("--save-every", type=float, default=None, metavar="SECONDS", help="save the learner state (for --resume) at least this often while data arrives, "
                   "besides every finetune.checkpoint_every env steps, at start and at stop (default 60; 0: by env steps only)")


def _add_auth_args(p: argparse.ArgumentParser, server: bool) -> None:
    p.add_argument("--token", default=None, help="auth token (default: $WSRL_TOKEN); required to bind off loopback")
    p.add_argument("--token-file", default=None, help="read the auth token from this file")
    if server:
        p.add_argument("--status-token", default=None, help="token for GetStatus (default: $WSRL_STATUS_TOKEN); off loopback status is refused without one")
        p.add_argument("--tls-cert", default=None, help="PEM server certificate (with --tls-key) to serve TLS")
        p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
        p.add_argument("--actor-tokens", default=None, metavar="FILE", help="per-actor tokens: lines 'ACTOR_ID TOKEN'; a call with one of them is served for that actor id only")
        p.add_argument("--admin-token", default=None, help="token for the operator commands wsrl pause/resume/estop (default: $WSRL_ADMIN_TOKEN; "
                       "at least 16 characters, unlike every other token); off loopback they are refused without one")
    else:
        p.add_argument("--tls-ca", default=None, help="PEM root certificate to connect over TLS")


def add_commands(subparsers: Any, add_config_args: Optional[Callable[[argparse.ArgumentParser], None]] = None) -> None:
    """Registers the distributed subcommands on the `wsrl` parser's subparsers."""
    add_config = add_config_args or _add_config_args

    p = subparsers.add_parser("learner", help="serve the learner: actors connect over gRPC (run it on the GPU box)")
    add_config(p)
    _add_learner_args(p)
    _add_auth_args(p, server=True)
    p.add_argument("--bind", default=None, help="HOST:PORT to listen on (default 127.0.0.1:50051; another host needs --token)")
    p.add_argument("--forever", action="store_true", default=None, help="keep serving after finetune.num_steps env steps (default: stop there)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the learner run in DIR: its config, agent, replay, counters, actor sequence numbers and the "
                   "settings it was started with (mode, caps, bind, --forever, ...; a flag given now replaces its saved value, and says so); "
                   "config overrides are refused")

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
    p.add_argument("--connect-timeout", type=float, default=120.0, metavar="SECONDS", help="give up when the learner is not reachable for this long at start (default 120; 0: wait forever)")
    p.add_argument("--compress", default="", choices=("", "zstd"), help="compress camera frames (uint8 observation parts) on the wire: zstd "
                   "(pip install 'wsrl[compress]' here and on the learner); default: raw. Worth it over a network link, not on loopback "
                   "(benchmarks/camera_transport.py)")
    p.add_argument("--evaluate", action="store_true", help="be an evaluator instead: run the deterministic evaluation episodes the learner asks for "
                   "(step 0, every finetune.eval_every env steps, the end) and report them; sends no transitions (wsrl run starts one itself)")
    robot = p.add_argument_group("robot mode (docs/robot.md)")
    robot.add_argument("--robot", action="store_true", help="fixed-rate control loop never blocked by the learner: batches are spooled and sent in the background, "
                       "policies switch at episode ends; SIGUSR1 pauses, SIGUSR2 resumes, SIGQUIT is an emergency stop (needs --spool-dir)")
    robot.add_argument("--control-hz", type=float, default=0.0, metavar="HZ", help="robot mode: control steps per second (default: the env's control_hz)")
    robot.add_argument("--max-action-change", type=float, default=0.0, metavar="DELTA", help="robot mode: largest per-step change of each action component, policy units [-1, 1] (default 0: no limit)")
    robot.add_argument("--switch-mid-episode", action="store_true", help="robot mode: adopt new policy versions at any step (default: only when an episode starts)")
    robot.add_argument("--max-backlog-mb", type=float, default=1024.0, metavar="MB", help="robot mode: hold the robot still while more than this "
                       "much collected data is not yet delivered (the learner unreachable); it goes on by itself at half (default 1024; 0: no limit)")
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
    p.add_argument("--no-evaluator", action="store_true", help="no evaluator process: only the final evaluation, made by the learner")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the stopped `wsrl run` in DIR where it stopped (pre-training or "
                   "fine-tuning), with the config and settings it was started with")

    p = subparsers.add_parser("status", help="print a learner's state")
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--token", default=None, help="status token (default: $WSRL_STATUS_TOKEN)")
    p.add_argument("--tls-ca", default=None, help="PEM root certificate to connect over TLS")

    for name, what in ACTOR_COMMANDS.items():
        p = subparsers.add_parser(name, help=f"robot actor ACTOR_ID, through the learner: {what}")
        p.add_argument("address", metavar="HOST:PORT", help="the learner's address")
        p.add_argument("actor_id", metavar="ACTOR_ID", help="the actor's id (as `wsrl status` lists it)")
        p.add_argument("--token", default=None, help="the learner's admin token (default: $WSRL_ADMIN_TOKEN)")
        p.add_argument("--tls-ca", default=None, help="PEM root certificate to connect over TLS")
        p.add_argument("--wait", type=float, default=5.0, metavar="SECONDS", help="wait this long for the actor to acknowledge (default 5; at most 30)")


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


# The learner's launch settings: its flags' defaults, saved in RUN_DIR/launch.json at start and
# restored by `wsrl learner --resume` (flags given with --resume replace them).
LAUNCH_FILE = "launch.json"
LAUNCH_DEFAULTS = {
    "mode": "sync", "max_lead": 64, "min_utd": 0.0, "max_utd": None, "max_batch_size": 1024, "publish_every": 1,
    "save_every": 60.0, "bind": "127.0.0.1:50051", "forever": False,
}


def launch_settings(args: argparse.Namespace, saved: Optional[dict] = None) -> tuple[dict, list[str]]:
    """The launch settings of a learner (`LAUNCH_DEFAULTS` keys) and what changed: the flags
    given on the command line, else `saved` (a resumed run's launch.json), else the defaults.
    Returns (settings, ["--flag new (was old)", ...] for flags that replaced a saved value)."""
    settings, changed = {}, []
    for key, default in LAUNCH_DEFAULTS.items():
        given = getattr(args, key, None)
        before = (saved or {}).get(key, default)
        settings[key] = before if given is None else given
        if saved is not None and given is not None and given != before:
            changed.append(f"--{key.replace('_', '-')} {given} (was {before})")
    return settings, changed


def read_launch(run_dir: str) -> Optional[dict]:
    """A learner run's saved launch settings, or None (a run from before they were saved)."""
    import json

    path = Path(run_dir, LAUNCH_FILE)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"--resume {run_dir!r}: {LAUNCH_FILE} is not valid JSON ({e})") from None
    return {k: v for k, v in data.items() if k in LAUNCH_DEFAULTS}


def with_launch_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with every unset launch flag at its default (commands that do not resume)."""
    settings, _ = launch_settings(args)
    return argparse.Namespace(**{**vars(args), **settings})


def settings_from_args(args: argparse.Namespace, config: Any):
    """The learner's DistributedSettings from its flags. In async mode `--max-utd` defaults to
    `finetune.utd_ratio`, so an actor-learner run trains at the algorithm's UTD however fast the
    env steps arrive (and not at all while none arrive); 0 lifts the cap, with a warning."""
    from learner.distributed.trainer import DistributedSettings

    args = with_launch_defaults(args)
    max_utd = float(config.finetune.utd_ratio) if args.max_utd is None else args.max_utd
    if args.mode == "async" and max_utd == 0:
        print(f"[wsrl {args.command}] warning: --max-utd 0: no cap on critic updates per env step; the learner trains as fast as "
              f"it can on the data it has, beyond the UTD {config.finetune.utd_ratio} the algorithm uses (and on a paused robot's frozen buffer)",
              file=sys.stderr, flush=True)
    return DistributedSettings(
        mode=args.mode,
        max_lead=args.max_lead,
        min_utd=args.min_utd,
        max_utd=max_utd,
        max_batch_size=args.max_batch_size,
        publish_every=args.publish_every,
        state_every_s=args.save_every,
    )


def run_command(args: argparse.Namespace, config: Any = None) -> int:
    """Runs one of COMMANDS; `config` is the resolved Config for learner/run (else None).
    Returns the exit status: 0, or 128 + the signal number after a SIGINT/SIGTERM stop."""
    from actor.interrupts import GracefulStop

    if getattr(args, "checkpoint", None) and config is not None:
        config = _with_finetune(config, checkpoint=args.checkpoint)
    if args.command == "learner":
        from learner.startup import check_bind, check_start

        for flag, env in (("token", "WSRL_TOKEN"), ("status_token", "WSRL_STATUS_TOKEN"), ("admin_token", "WSRL_ADMIN_TOKEN")):
            if getattr(args, flag, None) == "" or (getattr(args, flag, None) is None and os.environ.get(env) == ""):
                raise ValueError(f"--{flag.replace('_', '-')}: given empty (an unset shell variable such as ${env}?); give the token, "
                                 "or leave the flag out")
        token = _token(args)
        if args.resume:
            if args.overrides or args.checkpoint:
                given = " ".join(args.overrides + ([f"--checkpoint {args.checkpoint}"] if args.checkpoint else []))
                raise ValueError(f"--resume {args.resume!r}: config arguments ({given}) are not applied to a resumed run: it continues the "
                                 "config its agent and replay were trained with (learner_state/); start a new run to change it")
            saved = read_launch(args.resume)
            launch, changed = launch_settings(args, saved if saved is not None else {})
            if saved is None:
                print(f"[wsrl learner] --resume: {args.resume} has no {LAUNCH_FILE} (a run from before launch settings were saved): "
                      "flags as given, defaults elsewhere", flush=True)
            elif changed:
                print("[wsrl learner] --resume: " + "; ".join(changed) + " (the rest as saved)", flush=True)
            else:
                print(f"[wsrl learner] --resume: settings as saved ({launch['mode']} mode, bind {launch['bind']}"
                      f"{', forever' if launch['forever'] else ''})", flush=True)
            args = argparse.Namespace(**{**vars(args), **launch})
            check_bind(args.bind, token, args.tls_cert, args.tls_key)
            config = resumed_config(args.resume)
        else:
            args = with_launch_defaults(args)
            check_bind(args.bind, token, args.tls_cert, args.tls_key)
            config, _ = check_start(config, "learner", args.run_dir, pretrain_first=False)
        from learner.runs import keep_freed_memory

        keep_freed_memory()
        stop = GracefulStop("wsrl learner", "stopping: saving the learner state and the final checkpoint").install()
        serve_learner(
            config,
            settings_from_args(args, config),
            address=args.bind,
            run_dir=args.run_dir,
            token=token,
            status_token=args.status_token or os.environ.get("WSRL_STATUS_TOKEN") or None,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            actor_tokens=args.actor_tokens,
            admin_token=args.admin_token or os.environ.get("WSRL_ADMIN_TOKEN") or None,
            stop_at_num_steps=not args.forever,
            resume=args.resume,
            stop=stop.requested,
            launch={k: getattr(args, k) for k in LAUNCH_DEFAULTS},
        )
        return stop.exit_status
    if args.command == "actor":
        return _run_actor_command(args)
    if args.command == "status":
        return print_status(args.address, args.token or os.environ.get("WSRL_STATUS_TOKEN"), args.tls_ca)
    if args.command in ACTOR_COMMANDS:
        return send_actor_command(args.address, args.actor_id, args.command, args.token or os.environ.get("WSRL_ADMIN_TOKEN"), args.tls_ca, args.wait)
    if args.command == "run":
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
    raise ValueError(f"command: got {args.command!r}, expected one of {', '.join(COMMANDS)}")


RUN_FILE = "run.json"  # what `wsrl run --resume` restores: the run's own settings


def _resume_run(args: argparse.Namespace) -> int:
    """`wsrl run --resume DIR`: checks there is a stopped run to continue (writing nothing),
    then continues it with the config and settings saved in DIR."""
    import json

    from actor.interrupts import GracefulStop
    from learner.config import config_from_dict
    from learner.distributed.trainer import DistributedSettings
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


def _run_actor_command(args: argparse.Namespace) -> int:
    """`wsrl actor` (and `wsrl actor --evaluate`): one Ctrl-C flushes and stops (130)."""
    from actor.interrupts import GracefulStop

    if args.evaluate:
        from actor.evaluator import EvaluatorError, EvaluatorSettings, run_evaluator

        settings = EvaluatorSettings(learner=args.learner, env=args.env, evaluator_id=args.actor_id, max_episode_steps=args.max_episode_steps,
                                     token=_token(args) or "", tls_ca=args.tls_ca or "", connect_timeout_s=args.connect_timeout,
                                     max_backoff_s=args.max_backoff)
        stop = GracefulStop("wsrl evaluator", "stopping (the evaluation in progress is dropped)").install()
        try:
            run_evaluator(settings, stop.requested)
        except (EvaluatorError, ValueError) as e:
            print(f"wsrl actor: error: {e}", file=sys.stderr)
            return 1
        return stop.exit_status
    from actor.loop import ActorError, ActorSettings, exit_status
    from actor.process import run_actor

    settings = ActorSettings(
        learner=args.learner, env=args.env, actor_id=args.actor_id, seed=args.seed, num_steps=args.num_steps,
        batch_size=args.batch_size, max_latency_s=args.max_latency, pull_every=args.pull_every,
        pull_at_episode_end=not args.no_pull_at_episode_end, max_episode_steps=args.max_episode_steps,
        token=_token(args) or "", tls_ca=args.tls_ca or "", spool_dir=args.spool_dir,
        step_period_s=args.step_period, max_backoff_s=args.max_backoff, connect_timeout_s=args.connect_timeout,
        robot=args.robot, control_hz=args.control_hz, max_action_change=args.max_action_change,
        switch_mid_episode=args.switch_mid_episode, status_every_s=args.status_every, teleop=args.teleop,
        workspace_low=args.workspace_low, workspace_high=args.workspace_high, workspace_mode=args.workspace_mode,
        compress=args.compress, max_backlog_mb=args.max_backlog_mb,
    )
    stop = GracefulStop("wsrl actor", "stopping: sending what this actor holds").install()
    try:
        result = run_actor(settings, stop=stop.requested)
    except (ActorError, ValueError) as e:
        print(f"wsrl actor: error: {e}", file=sys.stderr)
        return 1
    if stop.exit_status:
        return stop.exit_status
    return exit_status(result)


def _with_finetune(config, **changes):
    return dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, **changes))


# ---- wsrl status --------------------------------------------------------------------------


def format_status(s: Any) -> str:
    """A StatusResponse as a few human-readable lines."""
    lines = [
        f"mode {s.mode}; env steps {s.env_steps} (processed {s.processed_steps}, warmup {s.warmup_steps}{', training' if s.training else ', warming up'})",
        f"updates {s.updates} fused ({s.critic_updates} critic); achieved UTD {s.achieved_utd:.2f} "
        f"({f'target {s.target_utd:g}' if s.target_utd else 'no cap'}); policy version {s.policy_version}",
        f"buffer {s.buffer_size}; episodes {s.episodes} (recent return {s.recent_return:.2f}); rejected batches {s.rejected_batches}, duplicates {s.duplicate_batches}; "
        f"interventions {s.intervention_steps}",
        f"connected actors: {len(s.actors)}",
    ]
    for a in s.actors:
        state = " E-STOPPED;" if a.estopped else (f" PAUSED ({a.pause_reason or 'operator'});" if a.paused else "")
        line = f"  {a.actor_id} (run {a.run_label}):{state} {a.env_steps} env steps, {a.pending} pending, seen {a.seconds_since_seen:.1f} s ago"
        if a.HasField("control"):
            c = a.control
            line += (f"; control at {c.control_hz:g} Hz: period mean {c.period_mean_ms:.2f} ms, p99 {c.period_p99_ms:.2f} ms, "
                     f"max {c.period_max_ms:.2f} ms, {c.overruns} overruns in {c.steps} steps")
        lines.append(line)
    return "\n".join(lines)


def send_actor_command(address: str, actor_id: str, command: str, token: Optional[str] = None, tls_ca: Optional[str] = None, wait_s: float = 5.0) -> int:
    """`wsrl pause|resume|estop HOST:PORT ACTOR_ID`: queues the command at the learner and waits
    up to `wait_s` for the actor to acknowledge it. 0: acknowledged; 1: refused, unreachable or
    not acknowledged in time (it stays queued: the actor carries it out at its next report)."""
    import grpc

    from actor.client import LearnerClient
    from protos.wsrl.v1 import learner_pb2 as pb

    if not 0 <= wait_s <= 30:
        raise ValueError(f"--wait: got {wait_s:g}, expected 0..30 seconds")
    kind = {"pause": pb.ACTOR_COMMAND_PAUSE, "resume": pb.ACTOR_COMMAND_RESUME, "estop": pb.ACTOR_COMMAND_ESTOP}[command]
    client = LearnerClient(address, token, tls_ca)
    try:
        answer = client.actor_command(pb.ActorCommandRequest(actor_id=actor_id, kind=kind, wait_s=wait_s))
    except grpc.RpcError as e:
        return _rpc_failed(command, address, tls_ca, e)
    finally:
        client.close()
    if answer.acknowledged:
        print(f"wsrl {command}: {actor_id} (run {answer.run_label}) acknowledged {command} after {answer.seconds:.2f} s", flush=True)
        return 0
    print(f"wsrl {command}: queued for {actor_id} (run {answer.run_label}, last seen {answer.seconds_since_seen:.1f} s before), NOT acknowledged "
          f"within {wait_s:g} s; it stays queued for this run and is carried out at the actor's next state report", file=sys.stderr)
    return 1


def _rpc_failed(command: str, address: str, tls_ca: Optional[str], error) -> int:
    """Prints why a call of `wsrl COMMAND` to the learner failed (with the TLS hint when the
    learner is up but unreachable); returns the exit status 1."""
    import grpc

    from actor.client import connection_hint

    hint = connection_hint(address, tls_ca) if error.code() == grpc.StatusCode.UNAVAILABLE else ""
    print(f"wsrl {command}: {address}: {error.code().name}: {error.details()}" + (f"\nwsrl {command}: {hint}" if hint else ""), file=sys.stderr)
    return 1


def print_status(address: str, token: Optional[str] = None, tls_ca: Optional[str] = None) -> int:
    """`wsrl status HOST:PORT`: prints the learner's state; 1 if it cannot be reached."""
    import grpc

    from actor.client import LearnerClient

    client = LearnerClient(address, token, tls_ca)
    try:
        print(format_status(client.status()))
        return 0
    except grpc.RpcError as e:
        return _rpc_failed("status", address, tls_ca, e)
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
# How long a learner that has its env steps waits for the actors seen lately to ask once more
# (and hear that it is done) before it stops.
FINISH_NOTICE_S = 5.0


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
    from learner.distributed.server import LearnerServer, read_actor_tokens
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


# ---- wsrl run ---------------------------------------------------------------------------------


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
    from learner.distributed.trainer import DistributedSettings
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
