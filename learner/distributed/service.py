"""The `wsrl.v1.Learner` RPC handlers: check each request, hand it to the `Trainer`, answer.

Handlers validate, hand batches to the `Trainer` and answer; they never run JAX updates.

Every request is bounded before it reaches the trainer: the receive limit follows from the
spec and `max_batch_size` (`validation.max_request_bytes`, set by `server.LearnerServer`), ids
and sequence numbers are checked, at most `max_inflight_pushes` pushes are handled at once, and
no error message quotes more than a few dozen characters of what it refuses.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
import numpy as np

from learner.config import to_dict
from learner.distributed.command_queue import NoStateReports, UnknownActor
from learner.distributed.ledger import Conflict, QueueFull, SequenceGap, TooManyActors, UnknownRun
from learner.distributed.policy_store import PolicyStore
from learner.distributed.trainer import Trainer
from learner.distributed.validation import (
    MAX_EPISODES_PER_REPORT,
    MAX_SEQUENCE,
    BatchRejected,
    batch_digest,
    check_actor_id,
    check_actor_state,
    check_ids,
    short,
    validate_batch,
)
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from protos.wsrl.v1 import learner_pb2_grpc as pb_grpc

# ActorCommand answers within this long at most (its wait_s).
MAX_COMMAND_WAIT_S = 30.0


class LearnerService(pb_grpc.LearnerServicer):
    """The Learner RPCs; every handler is cheap and never touches the agent."""

    def __init__(self, trainer: Trainer, learner_id: str):
        self.trainer = trainer
        self.learner_id = learner_id
        self._inflight = threading.BoundedSemaphore(trainer.settings.max_inflight_pushes)
        self.policies = PolicyStore(trainer, learner_id)
        c = trainer.config
        self.spec = trainer.spec
        self.parts = codec.observation_parts(self.spec)  # [] for a flat-vector task
        self.fingerprint = codec.policy_fingerprint(c.agent, self.spec["observation_dim"], self.spec["action_dim"], self.parts)
        self.agent_config_json = json.dumps(to_dict(c.agent))
        f = c.finetune
        self.actor_behaviour_json = json.dumps({
            "warmup": f.warmup, "jsrl": f.jsrl, "jsrl_initial_prob": f.jsrl_initial_prob,
            "jsrl_decay_steps": f.jsrl_decay_steps, "jsrl_rollin_discount": f.jsrl_rollin_discount,
        })

    def _check(self, context) -> None:
        if self.trainer.error is not None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the learner's training thread failed; see its log")

    def Handshake(self, request: pb.HandshakeRequest, context) -> pb.HandshakeResponse:
        self._check(context)
        problems = []
        if request.protocol_version != codec.PROTOCOL_VERSION:
            problems.append(f"protocol_version: actor has {request.protocol_version}, learner has {codec.PROTOCOL_VERSION}")
        theirs = codec.spec_from_proto(request.spec)
        their_parts = codec.observation_parts(theirs)
        keys = ("task", "observation_dim", "action_dim") if not (self.parts or their_parts) else ("task", "action_dim")
        for key in keys:
            if theirs[key] != self.spec.get(key):
                problems.append(f"spec.{key}: actor has {short(theirs[key])}, learner has {self.spec.get(key)!r}")
        if self.parts or their_parts:
            problems.extend(observation_mismatches(their_parts, self.parts, int(theirs["observation_dim"])))
        for key in ("action_low", "action_high"):  # the env's own bounds (actions travel rescaled to [-1, 1])
            mine = self.spec.get(key)
            if mine and not (len(theirs[key]) == len(mine) and np.allclose(theirs[key], mine, rtol=1e-6, atol=1e-9)):
                problems.append(f"spec.{key}: actor has {short(theirs[key], 80)}, learner has {short(list(mine), 80)}")
        if request.config_fingerprint and request.config_fingerprint != self.fingerprint:
            problems.append(f"config_fingerprint: actor has {short(request.config_fingerprint[:12])}, learner has {self.fingerprint[:12]}")
        if problems:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "handshake mismatch: " + "; ".join(problems))
        try:
            check_ids(request.actor_id, request.run_id)
        except BatchRejected as e:
            context.abort(e.code, str(e))
        if request.next_sequence > MAX_SEQUENCE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'next_sequence': got {request.next_sequence}, expected at most 2^63 - 1")
        try:
            next_sequence = self.trainer.register(request.actor_id, request.run_id, request.next_sequence)
        except TooManyActors as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        s = self.trainer.settings
        return pb.HandshakeResponse(
            protocol_version=codec.PROTOCOL_VERSION,
            spec=codec.spec_to_proto(self.spec),
            config_fingerprint=self.fingerprint,
            agent_config_json=self.agent_config_json,
            next_sequence=next_sequence,
            policy_version=self.trainer.latest_policy()[0],
            mode=s.mode,
            warmup_steps=self.trainer.config.finetune.warmup_steps,
            max_batch_size=s.max_batch_size,
            learner_id=self.learner_id,
            actor_behaviour_json=self.actor_behaviour_json,
            encodings=codec.available_encodings(),
        )

    def PushTransitions(self, request: pb.TransitionBatch, context) -> pb.PushResponse:
        self._check(context)
        if not self._inflight.acquire(blocking=False):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.trainer.settings.max_inflight_pushes} pushes are being handled (max_inflight_pushes); retry")
        try:
            return self._push(request, context)
        finally:
            self._inflight.release()

    def _push(self, request: pb.TransitionBatch, context) -> pb.PushResponse:
        t = self.trainer
        try:
            check_ids(request.actor_id, request.run_id)
            digest = batch_digest(request)
            stored, next_sequence = t.submit(request.actor_id, request.run_id, request.sequence, None, digest)
            if stored:
                arrays = validate_batch(request, self.spec, t.settings.max_batch_size, t.latest_policy()[0], self.learner_id)
                stored, next_sequence = t.submit(request.actor_id, request.run_id, request.sequence, arrays, digest)
        except BatchRejected as e:
            t.note_rejected()
            context.abort(e.code, str(e))
        except UnknownRun as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except SequenceGap as e:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, str(e))
        except QueueFull as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except Conflict as e:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(e))
        # sync mode: hold the actor (stored or retried duplicate alike) while it is more
        # than max_lead steps ahead; the actor's call deadline bounds the hold, and a retry
        # after a deadline lands here again as a duplicate. Waits in short slices so a
        # cancelled call frees its worker thread.
        while not t.wait_for_lead(request.actor_id, 0.5):
            if not context.is_active() or t.stopping or t.error is not None:
                break
        status = t.status()
        return pb.PushResponse(
            stored=stored,
            duplicate=not stored,
            next_sequence=next_sequence,
            policy_version=status["policy_version"],
            env_steps=status["env_steps"],
            updates=status["updates"],
            durable_sequence=t.durable_sequence(request.actor_id, request.run_id),
            learner_finished=t.finished_for(request.actor_id),
        )

    def PullPolicy(self, request: pb.PullPolicyRequest, context) -> pb.PolicyChunk | bytes:
        self._check(context)
        if request.index > 0:  # the rest of a multi-chunk version
            chunks = self.policies.get(request.version)
            if chunks is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"field 'version': version {request.version} is no longer held (latest is "
                              f"{self.trainer.latest_policy()[0]}); pull again from index 0")
            if request.index >= len(chunks):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'index': got {request.index}, expected < {len(chunks)} (num_chunks of version {request.version})")
            return chunks[request.index]
        version, _ = self.trainer.latest_policy()
        # Version numbers restart from the saved one when a learner resumes: the same number
        # from another learner process is another policy.
        if request.have_version == version and request.have_learner_id in ("", self.learner_id):
            return pb.PolicyChunk(version=version, unchanged=True, num_chunks=0, learner_id=self.learner_id)
        return self.policies.latest()[1][0]

    def ReportEpisodes(self, request: pb.ReportEpisodesRequest, context) -> pb.ReportEpisodesResponse:
        self._check(context)
        try:
            check_ids(request.actor_id, request.run_id)
        except BatchRejected as e:
            context.abort(e.code, str(e))
        try:
            self.trainer.check_run(request.actor_id, request.run_id)
        except UnknownRun as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        if len(request.episodes) > MAX_EPISODES_PER_REPORT:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'episodes': got {len(request.episodes)}, expected at most {MAX_EPISODES_PER_REPORT} per call")
        episodes = []
        for i, e in enumerate(request.episodes):
            episode = {"return": e.episode_return, "length": int(e.length), "success": float(e.success), "policy_version": int(e.policy_version)}
            problem = self.trainer.check_episode(episode)
            if problem is not None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'episodes[{i}].{problem[1:]}")
            episodes.append(episode)
        try:
            total = self.trainer.report_episodes(request.actor_id, episodes, run_id=request.run_id)
        except UnknownRun as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return pb.ReportEpisodesResponse(episodes=total)

    # ---- evaluation (learner/distributed/evaluations.py) ------------------------------

    def NextEvaluation(self, request: pb.NextEvaluationRequest, context) -> pb.EvaluationTask:
        self._check(context)
        t, e = self.trainer, self.trainer.evaluations
        task = e.next_task(request.after_step)
        if task is None:
            return pb.EvaluationTask(available=False, finished=e.finished(t.status()["processed_steps"]), learner_id=self.learner_id)
        step, version = task
        chunks = e.chunks(step, self._encode_snapshot)
        return pb.EvaluationTask(available=chunks is not None, env_step=step, policy_version=version, learner_id=self.learner_id,
                                 num_chunks=len(chunks or ()), episodes=e.episodes, seed=e.seed + 10_000)

    def _encode_snapshot(self, version: int, params: Any) -> list[bytes]:
        return codec.encode_policy(version, params, self.policies.chunk_bytes, self.learner_id)

    def PullEvaluationPolicy(self, request: pb.EvaluationPolicyRequest, context) -> bytes:
        self._check(context)
        chunks = self.trainer.evaluations.chunks(request.env_step, self._encode_snapshot, evaluator_id=request.evaluator_id)
        if chunks is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"field 'env_step': no evaluation is pending at {request.env_step}; ask NextEvaluation again")
        if request.index >= len(chunks):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'index': got {request.index}, expected < {len(chunks)} (num_chunks)")
        return chunks[request.index]

    def ReportEvaluation(self, request: pb.EvaluationResult, context) -> pb.EvaluationAck:
        self._check(context)
        from learner.distributed.evaluations import EvaluationRejected

        e = self.trainer.evaluations
        if request.learner_id != self.learner_id:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"field 'learner_id': got {request.learner_id!r}, expected {self.learner_id!r} "
                          "(the evaluation was handed out by another learner process; ask NextEvaluation again)")
        stats = {"episodes": request.episodes, "return": request.mean_return, "return_std": request.return_std,
                 "success_rate": request.success_rate, "episode_length": request.episode_length}
        if request.HasField("normalized_score"):
            stats["normalized_score"] = request.normalized_score
        try:
            recorded = e.report(int(request.env_step), int(request.policy_version), stats, evaluator_id=request.evaluator_id,
                                episode_limit=self.trainer.episode_limit)
        except EvaluationRejected as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.EvaluationAck(recorded=recorded, pending=len(e.pending))

    # ---- robot actor state and operator commands ---------------------------------------

    def ReportActorState(self, request: pb.ActorStateReport, context) -> pb.ActorStateResponse:
        self._check(context)
        try:
            check_ids(request.actor_id, request.run_id)
            state = check_actor_state(request)
        except BatchRejected as e:
            context.abort(e.code, str(e))
        # Command ids count per learner process: an acknowledgement for another one means nothing.
        acked = request.acked_command if request.learner_id == self.learner_id else 0
        try:
            commands = self.trainer.report_state(request.actor_id, request.run_id, state, acked)
        except UnknownRun as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return pb.ActorStateResponse(commands=[pb.QueuedCommand(id=i, kind=k) for i, k in commands], learner_id=self.learner_id,
                                     learner_finished=self.trainer.finished_for(request.actor_id))

    def ActorCommand(self, request: pb.ActorCommandRequest, context) -> pb.ActorCommandResponse:
        self._check(context)
        try:
            check_actor_id(request.actor_id)
        except BatchRejected as e:
            context.abort(e.code, str(e))
        kinds = (pb.ACTOR_COMMAND_PAUSE, pb.ACTOR_COMMAND_RESUME, pb.ACTOR_COMMAND_ESTOP)
        if request.kind not in kinds:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'kind': got {request.kind}, expected one of "
                          + ", ".join(f"{pb.ActorCommandKind.Name(k)} ({k})" for k in kinds))
        if not 0 <= request.wait_s <= MAX_COMMAND_WAIT_S:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'wait_s': got {request.wait_s!r}, expected 0..{MAX_COMMAND_WAIT_S:g} seconds")
        started = time.monotonic()
        try:
            command_id, run_id, since_seen = self.trainer.queue_command(
                request.actor_id, request.kind, exclusive=(pb.ACTOR_COMMAND_PAUSE, pb.ACTOR_COMMAND_RESUME))
        except UnknownActor:
            context.abort(grpc.StatusCode.NOT_FOUND, f"field 'actor_id': no actor {short(request.actor_id)} has shaken hands with this learner "
                          "(`wsrl status` lists the connected ones)")
        except NoStateReports:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"field 'actor_id': actor {short(request.actor_id)} has never reported its state, "
                          "so it would never get the command: only robot actors (wsrl actor --robot) take them")
        acknowledged = request.wait_s > 0 and self.trainer.wait_command(request.actor_id, command_id, request.wait_s)
        return pb.ActorCommandResponse(id=command_id, acknowledged=acknowledged, seconds=time.monotonic() - started,
                                       run_label=codec.run_label(run_id), seconds_since_seen=since_seen)

    def GetStatus(self, request: pb.GetStatusRequest, context) -> pb.StatusResponse:
        s = self.trainer.status()
        actors = []
        for a in s.pop("actors"):  # labels, never run ids
            control = a.pop("control", None)
            actors.append(pb.ActorStatus(**a, control=pb.ControlStats(**control) if control else None))
        s.pop("error")
        return pb.StatusResponse(actors=actors, **s)


def observation_mismatches(theirs: list[dict], mine: list[dict], their_dim: int) -> list[str]:
    """Handshake problems between the actor's observation parts and the learner's (either may
    be [] for a flat vector: then the actor's is the "state" part of `their_dim`), one per
    differing part, each naming it: missing on one side, or another dtype or shape."""
    def describe(part: dict) -> str:  # (at most 60 characters of what an actor sent)
        text = f"{part['dtype']} {list(part['shape'])}"
        return text if len(text) <= 60 else text[:60] + "..."

    if not theirs:
        theirs = [{"name": "state", "shape": [their_dim], "dtype": "float32"}]
    if not mine:  # (only reached when the actor has parts and this learner has none)
        return [f"spec.observation_parts: actor has {len(theirs)} parts ({short([p['name'] for p in theirs], 80)}), "
                f"learner has a flat vector (no observation parts)"]
    ours, their_parts = {p["name"]: p for p in mine}, {str(p["name"]): p for p in theirs}
    problems = []
    for name in sorted(set(ours) | set(their_parts)):
        a, b = their_parts.get(name), ours.get(name)
        where = f"spec.observation_parts[{short(name)}]"
        if a is None:
            problems.append(f"{where}: actor has no such part, learner has {describe(b)}")
        elif b is None:
            problems.append(f"{where}: actor has {describe(a)}, learner has no such part")
        elif describe(a) != describe(b):
            problems.append(f"{where}: actor has {describe(a)}, learner has {describe(b)}")
    return problems[:8]
