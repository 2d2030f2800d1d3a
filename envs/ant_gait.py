"""Direction-following locomotion for the gymnasium ant, with no learned network.

D4RL steered a trained goal-reaching ant policy along maze waypoints to make its antmaze data.
We have no trained policy, so this module walks the ant with tuned gaits instead:

- A gait is a central pattern generator: every joint follows a sinusoidal target
  `offset + amplitude * sin(2 pi phase + phase_shift)`, one shared frequency, tracked by a PD
  law on the joint angle: `action = clip(kp (target - q) - kd qdot, -1, 1)`.
- A gait walks in one body-frame direction. The ant is 4-fold rotationally symmetric, so a
  gait's leg patterns handed on to the next leg counter-clockwise walk it 90 degrees further:
  one axis gait (0 deg, between legs 1 and 4) and one diagonal gait (45 deg, along leg 1) give
  8 directions, 45 degrees apart.
- `GaitController` closes the loop: every step it turns the wanted world direction into the
  torso's frame (yaw from the torso quaternion) and walks the nearest of the 8 directions, so
  the ant's own slow turning does not matter. A change of gait keeps the phase running and
  cross-fades the joint targets over 10 steps (without it, 8 of 24 walks with a new direction
  every 2 s flipped the ant, with it none; at action noise 0.3, 13 and 2).

The joint/actuator layout is read from the model (`AntJoints.from_model`): the actuators are
not in qpos order (hip_4 comes first), and ankles 2 and 3 bend with negative angles.

Tuning (`python -m envs.ant_gait tune --seed 0`, progress bars): per gait, first the best of
`trot_grid` (288 trots built from the leg geometry), then a numpy cross-entropy search (CEM,
50 generations x 40 candidates) over all 27 parameters, in the bare ant model (`AntSim`: the
ant xml AntMaze loads, flat floor, same physics and 0.05 s step). The objective
(`gait_score`) is speed along the gait's heading minus sideways drift, yaw, tilt and falls,
over 3 walks of 10 s from jittered starts at random phases with action noise 0, 0.15 and 0.3.
It took 621 s for both gaits on one core and printed the `GAITS` table below (run twice: the
same table). `python -m envs.ant_gait measure` walks the table closed loop in 8 directions:
1.33-2.17 m/s (axis directions 1.3-1.6, diagonals 1.8-2.2), 0.96-1.40 m/s with action noise
0.2, no falls in 4 x 8 walks of 10 s each.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from typing import Optional, Sequence

import numpy as np

FRAME_SKIP = 5  # gymnasium AntEnv's default, kept by AntMaze-v4: one env step = 5 x 0.01 s
STEP_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class Gait:
    """One tuned gait. Legs are listed counter-clockwise from the torso's +x axis (hip_1 at 45
    deg, hip_2 at 135, hip_3 at 225, hip_4 at 315). Each leg has (offset, amplitude, phase
    shift) for its hip angle and for its ankle's *lowering* angle (`AntJoints.ankle_sign` times
    the joint angle: larger = foot further down, 0.52..1.22 rad on every leg)."""

    heading_deg: float  # the body-frame direction it walks: 0 = torso +x, 90 = torso +y
    frequency: float  # Hz
    kp: float  # action per rad of tracking error
    kd: float  # action per rad/s of joint velocity
    hip: tuple  # 4 x (offset, amplitude, phase shift)
    ankle: tuple  # 4 x (offset, amplitude, phase shift)

    def targets(self, phase: float, quarter_turns: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Hip and ankle-lowering targets (one per leg) at `phase` (cycles), for the gait turned
        `quarter_turns` x 90 deg counter-clockwise: leg k plays leg (k - quarter_turns)'s part."""
        angle = 2 * np.pi * phase
        order = (np.arange(4) - quarter_turns) % 4
        hip, ankle = np.asarray(self.hip)[order], np.asarray(self.ankle)[order]
        return (hip[:, 0] + hip[:, 1] * np.sin(angle + hip[:, 2]),
                ankle[:, 0] + ankle[:, 1] * np.sin(angle + ankle[:, 2]))


