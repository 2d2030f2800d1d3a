"""Pure checks of incoming transition batches: nothing reaches the replay buffer unchecked.

`validate_batch` either returns the decoded arrays or raises `BatchRejected` with the gRPC
status to answer and a message naming the offending field and what was expected.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Mapping

import grpc
import numpy as np

from protos.codec import WireError, decode_tensor, observation_parts, run_label, zstd_bound  # noqa: F401 (run_label: re-exported)
from protos.wsrl.v1 import learner_pb2 as pb

# (field, dtype, trailing shape key): "obs" -> (N, observation_dim), "act" -> (N, action_dim).
# With observation parts (a spec with images) the two "obs" fields are absent and
# OBSERVATION_PART_FIELDS carry one tensor per part instead.
BATCH_FIELDS = (
    ("observations", "float32", "obs"),
    ("actions", "float32", "act"),
    ("rewards", "float32", None),
    ("next_observations", "float32", "obs"),
    ("terminals", "bool", None),
    ("episode_ends", "bool", None),
)
OBSERVATION_PART_FIELDS = {"observations": "observation_parts", "next_observations": "next_observation_parts"}
# Actions live in the policy's tanh range; the actor's env wrapper rescales to the env's own.
ACTION_LOW, ACTION_HIGH = -1.0, 1.0
# Ids: an actor id names a machine (a hostname fits); a run id is the run's secret (the actor
# draws 128 random bits, 32 hex characters), so it must be long enough not to be guessed.
ACTOR_ID_CHARS, ACTOR_ID_LENGTH = "A-Za-z0-9._:@-", (1, 128)
RUN_ID_CHARS, RUN_ID_LENGTH = "A-Za-z0-9_-", (16, 128)
_ACTOR_ID = re.compile(rf"[{ACTOR_ID_CHARS}]{{{ACTOR_ID_LENGTH[0]},{ACTOR_ID_LENGTH[1]}}}")
_RUN_ID = re.compile(rf"[{RUN_ID_CHARS}]{{{RUN_ID_LENGTH[0]},{RUN_ID_LENGTH[1]}}}")
# Sequence numbers stay within int64 (the learner answers next = sequence + 1 in a uint64).
MAX_SEQUENCE = 2**63 - 1
# ReportEpisodes: at most this many episodes per call; an episode of a task outside the task
# table (no known time limit) may be at most this long.
MAX_EPISODES_PER_REPORT = 1024
DEFAULT_EPISODE_LIMIT = 1_000_000
# The handshake's task name and config fingerprint (a sha256 hex) are short strings.
MAX_TASK_CHARS = 256
# Receive limit: the largest legitimate request (a full batch, a full episode report or a
# handshake) times this, plus a fixed allowance for ids and message framing.
RECEIVE_HEADROOM, RECEIVE_EXTRA_BYTES = 1.25, 64 << 10


class BatchRejected(Exception):
    """A batch that must not be stored; `code` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _invalid(field: str, message: str) -> BatchRejected:
    return BatchRejected(grpc.StatusCode.INVALID_ARGUMENT, f"field '{field}': {message}")


def short(value, limit: int = 40) -> str:
    """repr(value) cut to `limit` characters (with the full length named), so that no error
    message echoes unbounded input back to the caller."""
    text = repr(list(value) if isinstance(value, (list, tuple)) or type(value).__name__.startswith("Repeated") else value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} items" if not isinstance(value, str) else f"{len(value)} characters"
    return f"{text[:limit]}... ({size})"


def check_ids(actor_id: str, run_id: str, prefix: str = "") -> None:
    """Raises BatchRejected (INVALID_ARGUMENT) unless both ids have the documented length and
    characters (ACTOR_ID_*, RUN_ID_*); the message quotes at most 40 characters of the input."""
    if not _ACTOR_ID.fullmatch(actor_id):
        lo, hi = ACTOR_ID_LENGTH
        raise _invalid(f"{prefix}actor_id", f"got {short(actor_id)} ({len(actor_id)} characters), expected {lo}-{hi} characters of [{ACTOR_ID_CHARS}]")
    if not _RUN_ID.fullmatch(run_id):
        lo, hi = RUN_ID_LENGTH
        raise _invalid(f"{prefix}run_id", f"got {len(run_id)} characters, expected {lo}-{hi} characters of [{RUN_ID_CHARS}] (a random per-run secret)")


