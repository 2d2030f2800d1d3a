"""The pixel task's speed: env steps/s with rendering, the scripted controller's success rate,
and the time to generate its offline dataset (envs/pixel_reach.py, envs/pixel_data.py).

    python benchmarks/pixel_task.py                   # sizes 32/64/128, 100-episode dataset
    python benchmarks/pixel_task.py --quick           # 64 only, 20-episode dataset
    python benchmarks/pixel_task.py --json out.json

Figures are medians over rounds (the machine is shared); the 1-minute load average is printed
with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from envs import pixel_reach  # noqa: E402
from envs.pixel_data import generate_pixel_dataset  # noqa: E402
from envs.tasks import get_task  # noqa: E402


def env_rates(image_size: int, rounds: int, steps: int) -> dict:
    """Median env steps/s (random actions, resets included) and ms per rendered frame."""
    env = pixel_reach.PixelReachEnv(image_size=image_size)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(20):  # warm the GL pipeline
        env.step(rng.uniform(-1, 1, 2))
    step_rates, frame_ms, physics_rates = [], [], []
    for r in range(rounds):
        env.reset(seed=r)
        start = time.perf_counter()
        for i in range(steps):
            _, _, terminated, _, _ = env.step(rng.uniform(-1, 1, 2))
            if terminated or (i + 1) % pixel_reach.MAX_EPISODE_STEPS == 0:
                env.reset(seed=r * steps + i)
        step_rates.append(steps / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(steps):
            env._camera.render(env.data)
        frame_ms.append(1e3 * (time.perf_counter() - start) / steps)
        start = time.perf_counter()
        for _ in range(steps):
            env._mujoco.mj_step(env.model, env.data, nstep=pixel_reach.FRAME_SKIP)
        physics_rates.append(steps / (time.perf_counter() - start))
    env.close()
    return {
        "image_size": image_size,
        "env_steps_per_s": statistics.median(step_rates),
        "render_ms_per_frame": statistics.median(frame_ms),
        "physics_only_steps_per_s": statistics.median(physics_rates),
    }


def scripted_success(episodes: int) -> dict:
    """The noiseless scripted controller (told the goal): success rate and mean episode length."""
    env = pixel_reach.PixelReachEnv()
    successes, lengths = 0, []
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        for step in range(pixel_reach.MAX_EPISODE_STEPS):
            obs, _, terminated, _, _ = env.step(pixel_reach.scripted_action(obs["state"], env.goal))
            if terminated:
                successes += 1
                break
        lengths.append(step + 1)
    env.close()
    return {"episodes": episodes, "success_rate": successes / episodes, "mean_length": float(np.mean(lengths))}


def dataset_generation(episodes: int) -> dict:
    task = get_task("pixel-reach")
    start = time.perf_counter()
    dataset, card = generate_pixel_dataset(task, episodes, seed=0)
    seconds = time.perf_counter() - start
    frame_bytes = sum(v.nbytes for v in dataset.observations.values())
    return {
        "episodes": episodes,
        "transitions": len(dataset),
        "seconds": seconds,
        "transitions_per_s": len(dataset) / seconds,
        "success_rate": card["task_goal_success_rate"],
        "observations_mb": frame_bytes / 1e6,
        "observations_and_next_mb": 2 * frame_bytes / 1e6,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64x64 only, fewer rounds, a 20-episode dataset")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--episodes", type=int, default=None, help="dataset episodes (default 100, quick 20)")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args(argv)
    sizes = (64,) if args.quick else (32, 64, 128)
    rounds = args.rounds or (3 if args.quick else 5)
    episodes = args.episodes or (20 if args.quick else 100)
    print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    report = {"load_average_1min": os.getloadavg()[0], "env": [], "scripted": None, "dataset": None}
    for size in sizes:
        rates = env_rates(size, rounds, steps=500)
        report["env"].append(rates)
        print(
            f"{size:4d}x{size}: {rates['env_steps_per_s']:7.0f} env steps/s with rendering, "
            f"{rates['render_ms_per_frame']:.3f} ms per frame, physics alone {rates['physics_only_steps_per_s']:.0f} steps/s"
        )
    report["scripted"] = scripted_success(50)
    s = report["scripted"]
    print(f"scripted controller (no noise): success {s['success_rate']:.2f} over {s['episodes']} episodes, mean length {s['mean_length']:.1f} steps")
    report["dataset"] = dataset_generation(episodes)
    d = report["dataset"]
    print(
        f"dataset: {d['episodes']} episodes, {d['transitions']} transitions in {d['seconds']:.1f} s "
        f"({d['transitions_per_s']:.0f}/s), success rate {d['success_rate']:.3f}, "
        f"observations {d['observations_mb']:.1f} MB (+ the same again as next_observations)"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
