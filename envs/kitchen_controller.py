"""The kitchen Franka's Cartesian controller: a commanded tool pose in, the env's action out.

`CartesianController` turns a commanded tool pose (position of a point between the finger
pads, orientation of the hand) into the env's action: joint velocities for the 7 arm joints
and an open/close velocity for the 2 fingers, all in [-1, 1]. The pose error becomes a
twist (proportional gain, a small integral term, speed limits), the twist joint velocities
by damped least squares on the tool point's Jacobian (`mujoco.mj_jac`), with a null-space
pull towards the start posture; joints at a limit are locked and the rest solved again. The
env turns an action `a` into the servo target `q + 2 a dt` (dt = 0.08 s) of
position actuators with gain kp and joint damping kd; the steady state of such a servo
moving at velocity v against the bias forces (gravity) is `kp (target - q) = kd v + bias`,
so the controller sends `a = (kd v + bias) / (kp 2 dt)`, with kp, kd and the bias forces
read from the model. Without the bias term the arm sinks about 6 mm per step under a zero
action.

Orientation convention: the hand's frame is the `end_effector` site's; its z axis is the
approach direction (from the palm through the fingertips), its y axis the direction along
which the fingers open. At reset the hand points into the kitchen (+y) with the fingers
opening along x.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

ARM_DOFS = 7  # panda joints 1-7: dofs 0..6; fingers 7, 8
TOOL_OFFSET = 0.005  # m along the approach axis from the end_effector site to the middle of the finger pads


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """The 3x3 rotation by `angle` (rad) about the unit vector `axis` (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def hand_frame(approach: Sequence[float], finger_axis: Sequence[float]) -> np.ndarray:
    """The hand orientation (columns = site x, y, z in world) whose z axis is `approach` and
    whose y axis (finger opening) is `finger_axis` made orthogonal to it."""
    z = np.asarray(approach, float)
    z = z / np.linalg.norm(z)
    y = np.asarray(finger_axis, float)
    y = y - z * (y @ z)
    y = y / np.linalg.norm(y)
    return np.column_stack([np.cross(y, z), y, z])


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The rotation vector (world frame, rad) that turns `current` into `target`."""
    r = target @ current.T
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:
        if angle < 1e-6:
            return np.zeros(3)
        # A half turn: the axis is the eigenvector of r for eigenvalue 1.
        w, v = np.linalg.eigh((r + r.T) / 2)
        return np.pi * v[:, np.argmax(w)]
    return axis / norm * angle


class CartesianController:
    """Tool-pose control of the kitchen Franka through its joint-velocity action space.

    `action(position, rotation, gripper)` returns the 9-dim env action in [-1, 1]. Gains: the
    twist is `gain * error` capped at `max_speed` (m/s) and `max_turn` (rad/s); the joint
    velocities come from damped least squares (damping `damping`) plus a null-space pull
    (`posture_gain`) towards `posture` (the start posture).
    """

    def __init__(
        self,
        env,
        site: str = "end_effector",
        tool_offset: float = TOOL_OFFSET,
        gain: float = 7.0,
        max_speed: float = 0.7,
        max_turn: float = 2.5,
        damping: float = 0.05,
        posture_gain: float = 1.0,
        integral_gain: float = 10.0,
    ):
        import mujoco

        self._mujoco = mujoco
        self.robot = env.unwrapped.robot_env if hasattr(env.unwrapped, "robot_env") else env.unwrapped
        self.model, self.data = self.robot.model, self.robot.data
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, site)
        if self.site < 0:
            raise ValueError(f"field 'site': the model has no site {site!r}")
        self.body = int(self.model.site_bodyid[self.site])
        self.tool_offset = tool_offset
        self.gain, self.max_speed, self.max_turn = gain, max_speed, max_turn
        self.damping, self.posture_gain, self.integral_gain = damping, posture_gain, integral_gain
        self._integral = np.zeros(6)
        self.dt = float(self.robot.dt)
        # The env's action -> servo target: q + act_rng * a * dt (franka_env.FrankaRobot.step).
        self.action_scale = float(np.asarray(self.robot.act_rng)[0]) * self.dt
        self.kp = self.model.actuator_gainprm[:ARM_DOFS, 0].copy()
        self.kd = self.model.dof_damping[:ARM_DOFS].copy()
        self.posture = self.data.qpos[:ARM_DOFS].copy()
        # Joint limits (the tighter of the model's range and the env's position bound), with a margin.
        ranges = self.model.jnt_range[:ARM_DOFS]
        bounds = np.asarray(self.robot.robot_pos_bound)[:ARM_DOFS]
        self.low = np.maximum(ranges[:, 0], bounds[:, 0]) + 0.02
        self.high = np.minimum(ranges[:, 1], bounds[:, 1]) - 0.02
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def reset(self) -> None:
        """Forgets the integral term (call at every episode start)."""
        self._integral[:] = 0.0

    def tool_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position, rotation) of the tool point: between the finger pads, in world."""
        rotation = self.data.site_xmat[self.site].reshape(3, 3).copy()
        return self.data.site_xpos[self.site] + self.tool_offset * rotation[:, 2], rotation

    def gripper_opening(self) -> float:
        """The finger joints' sum (m): 0.08 fully open, 0 closed."""
        return float(self.data.qpos[7] + self.data.qpos[8])

    def joint_velocities(self, position: np.ndarray, rotation: np.ndarray, max_speed: Optional[float] = None) -> np.ndarray:
        """Arm joint velocities (rad/s) that move the tool towards the commanded pose (tool speed
        capped at `max_speed` m/s, default the controller's)."""
        max_speed = self.max_speed if max_speed is None else max_speed
        current, current_rotation = self.tool_pose()
        error = np.concatenate([
            np.asarray(position, float) - current,
            rotation_error(np.asarray(rotation, float), current_rotation),
        ])
        # Integral action on small errors removes the last millimetres the servos' dead band
        # leaves (contact and model error); it restarts whenever the tool is far off.
        if np.linalg.norm(error[:3]) > 0.03 or np.linalg.norm(error[3:]) > 0.2:
            self._integral[:] = 0.0
        else:
            self._integral = np.clip(self._integral + error * self.dt, -0.01, 0.01)
        twist = self.gain * error + self.integral_gain * self._integral
        speed = np.linalg.norm(twist[:3])
        if speed > max_speed:
            twist[:3] *= max_speed / speed
        rate = np.linalg.norm(twist[3:])
        if rate > self.max_turn:
            twist[3:] *= self.max_turn / rate
        self._mujoco.mj_jac(self.model, self.data, self._jacp, self._jacr, current, self.body)
        jac = np.vstack([self._jacp[:, :ARM_DOFS], self._jacr[:, :ARM_DOFS]])
        q = self.data.qpos[:ARM_DOFS]
        free = np.ones(ARM_DOFS, bool)
        # A joint at its limit that the solution drives further is locked (its column dropped)
        # and the rest solved again: the start posture has joint 2 at its lower limit.
        for _ in range(ARM_DOFS):
            j = jac * free
            inverse = j.T @ np.linalg.inv(j @ j.T + self.damping**2 * np.eye(6))
            qdot = inverse @ twist
            qdot += (np.diag(free.astype(float)) - inverse @ j) @ (self.posture_gain * (self.posture - q) * free)
            blocked = free & (((q <= self.low) & (qdot < 0)) | ((q >= self.high) & (qdot > 0)))
            if not blocked.any():
                break
            free &= ~blocked
        return qdot * free

    def joint_action(self, posture: np.ndarray, gripper: float, gain: float = 5.0, max_rate: float = 2.5) -> np.ndarray:
        """The env action that drives the arm's joints straight towards `posture` (rad), each at
        `gain` x its error, capped at `max_rate` rad/s (a joint-space move, for going home)."""
        qdot = np.clip(gain * (np.asarray(posture, float) - self.data.qpos[:ARM_DOFS]), -max_rate, max_rate)
        return self._to_action(qdot, gripper)

    def action(
        self, position: np.ndarray, rotation: np.ndarray, gripper: float, max_speed: Optional[float] = None
    ) -> np.ndarray:
        """The env action (9, in [-1, 1]) for the commanded tool pose and gripper (+1 opens,
        -1 closes). Joint velocities beyond the action range are scaled down together, so the
        tool keeps its direction."""
        return self._to_action(self.joint_velocities(position, rotation, max_speed), gripper)

    def _to_action(self, qdot: np.ndarray, gripper: float) -> np.ndarray:
        """Arm joint velocities (rad/s) and a gripper command as the env action (see the module
        docstring: the servo's steady state plus the bias forces)."""
        bias = self.data.qfrc_bias[:ARM_DOFS]
        hold = bias / (self.kp * self.action_scale)  # the part that holds the arm against gravity
        move = self.kd * qdot / (self.kp * self.action_scale)
        room = np.clip(1.0 - np.abs(hold), 0.05, None)
        excess = np.max(np.abs(move) / room)
        if excess > 1.0:
            move /= excess
        arm = np.clip(hold + move, -1.0, 1.0)
        return np.concatenate([arm, [gripper, gripper]]).astype(np.float32)
