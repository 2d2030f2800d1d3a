"""`wsrl actor`: runs one actor (or, with --evaluate, an evaluator) against a learner.

Module-level imports stay light (no jax, no grpc) so the actor decides its JAX platform
before jax loads.
"""

from __future__ import annotations

import argparse
import sys

from learner.distributed.arguments import _token


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