# Tuned by `python -m envs.ant_gait tune --seed 0` (see the module docstring). Legs 1-4 (hips at
# 45, 135, 225, 315 deg); per leg (offset rad, amplitude rad, phase shift rad).
GAITS: tuple[Gait, ...] = (
    Gait(
        heading_deg=0, frequency=2.0285, kp=2.0558, kd=0.2182,
        hip=((0.1069, 0.4366, 2.8436), (0.0744, 0.4379, 0.1329), (-0.0684, 0.3622, -0.6745), (0.0281, 0.4009, -2.9328)),
        ankle=((0.9485, 0.2961, -2.5836), (1.0581, 0.2307, 0.5048), (1.1541, 0.2854, -2.8156), (1.0675, 0.2824, 0.0025)),
    ),
    Gait(
        heading_deg=45, frequency=2.1062, kp=3.032, kd=0.1897,
        hip=((0.0768, 0.046, 3.0427), (0.0014, 0.5497, 0.6806), (-0.0994, 0.0419, 2.3816), (0.0328, 0.5135, -2.5444)),
        ankle=((0.637, 0.1494, -1.6569), (0.6408, 0.1384, 1.2037), (0.6469, 0.1449, -0.7751), (0.5474, 0.1901, 1.0891)),
    ),
)


@dataclasses.dataclass(frozen=True)
class AntJoints:
    """Where each leg's hip and ankle sit in qpos, qvel and the action vector (legs ordered
    counter-clockwise from the torso's +x axis), read from a mujoco model holding the ant."""

    hip_qpos: np.ndarray
    ankle_qpos: np.ndarray
    hip_qvel: np.ndarray
    ankle_qvel: np.ndarray
    hip_action: np.ndarray
    ankle_action: np.ndarray
    ankle_sign: np.ndarray  # +1 where the ankle's range is positive (legs 1, 4), -1 (legs 2, 3)

    @classmethod
    def from_model(cls, model) -> "AntJoints":
        """The layout in `model` (joints found by their names hip_k / ankle_k, legs sorted by the
        angle of the hip around the torso, actuators by the joint they drive)."""
        import mujoco

        actuator_of = {int(model.actuator_trnid[i, 0]): i for i in range(model.nu)}
        legs = []
        for k in range(1, 5):
            hip = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"hip_{k}")
            ankle = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"ankle_{k}")
            if hip < 0 or ankle < 0:
                raise ValueError(f"model has no joint 'hip_{k}' / 'ankle_{k}', expected the gymnasium ant")
            # The hip's position in the torso frame: its body's offsets up to the torso.
            body, position = int(model.jnt_bodyid[hip]), np.zeros(3)
            while model.body(body).name != "torso":
                position += model.body_pos[body]
                body = int(model.body_parentid[body])
            low, high = model.jnt_range[ankle]
            legs.append((math.atan2(position[1], position[0]) % (2 * np.pi), hip, ankle, np.sign(low + high)))
        legs.sort()
        column = lambda index: np.array([leg[index] for leg in legs])  # noqa: E731
        hips, ankles = column(1), column(2)
        return cls(
            hip_qpos=model.jnt_qposadr[hips], ankle_qpos=model.jnt_qposadr[ankles],
            hip_qvel=model.jnt_dofadr[hips], ankle_qvel=model.jnt_dofadr[ankles],
            hip_action=np.array([actuator_of[j] for j in hips]),
            ankle_action=np.array([actuator_of[j] for j in ankles]),
            ankle_sign=column(3),
        )


def torso_yaw(quaternion: np.ndarray) -> float:
    """Heading of the torso's +x axis in the world (rad), from its (w, x, y, z) quaternion."""
    w, x, y, z = quaternion
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def torso_uprightness(quaternion: np.ndarray) -> float:
    """World z component of the torso's z axis: 1 upright, 0 on its side, -1 on its back."""
    _, x, y, _ = quaternion
    return 1 - 2 * (x * x + y * y)


