"""`wsrl learner`: checks its flags (or the run it resumes) and serves the learner."""

from __future__ import annotations

import argparse
import os
from typing import Any

from learner.distributed.arguments import _token
from learner.distributed.launch import LAUNCH_DEFAULTS, LAUNCH_FILE, launch_settings, read_launch, settings_from_args, with_launch_defaults
from learner.distributed.serving import resumed_config, serve_learner


def learner_command(args: argparse.Namespace, config: Any) -> int:
    """`wsrl learner`: serves the learner until it has trained on `finetune.num_steps` env steps
    (unless --forever) or a SIGINT/SIGTERM stops it; `--resume DIR` continues the run in DIR.
    Returns the exit status: 0, or 128 + the signal number after a stop."""
    from actor.interrupts import GracefulStop
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
