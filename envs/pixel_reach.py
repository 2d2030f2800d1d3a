"""A built-in pixel task: a MuJoCo point mass that must reach a goal it can only see.

It exists to prove the camera pipeline end to end (dict observations, uint8 frames, the conv
encoder, frame-sharing replay) at budgets a laptop CPU finishes in minutes. The arena is the
square [-1, 1]^2 seen from above by a fixed camera. A blue ball (slide joints in x and y,
velocity actuators) starts near the centre; a red disc, the goal, sits in one of the four
quadrants (`GOAL_CENTRES`, plus a little jitter), drawn at every reset. Reaching the disc
(within `GOAL_RADIUS` of its centre) gives reward 1 and ends the episode.

The observation is a gymnasium `Dict`:

- "camera": the top-down view, uint8 (size, size, 3) (64 x 64 by default);
- "state": the ball's proprioception (x, y, vx, vy), float32.

The goal is in the image and nowhere in the state, so a policy has to look. Four goal
quadrants rather than a goal anywhere keep it learnable at small budgets: the encoder has to
tell which quadrant is lit up, not regress a position to a few pixels.

Rendering is headless: `MUJOCO_GL` selects the OpenGL backend (default here `egl`, set only
when the variable is unset; on this project's machines EGL runs on Mesa's llvmpipe, osmesa
does not work). The model turns shadows and multisampling off: a shadow map on a software
renderer costs ~50 ms a frame, without it a 64 x 64 frame takes ~0.2 ms.
"""

from __future__ import annotations

import os
from typing import Optional

# Must precede the first `import mujoco` in the process to take effect for mujoco.Renderer;
# this module creates its own GL context from the variable, so it works either way.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from envs.observations import STATE  # noqa: E402

CAMERA = "camera"  # the observation key of the image
IMAGE_SIZE = 64
ARENA = 1.0  # the walls are at +-ARENA
BALL_LIMIT = 0.9  # the ball's centre stays within +-BALL_LIMIT (joint limits)
BALL_RADIUS = 0.07
GOAL_RADIUS = 0.15  # success: the ball's centre within this of the goal's (the drawn disc)
GOAL_CENTRES = np.array([[0.55, 0.55], [-0.55, 0.55], [-0.55, -0.55], [0.55, -0.55]], np.float32)
GOAL_JITTER = 0.15  # uniform +-GOAL_JITTER per axis around the quadrant's centre
START_RANGE = 0.2  # the ball starts uniform in [-START_RANGE, START_RANGE]^2, at rest
MAX_SPEED = 1.0  # m/s at full action (velocity actuators)
PHYSICS_TIMESTEP = 0.01
FRAME_SKIP = 5  # physics steps per env step: 20 Hz control
CONTROL_HZ = 1.0 / (PHYSICS_TIMESTEP * FRAME_SKIP)
MAX_EPISODE_STEPS = 50
STATE_DIM = 4  # x, y, vx, vy
# The scripted controller's gains: velocity command = P (goal - x) - D v, clipped to [-1, 1].
P_GAIN, D_GAIN = 4.0, 0.3

_MODEL_XML = """
<mujoco model="pixel_reach">
  <option timestep="{timestep}"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{size}" offheight="{size}"/>
    <headlight ambient="0.6 0.6 0.6" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <geom contype="0" conaffinity="0"/>
  </default>
  <worldbody>
    <geom name="floor" type="plane" size="{floor} {floor} 0.05" rgba="0.8 0.8 0.78 1"/>
    <geom name="wall_n" type="box" pos="0 {wall} 0.05" size="{floor} 0.05 0.05" rgba="0.3 0.3 0.3 1"/>
    <geom name="wall_s" type="box" pos="0 -{wall} 0.05" size="{floor} 0.05 0.05" rgba="0.3 0.3 0.3 1"/>
    <geom name="wall_e" type="box" pos="{wall} 0 0.05" size="0.05 {floor} 0.05" rgba="0.3 0.3 0.3 1"/>
    <geom name="wall_w" type="box" pos="-{wall} 0 0.05" size="0.05 {floor} 0.05" rgba="0.3 0.3 0.3 1"/>
    <camera name="top" pos="0 0 2.0" fovy="{fovy}"/>
    <body name="goal" mocap="true" pos="0 0 0.002">
      <geom name="goal" type="cylinder" size="{goal_radius} 0.002" rgba="0.9 0.1 0.1 1"/>
    </body>
    <body name="ball" pos="0 0 {ball_radius}">
      <joint name="x" type="slide" axis="1 0 0" limited="true" range="-{limit} {limit}"/>
      <joint name="y" type="slide" axis="0 1 0" limited="true" range="-{limit} {limit}"/>
      <geom name="ball" type="sphere" size="{ball_radius}" mass="1" rgba="0.1 0.25 0.95 1"/>
    </body>
  </worldbody>
  <actuator>
    <velocity joint="x" kv="20" ctrllimited="true" ctrlrange="-{speed} {speed}"/>
    <velocity joint="y" kv="20" ctrllimited="true" ctrlrange="-{speed} {speed}"/>
  </actuator>
</mujoco>
"""


