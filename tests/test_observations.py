"""envs/observations.py: the named-parts observation spec every layer shares."""

import gymnasium as gym
import numpy as np
import pytest

from envs.observations import ObservationPart, ObservationSpec, batch_size_of, index_observations


def camera_spec():
    return ObservationSpec.from_space(gym.spaces.Dict({
        "wrist": gym.spaces.Box(0, 255, (8, 6, 3), np.uint8),
        "state": gym.spaces.Box(-1, 1, (4,), np.float32),
        "side": gym.spaces.Box(0, 255, (8, 6, 1), np.uint8),
    }))


def test_flat_spec_from_box_and_json_round_trip():
    spec = ObservationSpec.from_space(gym.spaces.Box(-1, 1, (5,)))
    assert spec.is_flat and spec.state_dim == 5 and spec.nbytes == 20
    assert ObservationSpec.from_json(spec.to_json()) == spec
    assert ObservationSpec.from_json(5) == spec  # files from before named parts
    assert spec.zeros((2,)).shape == (2, 5)


def test_dict_spec_sorted_sizes_and_round_trip():
    spec = camera_spec()
    assert spec.names == ("side", "state", "wrist") and not spec.is_flat
    assert [p.name for p in spec.images] == ["side", "wrist"]
    assert spec.nbytes == 8 * 6 * 1 + 4 * 4 + 8 * 6 * 3
    assert ObservationSpec.from_json(spec.to_json()) == spec
    assert isinstance(spec.to_space(), gym.spaces.Dict)
    assert ObservationSpec.from_space(spec.to_space()) == spec


def test_check_names_the_part_and_expected_shape():
    spec = camera_spec()
    batch = spec.zeros((3,))
    assert batch_size_of(spec.check(batch)) == 3
    bad = dict(batch, wrist=np.zeros((3, 8, 6, 1), np.uint8))
    with pytest.raises(ValueError, match=r"\['wrist'\].*expected \(batch\.\.\., 8, 6, 3\)"):
        spec.check(bad)
    with pytest.raises(ValueError, match="expected uint8"):
        spec.check(dict(batch, side=np.zeros((3, 8, 6, 1), np.float32)))
    with pytest.raises(ValueError, match=r"keys \['side', 'state'\], expected"):
        spec.check({k: v for k, v in batch.items() if k != "wrist"})
    assert index_observations(batch, slice(0, 2))["wrist"].shape == (2, 8, 6, 3)


@pytest.mark.parametrize("part, message", [
    (ObservationPart("state", (4,), "uint8"), "expected float32"),
    (ObservationPart("joints", (4,), "float32"), "must be named 'state'"),
    (ObservationPart("cam", (8, 8, 2), "uint8"), "C in 1, 3, 4"),
    (ObservationPart("cam", (8, 8), "uint8"), "expected \\(d,\\)"),
    (ObservationPart("bad name", (8, 8, 3), "uint8"), "expected 1-64 characters"),
])
def test_bad_parts_are_refused(part, message):
    with pytest.raises(ValueError, match=message):
        ObservationSpec((part,))
