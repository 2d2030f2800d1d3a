"""Checks the dataset readers share: `DatasetError`, and checked reads of per-step HDF5 arrays.

Errors are `DatasetError` (a ValueError) naming the file, the episode where there is one,
and the key. A per-step array is checked for its kind (an array, not a group), dtype, rank,
row count and finite values; large ones are copied out block by block (`BLOCK_BYTES`).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import h5py
import numpy as np

from envs.datasets import all_finite
from envs.observations import IMAGE_DTYPE, STATE_DTYPE, ObservationPart, ObservationSpec

PathLike = Union[str, os.PathLike]

# Rows per block when copying a large array out of an HDF5 file: the copy never holds more
# than the outputs plus one block of about this many bytes.
BLOCK_BYTES = 2 << 20


class DatasetError(ValueError):
    """A dataset file is missing keys, malformed or does not fit the task."""


def _group_spec(group, where: str, key: str) -> tuple[ObservationSpec, int]:
    """The spec of a group of per-step part arrays (2-D float "state", 4-D uint8 images) and
    its row count, every part checked (nothing read)."""
    parts, num_rows = [], None
    for name in sorted(group.keys()):
        node = group[name]
        if not isinstance(node, h5py.Dataset):
            raise DatasetError(f"{where}: key '{key}/{name}' is a group, expected an array")
        if node.ndim == 4:
            if node.dtype != np.uint8:
                raise DatasetError(f"{where}: key '{key}/{name}' has dtype {node.dtype}, expected uint8 (a camera image)")
            dtype = IMAGE_DTYPE
        elif node.ndim == 2:
            if node.dtype.kind not in "biuf":
                raise DatasetError(f"{where}: key '{key}/{name}' has dtype {node.dtype}, expected numbers")
            dtype = STATE_DTYPE
        else:
            raise DatasetError(
                f"{where}: key '{key}/{name}' has shape {node.shape}, expected (steps, dim) for the state or "
                "(steps, H, W, C) for an image"
            )
        if num_rows is None:
            num_rows = node.shape[0]
        elif node.shape[0] != num_rows:
            raise DatasetError(f"{where}: key '{key}/{name}' has {node.shape[0]} rows, expected {num_rows} like the other parts")
        parts.append(ObservationPart(name, tuple(int(n) for n in node.shape[1:]), dtype))
    if not parts:
        raise DatasetError(f"{where}: key '{key}' is an empty group, expected one array per observation part")
    try:
        spec = ObservationSpec(tuple(parts))
    except ValueError as error:
        raise DatasetError(f"{where}: key '{key}': {error}") from None
    if num_rows == 0:
        raise DatasetError(f"{where}: key '{key}' has no rows")
    return spec, num_rows


def _read_parts(group, spec: ObservationSpec, where: str, key: str) -> dict:
    """Each part of `group` in full: images as stored (uint8), the state as finite float32."""
    out = {}
    for part in spec.parts:
        array = group[part.name][()]
        if not part.is_image:
            array = array.astype(np.float32, copy=False)
            if not all_finite(array):
                row = int(np.argmax(~np.isfinite(array).all(axis=1)))
                raise DatasetError(f"{where}: key '{key}/{part.name}' contains NaN or inf (first at row {row})")
        out[part.name] = array
    return out


def _array(
    value, key: str, where: str, rank: int, rows: Optional[int] = None, like: str = "observations"
) -> h5py.Dataset:
    """`value` (the HDF5 node at `key`) as a numeric dataset of the given rank and row count
    (that of `like`)."""
    if not isinstance(value, h5py.Dataset):
        raise DatasetError(f"{where}: key '{key}' is a group, expected an array")
    if value.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: key '{key}' has dtype {value.dtype}, expected numbers")
    if value.ndim != rank:
        expected = "(steps, dim)" if rank == 2 else "(steps,)"
        raise DatasetError(f"{where}: key '{key}' has shape {value.shape}, expected {expected}")
    if rows is not None and value.shape[0] != rows:
        raise DatasetError(f"{where}: key '{key}' has {value.shape[0]} rows, expected {rows} (as '{like}')")
    return value


def _read_vector(group: h5py.Group, key: str, where: str, rows: int) -> np.ndarray:
    """A per-step scalar key, shaped (steps,) or (steps, 1), as a finite 1-D array."""
    value = group[key]
    if isinstance(value, h5py.Dataset) and value.ndim == 2 and value.shape[1] == 1:
        values = _array(value, key, where, rank=2, rows=rows)[:, 0]
    else:
        values = _array(value, key, where, rank=1, rows=rows)[()]
    bad = ~np.isfinite(values) if values.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise DatasetError(f"{where}: key '{key}' contains NaN or inf (first at row {int(np.argmax(bad))})")
    return values


def _read_flags(group: h5py.Group, key: str, where: str, rows: int) -> np.ndarray:
    """A 0/1 per-step key as a bool array."""
    values = _read_vector(group, key, where, rows)
    if values.dtype != bool:
        bad = (values != 0) & (values != 1)
        if bad.any():
            row = int(np.argmax(bad))
            raise DatasetError(f"{where}: key '{key}' has value {values[row]} at row {row}, expected 0 or 1")
    return values.astype(bool)


def _check_dim(where: str, key: str, dim: int, expected: Optional[int]) -> None:
    if expected is not None and dim != expected:
        raise DatasetError(f"{where}: key '{key}' has dim {dim}, the task expects {expected}")


def _read_rows(
    ds: h5py.Dataset, where: str, key: str, selections: Sequence[Optional[tuple]]
) -> list[np.ndarray]:
    """One float32 array per selection, reading `ds` (2-D) once, block by block, and checking
    every block is finite. A selection is None (every row) or `(mask, step)`: the output has
    one row per true `mask[i]`, in order, copied from row i + step[i] (`step`: a bool array,
    or None for 0), so e.g. (keep, ~terminals) gathers the successors of the kept steps.

    Working block by block keeps memory at the outputs plus one block: no full-size copy or
    (N,) index array (reading the whole array and then indexing it would hold it twice).
    """
    num_rows, dim = ds.shape
    sizes = [num_rows if sel is None else int(np.count_nonzero(sel[0])) for sel in selections]
    outs = [np.empty((size, dim), np.float32) for size in sizes]
    filled = [0] * len(selections)
    block_rows = max(1, BLOCK_BYTES // max(1, dim * ds.dtype.itemsize))
    # One extra row past each block, so a step's successor is always in the buffer.
    buffer = np.empty((min(block_rows + 1, num_rows), dim), ds.dtype)
    for start in range(0, num_rows, block_rows):
        stop = min(start + block_rows, num_rows)
        read_stop = min(stop + 1, num_rows)
        block = buffer[: read_stop - start]
        ds.read_direct(block, np.s_[start:read_stop], np.s_[0 : read_stop - start])
        rows = block[: stop - start]  # the extra row is checked with the next block
        if not all_finite(rows):
            row = start + int(np.argmax(~np.isfinite(rows).all(axis=1)))
            raise DatasetError(f"{where}: key '{key}' contains NaN or inf (first at row {row})")
        for s, (selection, out) in enumerate(zip(selections, outs)):
            if selection is None:
                out[start:stop] = rows
                continue
            mask, step = selection
            local = np.flatnonzero(mask[start:stop])
            if step is not None:
                local += step[start:stop][local]
            target = out[filled[s] : filled[s] + len(local)]
            if block.dtype == np.float32:
                np.take(block, local, axis=0, out=target)  # no temporary
            else:
                target[...] = block[local]
            filled[s] += len(local)
    return outs


def _rows_differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """diff[i] = any(a[i] != b[i]), in blocks (no (N, dim) boolean temporary)."""
    diff = np.empty(len(a), bool)
    block_rows = max(1, BLOCK_BYTES // max(1, a.shape[1] * a.itemsize))
    for start in range(0, len(a), block_rows):
        stop = start + block_rows
        np.any(a[start:stop] != b[start:stop], axis=1, out=diff[start:stop])
    return diff
