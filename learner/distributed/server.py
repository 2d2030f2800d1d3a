"""The learner's gRPC server: bind address, TLS, the auth interceptor and health checking around the Learner service.

Binds 127.0.0.1 by default; any other address needs an auth token (`learner.distributed.auth`)
and may use TLS. The handlers are `learner.distributed.service`; health checks stay open, as
load balancers expect.
"""

from __future__ import annotations

import ipaddress
import uuid
from concurrent import futures
from pathlib import Path
from typing import Any, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from learner.distributed.auth import SERVICE, AuthInterceptor
from learner.distributed.memory import MemoryKeeper
from learner.distributed.service import LearnerService
from learner.distributed.trainer import Trainer
from learner.distributed.validation import max_request_bytes
from protos.wsrl.v1 import learner_pb2 as pb


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