def batch_digest(batch: pb.TransitionBatch) -> bytes:
    """A 128-bit hash of a batch's content (policy version and learner id, every tensor's dtype,
    shape and bytes): a resent batch is a duplicate only when its digest equals the stored one."""
    h = hashlib.blake2b(digest_size=16, person=b"wsrl-batch")
    h.update(struct.pack("<Q", batch.policy_version))
    h.update(batch.policy_learner_id.encode() + b"\0")
    for field, _, _ in BATCH_FIELDS:
        if not batch.HasField(field):
            h.update(b"\xff")
            continue
        t = getattr(batch, field)
        h.update(t.dtype.encode() + b"\0" + struct.pack(f"<Q{len(t.shape)}q", len(t.shape), *t.shape) + struct.pack("<Q", len(t.data)))
        h.update(t.data)
    if batch.HasField("interventions"):  # optional: batches without it hash as before
        t = batch.interventions
        h.update(b"interventions\0" + t.dtype.encode() + b"\0" + struct.pack(f"<Q{len(t.shape)}q", len(t.shape), *t.shape) + t.data)
    for field in OBSERVATION_PART_FIELDS.values():  # observation parts: absent from flat batches
        for part in getattr(batch, field):
            t = part.tensor
            h.update(field.encode() + b"\0" + part.name.encode() + b"\0" + t.dtype.encode() + b"\0" + t.encoding.encode() + b"\0")
            h.update(struct.pack(f"<Q{len(t.shape)}qQ", len(t.shape), *t.shape, len(t.data)) + t.data)
    return h.digest()


def max_request_bytes(spec: Mapping, max_batch_size: int) -> int:
    """The learner's per-message receive limit, derived from the handshake spec and
    `max_batch_size`: the largest of a full batch (observations and next observations, float32
    actions and rewards, bool terminals and episode ends), a full episode report and a
    handshake, times RECEIVE_HEADROOM, plus RECEIVE_EXTRA_BYTES (ids, tensor headers, framing).
    With observation parts, each part's tensor counts at its raw size or, if larger, the
    largest zstd frame of it (incompressible frames grow by ~0.4%). Grows with the spec (e.g.
    camera observations), so nothing is hard-coded."""
    obs, act = int(spec["observation_dim"]), int(spec["action_dim"])
    parts = observation_parts(spec)
    if parts:
        part_bytes = [int(np.prod(p["shape"])) * np.dtype(p["dtype"]).itemsize for p in parts]
        batch = 2 * sum(zstd_bound(max_batch_size * b) for b in part_bytes) + max_batch_size * (4 * (act + 1) + 3)
    else:
        row = 4 * (2 * obs + act + 1) + 3  # + bool terminals, episode ends and interventions
        batch = max_batch_size * row
    report = MAX_EPISODES_PER_REPORT * 40  # an Episode: a double, two varints, a bool, tags
    handshake = 2 * 11 * act + MAX_TASK_CHARS + 4 * 64
    return int(max(batch, report, handshake) * RECEIVE_HEADROOM) + RECEIVE_EXTRA_BYTES


