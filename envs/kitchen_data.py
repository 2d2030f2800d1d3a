"""D4RL-style kitchen datasets made locally: the scripted Franka (envs/kitchen_script.py) doing
queues of subtasks in the task's own FrankaKitchen-v1 env.

D4RL's three kitchen datasets are human VR demonstrations; here each episode is one queue of
subtask scripts, with Gaussian action noise whose scale each episode draws from `noise_range`:

- `complete`: the task's four subtasks in the task's order (D4RL's kitchen-complete: the
  target task demonstrated in order).
- `partial`: play data in which the target subtasks appear among the others. A third of the
  episodes are the target task in its order (they can solve it); the rest are four subtasks
  drawn from all seven (at most three of them targets), in random order.
- `mixed`: subtasks of the target set but never the whole target task in one episode: three of
  the four targets and one other subtask, in random order.

(In every kind the slide cabinet comes before the hinge cabinet: the open hinge door covers
the slide's handle.)

Rewards, terminals and time limits are the task's: reward = number of the task's four
subtasks in their goal configuration at the step (0..4, `envs.d4rl_envs.KitchenSubtaskReward`);
completing all four ends the episode as a terminal; an episode also ends (not a terminal) when
its queue is done or at the task's time limit (280 steps), whichever comes first.

The card records the generator, the kind, the seed, the noise range and, per episode, the
queue, the subtasks whose scripts started (the time limit can cut a queue short), the subtasks
completed (any of the seven, in the order they were first completed) and the number of target
subtasks completed; plus per subtask how many episodes queued it, started its script, ran the
script to its end, and completed it after starting it (`subtask_success`).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
from tqdm import tqdm

from envs.datasets import OfflineDataset

KINDS = ("complete", "partial", "mixed")

# The target subtasks of each kitchen task. complete/partial: D4RL's
# KitchenMicrowaveKettleLightSliderV0; mixed: its KitchenMicrowaveKettleBottomBurnerLightV0
# (d4rl/kitchen/kitchen_envs.py).
KITCHEN_SUBTASKS = {
    "complete": ("microwave", "kettle", "light switch", "slide cabinet"),
    "partial": ("microwave", "kettle", "light switch", "slide cabinet"),
    "mixed": ("microwave", "kettle", "bottom burner", "light switch"),
}
KITCHEN_OBSERVATION_KEYS = ("observation",)


def make_kitchen_task_env(kind: str):
    """The raw env of task kitchen-`kind` (what its `Task.make_raw_env` makes)."""
    from envs.d4rl_envs import make_kitchen_env

    return make_kitchen_env(KITCHEN_SUBTASKS[kind], KITCHEN_OBSERVATION_KEYS)
GENERATOR = "kitchen-scripted-franka"
NOISE_RANGE = (0.0, 0.1)  # per-episode Gaussian action-noise scale (actions in [-1, 1])
# FrankaKitchen's flat observation: robot qpos (9), robot qvel (9), object qpos (21), object
# qvel (20). The env's subtask indices count in the full qpos (robot 9 + objects 21).
ROBOT_DOFS = 9


def kitchen_kind_of(task) -> str:
    """complete / partial / mixed from the task name kitchen-<kind>."""
    kind = task.name.rsplit("-", 1)[-1]
    if task.family != "kitchen" or kind not in KINDS:
        raise ValueError(
            f"field 'task': the kitchen generator runs kitchen-{{{','.join(KINDS)}}}, got {task.name!r} "
            f"of family {task.family!r}"
        )
    return kind


def episode_queue(kind: str, targets: tuple, rng: np.random.Generator) -> list[str]:
    """The subtasks one episode of `kind` demonstrates, in order (see the module docstring).
    The slide cabinet never comes after the hinge cabinet: the open hinge door covers the
    slide's handle (`envs.kitchen_script.needs_home`), so the two swap places."""
    queue = _draw_queue(kind, targets, rng)
    if "hinge cabinet" in queue and "slide cabinet" in queue:
        hinge, slide = queue.index("hinge cabinet"), queue.index("slide cabinet")
        if hinge < slide:
            queue[hinge], queue[slide] = queue[slide], queue[hinge]
    return queue


