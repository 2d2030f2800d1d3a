"""The distributed subcommands' command-line arguments, and the auth token they name.

Module-level imports stay light (no jax, no grpc) so `wsrl --help` is fast.
"""

from __future__ import annotations

import argparse
import os
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
