"""Observations as named parts: one state vector and any number of camera images.

A task's observations are either a flat float vector (every built-in state task; a gymnasium
Box) or a gymnasium `Dict` of named parts: at most one 1-D float vector (the proprioceptive
state) and any number of camera images (uint8, H x W x C, fixed per camera). `ObservationSpec`
is the one description of them that every layer shares: the env contract, the handshake spec,
validation, the replay buffer, the networks, the recorder and the dataset formats.

In memory, a batch of N observations is

- a float32 array (N, d) for a flat spec (the single part is called "state"), exactly as before
  named parts existed, or
- a dict {name: array (N, *shape) of the part's dtype} for a spec with images.

Images stay uint8 everywhere on the host and on the wire; the learner casts them on the device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

STATE = "state"  # the name of the state-vector part (and of a flat spec's only part)
STATE_DTYPE = "float32"
IMAGE_DTYPE = "uint8"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclasses.dataclass(frozen=True)
class ObservationPart:
    """One named part: `shape` (d,) float32 for the state, (H, W, C) uint8 for a camera."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def size(self) -> int:
        """Elements per observation."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes per observation."""
        return self.size * np.dtype(self.dtype).itemsize


def _check_part(part: ObservationPart, where: str) -> None:
    if not part.name or len(part.name) > 64 or not set(part.name) <= _NAME_CHARS:
        raise ValueError(f"{where}: name {part.name!r}, expected 1-64 characters of [A-Za-z0-9_]")
    if any((not isinstance(n, (int, np.integer))) or n < 1 for n in part.shape):
        raise ValueError(f"{where} ({part.name}): shape {part.shape}, expected positive integers")
    if len(part.shape) == 1:
        if part.dtype != STATE_DTYPE:
            raise ValueError(f"{where} ({part.name}): dtype {part.dtype}, expected {STATE_DTYPE} for a vector")
        if part.name != STATE:
            raise ValueError(f"{where} ({part.name}): a vector part must be named {STATE!r}")
    elif len(part.shape) == 3:
        if part.dtype != IMAGE_DTYPE:
            raise ValueError(f"{where} ({part.name}): dtype {part.dtype}, expected {IMAGE_DTYPE} for an image")
        if part.shape[2] not in (1, 3, 4):
            raise ValueError(f"{where} ({part.name}): shape {part.shape}, expected H x W x C with C in 1, 3, 4")
    else:
        raise ValueError(f"{where} ({part.name}): shape {part.shape}, expected (d,) for the state or (H, W, C) for an image")