class GaitController:
    """Walks the ant in a wanted world direction with the nearest of the gaits' 8 directions.

    Stateful (the CPG phase and the gait in use): call `reset()` at every episode start.
    `switch_margin_deg`: a new direction is taken only when it is this much closer to the
    wanted one, so the ant does not flicker between two gaits on a boundary. A change of gait
    cross-fades the joint targets and gains over `blend_steps` steps: jumping straight to the
    new targets jerks the legs, and the light ant flips.
    """

    def __init__(self, joints: AntJoints, gaits: Sequence[Gait] = GAITS, switch_margin_deg: float = 10.0,
                 blend_steps: int = 10):
        if not gaits:
            raise ValueError("field 'gaits': got none, expected at least one Gait (envs.ant_gait.GAITS)")
        self.joints = joints
        self.options = [(gait, turns, math.radians(gait.heading_deg + 90 * turns))
                        for gait in gaits for turns in range(4)]
        self.switch_margin = math.radians(switch_margin_deg)
        self.blend_steps = blend_steps
        self.reset()

    def reset(self, phase: float = 0.0) -> None:
        self.phase, self.current, self.previous, self.blend_left = phase, None, None, 0

    def action(self, qpos: np.ndarray, qvel: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """The action (in the model's actuator order) that walks towards world `direction`."""
        wanted = math.atan2(direction[1], direction[0]) - torso_yaw(qpos[3:7])
        errors = [abs(math.remainder(wanted - heading, 2 * np.pi)) for _, _, heading in self.options]
        best = int(np.argmin(errors))
        if self.current is None:
            self.current = best
        elif errors[best] < errors[self.current] - self.switch_margin:
            self.previous, self.current, self.blend_left = self.current, best, self.blend_steps
        gait, turns, _ = self.options[self.current]
        if self.blend_left > 0:
            self.blend_left -= 1
            old, old_turns, _ = self.options[self.previous]
            old_weight = (self.blend_left + 1) / (self.blend_steps + 1)
            return self.gait_action(gait, turns, qpos, qvel, (old, old_turns, old_weight))
        return self.gait_action(gait, turns, qpos, qvel)

    def gait_action(self, gait: Gait, turns: int, qpos: np.ndarray, qvel: np.ndarray, blend=None) -> np.ndarray:
        """One step of `gait` turned by `turns` quarter turns, mixed with `blend` = (old gait, its
        turns, its weight) if given; advances the phase."""
        j = self.joints
        hip_target, ankle_target = gait.targets(self.phase, turns)
        kp, kd, frequency = gait.kp, gait.kd, gait.frequency
        if blend is not None:
            old, old_turns, w = blend
            old_hip, old_ankle = old.targets(self.phase, old_turns)
            hip_target, ankle_target = (1 - w) * hip_target + w * old_hip, (1 - w) * ankle_target + w * old_ankle
            kp, kd, frequency = ((1 - w) * new + w * prior for new, prior in
                                 ((kp, old.kp), (kd, old.kd), (frequency, old.frequency)))
        self.phase = (self.phase + frequency * STEP_SECONDS) % 1.0
        action = np.zeros(len(j.hip_action) + len(j.ankle_action))
        action[j.hip_action] = kp * (hip_target - qpos[j.hip_qpos]) - kd * qvel[j.hip_qvel]
        action[j.ankle_action] = kp * (j.ankle_sign * ankle_target - qpos[j.ankle_qpos]) - kd * qvel[j.ankle_qvel]
        return np.clip(action, -1.0, 1.0)


# --- simulation, measurement and tuning in the bare ant model ------------------------------
def ant_xml_path() -> str:
    """The ant model AntMaze-v4 builds its maze around (gymnasium's mujoco/assets/ant.xml)."""
    import gymnasium.envs.mujoco

    return os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", "ant.xml")


class AntSim:
    """The gymnasium ant alone on a flat floor: AntMaze's ant physics without the walls."""

    def __init__(self):
        import mujoco

        self._mujoco = mujoco
        self.model = mujoco.MjModel.from_xml_path(ant_xml_path())
        self.data = mujoco.MjData(self.model)
        self.joints = AntJoints.from_model(self.model)

    def reset(self, rng: Optional[np.random.Generator] = None, noise: float = 0.1) -> None:
        """The env's start pose (torso 0.75 m up, joints at 0), joints and velocities jittered."""
        self._mujoco.mj_resetData(self.model, self.data)
        if rng is not None:
            self.data.qpos[7:] += rng.uniform(-noise, noise, self.model.nq - 7)
            self.data.qvel[:] += noise * rng.normal(size=self.model.nv)
        self._mujoco.mj_forward(self.model, self.data)

    def step(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action
        self._mujoco.mj_step(self.model, self.data, nstep=FRAME_SKIP)


def walk(sim: AntSim, controller: GaitController, direction_deg: float, steps: int,
         rng: Optional[np.random.Generator] = None, action_noise: float = 0.0, fixed=None) -> dict:
    """Walks the ant from a (jittered) start towards world `direction_deg` for `steps` steps.

    `fixed=(gait, turns)` plays that gait open loop instead of the controller's choice.
    Returns progress along the direction and sideways (m), speed (m/s), yaw change (rad), the
    lowest and the mean of (1 - uprightness) and the step it fell over at (uprightness < 0.3),
    if it did (the walk stops there).
    """
    sim.reset(rng)
    controller.reset(rng.uniform() if rng is not None else 0.0)
    direction = np.array([math.cos(math.radians(direction_deg)), math.sin(math.radians(direction_deg))])
    start, yaw0, lowest, fell_at = sim.data.qpos[:2].copy(), torso_yaw(sim.data.qpos[3:7]), 1.0, None
    tilt = 0.0
    for step in range(steps):
        qpos, qvel = sim.data.qpos, sim.data.qvel
        if fixed is None:
            action = controller.action(qpos, qvel, direction)
        else:
            action = controller.gait_action(*fixed, qpos, qvel)
        if action_noise:
            action = np.clip(action + action_noise * rng.normal(size=action.shape), -1.0, 1.0)
        sim.step(action)
        upright = torso_uprightness(sim.data.qpos[3:7])
        lowest, tilt = min(lowest, upright), tilt + 1 - upright
        if lowest < 0.3:
            fell_at = step
            break
    moved = sim.data.qpos[:2] - start
    progress = float(moved @ direction)
    return {
        "progress": progress,
        "sideways": float(abs(moved[0] * direction[1] - moved[1] * direction[0])),
        "speed": progress / ((step + 1) * STEP_SECONDS),
        "yaw_change": abs(math.remainder(torso_yaw(sim.data.qpos[3:7]) - yaw0, 2 * np.pi)),
        "lowest_uprightness": lowest,
        "mean_tilt": tilt / (step + 1),
        "fell_at": fell_at,
    }


# Search box of one gait: frequency, kp, kd, then per leg hip (offset, amplitude, phase) and
# ankle-lowering (offset, amplitude, phase). Ankle offsets span the joint range (0.52..1.22).
_BOUNDS = np.array(
    [(0.5, 3.0), (1.0, 20.0), (0.0, 1.0)]
    + [(-0.5, 0.5), (0.0, 0.6), (-np.pi, np.pi), (0.5, 1.25), (0.0, 0.45), (-np.pi, np.pi)] * 4
)
_PHASES = np.array([False] * 3 + [False, False, True] * 8)  # phase shifts wrap around, others clip


def gait_from_unit(x: np.ndarray, heading_deg: float) -> Gait:
    """The gait at point `x` of the unit cube spanned by `_BOUNDS` (phase coordinates wrap)."""
    x = np.where(_PHASES, np.mod(x, 1.0), np.clip(x, 0.0, 1.0))
    v = _BOUNDS[:, 0] + x * (_BOUNDS[:, 1] - _BOUNDS[:, 0])
    legs = v[3:].reshape(4, 6).round(4)
    return Gait(heading_deg, round(float(v[0]), 4), round(float(v[1]), 4), round(float(v[2]), 4),
                tuple(tuple(map(float, leg[:3])) for leg in legs), tuple(tuple(map(float, leg[3:])) for leg in legs))


def gait_to_unit(gait: Gait) -> np.ndarray:
    """`gait`'s point in the unit cube of `_BOUNDS` (the inverse of `gait_from_unit`)."""
    legs = np.concatenate([np.asarray(gait.hip), np.asarray(gait.ankle)], axis=1).ravel()
    v = np.concatenate([[gait.frequency, gait.kp, gait.kd], legs])
    v = np.where(_PHASES, np.mod(v + np.pi, 2 * np.pi) - np.pi, v)
    return (v - _BOUNDS[:, 0]) / (_BOUNDS[:, 1] - _BOUNDS[:, 0])


def trot(heading_deg: float, frequency: float = 2.0, kp: float = 5.0, kd: float = 0.3, hip_amplitude: float = 0.4,
         ankle_offset: float = 0.9, ankle_amplitude: float = 0.25, ankle_phase: float = 0.0) -> Gait:
    """A trot from the leg geometry, the family the tuning starts from.

    Diagonal legs (1, 3) and (2, 4) move together, the pairs half a cycle apart. Turning hip k
    moves its foot along the tangent t_k (perpendicular to the leg), so each hip swings
    `hip_amplitude * |t_k . heading|` as `sin(psi)`, signed so that every foot sweeps along the
    heading in the same half cycle; the ankle lowers as `sin(psi + ankle_phase)`. Which
    `ankle_phase` puts the feet down in the pushing half depends on the dynamics: the tuning
    tries four.
    """
    heading = np.array([math.cos(math.radians(heading_deg)), math.sin(math.radians(heading_deg))])
    wrap = lambda angle: round(math.remainder(angle, 2 * np.pi), 4)  # noqa: E731
    hip, ankle = [], []
    for k in range(4):
        leg_angle = math.radians(45 + 90 * k)
        share = float(np.array([-math.sin(leg_angle), math.cos(leg_angle)]) @ heading)
        pair = math.pi * (k % 2)
        hip.append((0.0, round(hip_amplitude * abs(share), 4), wrap(pair + (math.pi if share < 0 else 0.0))))
        ankle.append((ankle_offset, ankle_amplitude, wrap(pair + ankle_phase)))
    return Gait(heading_deg, frequency, kp, kd, tuple(hip), tuple(ankle))


def trot_grid(heading_deg: float) -> list[Gait]:
    """The coarse grid of trots the search starts from (288 gaits)."""
    return [
        trot(heading_deg, frequency, kp, 0.3, hip, offset, amplitude, quarter * np.pi / 2)
        for frequency in (1.5, 2.0, 3.0) for kp in (3.0, 6.0, 10.0) for hip in (0.3, 0.6)
        for offset in (0.7, 1.0) for amplitude in (0.15, 0.3) for quarter in range(4)
    ]


def gait_score(sim: AntSim, gait: Gait, rng: np.random.Generator, rollouts: int = 3, steps: int = 200,
               max_noise: float = 0.3) -> float:
    """The tuning objective (m/s, higher is better), the mean over `rollouts` walks from
    jittered starts at random phases, with Gaussian action noise of 0 .. `max_noise` (beyond the
    data generator's range): speed along the gait's heading, minus half the sideways drift and the
    yaw change (as m/s and rad/s), minus 2 x the mean tilt (1 - uprightness: rocking leads to
    flips) and minus 3 for falling over (a fallen ant stays down for the rest of an episode)."""
    controller = GaitController(sim.joints, (gait,))
    scores = []
    for i in range(rollouts):
        noise = max_noise * i / max(1, rollouts - 1)
        result = walk(sim, controller, gait.heading_deg, steps, rng, noise, fixed=(gait, 0))
        seconds = steps * STEP_SECONDS
        scores.append(result["speed"] - 0.5 * (result["sideways"] + result["yaw_change"]) / seconds
                      - 2.0 * result["mean_tilt"] - 3.0 * (result["fell_at"] is not None))
    return float(np.mean(scores))


def tune_gait(heading_deg: float, seed: int, generations: int = 50, population: int = 40,
              init_std: float = 0.1, progress: bool = True) -> tuple[Gait, float]:
    """Search for the gait walking towards body-frame `heading_deg`: the best of `trot_grid`,
    refined by a cross-entropy search (CEM) over all 27 parameters.

    Each CEM generation samples `population` points around the mean (Gaussian in the unit cube
    of `_BOUNDS`), scores them on the same random starts (common random numbers: the ranking
    compares gaits, not luck) and refits mean and std to the best quarter. Returns the better of
    the grid's best and the final mean, by `gait_score` on 8 fresh starts, and that score.
    """
    from tqdm import tqdm

    rng = np.random.default_rng([seed, int(heading_deg)])
    sim = AntSim()
    starts = int(rng.integers(2**31))
    grid = trot_grid(heading_deg)
    scores = [gait_score(sim, g, np.random.default_rng(starts))
              for g in tqdm(grid, desc=f"trots {heading_deg:g} deg", unit="gait", disable=not progress)]
    start = grid[int(np.argmax(scores))]
    mean, std = gait_to_unit(start), np.full(len(_BOUNDS), init_std)
    elite_count = population // 4
    bar = tqdm(range(generations), desc=f"CEM {heading_deg:g} deg", unit="gen", disable=not progress)
    for generation in bar:
        candidates = mean + std * rng.normal(size=(population, len(mean)))
        candidates = np.where(_PHASES, candidates, np.clip(candidates, 0.0, 1.0))
        starts = int(rng.integers(2**31))
        scores = np.array([gait_score(sim, gait_from_unit(c, heading_deg), np.random.default_rng(starts))
                           for c in candidates])
        elite = candidates[np.argsort(scores)[-elite_count:]]
        # A floor on the std that shrinks over the run: keeps exploring early, settles late.
        floor = 0.03 * (1 - generation / generations) + 0.005
        mean, std = elite.mean(axis=0), np.maximum(elite.std(axis=0), floor)
        bar.set_postfix(best=f"{scores.max():.2f}", elite=f"{np.sort(scores)[-elite_count:].mean():.2f}")
    finals = [(gait_score(sim, g, np.random.default_rng(seed + 1), rollouts=8), i, g)
              for i, g in enumerate((start, gait_from_unit(mean, heading_deg)))]
    score, _, gait = max(finals)
    return gait, score


def measure(gaits: Sequence[Gait] = GAITS, steps: int = 200, episodes: int = 4, seed: int = 0,
            action_noise: float = 0.0) -> dict[int, dict]:
    """Closed-loop walks in the 8 world directions: mean speed (m/s), sideways drift (m) and
    falls per direction, from jittered starts."""
    sim = AntSim()
    controller = GaitController(sim.joints, gaits)
    rng = np.random.default_rng(seed)
    table = {}
    for direction in range(0, 360, 45):
        walks = [walk(sim, controller, direction, steps, rng, action_noise) for _ in range(episodes)]
        table[direction] = {
            "speed": float(np.mean([w["speed"] for w in walks])),
            "sideways": float(np.mean([w["sideways"] for w in walks])),
            "falls": sum(w["fell_at"] is not None for w in walks),
        }
    return table


def gait_source(gait: Gait) -> str:
    """`gait` as an entry of the `GAITS` table in this file."""
    legs = lambda rows: ", ".join("(" + ", ".join(f"{v:g}" for v in row) + ")" for row in rows)  # noqa: E731
    return (f"    Gait(\n        heading_deg={gait.heading_deg:g}, frequency={gait.frequency:g}, kp={gait.kp:g}, "
            f"kd={gait.kd:g},\n        hip=({legs(gait.hip)}),\n        ankle=({legs(gait.ankle)}),\n    ),\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envs.ant_gait", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tune = commands.add_parser("tune", help="re-derive the GAITS table (prints it as Python)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--generations", type=int, default=50)
    tune.add_argument("--population", type=int, default=40)
    check = commands.add_parser("measure", help="closed-loop speed of the GAITS table in 8 directions")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--action-noise", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.command == "tune":
        began, gaits = time.time(), []
        for heading in (0.0, 45.0):
            gait, score = tune_gait(heading, args.seed, args.generations, args.population)
            print(f"heading {heading:g} deg: score {score:.3f} m/s", flush=True)
            gaits.append(gait)
        print(f"tuned in {time.time() - began:.0f} s")
        print("GAITS: tuple[Gait, ...] = (\n" + "".join(map(gait_source, gaits)) + ")")
    else:
        gaits = GAITS
    for direction, row in measure(gaits, seed=args.seed, action_noise=getattr(args, "action_noise", 0.0)).items():
        print(f"direction {direction:3d} deg: {row['speed']:.2f} m/s, sideways {row['sideways']:.2f} m, "
              f"falls {row['falls']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
