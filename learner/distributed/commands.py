"""The distributed subcommands as `learner.cli` sees them: `add_commands` and `run_command`.

`add_commands` registers them, `run_command` runs one: `wsrl learner`, `wsrl actor`, `wsrl run`,
`wsrl status`, and the operator commands `wsrl pause`, `wsrl resume` and `wsrl estop`.

Each command lives in its own module; module-level imports stay light (no jax, no grpc) so
`wsrl --help` is fast and a spawned actor process decides its JAX platform before jax loads.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from learner.distributed.actor_command import _run_actor_command
from learner.distributed.arguments import ACTOR_COMMANDS, COMMANDS, add_commands
from learner.distributed.launch import _with_finetune
from learner.distributed.learner_command import learner_command
from learner.distributed.local_run import run_local_command
from learner.distributed.operator_commands import print_status, send_actor_command

__all__ = ["COMMANDS", "add_commands", "run_command"]  # what learner.cli uses


def run_command(args: argparse.Namespace, config: Any = None) -> int:
    """Runs one of COMMANDS; `config` is the resolved Config for learner/run (else None).
    Returns the exit status: 0, or 128 + the signal number after a SIGINT/SIGTERM stop."""
    if getattr(args, "checkpoint", None) and config is not None:
        config = _with_finetune(config, checkpoint=args.checkpoint)
    if args.command == "learner":
        return learner_command(args, config)
    if args.command == "actor":
        return _run_actor_command(args)
    if args.command == "status":
        return print_status(args.address, args.token or os.environ.get("WSRL_STATUS_TOKEN"), args.tls_ca)
    if args.command in ACTOR_COMMANDS:
        return send_actor_command(args.address, args.actor_id, args.command, args.token or os.environ.get("WSRL_ADMIN_TOKEN"), args.tls_ca, args.wait)
    if args.command == "run":
        return run_local_command(args, config)
    raise ValueError(f"command: got {args.command!r}, expected one of {', '.join(COMMANDS)}")
