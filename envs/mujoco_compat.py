"""Runtime fix for gymnasium-robotics 1.4.2's joint helpers under mujoco >= 3.12.

`gymnasium_robotics.utils.mujoco_utils.{get,set}_joint_{qpos,qvel}` check a joint's type with
`assert joint_type in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)`, where
`joint_type` is an `np.int32` read from `model.jnt_type`. Newer mujoco bindings make
`mjtJoint.__eq__(np.int32)` return False, so every hinge/slide joint fails the assertion and
`FrankaKitchen-v1` cannot even be constructed. The replacements below compare plain ints.

They are installed by assigning the module's attributes (never by editing site-packages);
`robot_get_obs`, which the kitchen env uses, looks them up in the module at call time.
"""

from __future__ import annotations

import numpy as np

_PATCHED_FUNCTIONS = ("get_joint_qpos", "get_joint_qvel", "set_joint_qpos", "set_joint_qvel")


def _joint_layout(model, name: str, velocity: bool) -> tuple[int, int]:
    """(start address, width) of joint `name` in qpos (velocity=False) or qvel (True)."""
    import mujoco

    joint_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    if joint_id == -1:
        raise ValueError(f"joint {name!r} is not part of the model")
    joint_type = int(model.jnt_type[joint_id])  # np.int32 -> int: compares equal to the enum's int
    if joint_type == int(mujoco.mjtJoint.mjJNT_FREE):
        width = 6 if velocity else 7
    elif joint_type == int(mujoco.mjtJoint.mjJNT_BALL):
        # A ball joint has 4 qpos (quaternion) but 3 qvel entries; upstream returns 4 for
        # qvel too, which reads into the next joint's velocity.
        width = 3 if velocity else 4
    elif joint_type in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
        width = 1
    else:
        raise ValueError(f"joint {name!r} has unknown type {joint_type}")
    start = int(model.jnt_dofadr[joint_id] if velocity else model.jnt_qposadr[joint_id])
    return start, width


def get_joint_qpos(model, data, name):
    """The joint's qpos entries (a copy)."""
    start, width = _joint_layout(model, name, velocity=False)
    return data.qpos[start : start + width].copy()


def get_joint_qvel(model, data, name):
    """The joint's qvel entries (a copy)."""
    start, width = _joint_layout(model, name, velocity=True)
    return data.qvel[start : start + width].copy()


def set_joint_qpos(model, data, name, value):
    """Writes the joint's qpos entries."""
    start, width = _joint_layout(model, name, velocity=False)
    data.qpos[start : start + width] = np.asarray(value).reshape(width)


def set_joint_qvel(model, data, name, value):
    """Writes the joint's qvel entries."""
    start, width = _joint_layout(model, name, velocity=True)
    data.qvel[start : start + width] = np.asarray(value).reshape(width)


def import_gymnasium_robotics():
    """`import gymnasium_robotics` without the notice its first import prints to stderr about
    the *Dense* Adroit envs' rewards (the tasks use the sparse ones, so it only misleads)."""
    import contextlib
    import io
    import sys

    if "gymnasium_robotics" in sys.modules:
        return sys.modules["gymnasium_robotics"]
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    return gymnasium_robotics


def patch_gymnasium_robotics() -> None:
    """Installs the enum-safe joint helpers into gymnasium_robotics (idempotent)."""
    import_gymnasium_robotics()
    from gymnasium_robotics.utils import mujoco_utils

    for name in _PATCHED_FUNCTIONS:
        setattr(mujoco_utils, name, globals()[name])
