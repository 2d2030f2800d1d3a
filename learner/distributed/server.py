"""The learner's gRPC server: the `wsrl.v1.Learner` service, auth, health checking.

Handlers validate, hand batches to the `Trainer` and answer; they never run JAX updates.
Binds 127.0.0.1 by default; any other address needs an auth token (call metadata
`authorization: Bearer <token>`, compared in constant time) and may use TLS: the shared token
(any actor id) and/or per-actor tokens (each good for one actor id only). GetStatus needs its
own status token when one is configured (and always off loopback). ActorCommand (remote
pause / resume / e-stop) needs the admin token (--admin-token) when one is configured, and
always off loopback; the shared, per-actor and status tokens never grant it.

Every request is bounded before it reaches the trainer: the receive limit follows from the
spec and `max_batch_size` (`validation.max_request_bytes`), ids and sequence numbers are
checked, at most `max_inflight_pushes` pushes are handled at once, and no error message quotes
more than a few dozen characters of what it refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any, Optional

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from learner.config import to_dict
from learner.distributed.trainer import (
    Conflict,
    NoStateReports,
    QueueFull,
    SequenceGap,
    TooManyActors,
    Trainer,
    UnknownActor,
    UnknownRun,
)
from learner.distributed.validation import (
    MAX_EPISODES_PER_REPORT,
    MAX_SEQUENCE,
    BatchRejected,
    batch_digest,
    check_actor_id,
    check_actor_state,
    check_ids,
    max_request_bytes,
    short,
    validate_batch,
)
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from protos.wsrl.v1 import learner_pb2_grpc as pb_grpc

SERVICE = "wsrl.v1.Learner"
STATUS_METHODS = {f"/{SERVICE}/GetStatus"}
# Calls whose request names the actor: an actor token is only good for its own actor id.
ACTOR_METHODS = {f"/{SERVICE}/{m}" for m in ("Handshake", "PushTransitions", "PullPolicy", "ReportEpisodes", "ReportActorState")}
# ... and calls whose request names the evaluator: a per-actor token listed for an id is also
# good for an evaluator of that id (`--actor-tokens` lines 'evaluator-0 TOKEN').
EVALUATOR_METHODS = {f"/{SERVICE}/{m}" for m in ("NextEvaluation", "PullEvaluationPolicy", "ReportEvaluation")}
# Operator commands to actors: only the admin token (never an actor's or the status token).
ADMIN_METHODS = {f"/{SERVICE}/ActorCommand"}
# ActorCommand answers within this long at most (its wait_s).
MAX_COMMAND_WAIT_S = 30.0


def is_loopback(host: str) -> bool:
    """True for localhost / 127.0.0.0/8 / ::1; False for anything else (0.0.0.0 included)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address: got {address!r}, expected HOST:PORT (e.g. 127.0.0.1:50051)")
    return host, int(port)


def _supplied_token(metadata: Any) -> str:
    supplied = ""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            supplied = value[len("Bearer ") :]
    return supplied


def token_matches(metadata: Any, expected: str) -> bool:
    """Whether call metadata carries `authorization: Bearer <expected>` (constant-time compare)."""
    # compare_digest on equal-type bytes; its time does not depend on where they differ.
    return hmac.compare_digest(_supplied_token(metadata).encode(), expected.encode())


