"""`wsrl dataset generate` and `wsrl dataset inspect`: offline datasets made and read locally.

generate: point mazes and antmazes (and the built-in point mass) with the noisy waypoint
controller (envs/maze_data.py; the ant walks with the tuned gaits of envs/ant_gait.py: seconds
for point mazes, minutes for antmaze); kitchen with the scripted Franka doing queues of subtasks
(envs/kitchen_data.py, envs/kitchen_script.py; seconds per episode); locomotion by training a behaviour SAC and rolling it out
(lab/behaviour_data.py, the D4RL recipe: random / medium / medium-replay / medium-expert /
expert). Output: a D4RL HDF5 file (`.hdf5` / `.h5`) with a `<stem>.card.json` card beside it, or
a Minari dataset directory (any other path); both written atomically, existing files refused
unless --overwrite.

inspect: size, episodes, episode lengths, return distribution and success rate of a D4RL
file or Minari dataset, plus the card where there is one; for kitchen data (the card's task or
--task kitchen-*) also the subtasks completed per episode, read from the observations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from learner.startup import GENERATED_FAMILIES


def add_commands(sub) -> None:
    """Adds `wsrl dataset {generate,inspect}` to the top-level subparsers."""
    dataset = sub.add_parser("dataset", help="make (generate) or look at (inspect) an offline dataset")
    commands = dataset.add_subparsers(dest="dataset_command", required=True)

    p = commands.add_parser("generate", help="make a D4RL-style dataset for a task locally")
    p.add_argument("--task", required=True, help="task name, e.g. pointmaze-umaze, antmaze-umaze-diverse, hopper-medium-replay")
    p.add_argument("--out", required=True, help="output: a .hdf5/.h5 file (D4RL layout + card) or a Minari dataset directory")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0); the output is a function of it")
    p.add_argument("--episodes", type=int, default=1000, help="mazes, kitchen: number of episodes (default 1000)")
    p.add_argument("--mode", choices=("diverse", "play"), default=None, help="mazes: random goals (diverse) or hand-picked start/goal cells (play); default: from the task name")
    p.add_argument("--transitions", type=int, default=None, help="locomotion: transitions to roll out (default: per kind, see docs/datasets.md)")
    p.add_argument("--train-steps", type=int, default=None, help="locomotion: behaviour SAC training steps")
    p.add_argument("--behaviour-dir", default=None, help="locomotion: cache of the behaviour SAC run, reused by the other kinds of the same robot and seed")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")

    p = commands.add_parser("inspect", help="size, episodes, return distribution and success rate of a dataset")
    p.add_argument("path", help="a D4RL .hdf5/.h5 file, a Minari dataset directory or a local Minari id")
    p.add_argument("--task", default=None, help="flatten dict observations with this task's keys and check its dims")
    p.add_argument("--success-threshold", type=float, default=None, help="an episode whose return is >= this counts as a success (default: the card's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run_command(args) -> int:
    if args.dataset_command == "generate":
        return generate(args)
    return inspect(args)


def generate_dataset(task, args):
    """(dataset, card facts) for `task` from the generator of its family."""
    if task.family in ("maze", "antmaze"):
        from envs.maze_data import generate_maze_dataset

        return generate_maze_dataset(task, args.episodes, args.seed, mode=args.mode, progress=True)
    if task.family == "kitchen":
        from envs.kitchen_data import generate_kitchen_dataset

        return generate_kitchen_dataset(task, args.episodes, args.seed, progress=True)
    if task.name == "pixel-reach":  # a built-in task with a card of its own (episode kinds, success rate)
        from envs.pixel_data import generate_pixel_dataset

        return generate_pixel_dataset(task, args.episodes, args.seed, progress=True)
    if task.family == "builtin" and task.builtin_dataset is not None:
        dataset = task.builtin_dataset(args.episodes, args.seed)
        return dataset, {"task": task.name, "generator": "builtin", "seed": args.seed, "success_threshold": 1.0}
    if task.family == "locomotion":
        from lab.behaviour_data import generate_locomotion_dataset

        return generate_locomotion_dataset(
            task, seed=args.seed, num_transitions=args.transitions, train_steps=args.train_steps,
            behaviour_dir=args.behaviour_dir, progress=True,
        )
    raise ValueError(
        f"field 'task': {task.name!r} is of family {task.family!r}; the local generators cover the "
        f"families {GENERATED_FAMILIES} (adroit data are human demonstrations): give its "
        "D4RL/Minari file to pretrain.dataset instead"
    )


def generate(args) -> int:
    from envs.dataset_writers import write_d4rl_hdf5, write_minari
    from envs.tasks import get_task

    task = get_task(args.task)
    out = Path(args.out)
    if args.episodes < 1:
        raise ValueError(f"field '--episodes': got {args.episodes}, expected an integer >= 1")
    is_file = out.suffix in (".hdf5", ".h5")
    # Refuse before spending minutes generating.
    if not args.overwrite and (out.exists() if is_file else (out / "data").exists()):
        raise FileExistsError(f"output {str(out)!r} exists; pass --overwrite to replace it")
    dataset, card = generate_dataset(task, args)
    card = {"task": task.name, **card}
    if is_file:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_d4rl_hdf5(dataset, out, card, overwrite=args.overwrite)
    else:
        references = {"ref_min_score": task.ref_min_score, "ref_max_score": task.ref_max_score}
        metadata = {"wsrl_card": card, **{k: v for k, v in references.items() if v is not None}}
        write_minari(dataset, out, dataset_id=f"wsrl/{task.name}-v0", metadata=metadata, overwrite=args.overwrite)
    returns = dataset.episode_returns()
    print(
        f"[wsrl dataset] {task.name}: {len(dataset)} transitions, {dataset.num_episodes} episodes, "
        f"return mean {returns.mean():.3g} (min {returns.min():.3g}, max {returns.max():.3g}) -> {out}"
    )
    return 0


def dataset_summary(dataset, success_threshold=None) -> dict:
    """`dataset_stats` plus the return quartiles."""
    from envs.dataset_card import dataset_stats

    stats = dataset_stats(dataset, success_threshold)
    quartiles = np.percentile(dataset.episode_returns(), [0, 25, 50, 75, 100])
    stats["return_quartiles"] = [float(v) for v in quartiles]
    return stats


def observation_text(dataset) -> str:
    """"obs dim d", or the named parts ("obs state (8,) float32, cam (64, 64, 3) uint8")."""
    spec = dataset.observation_spec
    if spec.is_flat:
        return f"obs dim {spec.state_dim}"
    return "obs " + ", ".join(f"{p.name} {p.shape} {p.dtype}" for p in spec.parts)


def return_histogram(returns: np.ndarray, bins: int = 10, width: int = 40) -> list[str]:
    """A text histogram of the episode returns, one line per bin."""
    counts, edges = np.histogram(returns, bins=bins)
    scale = width / max(1, counts.max())
    return [
        f"  [{lo:10.4g}, {hi:10.4g}) {count:7d} {'#' * int(round(count * scale))}"
        for lo, hi, count in zip(edges[:-1], edges[1:], counts)
    ]


def card_success_rate(card: dict):
    """Successful / recorded episodes as a card of `wsrl record` counts them (the env's
    info["success"]), or None if the card has no such counts."""
    recorded, successful = card.get("recorded_episodes"), card.get("successful_episodes")
    if not isinstance(recorded, int) or not isinstance(successful, int) or recorded < 1:
        return None
    return successful / recorded


def inspect(args) -> int:
    from envs.dataset_card import card_path
    from envs.dataset_io import read_dataset
    from envs.minari_files import read_minari_metadata

    keys = dims = observation_spec = None
    if args.task:
        from envs.observations import observation_spec_of
        from envs.tasks import get_task

        task = get_task(args.task)
        spec = task.spec()
        keys, dims = task.observation_keys, (spec["observation_dim"], spec["action_dim"])
        if not observation_spec_of(spec).is_flat:  # a camera task: its named parts, checked
            keys, dims, observation_spec = None, (None, spec["action_dim"]), observation_spec_of(spec)
    path = Path(args.path)
    dataset = read_dataset(path, keys, *(dims or (None, None)), observation_spec=observation_spec)
    card: dict = {}
    if path.suffix in (".hdf5", ".h5"):
        if card_path(path).is_file():
            card = json.loads(card_path(path).read_text())
    else:
        card = read_minari_metadata(path).get("wsrl_card", {})
    threshold = args.success_threshold if args.success_threshold is not None else card.get("success_threshold")
    stats = dataset_summary(dataset, threshold)
    kitchen_task = args.task or card.get("task", "")
    if str(kitchen_task).startswith("kitchen-") and dataset.observation_spec.is_flat and dataset.observations.shape[1] == 59:
        stats["kitchen_subtasks"] = kitchen_subtask_summary(dataset, kitchen_task)
    counted = card_success_rate(card) if threshold is None else None
    if counted is not None:  # `wsrl record`: the env's info["success"], counted per episode
        stats["success_rate"], stats["success_source"] = counted, "card"
    if args.json:
        print(json.dumps({"path": str(path), **stats, "card": card}, indent=2))
        return 0
    print(f"{path}")
    print(f"  transitions {stats['num_transitions']}, episodes {stats['num_episodes']} "
          f"({stats['num_terminal_episodes']} ending in a terminal), {observation_text(dataset)}, "
          f"action dim {stats['action_dim']}")
    print(f"  episode length mean {stats['episode_length_mean']:.1f} (min {stats['episode_length_min']}, "
          f"max {stats['episode_length_max']})")
    q = stats["return_quartiles"]
    print(f"  return mean {stats['return_mean']:.4g} +- {stats['return_std']:.4g}; min {q[0]:.4g}, "
          f"25% {q[1]:.4g}, median {q[2]:.4g}, 75% {q[3]:.4g}, max {q[4]:.4g}")
    if stats.get("success_source") == "card":
        print(f"  success rate {stats['success_rate']:.3f} ({card['successful_episodes']} of {card['recorded_episodes']} "
              "episodes reported success while recording, from the card)")
    elif "success_rate" in stats:
        print(f"  success rate {stats['success_rate']:.3f} (return >= {threshold:g})")
    else:
        print("  success rate: n/a (no success threshold in the card; pass --success-threshold)")
    print("  returns:")
    print("\n".join(return_histogram(dataset.episode_returns())))
    if "kitchen_subtasks" in stats:
        k = stats["kitchen_subtasks"]
        histogram = ", ".join(f"{n}: {count}" for n, count in enumerate(k["target_completed_histogram"]))
        print(f"  subtasks completed per episode (of {', '.join(k['target_subtasks'])}): mean "
              f"{k['target_completed_mean']:.2f}; episodes by count {{{histogram}}}")
        print("  episodes completing each subtask: " + ", ".join(f"{name} {n}" for name, n in k["episodes_completing"].items()))
    if card:
        shown = {key: value for key, value in card.items() if key not in stats and key != "episodes"}
        if "episodes" in card:
            shown["episodes"] = f"[{len(card['episodes'])} per-episode records]"
        print("  card: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return 0


def kitchen_subtask_summary(dataset, task_name: str) -> dict:
    """Subtasks completed per episode of a kitchen dataset, read from its observations: the mean
    and histogram of the task's target subtasks completed, and how many episodes completed each
    of the seven subtasks."""
    from envs.kitchen_data import subtasks_completed_per_episode
    from envs.kitchen_script import SUBTASKS
    from envs.tasks import KITCHEN_SUBTASKS

    kind = task_name.rsplit("-", 1)[-1]
    targets = KITCHEN_SUBTASKS.get(kind)
    if targets is None:
        raise ValueError(f"field 'task': {task_name!r} is not a kitchen task; expected kitchen-{{{','.join(KITCHEN_SUBTASKS)}}}")
    completed = subtasks_completed_per_episode(dataset)
    per_episode = np.array([sum(name in done for name in targets) for done in completed])
    return {
        "target_subtasks": list(targets),
        "target_completed_mean": float(per_episode.mean()),
        "target_completed_histogram": [int(np.sum(per_episode == n)) for n in range(len(targets) + 1)],
        "episodes_completing": {name: sum(name in done for done in completed) for name in SUBTASKS},
    }
