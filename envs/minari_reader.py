"""Minari datasets in: `read_minari` reads the HDF5 or the Arrow layout into an `OfflineDataset`.

Minari (`read_minari`): a dataset directory `<dir>/data/metadata.json` + `main_data.hdf5`
(one group `episode_{i}` per episode: `observations` with T + 1 rows, `actions`, `rewards`,
`terminations`, `truncations` with T rows) or, with `data_format: arrow`, one folder of Arrow
files per episode (needs pyarrow). Transitions: obs = observations[:-1], next_obs =
observations[1:], terminals = terminations; an episode ends at its last step (and at any
step flagged terminated or truncated, so nothing crosses a flag). Dict observations are
flattened as envs/spaces.py does for the live envs: the `observation_keys` in order, a nested
group's sub-keys sorted, each leaf raveled per step. Box (already flat) observations are taken
as they are, with or without `observation_keys`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import h5py
import numpy as np

from envs.dataset_checks import DatasetError, PathLike, _array, _check_dim, _group_spec
from envs.datasets import OfflineDataset, all_finite
from envs.minari_files import MINARI_MAIN_FILE, MINARI_METADATA_FILE, _read_metadata, resolve_minari_dataset
from envs.observations import ObservationSpec

MINARI_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def read_minari(
    dataset: PathLike,
    observation_keys: Optional[Sequence[str]] = None,
    observation_dim: Optional[int] = None,
    action_dim: Optional[int] = None,
    observation_spec: Optional[ObservationSpec] = None,
) -> OfflineDataset:
    """Reads a Minari dataset (directory or local id, see `resolve_minari_dataset`).

    Dict observations are flattened by `observation_keys` (required for them: the error lists
    the keys there are); Box observations are already flat and ignore them. `observation_dim` / `action_dim`, when
    given, must match the (flattened) data. Dict observations with camera images (uint8
    (steps, H, W, C) members; HDF5 layout) are kept as named parts instead, giving dict
    observations (without `observation_keys`; `observation_spec`, when given, must match).
    """
    data_dir = resolve_minari_dataset(dataset)
    metadata = _read_metadata(data_dir)
    data_format = metadata.get("data_format", "hdf5")
    keys = None if observation_keys is None else tuple(observation_keys)
    if data_format == "hdf5":
        main = data_dir / MINARI_MAIN_FILE
        if not main.is_file():
            raise DatasetError(f"Minari dataset {data_dir}: missing {MINARI_MAIN_FILE}")
        try:
            file = h5py.File(main, "r")
        except OSError as error:
            raise DatasetError(f"file {main}: not a readable HDF5 file ({error})") from None
        with file:
            episodes = _hdf5_episodes(file, f"file {main}", keys)
            _check_total(metadata, data_dir, episodes)
            return _assemble(episodes, f"file {main}", observation_dim, action_dim, observation_spec)
    if data_format == "arrow":
        episodes = _arrow_episodes(data_dir, keys)
        _check_total(metadata, data_dir, episodes)
        return _assemble(episodes, f"Minari dataset {data_dir}", observation_dim, action_dim, observation_spec)
    raise DatasetError(
        f"file {data_dir / MINARI_METADATA_FILE}: key 'data_format' is {data_format!r}, expected 'hdf5' or 'arrow'"
    )


class _Episode(NamedTuple):
    where: str  # "file X: episode 'episode_3'", for errors
    steps: int
    observation_dim: int
    action_dim: int
    load: Callable[[], dict]  # -> the MINARI_EPISODE_KEYS as numpy arrays, observations flat (or parts)
    observation_spec: Optional[ObservationSpec] = None  # named parts (camera images): not flattened


def _check_total(metadata: dict, data_dir: Path, episodes: list) -> None:
    expected = metadata.get("total_episodes")
    if expected is not None and int(expected) != len(episodes):
        raise DatasetError(
            f"Minari dataset {data_dir}: {MINARI_METADATA_FILE} says total_episodes={expected}, "
            f"the data holds {len(episodes)} episodes (incomplete copy?)"
        )


def _assemble(
    episodes: list[_Episode], where: str, observation_dim: Optional[int], action_dim: Optional[int],
    observation_spec: Optional[ObservationSpec] = None,
) -> OfflineDataset:
    """Concatenates episodes into preallocated arrays (shapes were checked before any load)."""
    if not episodes:
        raise DatasetError(f"{where}: no episodes")
    first = episodes[0]
    if first.observation_spec is not None or any(e.observation_spec is not None for e in episodes):
        return _assemble_parts(episodes, where, observation_dim, action_dim, observation_spec)
    if observation_spec is not None:
        if not observation_spec.is_flat:
            raise DatasetError(f"{first.where}: key 'observations' is flat, the task expects named parts {observation_spec.to_json()}")
        observation_dim = observation_spec.state_dim
    _check_dim(first.where, "observations", first.observation_dim, observation_dim)
    _check_dim(first.where, "actions", first.action_dim, action_dim)
    for episode in episodes[1:]:
        for key, dim, first_dim in (
            ("observations", episode.observation_dim, first.observation_dim),
            ("actions", episode.action_dim, first.action_dim),
        ):
            if dim != first_dim:
                raise DatasetError(f"{episode.where}: key '{key}' has dim {dim}, the first episode has {first_dim}")
    total = sum(episode.steps for episode in episodes)
    if total == 0:
        raise DatasetError(f"{where}: no steps (every episode is empty)")
    out = dict(
        observations=np.empty((total, first.observation_dim), np.float32),
        actions=np.empty((total, first.action_dim), np.float32),
        rewards=np.empty(total, np.float32),
        next_observations=np.empty((total, first.observation_dim), np.float32),
        terminals=np.empty(total, np.float32),
        episode_ends=np.empty(total, bool),
    )
    start = 0
    for episode in episodes:
        if episode.steps == 0:
            continue  # a lone reset observation: no transition
        stop = start + episode.steps
        data = episode.load()
        for key in ("observations", "actions", "rewards"):
            if not all_finite(data[key]):
                raise DatasetError(f"{episode.where}: key '{key}' contains NaN or inf")
        out["observations"][start:stop] = data["observations"][:-1]
        out["next_observations"][start:stop] = data["observations"][1:]
        _fill_steps(out, data, start, stop, episode.where)
        start = stop
    return OfflineDataset(**out)


def _assemble_parts(episodes, where, observation_dim, action_dim, observation_spec) -> OfflineDataset:
    """`_assemble` for episodes whose observations are named parts (dicts of arrays)."""
    first = episodes[0]
    spec = first.observation_spec
    for episode in episodes:
        if episode.observation_spec != spec:
            got = None if episode.observation_spec is None else episode.observation_spec.to_json()
            raise DatasetError(f"{episode.where}: key 'observations' has parts {got}, the first episode has {spec.to_json()}")
        if episode.action_dim != first.action_dim:
            raise DatasetError(f"{episode.where}: key 'actions' has dim {episode.action_dim}, the first episode has {first.action_dim}")
    if observation_spec is not None and observation_spec != spec:
        raise DatasetError(f"{first.where}: key 'observations' has parts {spec.to_json()}, the task expects {observation_spec.to_json()}")
    if observation_dim is not None and observation_spec is None:
        raise DatasetError(
            f"{first.where}: key 'observations' holds named parts {spec.to_json()}, the task expects flat observations "
            f"of dim {observation_dim}"
        )
    _check_dim(first.where, "actions", first.action_dim, action_dim)
    total = sum(episode.steps for episode in episodes)
    if total == 0:
        raise DatasetError(f"{where}: no steps (every episode is empty)")
    out = dict(
        observations=spec.zeros((total,)),
        actions=np.empty((total, first.action_dim), np.float32),
        rewards=np.empty(total, np.float32),
        next_observations=spec.zeros((total,)),
        terminals=np.empty(total, np.float32),
        episode_ends=np.empty(total, bool),
    )
    start = 0
    for episode in episodes:
        if episode.steps == 0:
            continue
        stop = start + episode.steps
        data = episode.load()
        for key in ("actions", "rewards"):
            if not all_finite(data[key]):
                raise DatasetError(f"{episode.where}: key '{key}' contains NaN or inf")
        for part in spec.parts:
            values = data["observations"][part.name]
            if not part.is_image and not all_finite(values):
                raise DatasetError(f"{episode.where}: key 'observations/{part.name}' contains NaN or inf")
            out["observations"][part.name][start:stop] = values[:-1]
            out["next_observations"][part.name][start:stop] = values[1:]
        _fill_steps(out, data, start, stop, episode.where)
        start = stop
    return OfflineDataset(**out)


def _fill_steps(out: dict, data: dict, start: int, stop: int, where: str) -> None:
    """Writes one episode's actions, rewards, terminals and episode ends into rows
    [start, stop) of `out` (observations are the caller's: flat or per part)."""
    terminations = _episode_flags(data, "terminations", where)
    truncations = _episode_flags(data, "truncations", where)
    out["actions"][start:stop] = data["actions"]
    out["rewards"][start:stop] = data["rewards"]
    out["terminals"][start:stop] = terminations
    ends = out["episode_ends"][start:stop]
    np.logical_or(terminations, truncations, out=ends)
    ends[-1] = True


def _episode_flags(data: dict, key: str, where: str) -> np.ndarray:
    values = np.asarray(data[key])
    if values.dtype != bool and np.any((values != 0) & (values != 1)):
        raise DatasetError(f"{where}: key '{key}' has values other than 0/1")
    return values.astype(bool)


def _hdf5_episodes(file: h5py.File, where: str, keys: Optional[tuple]) -> list[_Episode]:
    """Every `episode_{i}` group, in order of i, with shapes checked (nothing loaded yet)."""
    names = [name for name in file if name.startswith("episode_")]
    if not names:
        raise DatasetError(f"{where}: no 'episode_{{i}}' groups (it has {sorted(file.keys())[:10]})")
    bad = [name for name in names if not name[len("episode_") :].isdigit()]
    if bad:
        raise DatasetError(f"{where}: group {bad[0]!r} is not named episode_<number>")
    names.sort(key=lambda name: int(name[len("episode_") :]))
    episodes = []
    for name in names:
        group = file[name]
        if not isinstance(group, h5py.Group):
            raise DatasetError(f"{where}: '{name}' is an array, expected an episode group")
        episodes.append(_hdf5_episode(group, f"{where}: episode '{name}'", keys))
    return episodes


def _final_row_error(where: str, key: str, rows: int, steps: int) -> DatasetError:
    return DatasetError(f"{where}: key '{key}' has {rows} rows, expected {steps + 1} (one more than 'rewards': the final observation)")


def _step_columns(nodes, actions, steps: int) -> dict:
    """An HDF5 episode's per-step columns (everything but its observations), read."""
    data = {key: nodes[key][()] for key in ("rewards", "terminations", "truncations")}
    data["actions"] = actions[()].reshape(steps, -1)
    return data


def _hdf5_episode(group: h5py.Group, where: str, keys: Optional[tuple]) -> _Episode:
    members = set(group.keys())  # one listing: h5py lookups cost ~50 us each
    missing = [key for key in MINARI_EPISODE_KEYS if key not in members]
    if missing:
        raise DatasetError(
            f"{where}: missing required key(s) {', '.join(repr(k) for k in missing)} (it has {sorted(members)})"
        )
    nodes = {key: group[key] for key in MINARI_EPISODE_KEYS}
    steps = _array(nodes["rewards"], "rewards", where, rank=1).shape[0]
    for key in ("terminations", "truncations"):
        _array(nodes[key], key, where, rank=1, rows=steps, like="rewards")
    actions = nodes["actions"]
    if not isinstance(actions, h5py.Dataset) or actions.ndim < 1 or actions.shape[0] != steps:
        shape = getattr(actions, "shape", "a group")
        raise DatasetError(f"{where}: key 'actions' has shape {shape}, expected ({steps}, action_dim) like 'rewards'")
    if actions.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: key 'actions' has dtype {actions.dtype}, expected numbers")
    observations = nodes["observations"]
    if keys is None and isinstance(observations, h5py.Group) and _has_images(observations):
        spec, rows = _group_spec(observations, where, "observations")
        if rows != steps + 1:
            raise _final_row_error(where, "observations", rows, steps)

        def load_parts() -> dict:
            return {**_step_columns(nodes, actions, steps), "observations": {p.name: observations[p.name][()] for p in spec.parts}}

        return _Episode(where, steps, 0, _row_size(actions.shape), load_parts, spec)
    leaves = _observation_leaves(observations, keys, where)
    for name, leaf in leaves:
        if leaf.dtype.kind not in "biuf":
            raise DatasetError(f"{where}: key '{name}' has dtype {leaf.dtype}, expected numbers")
        if leaf.ndim < 1 or leaf.shape[0] != steps + 1:
            raise _final_row_error(where, name, leaf.shape[0] if leaf.ndim else 0, steps)

    def load() -> dict:
        return {**_step_columns(nodes, actions, steps), "observations": _concat_leaves([leaf[()] for _, leaf in leaves], steps + 1)}

    return _Episode(where, steps, _leaves_dim(leaf.shape for _, leaf in leaves), _row_size(actions.shape), load)


def _has_images(group: h5py.Group) -> bool:
    """Whether a dict observation group holds a camera image (uint8, steps x H x W x C)."""
    return any(isinstance(node, h5py.Dataset) and node.ndim == 4 and node.dtype == np.uint8 for node in group.values())


def _observation_leaves(observations, keys: Optional[tuple], where: str) -> list[tuple[str, Any]]:
    """(name, HDF5 dataset) per leaf of the flattened observation, in flattening order."""
    if isinstance(observations, h5py.Dataset):
        return [("observations", observations)]  # a Box space: already flat, keys do not apply
    if keys is None:
        raise DatasetError(
            f"{where}: key 'observations' is a dict with keys {sorted(observations.keys())}; "
            "pass observation_keys to choose which to concatenate, in order"
        )
    missing = [key for key in keys if key not in observations]
    if missing:
        raise DatasetError(
            f"{where}: key 'observations' has no key(s) {missing}; it has {sorted(observations.keys())}"
        )
    return [leaf for key in keys for leaf in _hdf5_leaves(observations[key], f"observations/{key}")]


def _hdf5_leaves(node, name: str) -> list[tuple[str, Any]]:
    if isinstance(node, h5py.Group):
        return [leaf for key in sorted(node.keys()) for leaf in _hdf5_leaves(node[key], f"{name}/{key}")]
    return [(name, node)]


def _row_size(shape: Sequence[int]) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def _leaves_dim(shapes) -> int:
    return sum(_row_size(shape) for shape in shapes)


def _concat_leaves(leaves: list[np.ndarray], rows: int) -> np.ndarray:
    if len(leaves) == 1:
        return leaves[0].reshape(rows, -1)
    return np.concatenate([leaf.reshape(rows, -1).astype(np.float32, copy=False) for leaf in leaves], axis=1)


# Arrow layout (Minari's ArrowStorage): data/<episode id>/*.arrow, one row per observation
# (T + 1); actions, rewards and flags are padded with one trailing row, dropped here. Box
# values are fixed-size lists (flattened), dict observations structs.


def _arrow_episodes(data_dir: Path, keys: Optional[tuple]) -> list[_Episode]:
    try:
        import pyarrow.dataset as pa_dataset
    except ImportError:
        raise ImportError(
            f"Minari dataset {data_dir} is stored as Arrow (metadata.json data_format 'arrow'), "
            "which needs pyarrow: pip install pyarrow"
        ) from None
    ids = sorted((int(p.name), p) for p in data_dir.iterdir() if p.is_dir() and p.name.isdigit())
    episodes = []
    for episode_id, episode_dir in ids:
        where = f"Minari dataset {data_dir}: episode {episode_id} ({episode_dir})"
        source = pa_dataset.dataset(str(episode_dir), format="arrow", ignore_prefixes=["_", ".", MINARI_METADATA_FILE])
        schema = source.schema
        missing = [key for key in MINARI_EPISODE_KEYS if key not in schema.names]
        if missing:
            raise DatasetError(
                f"{where}: missing required key(s) {', '.join(repr(k) for k in missing)} (it has {schema.names})"
            )
        observation_dim = _arrow_dim(_arrow_observation_fields(schema.field("observations").type, keys, where))
        action_dim = _arrow_dim([schema.field("actions").type])
        steps = source.count_rows() - 1
        load = _arrow_loader(source, keys, steps)
        episodes.append(_Episode(where, max(steps, 0), observation_dim, action_dim, load))
    return episodes


def _arrow_loader(source, keys: Optional[tuple], steps: int) -> Callable[[], dict]:
    def load() -> dict:
        table = source.to_table()
        columns = {name: table.column(name).combine_chunks() for name in MINARI_EPISODE_KEYS}
        # the step columns carry one padding row (the observation column's final row): drop it
        data = {
            name: _arrow_numpy(columns[name])[:steps] for name in ("actions", "rewards", "terminations", "truncations")
        }
        data["actions"] = data["actions"].reshape(steps, -1)
        observations = columns["observations"]
        leaves = _arrow_observation_leaves(observations, keys)
        data["observations"] = _concat_leaves([_arrow_numpy(leaf) for leaf in leaves], steps + 1)
        return data

    return load


def _arrow_observation_fields(obs_type, keys: Optional[tuple], where: str) -> list:
    """The Arrow types of the flattened observation's leaves, in flattening order."""
    import pyarrow as pa

    if not pa.types.is_struct(obs_type):
        return [obs_type]  # a Box space: already flat, keys do not apply
    names = [obs_type.field(i).name for i in range(obs_type.num_fields)]
    if keys is None:
        raise DatasetError(
            f"{where}: key 'observations' is a dict with keys {sorted(names)}; "
            "pass observation_keys to choose which to concatenate, in order"
        )
    missing = [key for key in keys if key not in names]
    if missing:
        raise DatasetError(f"{where}: key 'observations' has no key(s) {missing}; it has {sorted(names)}")

    def leaves(field_type) -> list:
        if pa.types.is_struct(field_type):
            sub = sorted(field_type.field(i).name for i in range(field_type.num_fields))
            return [leaf for name in sub for leaf in leaves(field_type.field(name).type)]
        return [field_type]

    return [leaf for key in keys for leaf in leaves(obs_type.field(key).type)]


def _arrow_observation_leaves(array, keys: Optional[tuple]) -> list:
    import pyarrow as pa

    if not pa.types.is_struct(array.type):
        return [array]

    def children(value) -> dict:
        # flatten() (unlike field()) applies the struct's own offset to its children
        names = [value.type.field(i).name for i in range(value.type.num_fields)]
        return dict(zip(names, value.flatten()))

    def leaves(value) -> list:
        if pa.types.is_struct(value.type):
            sub = children(value)
            return [leaf for name in sorted(sub) for leaf in leaves(sub[name])]
        return [value]

    top = children(array)
    return [leaf for key in keys for leaf in leaves(top[key])]


def _arrow_dim(types: list) -> int:
    import pyarrow as pa

    dim = 0
    for arrow_type in types:
        size = 1
        while pa.types.is_fixed_size_list(arrow_type):
            size *= arrow_type.list_size
            arrow_type = arrow_type.value_type
        dim += size
    return dim


def _arrow_numpy(array) -> np.ndarray:
    """A (nested) fixed-size-list or plain numeric Arrow array as (rows, -1) / (rows,) numpy."""
    import pyarrow as pa

    rows = len(array)
    if not pa.types.is_fixed_size_list(array.type):
        return array.to_numpy(zero_copy_only=False)
    while pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(rows, -1)