@dataclasses.dataclass(frozen=True)
class ObservationSpec:
    """The ordered parts of a task's observations (sorted by name, so the order is canonical)."""

    parts: tuple[ObservationPart, ...]

    def __post_init__(self):
        if not self.parts:
            raise ValueError("observation spec: no parts, expected a state vector and/or camera images")
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"observation spec: duplicate part names in {names}")
        for i, part in enumerate(self.parts):
            _check_part(part, f"observation spec part {i}")
        object.__setattr__(self, "parts", tuple(sorted(self.parts, key=lambda p: p.name)))

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def flat(cls, observation_dim: int) -> "ObservationSpec":
        """The spec of a flat float vector of length `observation_dim`."""
        return cls((ObservationPart(STATE, (int(observation_dim),), STATE_DTYPE),))

    @classmethod
    def from_space(cls, space: gym.spaces.Space) -> "ObservationSpec":
        """From a gymnasium space: a 1-D Box is flat; a Dict maps each key to a part (a 1-D
        float Box named "state", uint8 Boxes H x W x C for cameras)."""
        if isinstance(space, gym.spaces.Box):
            if len(space.shape) != 1:
                raise ValueError(f"observation_space: Box of shape {space.shape}, expected 1-D (or a Dict with images)")
            return cls.flat(space.shape[0])
        if isinstance(space, gym.spaces.Dict):
            parts = []
            for name, sub in space.spaces.items():
                if not isinstance(sub, gym.spaces.Box):
                    raise ValueError(f"observation_space[{name!r}]: {sub}, expected a Box")
                dtype = IMAGE_DTYPE if len(sub.shape) == 3 else STATE_DTYPE
                if len(sub.shape) == 3 and sub.dtype != np.uint8:
                    raise ValueError(f"observation_space[{name!r}]: dtype {sub.dtype}, expected uint8 for an image")
                parts.append(ObservationPart(name, tuple(int(n) for n in sub.shape), dtype))
            return cls(tuple(parts))
        raise ValueError(f"observation_space: {space}, expected a gymnasium Box or Dict")

    @classmethod
    def from_json(cls, data: Any) -> "ObservationSpec":
        """Inverse of `to_json` (checkpoints and run files)."""
        if isinstance(data, (int, np.integer)):  # files written before named parts: a dimension
            return cls.flat(int(data))
        try:
            return cls(tuple(ObservationPart(str(p["name"]), tuple(int(n) for n in p["shape"]), str(p["dtype"])) for p in data))
        except (TypeError, KeyError) as exc:
            raise ValueError(f"observation spec: {data!r}, expected a list of {{name, shape, dtype}}") from exc

    def to_json(self) -> list[dict]:
        return [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype} for p in self.parts]

    def to_space(self) -> gym.spaces.Space:
        """The gymnasium space of these observations (a Box when flat)."""
        if self.is_flat:
            return gym.spaces.Box(-np.inf, np.inf, self.parts[0].shape, np.float32)
        return gym.spaces.Dict({
            p.name: (gym.spaces.Box(0, 255, p.shape, np.uint8) if p.is_image else gym.spaces.Box(-np.inf, np.inf, p.shape, np.float32))
            for p in self.parts
        })

    # ---- queries --------------------------------------------------------------------------

    @property
    def is_flat(self) -> bool:
        """A single state vector: observations are plain arrays, not dicts."""
        return len(self.parts) == 1 and self.parts[0].name == STATE and not self.parts[0].is_image

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    @property
    def images(self) -> tuple[ObservationPart, ...]:
        return tuple(p for p in self.parts if p.is_image)

    @property
    def state_dim(self) -> int:
        """Length of the state vector (0 without one)."""
        return sum(p.shape[0] for p in self.parts if not p.is_image)

    @property
    def nbytes(self) -> int:
        """Bytes per observation, all parts."""
        return sum(p.nbytes for p in self.parts)

    def part(self, name: str) -> ObservationPart:
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"observation part {name!r}; the spec has {list(self.names)}")

    # ---- arrays ---------------------------------------------------------------------------

    def zeros(self, batch_shape: Sequence[int] = ()) -> Any:
        """Zero observations of `batch_shape` (an array when flat, else a dict)."""
        arrays = {p.name: np.zeros((*batch_shape, *p.shape), p.dtype) for p in self.parts}
        return arrays[STATE] if self.is_flat else arrays

    def check(self, observations: Any, batch_ndim: int = 1, where: str = "observations") -> Any:
        """Checks a batch (`batch_ndim` leading dims) against the spec and returns it with each
        part in its dtype; raises ValueError naming the part, the expected shape and dtype."""
        if self.is_flat:
            array = np.asarray(observations)
            return self._check_array(array, self.parts[0], batch_ndim, where).astype(np.float32, copy=False)
        if not isinstance(observations, Mapping):
            raise ValueError(f"{where}: got {type(observations).__name__}, expected a dict with keys {list(self.names)}")
        if set(observations) != set(self.names):
            raise ValueError(f"{where}: keys {sorted(observations)}, expected {list(self.names)}")
        out = {}
        for p in self.parts:
            array = self._check_array(np.asarray(observations[p.name]), p, batch_ndim, f"{where}[{p.name!r}]")
            if p.is_image and array.dtype != np.uint8:
                raise ValueError(f"{where}[{p.name!r}]: dtype {array.dtype}, expected uint8")
            out[p.name] = array.astype(p.dtype, copy=False)
        return out

    @staticmethod
    def _check_array(array: np.ndarray, part: ObservationPart, batch_ndim: int, where: str) -> np.ndarray:
        if array.ndim != batch_ndim + len(part.shape) or tuple(array.shape[batch_ndim:]) != part.shape:
            raise ValueError(f"{where}: shape {array.shape}, expected (batch..., {', '.join(map(str, part.shape))})")
        return array


def batch_size_of(observations: Any) -> int:
    """The leading dimension of a batch of observations (array or dict of arrays)."""
    if isinstance(observations, Mapping):
        return int(next(iter(observations.values())).shape[0])
    return int(np.shape(observations)[0])


def index_observations(observations: Any, index) -> Any:
    """`observations[index]` for an array or each part of a dict."""
    if isinstance(observations, Mapping):
        return {k: v[index] for k, v in observations.items()}
    return observations[index]


def observation_spec_of(spec: Mapping) -> ObservationSpec:
    """The observation spec in a task's / run's / checkpoint's spec dict: its
    `observation_spec` (named parts) where it has one, else the flat `observation_dim`
    (every state task, every file written before named parts)."""
    if spec.get("observation_spec") is not None:
        return ObservationSpec.from_json(spec["observation_spec"])
    if "observation_dim" not in spec:
        raise ValueError(f"spec: keys {sorted(spec)}, expected 'observation_spec' or 'observation_dim'")
    return ObservationSpec.flat(int(spec["observation_dim"]))