def model_xml(image_size: int = IMAGE_SIZE) -> str:
    """The MJCF model; the camera at height 2 sees the square [-1.05, 1.05]^2."""
    half_view = ARENA + 0.05
    return _MODEL_XML.format(
        timestep=PHYSICS_TIMESTEP,
        size=image_size,
        floor=ARENA + 0.05,
        wall=ARENA,
        fovy=float(np.degrees(2 * np.arctan(half_view / 2.0))),
        goal_radius=GOAL_RADIUS,
        ball_radius=BALL_RADIUS,
        limit=BALL_LIMIT,
        speed=MAX_SPEED,
    )


class RenderingUnavailable(RuntimeError):
    """No headless OpenGL context could be made (see the message for MUJOCO_GL)."""


def _unavailable(backend: str, error: BaseException) -> RenderingUnavailable:
    return RenderingUnavailable(
        f"cannot render the pixel task headless with MUJOCO_GL={backend!r} ({type(error).__name__}: {error}); "
        "expected MUJOCO_GL=egl with an EGL driver (e.g. Mesa's libEGL), set before the process starts"
    )


def _import_mujoco():
    """`mujoco`; its import already loads the MUJOCO_GL backend and fails with a bare
    AttributeError for a backend whose library is missing (osmesa here): say which variable."""
    try:
        import mujoco
    except (ImportError, AttributeError, RuntimeError, OSError) as e:
        raise _unavailable(os.environ.get("MUJOCO_GL", ""), e) from e
    return mujoco


def _gl_context_class(backend: str):
    """The mujoco GLContext class of a MUJOCO_GL backend name."""
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    elif backend in ("glfw", "glx", ""):
        from mujoco.glfw import GLContext
    else:
        raise RenderingUnavailable(f"MUJOCO_GL={backend!r}: expected egl (headless), osmesa or glfw")
    return GLContext