def _draw_queue(kind: str, targets: tuple, rng: np.random.Generator) -> list[str]:
    from envs.kitchen_script import SUBTASKS

    others = [name for name in SUBTASKS if name not in targets]
    if kind == "complete":
        return list(targets)
    if kind == "mixed":
        chosen = [targets[i] for i in sorted(rng.choice(len(targets), 3, replace=False))]
        chosen.append(others[rng.integers(len(others))])
        return [chosen[i] for i in rng.permutation(len(chosen))]
    if kind == "partial":
        if rng.random() < 1 / 3:
            return list(targets)
        while True:
            chosen = [SUBTASKS[i] for i in rng.choice(len(SUBTASKS), 4, replace=False)]
            if sum(name in targets for name in chosen) < len(targets):
                return chosen
    raise ValueError(f"field 'kind': got {kind!r}, expected one of {KINDS}")


def subtasks_done(qpos: np.ndarray) -> list[str]:
    """The subtasks (of all seven) in their goal configuration for this full qpos (30)."""
    from envs.mujoco_compat import import_gymnasium_robotics

    import_gymnasium_robotics()  # quietly, before its submodule
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

    from envs.d4rl_envs import KITCHEN_SUBTASK_THRESHOLD

    return [
        name
        for name, goal in OBS_ELEMENT_GOALS.items()
        if np.linalg.norm(qpos[OBS_ELEMENT_INDICES[name]] - goal) < KITCHEN_SUBTASK_THRESHOLD
    ]


def subtasks_completed_per_episode(dataset: OfflineDataset, subtasks: Optional[tuple] = None) -> list[list[str]]:
    """For each episode of a kitchen dataset (59-dim FrankaKitchen observations), the subtasks
    that were in their goal configuration at some step, in the order first reached; only
    those in `subtasks` when given. Read from the observations' object positions (which carry
    the env's small observation noise)."""
    if dataset.observations.shape[1] != 59:
        raise ValueError(
            f"dataset: observations have dim {dataset.observations.shape[1]}, expected 59 (FrankaKitchen-v1's 'observation')"
        )
    from envs.mujoco_compat import import_gymnasium_robotics

    import_gymnasium_robotics()  # quietly, before its submodule
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS, OBS_ELEMENT_INDICES

    from envs.d4rl_envs import KITCHEN_SUBTASK_THRESHOLD

    ends = np.flatnonzero(dataset.episode_ends)
    starts = np.concatenate([[0], ends[:-1] + 1])
    names = [name for name in OBS_ELEMENT_GOALS if subtasks is None or name in subtasks]
    # Per subtask and row: in its goal configuration after the row's step (next observation)
    # or before it (observation: the episode's first state counts too). Object qpos index i of
    # the env's qpos is observation column i + ROBOT_DOFS (the robot's qvel sits between).
    done = {}
    for name in names:
        columns = OBS_ELEMENT_INDICES[name] + ROBOT_DOFS
        goal = OBS_ELEMENT_GOALS[name]
        near = lambda rows: np.linalg.norm(rows[:, columns] - goal, axis=1) < KITCHEN_SUBTASK_THRESHOLD  # noqa: E731
        done[name] = near(dataset.observations) | near(dataset.next_observations)
    result = []
    for start, end in zip(starts, ends):
        first = {name: np.flatnonzero(done[name][start : end + 1]) for name in names}
        result.append(sorted((name for name in names if len(first[name])), key=lambda name: first[name][0]))
    return result


