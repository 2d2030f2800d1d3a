"""Who may call what on the learner: the auth tokens (shared, per-actor, status, admin) that a gRPC interceptor checks.

Any address other than loopback needs an auth token (call metadata `authorization: Bearer
<token>`, compared in constant time): the shared token (any actor id) and/or per-actor tokens
(each good for one actor id only). GetStatus needs its own status token when one is configured
(and always off loopback). ActorCommand (remote pause / resume / e-stop) needs the admin token
(--admin-token) when one is configured, and always off loopback; the shared, per-actor and
status tokens never grant it.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Optional

import grpc

from learner.distributed.validation import short

# The service's full name: the method paths below (and its health status) are keyed by it.
SERVICE = "wsrl.v1.Learner"
STATUS_METHODS = {f"/{SERVICE}/GetStatus"}
# Calls whose request names the actor: an actor token is only good for its own actor id.
ACTOR_METHODS = {f"/{SERVICE}/{m}" for m in ("Handshake", "PushTransitions", "PullPolicy", "ReportEpisodes", "ReportActorState")}
# ... and calls whose request names the evaluator: a per-actor token listed for an id is also
# good for an evaluator of that id (`--actor-tokens` lines 'evaluator-0 TOKEN').
EVALUATOR_METHODS = {f"/{SERVICE}/{m}" for m in ("NextEvaluation", "PullEvaluationPolicy", "ReportEvaluation")}
# Operator commands to actors: only the admin token (never an actor's or the status token).
ADMIN_METHODS = {f"/{SERVICE}/ActorCommand"}


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