def read_actor_tokens(path: str) -> dict[str, str]:
    """A per-actor tokens file: one `ACTOR_ID TOKEN` pair per line (blank lines and lines
    starting with '#' skipped). Returns {token: actor id}; ValueError naming the line when a
    line is malformed, an actor id is invalid, a token is shorter than 16 characters or used
    twice."""
    from learner.distributed.validation import (
        ACTOR_ID_CHARS,
        ACTOR_ID_LENGTH,
        BatchRejected,
        check_ids,
    )

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"--actor-tokens: cannot read {path!r}: {e.strerror}") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"--actor-tokens {path!r} line {number}"
        if len(parts) != 2:
            raise ValueError(f"{where}: got {len(parts)} fields, expected 'ACTOR_ID TOKEN'")
        actor_id, token = parts
        try:
            check_ids(actor_id, "x" * 16)
        except BatchRejected:
            raise ValueError(f"{where}: actor id {short(actor_id)} is not {ACTOR_ID_LENGTH[0]}-{ACTOR_ID_LENGTH[1]} characters of [{ACTOR_ID_CHARS}]") from None
        if len(token) < 16:
            raise ValueError(f"{where}: token of {len(token)} characters, expected at least 16")
        if token in tokens:
            raise ValueError(f"{where}: this token is already given to actor {tokens[token]!r}; every actor needs its own")
        tokens[token] = actor_id
    if not tokens:
        raise ValueError(f"--actor-tokens {path!r}: no 'ACTOR_ID TOKEN' line")
    return tokens


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind (unary/stream) that aborts with UNAUTHENTICATED."""

    def abort(request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def _bound_to_actor(handler: grpc.RpcMethodHandler, actor_id: str, field: str = "actor_id") -> grpc.RpcMethodHandler:
    """`handler` (unary-unary) refusing requests whose `field` (actor_id, or evaluator_id) is
    not `actor_id`."""
    inner = handler.unary_unary

    def checked(request, context):
        if getattr(request, field) != actor_id:
            kind = "actor" if field == "actor_id" else "evaluator"
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"field '{field}': this token is for {kind} {actor_id!r}, got {short(getattr(request, field))}")
        return inner(request, context)

    return grpc.unary_unary_rpc_method_handler(checked, request_deserializer=handler.request_deserializer,
                                               response_serializer=handler.response_serializer)


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires the actor token on Learner calls and the status token on GetStatus.

    A token of None means that kind of call is open (only allowed on loopback; the server
    refuses to bind elsewhere without an actor token). With `actor_tokens` ({token: actor id})
    a call may instead carry one of those: it is then only served for that actor id
    (PERMISSION_DENIED for another), and never for GetStatus. Health checks stay open, as load
    balancers expect."""

    def __init__(self, token: Optional[str], status_token: Optional[str], status_open: bool, actor_tokens: Optional[dict] = None,
                 admin_token: Optional[str] = None):
        self.token, self.status_token, self.status_open = token, status_token, status_open
        # ActorCommand: the admin token; without one, open only where status is (loopback).
        self.admin_token = admin_token
        # Compared as sha256 digests, so every comparison has the same length and time.
        self.actor_tokens = {hashlib.sha256(t.encode()).digest(): a for t, a in (actor_tokens or {}).items()}

    def actor_for(self, metadata: Any) -> Optional[str]:
        """The actor id whose per-actor token the call carries, if any (constant time per token)."""
        supplied = hashlib.sha256(_supplied_token(metadata).encode()).digest()
        found = None
        for digest, actor_id in self.actor_tokens.items():
            if hmac.compare_digest(supplied, digest):
                found = actor_id
        return found

    def required_token(self, method: str) -> Optional[str]:
        """The token `method` needs ('' when it needs one but none is configured: deny)."""
        if not method.startswith(f"/{SERVICE}/"):
            return None
        if method in STATUS_METHODS:
            if self.status_token:
                return self.status_token
            return None if self.status_open else ""
        if method in ADMIN_METHODS:
            if self.admin_token:
                return self.admin_token
            return None if self.status_open else ""
        if self.token is None and self.actor_tokens:
            return ""  # only per-actor tokens are accepted
        return self.token

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        required = self.required_token(handler_call_details.method)
        method, metadata = handler_call_details.method, handler_call_details.invocation_metadata
        if handler is None or required is None:
            return handler
        if (method in ACTOR_METHODS or method in EVALUATOR_METHODS) and self.actor_tokens:
            if required and token_matches(metadata, required):
                return handler
            actor_id = self.actor_for(metadata)
            if actor_id is not None:
                return _bound_to_actor(handler, actor_id, "actor_id" if method in ACTOR_METHODS else "evaluator_id")
            return _deny(handler, "missing or wrong auth token (send metadata 'authorization: Bearer <token>': the shared or this actor's token)")
        if required == "":
            if method in STATUS_METHODS:
                return _deny(handler, f"{method} is disabled off loopback without --status-token")
            if method in ADMIN_METHODS:
                return _deny(handler, f"{method} is disabled off loopback without --admin-token")
            return _deny(handler, f"{method} needs the shared --token (a per-actor token serves only its actor's "
                                  "Handshake, PushTransitions, PullPolicy and ReportEpisodes)")
        if not token_matches(metadata, required):
            kind = "status token" if method in STATUS_METHODS else "admin token" if method in ADMIN_METHODS else "auth token"
            return _deny(handler, f"missing or wrong {kind} (send metadata 'authorization: Bearer <token>')")
        return handler