def generate_kitchen_dataset(
    task,
    num_episodes: int,
    seed: int,
    kind: Optional[str] = None,
    noise_range: Optional[tuple[float, float]] = None,
    progress: bool = False,
) -> tuple[OfflineDataset, dict]:
    """`num_episodes` scripted episodes of `kind` (default: from the task name) in the kitchen
    `task`'s env. Returns the dataset (the task's raw rewards, 0..4) and the card facts.
    Deterministic under `seed`."""
    from envs.kitchen_script import SUBTASKS, SubtaskRunner

    kind = kind or kitchen_kind_of(task)
    if kind not in KINDS:
        raise ValueError(f"field 'kind': got {kind!r}, expected one of {KINDS}")
    if task.family != "kitchen":
        kitchen_kind_of(task)  # raises the family error
    if num_episodes < 1:
        raise ValueError(f"field 'num_episodes': got {num_episodes}, expected >= 1")
    noise_range = tuple(NOISE_RANGE if noise_range is None else noise_range)
    if not 0 <= noise_range[0] <= noise_range[1]:
        raise ValueError(f"field 'noise_range': got {noise_range}, expected (low, high) with 0 <= low <= high")
    targets = KITCHEN_SUBTASKS[task.name.rsplit("-", 1)[-1]]
    rng = np.random.default_rng(seed)
    env = task.make_raw_env()
    data = env.unwrapped.data
    columns = {name: [] for name in ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")}
    episodes = []
    counts = {name: {"queued": 0, "started": 0, "script_finished": 0, "successes": 0} for name in SUBTASKS}
    start_time = time.perf_counter()
    for _ in tqdm(range(num_episodes), desc=f"{task.name} data", unit="ep", disable=not progress):
        queue = episode_queue(kind, targets, rng)
        observation, _ = env.reset(seed=int(rng.integers(2**31)))
        noise = float(rng.uniform(*noise_range))
        runner = SubtaskRunner(env, queue)
        completed: list[str] = []
        length = 0
        for step in range(task.max_episode_steps):
            action = runner.action()
            if runner.current is None:
                break  # the queue is done: the episode ends here (not a terminal)
            action = np.clip(action + noise * rng.normal(size=action.shape), -1.0, 1.0).astype(np.float32)
            next_observation, reward, terminated, _, _ = env.step(action)
            for name in subtasks_done(data.qpos):
                if name not in completed:
                    completed.append(name)
            columns["observations"].append(observation)
            columns["actions"].append(action)
            columns["rewards"].append(reward)
            columns["next_observations"].append(next_observation)
            columns["terminals"].append(float(terminated))
            columns["episode_ends"].append(False)
            observation = next_observation
            length += 1
            if terminated:
                break
        if length == 0:
            continue  # cannot happen with a non-empty queue; kept for safety of the flags below
        columns["episode_ends"][-1] = True
        for name in queue:
            counts[name]["queued"] += 1
            counts[name]["started"] += name in runner.started
            counts[name]["script_finished"] += name in runner.finished
            counts[name]["successes"] += name in runner.started and name in completed
        episodes.append({
            "subtasks": queue,
            "started": list(runner.started),
            "completed": completed,
            "target_subtasks_completed": sum(name in completed for name in targets),
            "length": length,
            "action_noise": round(noise, 4),
        })
    seconds = time.perf_counter() - start_time
    env.close()
    dataset = OfflineDataset.from_columns(columns)
    per_episode = np.array([e["target_subtasks_completed"] for e in episodes])
    card = {
        "task": task.name,
        "generator": GENERATOR,
        "kind": kind,
        "seed": seed,
        "target_subtasks": list(targets),
        "action_noise_range": list(noise_range),
        "max_episode_steps": task.max_episode_steps,
        "target_subtasks_completed_mean": float(per_episode.mean()),
        "target_subtasks_completed_histogram": [int(np.sum(per_episode == k)) for k in range(len(targets) + 1)],
        "subtask_success": {name: count for name, count in counts.items() if count["queued"]},
        "episodes": episodes,
        "generation_seconds": round(seconds, 2),
        "env_steps_per_second": round(len(dataset) / seconds, 1),
    }
    return dataset, card


# --- measurement and picture (python -m envs.kitchen_data ...) ------------------------------
def measure_subtasks(tries: int, seed: int, noise_range=NOISE_RANGE, max_steps: int = 150, progress: bool = True) -> dict:
    """Success of each subtask script alone from the env's start state: `tries` episodes per
    subtask, each with its own env seed and an action-noise scale drawn from `noise_range`.
    Returns per subtask: successes, tries, mean steps to success, and the env steps/s."""
    from envs.kitchen_script import SUBTASKS, SubtaskRunner
    rng = np.random.default_rng(seed)
    env = make_kitchen_task_env("mixed")
    data = env.unwrapped.data
    results, steps, began = {}, 0, time.perf_counter()
    for name in SUBTASKS:
        done_at = []
        for _ in tqdm(range(tries), desc=name, unit="try", disable=not progress):
            env.reset(seed=int(rng.integers(2**31)))
            noise = float(rng.uniform(*noise_range))
            runner = SubtaskRunner(env, [name])
            for step in range(max_steps):
                action = runner.action()
                if runner.current is None:
                    break
                env.step(np.clip(action + noise * rng.normal(size=action.shape), -1.0, 1.0))
                steps += 1
                if name in subtasks_done(data.qpos):
                    done_at.append(step + 1)
                    break
        results[name] = {
            "successes": len(done_at),
            "tries": tries,
            "steps_to_success_mean": float(np.mean(done_at)) if done_at else None,
        }
    env.close()
    return {"subtasks": results, "env_steps_per_second": steps / (time.perf_counter() - began)}


def render_strip(
    task_name: str, path: str, seed: int = 0, frames: int = 8, width: int = 240, height: int = 180, columns: int = 4
) -> list:
    """Renders one noiseless demonstration of `task_name`'s target subtasks (MuJoCo offscreen,
    EGL or OSMesa per MUJOCO_GL) as a strip of `frames` frames, one at every subtask's completion
    and the last step, the rest evenly between, with the step and the subtasks done written on
    each; saves a PNG at `path`. Returns the (step, done subtasks) of each frame. The episode
    runs first (states kept); only the chosen states are rendered."""
    import mujoco
    from PIL import Image, ImageDraw

    from envs.kitchen_script import SubtaskRunner
    kind = task_name.rsplit("-", 1)[-1]
    if not task_name.startswith("kitchen-") or kind not in KITCHEN_SUBTASKS:
        raise ValueError(f"field 'task': got {task_name!r}, expected kitchen-{{{','.join(KITCHEN_SUBTASKS)}}}")
    env = make_kitchen_task_env(kind)
    env.reset(seed=seed)
    model, data = env.unwrapped.model, env.unwrapped.data
    runner = SubtaskRunner(env, list(KITCHEN_SUBTASKS[kind]))
    states, done, keys = [], [], []
    for step in range(task.max_episode_steps):
        action = runner.action()
        if runner.current is None:
            break
        _, _, terminated, _, _ = env.step(action)
        now = subtasks_done(data.qpos)
        if any(name not in done for name in now):
            keys.append(len(states))
            done += [name for name in now if name not in done]
        states.append((step + 1, [name for name in done if name in now], data.qpos.copy(), data.qvel.copy()))
        if terminated:
            break
    keys.append(len(states) - 1)
    rest = [i for i in np.linspace(0, len(states) - 1, frames + 2).astype(int)[1:-1] if i not in keys]
    chosen = sorted(set(keys) | set(rest[: max(0, frames - len(set(keys)))]))[:frames]
    renderer = mujoco.Renderer(model, height, width)
    camera = mujoco.MjvCamera()
    camera.lookat[:], camera.distance, camera.azimuth, camera.elevation = (-0.25, 0.45, 2.05), 1.9, 80.0, -28.0
    rows = -(-len(chosen) // columns)
    strip = Image.new("RGB", (width * min(columns, len(chosen)), height * rows))
    for k, i in enumerate(chosen):
        step, now, qpos, qvel = states[i]
        data.qpos[:], data.qvel[:] = qpos, qvel
        mujoco.mj_forward(model, data)
        renderer.update_scene(data, camera)
        tile = Image.fromarray(renderer.render())
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, 0, width, 13 + 11 * len(now)), fill=(0, 0, 0))
        draw.text((3, 1), f"step {step}", fill=(255, 255, 255))
        for j, name in enumerate(now):
            draw.text((3, 12 + 11 * j), name, fill=(120, 255, 120))
        strip.paste(tile, (width * (k % columns), height * (k // columns)))
    renderer.close()
    env.close()
    strip.quantize(colors=128).save(path, optimize=True)  # a palette keeps the PNG small
    return [(states[i][0], states[i][1]) for i in chosen]


def main(argv=None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m envs.kitchen_data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("measure", help="success of each subtask script alone, from the start state")
    measure.add_argument("--tries", type=int, default=50)
    measure.add_argument("--seed", type=int, default=0)
    picture = commands.add_parser("picture", help="a frame strip of one demonstration (MuJoCo offscreen rendering)")
    picture.add_argument("--task", default="kitchen-complete")
    picture.add_argument("--out", required=True)
    picture.add_argument("--frames", type=int, default=8)
    args = parser.parse_args(argv)
    if args.command == "measure":
        print(json.dumps(measure_subtasks(args.tries, args.seed), indent=2))
    else:
        for step, done in render_strip(args.task, args.out, frames=args.frames):
            print(f"step {step}: {', '.join(done) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
