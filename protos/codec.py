"""Pure encode/decode helpers for the wire format, shared by actors and the learner.

Imports only numpy, flax.serialization and the generated messages: an actor machine needs
nothing of the training code to speak the protocol. No pickle: tensors are raw little-endian
bytes, parameter trees are flax msgpack (numpy arrays as msgpack extension types).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator, Mapping

import numpy as np

from protos.wsrl.v1 import learner_pb2 as pb

PROTOCOL_VERSION = 1
# The payload of one PolicyChunk: well under gRPC's 4 MB default message limit.
CHUNK_BYTES = 1 << 20
# dtypes that may travel; anything else is rejected by name.
WIRE_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
# The AgentConfig fields that decide the policy network: the actor builds its policy from
# them, and the handshake fingerprint covers exactly these.
POLICY_FIELDS = (
    "actor_hidden_dims",
    "actor_layer_norm",
    "std_parameterization",
    "kernel_scale_final",
    "log_std_min",
    "log_std_max",
)


class WireError(ValueError):
    """A message field cannot be decoded; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field '{field}': {message}")
        self.field = field


def encode_tensor(array: Any) -> pb.Tensor:
    """A numpy-compatible array as a Tensor message (C order, little-endian)."""
    a = np.asarray(array)
    if a.dtype.name not in WIRE_DTYPES:
        raise WireError("dtype", f"got {a.dtype.name!r}, expected one of {', '.join(WIRE_DTYPES)}")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return pb.Tensor(dtype=a.dtype.name, shape=list(a.shape), data=a.tobytes())


def decode_tensor(tensor: pb.Tensor, field: str) -> np.ndarray:
    """The array in a Tensor message; raises WireError naming `field` when the dtype is
    unknown, the shape is negative or the byte count does not match dtype x shape."""
    if tensor.dtype not in WIRE_DTYPES:
        raise WireError(f"{field}.dtype", f"got {tensor.dtype!r}, expected one of {', '.join(WIRE_DTYPES)}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise WireError(f"{field}.shape", f"got {list(shape)}, expected non-negative sizes")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(tensor.data) != count * dtype.itemsize:
        raise WireError(
            f"{field}.data",
            f"got {len(tensor.data)} bytes, expected {count * dtype.itemsize} ({tensor.dtype} x shape {list(shape)})",
        )
    return np.frombuffer(tensor.data, dtype=dtype, count=count).reshape(shape).astype(dtype.newbyteorder("="))


def spec_to_proto(spec: Mapping[str, Any]) -> pb.Spec:
    """The checkpoint-style spec dict as a Spec message."""
    return pb.Spec(
        task=str(spec.get("task", "")),
        observation_dim=int(spec["observation_dim"]),
        action_dim=int(spec["action_dim"]),
        action_low=[float(x) for x in spec.get("action_low", [])],
        action_high=[float(x) for x in spec.get("action_high", [])],
    )


def spec_from_proto(spec: pb.Spec) -> dict:
    """The Spec message as the checkpoint-style spec dict."""
    return {
        "task": spec.task,
        "observation_dim": int(spec.observation_dim),
        "action_dim": int(spec.action_dim),
        "action_low": list(spec.action_low),
        "action_high": list(spec.action_high),
    }


def policy_config(agent_config: Any) -> dict:
    """The policy-architecture fields of an AgentConfig (dataclass, namespace or dict)."""
    get = agent_config.get if isinstance(agent_config, Mapping) else lambda k: getattr(agent_config, k)
    out = {}
    for key in POLICY_FIELDS:
        value = get(key)
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def policy_fingerprint(agent_config: Any, observation_dim: int, action_dim: int) -> str:
    """sha256 over the policy architecture and dims: equal fingerprints mean the learner's
    parameters load into the actor's policy network."""
    body = {"policy": policy_config(agent_config), "observation_dim": int(observation_dim), "action_dim": int(action_dim)}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def serialize_params(params: Any) -> bytes:
    """A parameter pytree (jax or numpy leaves) as flax msgpack bytes."""
    from flax import serialization

    host = _to_numpy(serialization.to_state_dict(params))
    return serialization.msgpack_serialize(host)


def deserialize_params(payload: bytes) -> dict:
    """The nested dict of numpy arrays in `serialize_params` output (msgpack, no code runs)."""
    from flax import serialization

    tree = serialization.msgpack_restore(payload)
    if not isinstance(tree, dict):
        raise WireError("policy", f"payload decodes to {type(tree).__name__}, expected a parameter dict")
    return tree


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def policy_chunks(version: int, payload: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.PolicyChunk]:
    """`payload` split into PolicyChunk messages, each carrying the version and checksum."""
    digest = hashlib.sha256(payload).hexdigest()
    n = max(1, -(-len(payload) // chunk_bytes))
    for i in range(n):
        yield pb.PolicyChunk(
            version=version,
            index=i,
            num_chunks=n,
            total_bytes=len(payload),
            data=payload[i * chunk_bytes : (i + 1) * chunk_bytes],
            sha256=digest,
        )


def join_chunks(chunks: Iterator[pb.PolicyChunk]) -> tuple[int, bool, bytes]:
    """(version, unchanged, payload) from a PullPolicy stream; checks order, size, checksum."""
    parts, version, expected = [], None, None
    for chunk in chunks:
        if chunk.unchanged:
            return int(chunk.version), True, b""
        if version is None:
            version, expected = int(chunk.version), chunk
        if chunk.version != version or chunk.index != len(parts):
            raise WireError("PolicyChunk.index", f"got chunk {chunk.index} of version {chunk.version}, expected {len(parts)} of {version}")
        parts.append(chunk.data)
    if expected is None:
        raise WireError("PolicyChunk", "the stream ended without a chunk")
    payload = b"".join(parts)
    if len(parts) != expected.num_chunks or len(payload) != expected.total_bytes:
        raise WireError("PolicyChunk.total_bytes", f"got {len(payload)} bytes in {len(parts)} chunks, expected {expected.total_bytes} in {expected.num_chunks}")
    if hashlib.sha256(payload).hexdigest() != expected.sha256:
        raise WireError("PolicyChunk.sha256", "checksum mismatch")
    return version, False, payload
