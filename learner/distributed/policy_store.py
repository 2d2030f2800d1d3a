"""Published policies ready to send: each version serialized into PolicyChunk messages once, on its first pull."""

from __future__ import annotations

import threading
from typing import Optional

from learner.distributed.trainer import Trainer
from protos import codec


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
