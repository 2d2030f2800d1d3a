"""The operator commands to a running learner: `wsrl status`, `wsrl pause|resume|estop`.

`wsrl status` prints the learner's state; `wsrl pause`, `wsrl resume` and `wsrl estop` reach a
robot actor through it.
"""

from __future__ import annotations

import sys
from typing import Any, Optional


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