def validate_batch(batch: pb.TransitionBatch, spec: Mapping, max_batch_size: int, latest_version: int, learner_id: str = "") -> dict[str, np.ndarray]:
    """Decodes and checks every field of `batch` against the handshake `spec`.

    Checks: every tensor present with the expected dtype and shape (N, dim) / (N,), the same
    N >= 1 everywhere, N <= max_batch_size (else RESOURCE_EXHAUSTED), all floats finite,
    actions inside [-1, 1], bool tensors 0/1, policy_version not from the future (when it was
    served by this learner, `learner_id`, or the batch names none: a version served by an
    earlier learner process, before a `--resume`, may lie above this one's count).

    A spec with observation parts (images): `observations` / `next_observations` absent and
    `observation_parts` / `next_observation_parts` holding every part of the spec once, each of
    the part's dtype and shape (N, *shape), a compressed one claiming exactly that size
    (`codec.decode_tensor`); they come back as {part name: array}. A flat spec: no parts.
    Returns {field: array or dict}; raises BatchRejected.
    """
    dims = {"obs": int(spec["observation_dim"]), "act": int(spec["action_dim"])}
    parts = observation_parts(spec)
    if batch.policy_version > latest_version and batch.policy_learner_id in ("", learner_id):
        raise _invalid("policy_version", f"got {batch.policy_version}, expected <= {latest_version} (the latest published version)")
    # Size first, from the shape alone, so an oversized batch is refused before decoding.
    first_field = "actions" if parts else "observations"
    first = getattr(batch, first_field)
    if len(first.shape) >= 1 and first.shape[0] > max_batch_size:
        raise BatchRejected(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"field '{first_field}.shape': batch of {first.shape[0]} transitions, expected at most {max_batch_size} (max_batch_size)",
        )
    for field, part_field in OBSERVATION_PART_FIELDS.items():
        if parts and batch.HasField(field):
            raise _invalid(field, f"expected absent: the handshake spec has observation parts ({', '.join(p['name'] for p in parts)}); send them in '{part_field}'")
        if not parts and len(getattr(batch, part_field)):
            raise _invalid(part_field, f"got {len(getattr(batch, part_field))} parts, expected none: the handshake spec is a flat vector (send '{field}')")
    arrays: dict[str, np.ndarray] = {}
    n = None
    for field, dtype, dim_key in BATCH_FIELDS:
        if parts and field in OBSERVATION_PART_FIELDS:
            continue
        if not batch.HasField(field):
            raise _invalid(field, "missing")
        tensor = getattr(batch, field)
        if tensor.dtype != dtype:
            raise _invalid(f"{field}.dtype", f"got {short(tensor.dtype)}, expected {dtype!r}")
        expected_rank = 2 if dim_key else 1
        if len(tensor.shape) != expected_rank:
            want = f"(N, {dims[dim_key]})" if dim_key else "(N,)"
            raise _invalid(f"{field}.shape", f"got {short(tensor.shape)}, expected {want}")
        if n is None:
            n = int(tensor.shape[0])
            if n < 1:
                raise _invalid(f"{field}.shape", f"got {list(tensor.shape)}, expected at least one transition")
            if n > max_batch_size:
                raise BatchRejected(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"field '{field}.shape': batch of {n} transitions, expected at most {max_batch_size} (max_batch_size)",
                )
        if tensor.shape[0] != n:
            raise _invalid(f"{field}.shape", f"got {list(tensor.shape)}, expected {n} rows (as 'observations')")
        if dim_key and tensor.shape[1] != dims[dim_key]:
            raise _invalid(f"{field}.shape", f"got {list(tensor.shape)}, expected [{n}, {dims[dim_key]}] ({'observation_dim' if dim_key == 'obs' else 'action_dim'} from the handshake)")
        try:
            array = decode_tensor(tensor, field)
        except WireError as e:
            raise _invalid(e.field, str(e).split(": ", 1)[1]) from None
        if dtype == "bool":
            if not np.all(np.frombuffer(tensor.data, np.uint8) <= 1):
                raise _invalid(f"{field}.data", "bool bytes must be 0 or 1")
        elif not np.all(np.isfinite(array)):
            bad = int(np.flatnonzero(~np.isfinite(array).reshape(n, -1).all(axis=1))[0])
            raise _invalid(field, f"row {bad} holds NaN or inf, expected finite values")
        arrays[field] = array
    for field, part_field in OBSERVATION_PART_FIELDS.items():
        if parts:
            arrays[field] = _validate_parts(getattr(batch, part_field), part_field, parts, n)
    actions = arrays["actions"]
    outside = (actions < ACTION_LOW) | (actions > ACTION_HIGH)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        raise _invalid("actions", f"row {row} = {actions[row].tolist()} is outside the bounds [{ACTION_LOW}, {ACTION_HIGH}]")
    if np.any(arrays["terminals"] & ~arrays["episode_ends"]):
        raise _invalid("episode_ends", "a terminal step must also end its episode")
    arrays["interventions"] = _optional_flags(batch, "interventions", len(actions))
    return arrays


