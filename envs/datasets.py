"""The in-memory offline dataset type, Monte-Carlo returns-to-go, and rollout collection."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np

from envs.observations import IMAGE_DTYPE, STATE_DTYPE, ObservationPart, ObservationSpec, batch_size_of


@dataclasses.dataclass
class OfflineDataset:
    """N transitions. `episode_ends[i]` marks the last transition of a trajectory (terminal
    or time limit); `terminals[i]` only true terminals.

    Observations (and next observations) are a float32 array (N, obs_dim) for flat
    observations, or, for observations with camera images (envs/observations.py), a dict
    {part: array (N, *shape)}: "state" float32 (N, d), cameras uint8 (N, H, W, C).
    """

    observations: Any  # (N, obs_dim) float32, or {part: (N, *shape)}
    actions: np.ndarray  # (N, act_dim) float32, in [-1, 1]
    rewards: np.ndarray  # (N,) float32, in the environment's own convention (unscaled)
    next_observations: Any  # like observations
    terminals: np.ndarray  # (N,) float32 0/1
    episode_ends: np.ndarray  # (N,) bool

    def __post_init__(self):
        n = batch_size_of(self.observations)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            parts = value.items() if isinstance(value, Mapping) else [(None, value)]
            for part, array in parts:
                if len(array) != n:
                    name = field.name if part is None else f"{field.name}[{part!r}]"
                    raise ValueError(f"dataset field '{name}' has {len(array)} rows, expected {n} (as 'observations')")
        spec = self.observation_spec  # checks each part's shape and dtype
        if isinstance(self.next_observations, Mapping) != isinstance(self.observations, Mapping):
            raise ValueError("dataset field 'next_observations': a dict and an array mixed; expected the form of 'observations'")
        if spec.is_flat:  # (a shape check only: no float32 copy of a large array)
            if np.shape(self.next_observations) != np.shape(self.observations):
                raise ValueError(
                    f"dataset field 'next_observations': shape {np.shape(self.next_observations)}, expected "
                    f"{np.shape(self.observations)} (as 'observations')"
                )
        else:
            spec.check(self.next_observations, where="dataset field 'next_observations'")
            for part in spec.parts:  # (check casts a state; the dataset must hold it as float32)
                dtype = np.asarray(self.next_observations[part.name]).dtype
                if dtype != np.dtype(part.dtype):
                    raise ValueError(f"dataset field 'next_observations[{part.name!r}]': dtype {dtype}, expected {part.dtype}")
        for name in ("observations", "next_observations"):
            value = getattr(self, name)
            for part in spec.parts:
                array = value[part.name] if isinstance(value, Mapping) else value
                where = f"{name}[{part.name!r}]" if isinstance(value, Mapping) else name
                if not part.is_image and not all_finite(array):  # (uint8 frames cannot be)
                    raise ValueError(f"dataset field '{where}' contains NaN or inf")
        for name in ("actions", "rewards"):
            if not all_finite(getattr(self, name)):
                raise ValueError(f"dataset field '{name}' contains NaN or inf")
        if n and not self.episode_ends[-1]:
            # A trailing partial trajectory still ends where the data ends.
            self.episode_ends = self.episode_ends.copy()
            self.episode_ends[-1] = True

    def __len__(self) -> int:
        return batch_size_of(self.observations)

    @property
    def observation_spec(self) -> ObservationSpec:
        """The spec of the observations: flat for an array, else one part per key (a 1-D
        float32 "state", uint8 H x W x C images); raises ValueError naming a bad part."""
        obs = self.observations
        if not isinstance(obs, Mapping):
            if np.ndim(obs) != 2:
                raise ValueError(f"dataset field 'observations': shape {np.shape(obs)}, expected (N, obs_dim) or a dict of parts")
            return ObservationSpec.flat(np.shape(obs)[1])
        parts = []
        for name, array in obs.items():
            array = np.asarray(array)
            expected = IMAGE_DTYPE if array.ndim == 4 else STATE_DTYPE
            if array.dtype != np.dtype(expected):
                raise ValueError(f"dataset field 'observations[{name!r}]': dtype {array.dtype}, expected {expected}")
            parts.append(ObservationPart(name, tuple(int(k) for k in array.shape[1:]), expected))
        try:
            return ObservationSpec(tuple(parts))
        except ValueError as error:
            raise ValueError(f"dataset field 'observations': {error}") from None

    @classmethod
    def from_columns(cls, columns: dict) -> "OfflineDataset":
        """A dataset from per-transition lists (or arrays) under the field names, cast to the
        fields' dtypes (what the generators collect step by step). Observations that are dicts
        are stacked part by part: "state" as float32, images keeping their dtype (uint8)."""
        return cls(
            observations=_stack_observations(columns["observations"]),
            actions=np.asarray(columns["actions"], np.float32),
            rewards=np.asarray(columns["rewards"], np.float32),
            next_observations=_stack_observations(columns["next_observations"]),
            terminals=np.asarray(columns["terminals"], np.float32),
            episode_ends=np.asarray(columns["episode_ends"], bool),
        )

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.sum())

    def episode_returns(self) -> np.ndarray:
        starts = np.concatenate([[0], np.flatnonzero(self.episode_ends)[:-1] + 1])
        return np.add.reduceat(self.rewards, starts) if len(self) else np.zeros(0)


def _stack_observations(values) -> Any:
    """Per-step observations (arrays, or dicts of part arrays) as one batch."""
    if isinstance(values, Mapping):  # already stacked, part by part
        return {k: (np.asarray(v) if np.asarray(v).ndim == 4 else np.asarray(v, np.float32)) for k, v in values.items()}
    if len(values) and isinstance(values[0], Mapping):
        return {
            k: (np.stack([v[k] for v in values]) if np.ndim(values[0][k]) == 3 else np.asarray([v[k] for v in values], np.float32))
            for k in values[0]
        }
    return np.asarray(values, np.float32)


def _own(observation):
    """A dict observation's parts copied (a camera env may reuse its frame buffers); a flat
    observation as it is."""
    if isinstance(observation, Mapping):
        return {k: np.array(v) for k, v in observation.items()}
    return observation


def all_finite(values: np.ndarray) -> bool:
    """Whether no entry is NaN or inf, without an (N, dim) boolean temporary.

    A sum is finite only if every term is, so a finite float64 sum settles it in one pass;
    only a non-finite sum (a NaN/inf, or an overflow of huge values) needs the exact check.
    """
    if np.isfinite(np.sum(values, dtype=np.float64)):
        return True
    return bool(np.isfinite(values).all())


MC_PIECE_STEPS = 1 << 16


def mc_returns(
    rewards: np.ndarray,
    episode_ends: np.ndarray,
    discount: float,
    sparse_failure_reward: Optional[float] = None,
) -> np.ndarray:
    """Discounted return-to-go of every step within its own trajectory (CalQL's bound).

    A trajectory's tail after its last step counts as 0, whether it ended in a terminal or a
    time limit. With `sparse_failure_reward` set
    (sparse-reward tasks), a trajectory whose rewards all equal it never reached the goal and
    is treated as if that reward repeated forever: every step gets r / (1 - discount).
    Steps after the last `episode_ends` flag belong to no trajectory and get 0.
    """
    rewards = np.asarray(rewards)
    episode_ends = np.asarray(episode_ends, bool)
    end_indices = np.flatnonzero(episode_ends)
    returns = np.zeros(len(rewards), np.float32)
    if len(end_indices) == 0:
        return returns
    stop = end_indices[-1] + 1  # steps past the last end stay 0
    # Whole trajectories at a time, about MC_PIECE_STEPS steps per piece: the float64
    # temporaries stay small (and in cache) however large the dataset.
    start = 0
    while start < stop:
        j = min(np.searchsorted(end_indices, start + MC_PIECE_STEPS - 1), len(end_indices) - 1)
        piece_stop = end_indices[j] + 1
        returns[start:piece_stop] = _discounted_suffix_sums(
            rewards[start:piece_stop], episode_ends[start:piece_stop], discount
        )
        start = piece_stop
    if sparse_failure_reward is not None:
        starts = np.concatenate([[0], end_indices[:-1] + 1])
        reached = np.logical_or.reduceat(rewards[:stop] != sparse_failure_reward, starts)
        failed_steps = np.repeat(~reached, np.diff(np.append(starts, stop)))
        returns[:stop][failed_steps] = sparse_failure_reward / (1.0 - discount)
    return returns


def _discounted_suffix_sums(rewards: np.ndarray, cut: np.ndarray, discount: float) -> np.ndarray:
    """y[i] = rewards[i] + discount * y[i + 1], restarting (y[i + 1] = 0) after each `cut` step.

    Instead of a per-step Python loop, a doubling scan: keep y[i] = b[i] + a[i] * y[i + k]
    and double k, so that after ceil(log2(longest trajectory))
    vectorized rounds every a[i] is 0 (the window reached the trajectory's end) and b = y.
    Rows past the array's end count as y = 0. Float64 throughout.
    """
    b = rewards.astype(np.float64)
    a = np.where(cut, 0.0, discount)
    a[-1] = 0.0
    k = 1
    while k < len(b) and a.any():
        b[:-k] += a[:-k] * b[k:]
        a[:-k] *= a[k:]  # numpy buffers overlapping in-place operands, so this reads the old a
        k *= 2
    return b


def empty_columns() -> dict[str, list]:
    """Per-field lists that `append_transition` fills and `OfflineDataset.from_columns` stacks."""
    return {f.name: [] for f in dataclasses.fields(OfflineDataset)}


def append_transition(columns: dict[str, list], observation, action, reward, next_observation, terminated: bool, episode_end: bool) -> None:
    """Appends one transition to `columns` (see `empty_columns`)."""
    for name, value in (
        ("observations", observation),
        ("actions", action),
        ("rewards", reward),
        ("next_observations", next_observation),
        ("terminals", float(terminated)),
        ("episode_ends", episode_end),
    ):
        columns[name].append(value)


def collect_dataset(
    env, policy: Callable[[np.ndarray, dict], np.ndarray], num_episodes: int, seed: int,
    on_episode: Optional[Callable[[float], None]] = None,
) -> OfflineDataset:
    """Rolls `policy(observation, episode_state)` in `env` for `num_episodes` episodes.

    `episode_state` is a fresh dict per episode the policy may use for its own memory.
    """
    columns = empty_columns()
    for episode in range(num_episodes):
        observation, _ = env.reset(seed=seed + episode)
        observation = _own(observation)
        state: dict = {}
        done, total = False, 0.0
        while not done:
            action = np.asarray(policy(observation, state), np.float32)
            next_observation, reward, terminated, truncated, _ = env.step(action)
            next_observation = _own(next_observation)
            done = terminated or truncated
            append_transition(columns, observation, action, reward, next_observation, terminated, done)
            observation, total = next_observation, total + float(reward)
        if on_episode is not None:
            on_episode(total)
    return OfflineDataset.from_columns(columns)