def resident_bytes() -> int:
    """This process's resident memory (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_freed_memory() -> bool:
    """glibc's `malloc_trim(0)`: hands memory freed inside the malloc heaps back to the OS.
    The training commands tell glibc to keep freed memory (`learner.runs.keep_freed_memory`,
    so XLA's scratch is reused); after a burst of large requests that would keep the burst's
    peak resident for good. Returns whether it ran (glibc only)."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


class MemoryKeeper:
    """Every `interval_s`, if the process's resident memory grew by more than `slack_bytes`
    since the last look, releases freed heap memory (`release_freed_memory`): after a flood of
    requests the learner returns near its working size; the cost is one trim (and XLA's
    scratch faulted in again once) per `slack_bytes` of growth, never on a steady state."""

    def __init__(self, interval_s: float = 5.0, slack_bytes: int = 64 << 20):
        self.interval_s, self.slack_bytes = interval_s, slack_bytes
        self.trims = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wsrl-memory", daemon=True)

    def start(self) -> "MemoryKeeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self, low: int) -> int:
        """One look: trims if resident memory exceeds `low` + slack; returns the new low mark."""
        now = resident_bytes()
        if now > low + self.slack_bytes and release_freed_memory():
            self.trims += 1
            return resident_bytes()
        return min(low, now) if low else now

    def _run(self) -> None:
        low = resident_bytes()
        while not self._stop.wait(self.interval_s):
            low = self.check(low)


class PolicyStore:
    """Published actor params as serialized PolicyChunk messages, ready to send: encoded
    (device to host, msgpack, chunking: `codec.encode_policy`) once per version, on its first
    pull; every other pull of that version only sends the bytes. Publishing itself (on the
    training thread) stays a reference swap. The last `keep` versions stay, so an actor
    fetching a multi-chunk version by index can finish while newer ones are published."""

    def __init__(self, trainer: Trainer, learner_id: str = "", keep: int = 4, chunk_bytes: int = codec.CHUNK_BYTES):
        self.trainer = trainer
        self.learner_id = learner_id
        self.keep = keep
        self.chunk_bytes = chunk_bytes
        self._lock = threading.Lock()
        self._cache: dict[int, list[bytes]] = {}  # version -> serialized chunks

    def latest(self) -> tuple[int, list[bytes]]:
        """(version, its serialized PolicyChunk messages) of the latest published policy."""
        version, params = self.trainer.latest_policy()
        with self._lock:
            chunks = self._cache.get(version)
        if chunks is None:
            # Serialize outside the lock; two first pulls of one version may both do it.
            chunks = codec.encode_policy(version, params, self.chunk_bytes, self.learner_id)
            with self._lock:
                chunks = self._cache.setdefault(version, chunks)
                while len(self._cache) > self.keep:
                    del self._cache[min(self._cache)]
        return version, chunks

    def get(self, version: int) -> Optional[list[bytes]]:
        """The chunks of `version` if it is still held, else None."""
        with self._lock:
            return self._cache.get(version)


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


def _serialize_response(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def add_learner_service(server: grpc.Server, service: LearnerService) -> None:
    """`learner_pb2_grpc.add_LearnerServicer_to_server`, except that a handler may answer with
    an already serialized message (PullPolicy's cached chunks: no copy, no re-encoding)."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["Learner"].methods:
        assert not (method.client_streaming or method.server_streaming), method.name
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(service, method.name),
            request_deserializer=getattr(pb, method.input_type.name).FromString,
            response_serializer=_serialize_response,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class LearnerServer:
    """A gRPC server around a `Trainer`: start(), then stop(); `port` is the bound port."""

    def __init__(
        self,
        trainer: Trainer,
        address: str = "127.0.0.1:0",
        token: Optional[str] = None,
        status_token: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        max_workers: int = 32,
        actor_tokens: Optional[dict] = None,
        admin_token: Optional[str] = None,
    ):
        host, _ = split_address(address)
        admin_token = admin_token or None
        if admin_token is not None and (len(admin_token) < 16 or admin_token in (token, status_token) or admin_token in (actor_tokens or {})):
            raise ValueError("--admin-token: expected at least 16 characters, different from --token, --status-token and every per-actor token "
                             "(whoever holds it can pause and e-stop the robots)")
        loopback = is_loopback(host)
        if not loopback and not token and not actor_tokens:
            raise ValueError(f"bind address {address!r} is not loopback: an auth token is required (--token or WSRL_TOKEN, or --actor-tokens)")
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("TLS: give both --tls-cert and --tls-key, or neither")
        self.trainer = trainer
        self.learner_id = uuid.uuid4().hex[:12]
        self.service = LearnerService(trainer, self.learner_id)
        self.health = health.HealthServicer()
        interceptors = [AuthInterceptor(token, status_token, status_open=loopback, actor_tokens=actor_tokens, admin_token=admin_token)]
        # What one request may weigh: a full batch of this spec (or a full episode report),
        # plus headroom; gRPC refuses anything larger with RESOURCE_EXHAUSTED before decoding.
        self.max_receive_bytes = max_request_bytes(trainer.spec, trainer.settings.max_batch_size)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="wsrl-grpc"),
            interceptors=interceptors,
            # HTTP/2 flow control sized by the same limit instead of BDP probing (which grows a
            # stream's window to many MB): an oversized push is refused after at most one
            # window of bytes (64 concurrent 60 MB pushes: +1 MB resident instead of +300 MB).
            # so_reuseport 0: a second learner on the same port fails to bind instead of
            # silently sharing its connections with the first.
            options=[("grpc.max_receive_message_length", self.max_receive_bytes), ("grpc.http2.bdp_probe", 0), ("grpc.so_reuseport", 0),
                     ("grpc.http2.lookahead_bytes", max(65535, min(self.max_receive_bytes, 16 << 20)))],
            # Workers held by sync-mode backpressure must not starve new calls.
            maximum_concurrent_rpcs=max_workers * 4,
        )
        add_learner_service(self.server, self.service)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if tls_cert:
            pem = {}
            for flag, path, marker in (("--tls-cert", tls_cert, b"-----BEGIN CERTIFICATE-----"), ("--tls-key", tls_key, b"PRIVATE KEY-----")):
                try:
                    pem[flag] = Path(path).read_bytes()
                except OSError as e:
                    raise ValueError(f"{flag}: cannot read {path!r}: {e.strerror}") from None
                if marker not in pem[flag]:
                    raise ValueError(f"{flag}: {path!r} holds no PEM {'certificate' if flag == '--tls-cert' else 'private key'}")
            credentials = grpc.ssl_server_credentials([(pem["--tls-key"], pem["--tls-cert"])])
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not bind {address!r}")
        self.address = f"{host}:{self.port}"

    def start(self) -> "LearnerServer":
        self.trainer.start()
        self.memory = MemoryKeeper().start()
        self.server.start()
        for service in ("", SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stops accepting calls, then lets the trainer finish what was accepted."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.trainer.stop()
        if getattr(self, "memory", None) is not None:
            self.memory.stop()
