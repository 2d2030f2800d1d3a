"""The learner's gRPC server: the `wsrl.v1.Learner` service, auth, health checking.

Handlers validate, hand batches to the `Trainer` and answer; they never run JAX updates.
Binds 127.0.0.1 by default; any other address needs an auth token (call metadata
`authorization: Bearer <token>`, compared in constant time) and may use TLS. GetStatus needs
its own status token when one is configured (and always off loopback).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from learner.config import to_dict
from learner.distributed.trainer import QueueFull, SequenceGap, Trainer, UnknownRun
from learner.distributed.validation import BatchRejected, validate_batch
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from protos.wsrl.v1 import learner_pb2_grpc as pb_grpc

SERVICE = "wsrl.v1.Learner"
STATUS_METHODS = {f"/{SERVICE}/GetStatus"}
# Per-message ceiling on what the server accepts; a batch over it is refused by gRPC itself
# with RESOURCE_EXHAUSTED before any handler runs.
MAX_RECEIVE_BYTES = 64 << 20


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


def token_matches(metadata: Any, expected: str) -> bool:
    """Whether call metadata carries `authorization: Bearer <expected>` (constant-time compare)."""
    supplied = ""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            supplied = value[len("Bearer ") :]
    # compare_digest on equal-type bytes; its time does not depend on where they differ.
    return hmac.compare_digest(supplied.encode(), expected.encode())


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


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires the actor token on Learner calls and the status token on GetStatus.

    A token of None means that kind of call is open (only allowed on loopback; the server
    refuses to bind elsewhere without an actor token). Health checks stay open, as load
    balancers expect."""

    def __init__(self, token: Optional[str], status_token: Optional[str], status_open: bool):
        self.token, self.status_token, self.status_open = token, status_token, status_open

    def required_token(self, method: str) -> Optional[str]:
        """The token `method` needs ('' when it needs one but none is configured: deny)."""
        if not method.startswith(f"/{SERVICE}/"):
            return None
        if method in STATUS_METHODS:
            if self.status_token:
                return self.status_token
            return None if self.status_open else ""
        return self.token

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        required = self.required_token(handler_call_details.method)
        if handler is None or required is None:
            return handler
        if required == "":
            return _deny(handler, f"{handler_call_details.method} is disabled off loopback without --status-token")
        if not token_matches(handler_call_details.invocation_metadata, required):
            kind = "status token" if handler_call_details.method in STATUS_METHODS else "auth token"
            return _deny(handler, f"missing or wrong {kind} (send metadata 'authorization: Bearer <token>')")
        return handler


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
        self.policies = PolicyStore(trainer, learner_id)
        c = trainer.config
        self.spec = trainer.spec
        self.fingerprint = codec.policy_fingerprint(c.agent, self.spec["observation_dim"], self.spec["action_dim"])
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
        for key in ("task", "observation_dim", "action_dim"):
            if theirs[key] != self.spec.get(key):
                problems.append(f"spec.{key}: actor has {theirs[key]!r}, learner has {self.spec.get(key)!r}")
        if request.config_fingerprint and request.config_fingerprint != self.fingerprint:
            problems.append(f"config_fingerprint: actor has {request.config_fingerprint[:12]}, learner has {self.fingerprint[:12]}")
        if problems:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "handshake mismatch: " + "; ".join(problems))
        if not request.actor_id or not request.run_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "field 'actor_id'/'run_id': expected non-empty strings")
        next_sequence = self.trainer.register(request.actor_id, request.run_id, request.next_sequence)
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
        )

    def PushTransitions(self, request: pb.TransitionBatch, context) -> pb.PushResponse:
        self._check(context)
        t = self.trainer
        try:
            stored, next_sequence = t.submit(request.actor_id, request.run_id, request.sequence, None)
            if stored:
                arrays = validate_batch(request, self.spec, t.settings.max_batch_size, t.latest_policy()[0], self.learner_id)
                stored, next_sequence = t.submit(request.actor_id, request.run_id, request.sequence, arrays)
        except BatchRejected as e:
            t.note_rejected()
            context.abort(e.code, str(e))
        except UnknownRun as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except SequenceGap as e:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, str(e))
        except QueueFull as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
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
        episodes = []
        for i, e in enumerate(request.episodes):
            if not (e.episode_return == e.episode_return and abs(e.episode_return) < float("inf")):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"field 'episodes[{i}].episode_return': got {e.episode_return}, expected a finite number")
            episodes.append({"return": e.episode_return, "length": int(e.length), "success": float(e.success), "policy_version": int(e.policy_version)})
        return pb.ReportEpisodesResponse(episodes=self.trainer.report_episodes(request.actor_id, episodes, request.run_id))

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
        chunks = self.trainer.evaluations.chunks(request.env_step, self._encode_snapshot)
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
            recorded = e.report(int(request.env_step), int(request.policy_version), stats)
        except EvaluationRejected as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.EvaluationAck(recorded=recorded, pending=len(e.pending))

    def GetStatus(self, request: pb.GetStatusRequest, context) -> pb.StatusResponse:
        s = self.trainer.status()
        actors = [pb.ActorStatus(**a) for a in s.pop("actors")]
        s.pop("error")
        return pb.StatusResponse(actors=actors, **s)


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
    ):
        host, _ = split_address(address)
        loopback = is_loopback(host)
        if not loopback and not token:
            raise ValueError(f"bind address {address!r} is not loopback: an auth token is required (--token or WSRL_TOKEN)")
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("TLS: give both --tls-cert and --tls-key, or neither")
        self.trainer = trainer
        self.learner_id = uuid.uuid4().hex[:12]
        self.service = LearnerService(trainer, self.learner_id)
        self.health = health.HealthServicer()
        interceptors = [AuthInterceptor(token, status_token, status_open=loopback)]
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="wsrl-grpc"),
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
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
        self.server.start()
        for service in ("", SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stops accepting calls, then lets the trainer finish what was accepted."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.trainer.stop()