class OffscreenCamera:
    """Renders one named camera of a model into uint8 (size, size, 3) frames, headless.

    It makes its own GL context from `MUJOCO_GL` (read when the camera is created), so it does
    not depend on which backend `mujoco.Renderer` picked when mujoco was first imported.
    """

    def __init__(self, model, camera: str, size: int):
        mujoco = _import_mujoco()
        backend = os.environ.get("MUJOCO_GL", "egl").lower().strip()
        try:
            self._context = _gl_context_class(backend)(size, size)
            with self._context.as_current():
                self._mjr = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
                mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
        except RenderingUnavailable:
            raise
        except Exception as e:  # the backends fail with ImportError, RuntimeError, OSError, ...
            raise _unavailable(backend, e) from e
        self._mujoco = mujoco
        self._model = model
        self._scene = mujoco.MjvScene(model, maxgeom=32)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        self._viewport = mujoco.MjrRect(0, 0, size, size)
        self._pixels = np.empty((size, size, 3), np.uint8)

    def render(self, data) -> np.ndarray:
        """The camera's view of `data` (a new array, row 0 at the top of the image)."""
        mujoco = self._mujoco
        mujoco.mjv_updateScene(
            self._model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        # A GL context is current in one thread at a time: take it for this frame and give it
        # back, so the env can be made in one thread and stepped in another (the robot actor's
        # control thread), and several envs share a thread.
        with self._context.as_current():
            mujoco.mjr_render(self._viewport, self._scene, self._mjr)
            mujoco.mjr_readPixels(self._pixels, None, self._viewport, self._mjr)
        return np.flipud(self._pixels).copy()  # OpenGL's rows run bottom-up

    def close(self) -> None:
        if getattr(self, "_context", None) is not None:
            with self._context.as_current():
                self._mjr.free()
            self._context.free()
            self._context = None


class PixelReachEnv(gym.Env):
    """Observation {"camera": uint8 (S, S, 3), "state": float32 (x, y, vx, vy)}; action the
    ball's velocity command in [-1, 1]^2 (m/s); reward 1 and termination within GOAL_RADIUS
    of the goal, which only the camera shows. 20 Hz control (`control_hz`)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}
    max_episode_steps = MAX_EPISODE_STEPS  # read by envs.tasks.entry_point_task
    control_hz = CONTROL_HZ

    def __init__(self, image_size: int = IMAGE_SIZE, render_mode: Optional[str] = None):
        mujoco = _import_mujoco()
        if not isinstance(image_size, (int, np.integer)) or image_size < 16:
            raise ValueError(f"field 'image_size': got {image_size!r}, expected an integer >= 16")
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Dict({
            CAMERA: gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            STATE: gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._mujoco = mujoco
        self.model = mujoco.MjModel.from_xml_string(model_xml(self.image_size))
        self.data = mujoco.MjData(self.model)
        self._camera = OffscreenCamera(self.model, "top", self.image_size)
        self.goal = GOAL_CENTRES[0].copy()
        self.goal_index = 0
        self._frame: Optional[np.ndarray] = None

    # ---- gymnasium API ---------------------------------------------------------------------

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """A new episode; `options` may fix "goal" (x, y) and/or "start" (x, y)."""
        super().reset(seed=seed)
        options = options or {}
        self.goal_index = int(self.np_random.integers(len(GOAL_CENTRES)))
        goal = GOAL_CENTRES[self.goal_index] + self.np_random.uniform(-GOAL_JITTER, GOAL_JITTER, 2)
        start = self.np_random.uniform(-START_RANGE, START_RANGE, 2)
        if "goal" in options:
            goal = _point(options["goal"], "options['goal']")
            self.goal_index = int(np.argmin(np.linalg.norm(GOAL_CENTRES - goal, axis=1)))
        if "start" in options:
            start = _point(options["start"], "options['start']")
        self.goal = np.asarray(goal, np.float32)
        mujoco = self._mujoco
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = np.clip(start, -BALL_LIMIT, BALL_LIMIT)
        self.data.mocap_pos[0, :2] = self.goal
        mujoco.mj_forward(self.model, self.data)
        # The goal stays out of info too (a recorder may keep infos): `self.goal` is the sim's.
        return self._observation(), {"success": False}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64).reshape(2), -1.0, 1.0)
        self.data.ctrl[:] = MAX_SPEED * action
        self._mujoco.mj_step(self.model, self.data, nstep=FRAME_SKIP)
        observation = self._observation()
        success = bool(np.linalg.norm(self.position - self.goal) < GOAL_RADIUS)
        return observation, float(success), success, False, {"success": success}

    def render(self) -> Optional[np.ndarray]:
        """The latest camera frame (`render_mode="rgb_array"`)."""
        if self.render_mode != "rgb_array":
            return None
        return None if self._frame is None else self._frame.copy()

    def close(self) -> None:
        if getattr(self, "_camera", None) is not None:
            self._camera.close()
            self._camera = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the GL library may be gone already
            pass

    # ---- helpers ---------------------------------------------------------------------------

    @property
    def position(self) -> np.ndarray:
        return self.data.qpos[:2].astype(np.float32)

    def _observation(self) -> dict:
        if self._camera is None:
            raise RuntimeError("PixelReachEnv: stepped after close()")
        self._frame = self._camera.render(self.data)
        state = np.concatenate([self.data.qpos[:2], self.data.qvel[:2]]).astype(np.float32)
        return {CAMERA: self._frame, STATE: state}


def _point(value, where: str) -> np.ndarray:
    point = np.asarray(value, np.float32)
    if point.shape != (2,) or not np.all(np.abs(point) <= ARENA):
        raise ValueError(f"{where}: got {value!r}, expected (x, y) within [-{ARENA}, {ARENA}]")
    return point


def scripted_action(state: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The scripted controller (it is told the target; the learner is not): a PD velocity
    command towards `target`, clip(P (target - xy) - D v, -1, 1)."""
    state = np.asarray(state, np.float32)
    return np.clip(P_GAIN * (np.asarray(target, np.float32) - state[:2]) - D_GAIN * state[2:4], -1.0, 1.0).astype(np.float32)
