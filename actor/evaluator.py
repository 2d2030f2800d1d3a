"""The evaluator: evaluates the policy versions the learner asks for, over the actor's gRPC
interface, so evaluation never runs on (or stalls) the learner's update loop.

The learner snapshots the policy current at env step 0, every `finetune.eval_every` env steps
and at `finetune.num_steps` (`learner/distributed/evaluations.py`). The evaluator asks for the
earliest pending one (NextEvaluation), pulls that version's params (PullEvaluationPolicy),
runs the requested number of deterministic episodes (tanh of the policy mean) on the task's
evaluation env (the environment's own rewards; episode i reset with seed + i, as `wsrl
finetune` evaluates) and reports the mean return, success rate and D4RL normalized score
(ReportEvaluation). `wsrl run` starts one; elsewhere `wsrl actor --evaluate --learner HOST:PORT`.
It sends no transitions: its episodes never reach the replay buffer.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import types
from typing import Optional

import grpc

from actor.client import LearnerClient, wait_for_learner, with_retries
from actor.evaluation import evaluate
from actor.policy import Policy
from envs.observations import observation_spec_of
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb


@dataclasses.dataclass(frozen=True)
class EvaluatorSettings:
    learner: str = "127.0.0.1:50051"
    env: str = "pointmass-goal"  # task name, gymnasium id or 'module:Class' entry point
    evaluator_id: str = ""  # default: evaluator-<hostname>
    max_episode_steps: int = 0
    token: str = ""
    tls_ca: str = ""
    connect_timeout_s: float = 120.0
    poll_s: float = 0.5  # between NextEvaluation calls while nothing is pending
    max_backoff_s: float = 5.0
    # Stop once the learner says it has trained all its env steps and nothing is pending.
    until_finished: bool = True


class EvaluatorError(RuntimeError):
    """The learner refused something a retry cannot fix."""


def _eval_env(name: str, seed: int, max_episode_steps: int):
    """(env, spec, normalizer): a task's evaluation env (unscaled rewards) and its D4RL
    normalizer, or any other env as the actor makes it (no normalizer)."""
    from envs.tasks import TASKS

    if name in TASKS:
        task = TASKS[name]
        return task.make_env(seed, training=False), task.spec(), task.normalizer
    from actor.envs import make_actor_env

    env, spec = make_actor_env(name, seed, max_episode_steps)
    return env, spec, None


def run_evaluator(settings: EvaluatorSettings, stop: Optional[threading.Event] = None) -> dict:
    """Evaluates until `stop`, or (with `until_finished`) until the learner is done. Returns
    {"evaluations": n, "last_step": step}."""
    s = settings
    stop = stop or threading.Event()
    name = s.evaluator_id or f"evaluator-{socket.gethostname()}"
    client = LearnerClient(s.learner, s.token or None, s.tls_ca or None, max_backoff_s=s.max_backoff_s)
    env, spec, normalizer = _eval_env(s.env, 0, s.max_episode_steps)
    done, after, seeded = 0, -1, None
    try:
        if not wait_for_learner(client, s.learner, stop, s.connect_timeout_s, name="wsrl evaluator"):
            if stop.is_set():
                return {"evaluations": 0, "last_step": -1}
            raise EvaluatorError(f"learner at {s.learner} not reachable within {s.connect_timeout_s:g} s (--connect-timeout)")
        hello = pb.HandshakeRequest(protocol_version=codec.PROTOCOL_VERSION, spec=codec.spec_to_proto(spec), actor_id=name,
                                    run_id=f"eval-{time.time_ns():x}", next_sequence=0)
        try:
            answer = with_retries(lambda: client.handshake(hello), stop, what="handshake", cap_s=s.max_backoff_s)
        except grpc.RpcError as e:
            raise EvaluatorError(f"handshake refused: {e.code().name}: {e.details()}") from None
        policy = Policy(types.SimpleNamespace(**json.loads(answer.agent_config_json)), spec["action_dim"], observation_spec_of(spec))
        while not stop.is_set():
            try:
                task = with_retries(lambda: client.next_evaluation(name, after), stop, what="next evaluation", cap_s=s.max_backoff_s)
                if not task.available:
                    if task.finished and s.until_finished:
                        break
                    stop.wait(s.poll_s)
                    continue
                params = client.pull_evaluation_policy(name, task)
            except grpc.RpcError as e:
                if stop.is_set():
                    break
                if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    stop.wait(s.poll_s)  # evaluated by another evaluator, or the learner restarts: ask again
                    continue
                raise EvaluatorError(f"{e.code().name}: {e.details()}") from None
            if seeded != task.seed:  # the evaluation env, seeded as `wsrl finetune` seeds its own
                env.close()
                env, _, _ = _eval_env(s.env, int(task.seed), s.max_episode_steps)
                seeded = task.seed
            stats = evaluate(lambda o: policy(params, o, None, deterministic=True), env, int(task.episodes), int(task.seed), normalizer)
            result = pb.EvaluationResult(
                evaluator_id=name, env_step=task.env_step, policy_version=task.policy_version, learner_id=task.learner_id,
                episodes=task.episodes, mean_return=stats["return"], return_std=stats["return_std"],
                success_rate=stats["success_rate"], episode_length=stats["episode_length"],
            )
            if "normalized_score" in stats:
                result.normalized_score = stats["normalized_score"]
            try:
                with_retries(lambda: client.report_evaluation(result), stop, what="report evaluation", cap_s=s.max_backoff_s)
            except grpc.RpcError as e:
                if stop.is_set():
                    break
                if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise EvaluatorError(f"evaluation refused: {e.details()}") from None
                continue  # e.g. a restarted learner: ask again
            done, after = done + 1, int(task.env_step)
            score = stats.get("normalized_score", stats["success_rate"])
            print(f"[wsrl evaluator] env step {task.env_step} (policy version {task.policy_version}): return {stats['return']:.3f}, "
                  f"{'normalized score' if 'normalized_score' in stats else 'success rate'} {score:.3g}", flush=True)
    finally:
        client.close()
        env.close()
    return {"evaluations": done, "last_step": after}
