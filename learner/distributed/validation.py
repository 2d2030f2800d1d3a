"""Pure checks of incoming transition batches: nothing reaches the replay buffer unchecked.

`validate_batch` either returns the decoded arrays or raises `BatchRejected` with the gRPC
status to answer and a message naming the offending field and what was expected.
"""

from __future__ import annotations

from typing import Mapping

import grpc
import numpy as np

from protos.codec import WireError, decode_tensor
from protos.wsrl.v1 import learner_pb2 as pb

# (field, dtype, trailing shape key): "obs" -> (N, observation_dim), "act" -> (N, action_dim).
BATCH_FIELDS = (
    ("observations", "float32", "obs"),
    ("actions", "float32", "act"),
    ("rewards", "float32", None),
    ("next_observations", "float32", "obs"),
    ("terminals", "bool", None),
    ("episode_ends", "bool", None),
)
# Actions live in the policy's tanh range; the actor's env wrapper rescales to the env's own.
ACTION_LOW, ACTION_HIGH = -1.0, 1.0


class BatchRejected(Exception):
    """A batch that must not be stored; `code` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _invalid(field: str, message: str) -> BatchRejected:
    return BatchRejected(grpc.StatusCode.INVALID_ARGUMENT, f"field '{field}': {message}")


def validate_batch(batch: pb.TransitionBatch, spec: Mapping, max_batch_size: int, latest_version: int, learner_id: str = "") -> dict[str, np.ndarray]:
    """Decodes and checks every field of `batch` against the handshake `spec`.

    Checks: every tensor present with the expected dtype and shape (N, dim) / (N,), the same
    N >= 1 everywhere, N <= max_batch_size (else RESOURCE_EXHAUSTED), all floats finite,
    actions inside [-1, 1], bool tensors 0/1, policy_version not from the future (when it was
    served by this learner, `learner_id`, or the batch names none: a version served by an
    earlier learner process, before a `--resume`, may lie above this one's count).
    Returns {field: array}; raises BatchRejected.
    """
    dims = {"obs": int(spec["observation_dim"]), "act": int(spec["action_dim"])}
    if batch.policy_version > latest_version and batch.policy_learner_id in ("", learner_id):
        raise _invalid("policy_version", f"got {batch.policy_version}, expected <= {latest_version} (the latest published version)")
    # Size first, from the shape alone, so an oversized batch is refused before decoding.
    first = batch.observations
    if len(first.shape) >= 1 and first.shape[0] > max_batch_size:
        raise BatchRejected(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"field 'observations.shape': batch of {first.shape[0]} transitions, expected at most {max_batch_size} (max_batch_size)",
        )
    arrays: dict[str, np.ndarray] = {}
    n = None
    for field, dtype, dim_key in BATCH_FIELDS:
        if not batch.HasField(field):
            raise _invalid(field, "missing")
        tensor = getattr(batch, field)
        if tensor.dtype != dtype:
            raise _invalid(f"{field}.dtype", f"got {tensor.dtype!r}, expected {dtype!r}")
        expected_rank = 2 if dim_key else 1
        if len(tensor.shape) != expected_rank:
            want = f"(N, {dims[dim_key]})" if dim_key else "(N,)"
            raise _invalid(f"{field}.shape", f"got {list(tensor.shape)}, expected {want}")
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
    actions = arrays["actions"]
    outside = (actions < ACTION_LOW) | (actions > ACTION_HIGH)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        raise _invalid("actions", f"row {row} = {actions[row].tolist()} is outside the bounds [{ACTION_LOW}, {ACTION_HIGH}]")
    if np.any(arrays["terminals"] & ~arrays["episode_ends"]):
        raise _invalid("episode_ends", "a terminal step must also end its episode")
    return arrays