def _validate_parts(tensors, field: str, parts: list[dict], n: int) -> dict[str, np.ndarray]:
    """The observation parts of a batch as {name: array}: every part of the spec exactly once,
    each of its dtype and shape (n, *shape), checked BEFORE decoding (so a compressed tensor's
    output size is the spec's), then decoded; a float part must be finite."""
    by_name = {p["name"]: p for p in parts}
    seen: dict[str, object] = {}
    for i, named in enumerate(tensors):
        if named.name not in by_name:
            raise _invalid(f"{field}[{i}].name", f"got {short(named.name)}, expected one of the spec's parts {list(by_name)}")
        if named.name in seen:
            raise _invalid(f"{field}[{i}].name", f"part {named.name!r} appears twice, expected each part once")
        seen[named.name] = named.tensor
    missing = [name for name in by_name if name not in seen]
    if missing:
        raise _invalid(field, f"missing part(s) {missing}, expected every part of the spec {list(by_name)}")
    out = {}
    for name, part in by_name.items():
        tensor, where = seen[name], f"{field}[{name!r}]"
        if tensor.dtype != part["dtype"]:
            raise _invalid(f"{where}.dtype", f"got {short(tensor.dtype)}, expected {part['dtype']!r} (the spec's part {name!r})")
        want = [n, *part["shape"]]
        if list(tensor.shape) != want:
            raise _invalid(f"{where}.shape", f"got {short(list(tensor.shape))}, expected {want} (N x the spec's part {name!r} {part['shape']})")
        try:
            array = decode_tensor(tensor, where)
        except WireError as e:
            raise _invalid(e.field, str(e).split(": ", 1)[1]) from None
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.flatnonzero(~np.isfinite(array).reshape(n, -1).all(axis=1))[0])
            raise _invalid(where, f"row {bad} holds NaN or inf, expected finite values")
        out[name] = array
    return out


def _optional_flags(batch: pb.TransitionBatch, field: str, n: int) -> np.ndarray:
    """An optional bool (N,) tensor of the batch; all False when absent."""
    if not batch.HasField(field):
        return np.zeros(n, bool)
    tensor = getattr(batch, field)
    if tensor.dtype != "bool":
        raise _invalid(f"{field}.dtype", f"got {short(tensor.dtype)}, expected 'bool'")
    if list(tensor.shape) != [n]:
        raise _invalid(f"{field}.shape", f"got {short(list(tensor.shape))}, expected [{n}] (one flag per transition)")
    try:
        array = decode_tensor(tensor, field)
    except WireError as e:
        raise _invalid(e.field, str(e).split(": ", 1)[1]) from None
    if not np.all(np.frombuffer(tensor.data, np.uint8) <= 1):
        raise _invalid(f"{field}.data", "bool bytes must be 0 or 1")
    return array


# ReportActorState: a pause reason is a short label; period statistics are plain numbers.
MAX_PAUSE_REASON_CHARS = 64
CONTROL_STATS_FIELDS = ("control_hz", "period_mean_ms", "period_p99_ms", "period_max_ms", "work_p99_ms")


def check_actor_id(actor_id: str, field: str = "actor_id") -> None:
    """Raises BatchRejected (INVALID_ARGUMENT) unless `actor_id` has the documented length and
    characters (ACTOR_ID_*); the message quotes at most 40 characters of the input."""
    if not _ACTOR_ID.fullmatch(actor_id):
        lo, hi = ACTOR_ID_LENGTH
        raise _invalid(field, f"got {short(actor_id)} ({len(actor_id)} characters), expected {lo}-{hi} characters of [{ACTOR_ID_CHARS}]")


def check_actor_state(report: pb.ActorStateReport) -> dict:
    """The state of a ReportActorState as a dict (paused, estopped, pause_reason, control), or
    BatchRejected naming the field: a pause reason of at most MAX_PAUSE_REASON_CHARS printable
    characters, statistics finite and >= 0, overruns at most the steps."""
    reason = report.pause_reason
    if len(reason) > MAX_PAUSE_REASON_CHARS or not reason.isprintable():
        raise _invalid("pause_reason", f"got {short(reason)}, expected at most {MAX_PAUSE_REASON_CHARS} printable characters")
    state = {"paused": report.paused, "estopped": report.estopped, "pause_reason": reason}
    if report.HasField("control"):
        c = report.control
        for name in CONTROL_STATS_FIELDS:
            value = getattr(c, name)
            if not (np.isfinite(value) and value >= 0):
                raise _invalid(f"control.{name}", f"got {value!r}, expected a finite number >= 0")
        if c.overruns > c.steps:
            raise _invalid("control.overruns", f"got {c.overruns}, expected at most control.steps ({c.steps})")
        state["control"] = {name: getattr(c, name) for name in (*CONTROL_STATS_FIELDS, "steps", "overruns")}
    return state
