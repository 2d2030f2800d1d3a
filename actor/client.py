"""The actor's gRPC client: one channel to the learner, token metadata, retries with backoff."""

from __future__ import annotations

import random
import socket
import ssl
import threading
import time
from typing import Callable, Optional, TypeVar

import grpc

from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from protos.wsrl.v1 import learner_pb2_grpc as pb_grpc

T = TypeVar("T")
# Failures that a later attempt may not see: the learner restarting, overloaded or slow.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)
MAX_RECEIVE_BYTES = 64 << 20


class LearnerClient:
    """Stubs for the Learner service; create it in the process that uses it (after spawn)."""

    def __init__(self, address: str, token: Optional[str] = None, tls_ca: Optional[str] = None, timeout_s: float = 600.0, max_backoff_s: float = 5.0):
        options = [
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            # Reconnect soon after a restarted learner is back (gRPC's default backoff grows
            # to 120 s, so an actor could idle for minutes after a learner outage).
            ("grpc.initial_reconnect_backoff_ms", int(min(1.0, max_backoff_s) * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(max_backoff_s * 1000)),
        ]
        if tls_ca:
            try:
                with open(tls_ca, "rb") as f:
                    root = f.read()
            except OSError as e:
                raise ValueError(f"--tls-ca: cannot read {tls_ca!r}: {e.strerror}") from None
            if b"-----BEGIN CERTIFICATE-----" not in root:
                raise ValueError(f"--tls-ca: {tls_ca!r} holds no PEM certificate")
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = pb_grpc.LearnerStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout_s = timeout_s

    def wait_ready(self, timeout_s: float) -> None:
        """Blocks until the channel connects; raises grpc.FutureTimeoutError otherwise."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def handshake(self, request: pb.HandshakeRequest) -> pb.HandshakeResponse:
        return self.stub.Handshake(request, timeout=30.0, metadata=self.metadata)

    def push(self, batch: pb.TransitionBatch) -> pb.PushResponse:
        # Long deadline: in sync mode the learner holds the answer while the actor is ahead.
        return self.stub.PushTransitions(batch, timeout=self.timeout_s, metadata=self.metadata)

    def pull(self, actor_id: str, have_version: int, have_learner_id: str = "") -> tuple[int, Optional[dict], str]:
        """(version, params, learner_id) of the latest policy; params None if `have_version`
        (served by `have_learner_id`) is it."""
        for attempt in range(3):
            request = pb.PullPolicyRequest(actor_id=actor_id, have_version=have_version, have_learner_id=have_learner_id)
            first = self.stub.PullPolicy(request, timeout=60.0, metadata=self.metadata)
            chunks = [first]
            try:
                for index in range(1, first.num_chunks):  # one unary call per further chunk
                    request = pb.PullPolicyRequest(actor_id=actor_id, index=index, version=first.version)
                    chunks.append(self.stub.PullPolicy(request, timeout=60.0, metadata=self.metadata))
            except grpc.RpcError as e:
                # Published over while we fetched (the learner keeps a few versions): again.
                if e.code() == grpc.StatusCode.NOT_FOUND and attempt < 2:
                    continue
                raise
            version, unchanged, payload, learner_id = codec.join_chunks(iter(chunks))
            return version, (None if unchanged else codec.deserialize_params(payload)), learner_id
        raise AssertionError("unreachable")

    def report(self, request: pb.ReportEpisodesRequest) -> pb.ReportEpisodesResponse:
        return self.stub.ReportEpisodes(request, timeout=30.0, metadata=self.metadata)

    def report_state(self, request: pb.ActorStateReport, timeout_s: float = 2.0) -> pb.ActorStateResponse:
        return self.stub.ReportActorState(request, timeout=timeout_s, metadata=self.metadata)

    def actor_command(self, request: pb.ActorCommandRequest) -> pb.ActorCommandResponse:
        return self.stub.ActorCommand(request, timeout=request.wait_s + 10.0, metadata=self.metadata)

    def status(self) -> pb.StatusResponse:
        return self.stub.GetStatus(pb.GetStatusRequest(), timeout=10.0, metadata=self.metadata)

    # ---- evaluation (actor/evaluator.py) ----

    def next_evaluation(self, evaluator_id: str, after_step: int) -> pb.EvaluationTask:
        return self.stub.NextEvaluation(pb.NextEvaluationRequest(evaluator_id=evaluator_id, after_step=after_step), timeout=30.0, metadata=self.metadata)

    def pull_evaluation_policy(self, evaluator_id: str, task: pb.EvaluationTask) -> dict:
        """The params of `task`'s policy version (its chunks, one unary call each)."""
        chunks = [self.stub.PullEvaluationPolicy(pb.EvaluationPolicyRequest(evaluator_id=evaluator_id, env_step=task.env_step, index=i),
                                                 timeout=60.0, metadata=self.metadata) for i in range(task.num_chunks)]
        version, _, payload, _ = codec.join_chunks(iter(chunks))
        if version != task.policy_version:
            raise codec.WireError("PolicyChunk.version", f"got {version}, expected {task.policy_version} (the evaluation's version)")
        return codec.deserialize_params(payload)

    def report_evaluation(self, result: pb.EvaluationResult) -> pb.EvaluationAck:
        return self.stub.ReportEvaluation(result, timeout=30.0, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()


def speaks_tls(address: str, timeout_s: float = 3.0) -> Optional[bool]:
    """Whether the server at HOST:PORT answers a TLS handshake (its certificate unchecked):
    True, False (it takes the connection but not TLS: plaintext), or None (no connection)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    except (OSError, ValueError):
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asking whether it speaks TLS at all
    context.set_alpn_protocols(["h2"])
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False
    finally:
        sock.close()


def connection_hint(address: str, tls_ca: Optional[str]) -> str:
    """Why a learner that takes TCP connections still cannot be reached, when the cause is
    TLS on one side only or an untrusted certificate; '' otherwise (e.g. it is not up)."""
    tls = speaks_tls(address)
    if tls is None:
        return ""
    if tls and not tls_ca:
        return (f"the learner at {address} serves TLS and this client connects in plaintext: pass --tls-ca CERT "
                "(the learner's certificate, e.g. learner.crt; docs/distributed.md, Security)")
    if not tls and tls_ca:
        return (f"the learner at {address} does not serve TLS (plaintext) and this client connects with --tls-ca: "
                "drop --tls-ca, or start the learner with --tls-cert and --tls-key")
    if tls and tls_ca:
        return (f"the learner at {address} serves TLS but the handshake failed: is --tls-ca {tls_ca!r} the learner's certificate, "
                f"and does it name the host {address.rpartition(':')[0]!r} (subjectAltName)?")
    return ""


def unresolved(address: str) -> str:
    """": the host name ... does not resolve (check the name)" when HOST of HOST:PORT does not
    resolve (a typo, or a name only another network knows), else "": the waiting line then
    says why nothing answers."""
    import socket

    host = address.rpartition(":")[0].strip("[]")
    if not host:
        return ""
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        return f": the host name {host!r} does not resolve ({e.strerror}; check the name, or give an IP address)"
    except (OSError, UnicodeError):
        return ""
    return ""


def wait_for_learner(client: LearnerClient, address: str, stop: threading.Event, timeout_s: float, every_s: float = 5.0, name: str = "wsrl actor") -> bool:
    """Blocks until the channel to the learner at `address` is connected, saying "waiting for
    learner at HOST:PORT, retrying in N s" at least every `every_s` seconds while it is not.
    Returns False when `stop` is set or `timeout_s` (> 0) passes first; 0 waits forever."""
    started = time.monotonic()
    try:
        client.wait_ready(0.5)
        return True
    except grpc.FutureTimeoutError:
        pass
    while not stop.is_set():
        waited = time.monotonic() - started
        left = timeout_s - waited if timeout_s > 0 else every_s
        if left <= 0:
            return False
        slice_s = max(0.1, min(every_s, left))
        limit = f"; giving up after {timeout_s:g} s" if timeout_s > 0 else ""
        print(f"[{name}] waiting for learner at {address}{unresolved(address)}, retrying in {slice_s:.0f} s ({waited:.0f} s so far{limit})", flush=True)
        try:
            client.wait_ready(slice_s)
            return True
        except grpc.FutureTimeoutError:
            continue
    return False


def with_retries(call: Callable[[], T], stop: threading.Event, give_up_s: Optional[float] = None, what: str = "call", base_s: float = 0.05, cap_s: float = 5.0) -> T:
    """Runs `call` until it succeeds, retrying RETRYABLE errors with capped exponential
    backoff and jitter. Gives up (re-raising) on other errors, and on retryable ones once
    `give_up_s` has passed, or when `stop` is set and at least one attempt has failed."""
    started, attempt = time.monotonic(), 0
    while True:
        try:
            return call()
        except grpc.RpcError as e:
            if e.code() not in RETRYABLE:
                raise
            if stop.is_set() or (give_up_s is not None and time.monotonic() - started > give_up_s):
                raise
            delay = min(cap_s, base_s * 2**attempt) * (0.5 + random.random())
            attempt += 1
            if attempt in (1, 5) or attempt % 20 == 0:
                print(f"[wsrl actor] {what}: {e.code().name} ({e.details()}); retrying (attempt {attempt})", flush=True)
            stop.wait(delay)
