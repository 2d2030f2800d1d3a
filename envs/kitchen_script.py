"""A scripted Franka for FrankaKitchen-v1: one motion script per subtask and the runner that plays them.

D4RL's kitchen data are human teleoperation (VR) demonstrations. None are here, so this module
scripts them instead, with MuJoCo's own kinematics and the env's own action space, steering
the tool through `CartesianController` (envs/kitchen_controller.py, which also gives the hand's
orientation convention):

- `SUBTASK_SCRIPTS`: one short script per subtask (microwave, kettle, bottom burner, top
  burner, light switch, slide cabinet, hinge cabinet): a list of `Phase`s, each a tool pose
  target, a gripper command and an end condition (pose reached, object joint past a value, or
  a step budget). Handle and object poses come from the model's sites, bodies and joints
  (`KitchenGeometry`), read at the step they are needed; doors are pulled along the path the
  handle takes as the hinge turns, computed from the hinge's anchor and axis.
- `SubtaskRunner` runs a queue of subtask scripts one after another. Every script ends by
  backing off along its approach axis; where measured to be needed (`needs_home`) the next
  one starts with a rise and a joint-space move back towards the start posture, from which
  the scripts were built. Over all 42 ordered pairs of scripts, 41 second subtasks succeed
  (the slide cabinet after the hinge cabinet does not: the open door covers its handle).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

from envs.kitchen_controller import ARM_DOFS, CartesianController, hand_frame, rotation_about, rotation_error

SUBTASKS = ("microwave", "kettle", "bottom burner", "top burner", "light switch", "slide cabinet", "hinge cabinet")
OPEN, CLOSE = 1.0, -1.0  # finger velocity actions


# --- the kitchen's objects, read from the model ------------------------------------------------
class KitchenGeometry:
    """Poses of the kitchen's handles, knobs and joints, read from the MuJoCo model and data at
    the time of the call (so they follow doors that move)."""

    def __init__(self, model, data):
        import mujoco

        self.model, self.data, self._mujoco = model, data, mujoco

    def _id(self, kind, name: str) -> int:
        index = self._mujoco.mj_name2id(self.model, kind, name)
        if index < 0:
            raise ValueError(f"the kitchen model has no {kind.name[6:].lower()} {name!r}")
        return index

    def site(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position, rotation) of a site in world."""
        i = self._id(self._mujoco.mjtObj.mjOBJ_SITE, name)
        return self.data.site_xpos[i].copy(), self.data.site_xmat[i].reshape(3, 3).copy()

    def body(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position, rotation) of a body in world."""
        i = self._id(self._mujoco.mjtObj.mjOBJ_BODY, name)
        return self.data.xpos[i].copy(), self.data.xmat[i].reshape(3, 3).copy()

    def joint(self, name: str) -> tuple[float, np.ndarray, np.ndarray]:
        """(qpos, anchor, unit axis) of a hinge or slide joint, anchor and axis in world."""
        i = self._id(self._mujoco.mjtObj.mjOBJ_JOINT, name)
        return float(self.data.qpos[self.model.jnt_qposadr[i]]), self.data.xanchor[i].copy(), self.data.xaxis[i].copy()

    def qpos(self, name: str) -> np.ndarray:
        """The joint's qpos entries (7 for the kettle's free joint)."""
        i = self._id(self._mujoco.mjtObj.mjOBJ_JOINT, name)
        start = self.model.jnt_qposadr[i]
        width = {0: 7, 1: 4}.get(int(self.model.jnt_type[i]), 1)
        return self.data.qpos[start : start + width].copy()


def kitchen_goals() -> dict[str, np.ndarray]:
    """The env's goal configuration of every subtask (gymnasium-robotics' OBS_ELEMENT_GOALS)."""
    from envs.mujoco_compat import import_gymnasium_robotics

    import_gymnasium_robotics()  # quietly, before its submodule
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS

    return {name: np.asarray(goal, float) for name, goal in OBS_ELEMENT_GOALS.items()}


# --- scripts -------------------------------------------------------------------------------
Pose = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass
class Phase:
    """One step of a script: move the tool towards `target()` (re-evaluated every env step)
    with the gripper command `gripper` until `done()` holds, or the pose is reached (within
    `tolerance` m and 0.1 rad) when `done` is None, or `max_steps` steps have passed."""

    name: str
    target: Callable[[], Pose]
    gripper: float
    max_steps: int
    done: Optional[Callable[[], bool]] = None
    tolerance: float = 0.02
    min_steps: int = 0
    max_speed: Optional[float] = None  # m/s; None: the controller's
    skip: Optional[Callable[[], bool]] = None  # checked when the phase starts: skip it if true
    joints: Optional[np.ndarray] = None  # a joint-space move to this posture instead of `target`


APPROACH_DISTANCE = 0.1  # m: pre-grasp and retreat poses stand this far back along the approach
PULL_DEPTH = 0.02  # m: doors are pulled with the tool aimed this much deeper than the bar
TRANSIT_SPEED = 1.0  # m/s for moves in free space (the controller's default speed is for contact)
# The joint-space move home (`needs_home`): at most this many steps, done when every arm joint is
# within this many rad of the start posture.
HOME_STEPS, HOME_TOLERANCE = 25, 0.2
HOME_RISE = 0.12  # m: the hand rises this much before the joint-space move


def _fixed(position, rotation) -> Callable[[], Pose]:
    position, rotation = np.asarray(position, float).copy(), np.asarray(rotation, float).copy()
    return lambda: (position, rotation)


def _approach_and_grasp(name: str, position, rotation, grasp: bool = True, depth: float = 0.0) -> list[Phase]:
    """Pre-pose back along the approach axis, then the grasp pose, then close (if `grasp`)."""
    approach = rotation[:, 2]
    at = np.asarray(position, float) + depth * approach
    phases = [
        Phase(
            f"{name}: pre-grasp", _fixed(at - APPROACH_DISTANCE * approach, rotation), OPEN if grasp else CLOSE, 40,
            tolerance=0.03, max_speed=TRANSIT_SPEED,
        ),
        Phase(f"{name}: reach", _fixed(at, rotation), OPEN if grasp else CLOSE, 20, tolerance=0.012),
    ]
    if grasp:
        phases.append(Phase(f"{name}: close", _fixed(at, rotation), CLOSE, 3, done=lambda: False))
    return phases


def _closed_fingers(name: str, controller: "CartesianController", position, rotation) -> Phase:
    """Wait at the pre-pose until the fingers are closed (for pushing with them: open fingers
    straddle a lever instead of pushing it)."""
    approach = rotation[:, 2]
    pre = np.asarray(position, float) - APPROACH_DISTANCE * approach
    target = _fixed(pre, rotation)

    def ready():  # closed, and squarely in front of the push point (the reach goes straight in)
        return controller.gripper_opening() < 0.01 and np.linalg.norm(controller.tool_pose()[0] - pre) < 0.015

    return Phase(f"{name}: close fingers", target, CLOSE, 12, done=ready)


def _release_and_retreat(
    name: str, controller: "CartesianController", centre: Optional[Callable[[], np.ndarray]] = None,
    back: float = APPROACH_DISTANCE,
) -> list[Phase]:
    """Open (holding the tool where it is, or at `centre()`: the middle of the handle, so that
    the opening fingers come free of it on both sides), then back straight off along the
    approach axis, `back` m from where the tool (or the handle's middle) is then."""
    state = {}

    def here():
        if "pose" not in state:
            state["pose"] = controller.tool_pose()
        position, rotation = state["pose"]
        return (centre() if centre is not None else position), rotation

    def retreat():
        if "back" not in state:
            position, rotation = controller.tool_pose()
            if centre is not None:
                position = centre()
            state["back"] = (position - back * rotation[:, 2], rotation)
        return state["back"]

    return [
        Phase(f"{name}: release", here, OPEN, 6, done=lambda: controller.gripper_opening() > 0.07, min_steps=2),
        # All the way back: fingertips left near a handle catch it on the way to the next subtask.
        Phase(f"{name}: retreat", retreat, OPEN, 15, tolerance=0.02, max_speed=TRANSIT_SPEED),
    ]


def _turn_about(axis, anchor, angle, position, rotation) -> Pose:
    """`position`/`rotation` carried `angle` rad about the line through `anchor` along `axis`."""
    turn = rotation_about(axis, angle)
    return anchor + turn @ (np.asarray(position) - anchor), turn @ rotation


def _door_script(
    name, geometry, controller, handle_site, joint, goal, finish, lead=0.2, follow=1.0, max_steps=45, speed=0.3,
    regrasps=2,
):
    """Grasp a door's handle from the front, pull it around the hinge until the joint passes
    `finish` (towards `goal`), let go, back off. The hand turns with the door (`follow` = the
    fraction of the door's turn it follows; the handle is a round bar and turns in the closed
    fingers). The handle site's x axis runs along the door, its y axis into it.

    The fingers squeeze with only about 10 N and the pull runs along the pads, so the bar
    slowly slips towards the fingertips; when it is 3 cm off the pads' middle the hand lets go,
    grasps the bar again where it is now and pulls on (up to `regrasps` times)."""
    position, frame = geometry.site(handle_site)
    angle0, _, _ = geometry.joint(joint)
    sign = np.sign(goal - angle0)

    def grasp_frame():
        return rotation_about(geometry.joint(joint)[2], follow * (geometry.joint(joint)[0] - angle0)) @ hand_frame(
            frame[:, 1], frame[:, 0]
        )

    def pull():
        angle, anchor, axis = geometry.joint(joint)
        handle, _ = geometry.site(handle_site)
        target, _ = _turn_about(axis, anchor, sign * lead, handle, np.eye(3))
        rotation = rotation_about(axis, follow * (angle - angle0 + sign * lead)) @ hand_frame(frame[:, 1], frame[:, 0])
        # Aim a little deeper than the bar: the palm side of the pads presses on it, which
        # slows its slip towards the fingertips.
        return target + PULL_DEPTH * rotation[:, 2], rotation

    def passed():
        return sign * (geometry.joint(joint)[0] - finish) >= 0

    def slipped():
        return passed() or np.linalg.norm(controller.tool_pose()[0] - geometry.site(handle_site)[0]) > 0.03

    def handle_pose(back: float):
        handle, _ = geometry.site(handle_site)
        rotation = grasp_frame()
        return handle - back * rotation[:, 2], rotation

    phases = [
        *_approach_and_grasp(name, position, hand_frame(frame[:, 1], frame[:, 0])),
        Phase(f"{name}: pull", pull, CLOSE, max_steps, done=slipped, max_speed=speed),
    ]
    for _ in range(regrasps):
        phases += [
            Phase(f"{name}: let go", lambda: handle_pose(0.04), OPEN, 6, skip=passed, tolerance=0.01),
            Phase(f"{name}: regrasp", lambda: handle_pose(0.0), OPEN, 10, skip=passed, tolerance=0.008),
            Phase(f"{name}: close", lambda: handle_pose(0.0), CLOSE, 4, skip=passed, done=lambda: False),
            Phase(f"{name}: pull", pull, CLOSE, max_steps, done=slipped, skip=passed, max_speed=speed),
        ]
    return phases + _release_and_retreat(name, controller)


def microwave_script(geometry, controller) -> list[Phase]:
    """Grasp the microwave's handle bar, pull the door open around its hinge to -0.52 rad (goal
    -0.75, done within 0.3 of it; the arm reaches about -0.66 before the bar slips out of reach),
    release, back off."""
    goal = kitchen_goals()["microwave"][0]
    return _door_script("microwave", geometry, controller, "microhandle_site", "microwave", goal, goal + 0.23, lead=0.3, speed=0.45)


def hinge_cabinet_script(geometry, controller) -> list[Phase]:
    """Grasp the right hinge door's handle, swing it open to 1.35 rad (goal 1.45), release."""
    goal = kitchen_goals()["hinge cabinet"][1]
    return _door_script("hinge cabinet", geometry, controller, "hinge_site2", "right_hinge_cabinet", goal, goal - 0.1, follow=0.5, max_steps=60)


def slide_cabinet_script(geometry, controller) -> list[Phase]:
    """Grasp the sliding door's handle and pull it along its slide to 0.32 m (goal 0.37)."""
    goal = kitchen_goals()["slide cabinet"][0]
    position, frame = geometry.site("slide_site")
    grasp = hand_frame(frame[:, 1], frame[:, 0])

    def pull():
        _, _, axis = geometry.joint("slide_cabinet")
        handle, _ = geometry.site("slide_site")
        return handle + 0.1 * axis, grasp

    return [
        *_approach_and_grasp("slide cabinet", position, grasp),
        Phase("slide cabinet: pull", pull, CLOSE, 40, done=lambda: geometry.joint("slide_cabinet")[0] >= goal - 0.05),
        *_release_and_retreat("slide cabinet", controller),
    ]


def _knob_script(name, geometry, controller, knob: int, goal: float) -> list[Phase]:
    """Grasp a burner knob's fin and turn the hand about the knob's axis until the knob passes
    `goal` + 0.12 rad of the way (goal -0.88 / -0.92, the turn is negative)."""
    position, frame = geometry.site(f"knob{knob}_site")
    joint = f"knob_Joint_{knob}"
    angle0, _, axis0 = geometry.joint(joint)
    grasp = hand_frame(-axis0, frame[:, 0])  # approach along the knob's axis, fingers across the fin
    finish = goal + 0.12 if goal < angle0 else goal - 0.12
    sign = np.sign(goal - angle0)

    def twist():
        angle, anchor, axis = geometry.joint(joint)
        target_angle = angle + sign * 0.5
        return _turn_about(axis, anchor, target_angle - angle0, position, grasp)

    return [
        *_approach_and_grasp(name, position, grasp),
        Phase(f"{name}: turn", twist, CLOSE, 30, done=lambda: sign * (geometry.joint(joint)[0] - finish) >= 0),
        *_release_and_retreat(name, controller),
    ]


def bottom_burner_script(geometry, controller) -> list[Phase]:
    """Turn knob 2 (the bottom burner's, joint knob_Joint_2) to about -0.8 rad (goal -0.88)."""
    return _knob_script("bottom burner", geometry, controller, 2, kitchen_goals()["bottom burner"][0])


def top_burner_script(geometry, controller) -> list[Phase]:
    """Turn knob 4 (the top burner's, joint knob_Joint_4) to about -0.8 rad (goal -0.92)."""
    return _knob_script("top burner", geometry, controller, 4, kitchen_goals()["top burner"][0])


def light_switch_script(geometry, controller) -> list[Phase]:
    """Push the light switch's lever sideways around its pivot (closed fingers against the
    lever's tip) until it passes -0.55 rad (goal -0.69)."""
    goal = kitchen_goals()["light switch"][0]
    tip, _ = geometry.site("light_site")
    angle0, pivot, axis = geometry.joint("light_switch")
    sign = np.sign(goal - angle0)
    tangent = np.cross(axis, tip - pivot) * sign
    tangent /= np.linalg.norm(tangent)
    frame = hand_frame([0, 1, 0], [1, 0, 0])
    # Beside the tip on the side it is pushed from, and a little short of it along the approach,
    # so that the fingertips push the lever and the wide hand stays clear of its end.
    contact = tip - 0.06 * tangent - 0.015 * frame[:, 2]
    # How far the contact point trails the tip around the pivot: the tool must lead the lever by
    # more than this to push it.
    flat = lambda v: v - axis * (v @ axis)  # noqa: E731
    a, b = flat(tip - pivot), flat(contact - pivot)
    trail = np.arctan2(np.cross(b, a) @ axis, a @ b) * sign

    def push():
        angle, anchor, turn_axis = geometry.joint("light_switch")
        target, _ = _turn_about(turn_axis, anchor, angle - angle0 + sign * (trail + 0.3), contact, np.eye(3))
        return target, frame

    phases = _approach_and_grasp("light switch", contact, frame, grasp=False)
    return [
        phases[0],
        _closed_fingers("light switch", controller, contact, frame),
        phases[1],
        Phase("light switch: push", push, CLOSE, 30, done=lambda: sign * (geometry.joint("light_switch")[0] - (goal + 0.14 * -sign)) >= 0),
        *_release_and_retreat("light switch", controller),
    ]


def kettle_script(geometry, controller) -> list[Phase]:
    """Grasp the kettle's handle bar from the front with the fingers opening vertically, lift it,
    carry it to its goal (the top left burner, from the env's goal), put it down, let go."""
    handle, _ = geometry.site("kettle_site")
    _, frame = geometry.body("kettleroot")
    goal = kitchen_goals()["kettle"][:3]
    offset = handle - geometry.qpos("kettle")[:3]  # handle relative to the kettle's free joint
    grasp = hand_frame(frame[:, 1], frame[:, 2])  # approach along the kettle's y, fingers along z
    lift = np.array([0.0, 0.0, 0.08])
    place = goal + offset + [0.0, 0.0, 0.01]
    return [
        *_approach_and_grasp("kettle", handle, grasp),
        Phase("kettle: lift", _fixed(handle + lift, grasp), CLOSE, 15, tolerance=0.03),
        Phase("kettle: carry", _fixed(place + lift, grasp), CLOSE, 30, tolerance=0.04, max_speed=TRANSIT_SPEED),
        Phase("kettle: lower", _fixed(place, grasp), CLOSE, 15, tolerance=0.015),
        # The open fingers rub on the bar and drag the kettle a few cm on the way out: back off
        # further than elsewhere, measured from the bar.
        *_release_and_retreat("kettle", controller, centre=lambda: geometry.site("kettle_site")[0], back=0.15),
    ]


SUBTASK_SCRIPTS: dict[str, Callable[[KitchenGeometry, CartesianController], list[Phase]]] = {
    "microwave": microwave_script,
    "kettle": kettle_script,
    "bottom burner": bottom_burner_script,
    "top burner": top_burner_script,
    "light switch": light_switch_script,
    "slide cabinet": slide_cabinet_script,
    "hinge cabinet": hinge_cabinet_script,
}


def needs_home(previous: Optional[str], subtask: str) -> bool:
    """Whether the `subtask` script, run after `previous`, starts by raising the hand and moving
    the arm in joint space back towards the start posture (`HOME_STEPS` at most, until every
    arm joint is within `HOME_TOLERANCE`).

    The scripts are built from the start posture; the Cartesian controller leaves the arm in
    whatever configuration the last subtask needed. Measured over every ordered pair of the
    seven scripts (seed 0, action noise 0.05), without the move 9 of 42 second subtasks failed:
    the microwave after anything but the start or the kettle (its low handle is then out of
    reach), anything after the slide or hinge cabinet (the arm is twisted up high; after the
    hinge door it also stands behind the open door), and the bottom burner after the kettle
    (that one was the kettle's short retreat, since lengthened). With the move where this
    function asks for it, 1 of 42 fails: the slide cabinet after the hinge cabinet (the open
    hinge door covers the slide's handle). The move costs up to 33 steps, so it is made only
    where it helps: the complete task's order (microwave, kettle, light switch, slide cabinet)
    then fits 280 steps."""
    if previous is None:
        return False
    return (subtask == "microwave" and previous != "kettle") or previous in ("slide cabinet", "hinge cabinet")


class SubtaskRunner:
    """Runs subtask scripts one after another: `action()` gives the env action for this step.

    The script of a subtask is built when it starts, from the kitchen as it is then. `current`
    names the running subtask (None when the queue is done; the arm then holds its pose with
    the gripper open)."""

    def __init__(self, env, subtasks: Sequence[str], controller: Optional[CartesianController] = None):
        unknown = [name for name in subtasks if name not in SUBTASK_SCRIPTS]
        if unknown:
            raise ValueError(f"field 'subtasks': unknown subtask(s) {unknown}, expected names from {SUBTASKS}")
        self.controller = controller or CartesianController(env)
        self.geometry = KitchenGeometry(self.controller.model, self.controller.data)
        self.queue = list(subtasks)
        self.started: list[str] = []  # subtasks whose script has begun, in order
        self.finished: list[str] = []  # subtasks whose script ran to its end
        self.current: Optional[str] = None
        self.phase_name: Optional[str] = None
        self._phases: list[Phase] = []
        self._steps = 0
        self._rest: Optional[Pose] = None

    def _next_phase(self) -> Optional[Phase]:
        while not self._phases:
            if self.current is not None:
                self.finished.append(self.current)
            if not self.queue:
                self.current = None
                return None
            previous = self.started[-1] if self.started else None
            self.current = self.queue.pop(0)
            self.started.append(self.current)
            self._phases = SUBTASK_SCRIPTS[self.current](self.geometry, self.controller)
            if needs_home(previous, self.current):
                # Straight up first, so that the joint-space move does not sweep the hand
                # through what it just left (the kettle on its burner).
                position, rotation = self.controller.tool_pose()
                self._phases[:0] = [
                    Phase(f"{self.current}: rise", _fixed(position + [0, 0, HOME_RISE], rotation), OPEN, 8,
                          tolerance=0.04, max_speed=TRANSIT_SPEED),
                    Phase(f"{self.current}: home", lambda: None, OPEN, HOME_STEPS, tolerance=HOME_TOLERANCE,
                          joints=self.controller.posture),
                ]
        return self._phases[0]

    def action(self) -> np.ndarray:
        """This step's env action."""
        while True:
            phase = self._next_phase()
            if phase is None:
                if self._rest is None:
                    self._rest = self.controller.tool_pose()
                self.phase_name = None
                return self.controller.action(*self._rest, OPEN)
            if self._steps == 0 and phase.skip is not None and phase.skip():
                self._phases.pop(0)
                continue
            if phase.joints is not None:
                error = np.max(np.abs(phase.joints - self.controller.data.qpos[:ARM_DOFS]))
                if self._steps >= phase.max_steps or error < phase.tolerance:
                    self._phases.pop(0)
                    self._steps = 0
                    continue
                self._steps += 1
                self.phase_name = phase.name
                return self.controller.joint_action(phase.joints, phase.gripper)
            position, rotation = phase.target()
            finished = self._steps >= phase.max_steps
            if not finished and self._steps >= phase.min_steps:
                if phase.done is not None:
                    finished = phase.done()
                else:
                    tool, tool_rotation = self.controller.tool_pose()
                    finished = (
                        np.linalg.norm(tool - position) < phase.tolerance
                        and np.linalg.norm(rotation_error(rotation, tool_rotation)) < max(0.1, 4 * phase.tolerance)
                    )
            if finished:
                self._phases.pop(0)
                self._steps = 0
                continue
            self._steps += 1
            self.phase_name = phase.name
            return self.controller.action(position, rotation, phase.gripper, phase.max_speed)
