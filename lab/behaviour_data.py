"""D4RL-style locomotion datasets made locally: train a behaviour SAC online, then roll it out.

D4RL's recipe (Fu et al. 2020, section 5 and its generation scripts), mirrored here for the
`{hopper,halfcheetah,walker2d}-{random,medium,medium-replay,medium-expert,expert}` tasks:

- One behaviour SAC is trained online per robot and seed (`train_behaviour`): the project's
  own SAC agent (learner/agents/sac.py) in a standard cheap setting, `BEHAVIOUR_AGENT`: two
  critics with clipped double-Q targets and the entropy term in the backup, no LayerNorm,
  256x256 MLPs, learning rates 3e-4, batch 256, UTD 1 (one update per env step), uniform
  random actions for the first `random_steps` env steps (no updates during them). Time limits
  are truncations (bootstrapped through), only falls are terminals.
- The policy is evaluated (deterministic, tanh of the mean, `eval_episodes` episodes on fixed
  start states) at step 0 and every `eval_every` steps, and at the last step; every evaluation
  snapshots the agent.
- **expert** = rollouts of the final (fully trained) policy.
- **medium** = rollouts of the *medium snapshot*: the earliest evaluation after the random
  phase (step > `random_steps`) whose mean eval return is >= `medium_fraction` (1/3) x the
  final eval return (D4RL: "trained to approximately 1/3 the performance of the expert").
  The final snapshot always qualifies unless its return is negative; if none qualifies, the
  final one is used. Only snapshots that beat every earlier candidate can ever be the earliest
  to reach a threshold, so only those are kept in memory while training.
- **medium-replay** = every transition the training run had put in its replay buffer up to the
  medium snapshot's step (random-action phase included), in the order collected; its last
  episode is cut where the buffer stops (an episode end, not a terminal).
- **medium-expert** = medium rollouts (first half, `n // 2`) then expert rollouts
  (`n - n // 2`): exactly the `medium` and `expert` datasets of those sizes, concatenated.
- **random** = rollouts of the randomly initialised policy: the behaviour agent's actor at
  step 0 under the same seed (no training at all; with the default small output-layer init
  its actions are about tanh(N(0, 1)) per dimension).

Rollouts sample actions from the policy (tanh-Gaussian, as D4RL's collection did), run
`ROLLOUT_ENVS` envs in lockstep (one batched policy call per step) and keep whole episodes in
the order they finish; the last one is cut so the dataset has exactly `num_transitions`
(episodes still running then are dropped). Rewards are the env's own (unscaled); `terminals`
are true terminations only; `episode_ends` also mark time limits and the final cut.

Sizes (`DEFAULT_NUM_TRANSITIONS`): 1M transitions for random / medium / expert, 2M for
medium-expert (D4RL's 1M + 1M); medium-replay is whatever the buffer held (`num_transitions`
cannot be set for it). Default training budget: 1M env steps (D4RL trained its SAC for 1M).

Caching (`behaviour_dir`): one training run serves every kind of a robot, so with a directory
given its products are kept there: `medium.ckpt` and `expert.ckpt` (learner/checkpoint.py's
format; loadable by `wsrl finetune` as SAC checkpoints), `medium_replay.npz` and
`behaviour.json` (what was trained, the evaluations, the medium choice), each written
atomically, the JSON last (it marks a complete cache). A later call with the same robot, seed,
time limit and behaviour settings reuses them instead of training; a cache from another
seed / train_steps / setting raises `BehaviourCacheError` naming every differing field.

Determinism: everything is seeded from `seed` (env resets, random actions, replay sampling,
policy noise, network init); on CPU two runs with the same arguments give identical arrays.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np

from actor.evaluation import evaluate
from actor.policy import Policy
from envs.datasets import OfflineDataset
from learner.agents import make_agent
from learner.checkpoint import (
    atomic_write_bytes,
    read_checkpoint,
    restore_agent,
    save_checkpoint,
)
from learner.config import (
    AgentConfig,
    Config,
    FinetuneConfig,
    LoggingConfig,
    to_dict,
    validate,
)
from learner.replay_buffer import ReplayBuffer
from learner.run_logger import progress_bar, write_line

# SAC steps over which the behaviour training's time left is measured (then printed once).
ETA_STEPS = 200

GENERATOR = "locomotion-behaviour-sac"
CACHE_FORMAT = "wsrl-locomotion-behaviour-v1"
KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")
ROBOTS = ("hopper", "halfcheetah", "walker2d")
DEFAULT_NUM_TRANSITIONS = {"random": 1_000_000, "medium": 1_000_000, "expert": 1_000_000, "medium-expert": 2_000_000}
ROLLOUT_ENVS = 8  # envs stepped in lockstep while collecting rollouts
EVAL_SEED_OFFSET = 10_000  # evaluation env seeds, as learner/finetune.py
# Independent random streams derived from the seed: np.random.default_rng([seed, STREAM]).
_STREAM_RANDOM_ACTIONS, _STREAM_REPLAY, _STREAM_POLICY = 1, 2, 3
_STREAM_ROLLOUTS = {"random": 11, "medium": 12, "expert": 13}

CACHE_JSON, MEDIUM_CKPT, EXPERT_CKPT, REPLAY_NPZ = "behaviour.json", "medium.ckpt", "expert.ckpt", "medium_replay.npz"

# Standard SAC (Haarnoja et al. 2018) in the project's agent: 2 critics, min of both in the
# target and the actor loss, entropy in the backup, no LayerNorm, 256x256, lr 3e-4, batch 256.
BEHAVIOUR_AGENT = AgentConfig(
    critic_ensemble_size=2,
    critic_subsample_size=2,
    critic_hidden_dims=(256, 256),
    critic_layer_norm=False,
    actor_hidden_dims=(256, 256),
    actor_layer_norm=False,
    discount=0.99,
    tau=5e-3,
    actor_lr=3e-4,
    critic_lr=3e-4,
    temperature_lr=3e-4,
    initial_temperature=1.0,
    backup_entropy=True,
    batch_size=256,
    actor_q_reduction="min",
)


@dataclass(frozen=True)
class BehaviourConfig:
    """How the behaviour SAC is trained and how the medium snapshot is chosen."""

    agent: AgentConfig = field(default_factory=lambda: BEHAVIOUR_AGENT)
    train_steps: int = 1_000_000  # env steps (= updates after the random phase, UTD 1)
    random_steps: int = 5_000  # uniform random actions, no updates
    eval_every: int = 10_000
    eval_episodes: int = 5
    medium_fraction: float = 1.0 / 3.0


class BehaviourCacheError(ValueError):
    """A behaviour_dir holds a run made with other settings, or an incomplete one."""


@dataclass
class Behaviour:
    """What one behaviour training run produced (freshly trained or read from a cache)."""

    agent_config: AgentConfig
    medium_params: Any  # actor parameters of the medium snapshot
    expert_params: Any  # actor parameters of the final policy
    medium_replay: OfflineDataset  # replay transitions up to the medium snapshot's step
    facts: dict  # JSON: evaluations, medium choice, training time (behaviour.json's "facts")
    reused: bool = False
    # Freshly trained only: checkpoint file name -> (full agent, counters), for the cache.
    snapshots: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def locomotion_kind(task) -> tuple[str, str]:
    """(robot, kind) of a locomotion task such as `halfcheetah-medium-replay`."""
    if getattr(task, "family", None) != "locomotion":
        raise ValueError(
            f"field 'task': the locomotion generator expects a task of family 'locomotion' "
            f"({{{','.join(ROBOTS)}}}-{{{','.join(KINDS)}}}), got {getattr(task, 'name', task)!r} of family "
            f"{getattr(task, 'family', None)!r}"
        )
    robot, _, kind = task.name.partition("-")
    if kind not in KINDS:
        raise ValueError(f"field 'task': {task.name!r} names dataset kind {kind!r}, expected one of {KINDS}")
    return robot, kind


def generate_locomotion_dataset(
    task,
    *,
    seed: int,
    num_transitions: int | None = None,
    train_steps: int | None = None,
    behaviour_dir: str | Path | None = None,
    progress: bool = True,
    behaviour: BehaviourConfig | None = None,
) -> tuple[OfflineDataset, dict]:
    """The D4RL-style dataset of the locomotion `task` (its kind is the name after the robot)
    and a JSON-serialisable dict of card facts.

    `num_transitions`: dataset size (default `DEFAULT_NUM_TRANSITIONS[kind]`; not settable for
    medium-replay, whose size is the medium snapshot's step). `train_steps`: behaviour SAC env
    steps (overrides `behaviour.train_steps`, default 1M). `behaviour_dir`: cache of the
    training run (see the module docstring). `behaviour`: training settings (default
    `BehaviourConfig()`). The random kind trains nothing.
    """
    robot, kind = locomotion_kind(task)
    cfg = _resolve_config(behaviour, train_steps)
    if kind == "medium-replay":
        if num_transitions is not None:
            raise ValueError(
                "field 'num_transitions': medium-replay holds every transition the behaviour run collected up "
                f"to its medium snapshot, so its size cannot be set (got {num_transitions}); leave it unset"
            )
    else:
        num_transitions = DEFAULT_NUM_TRANSITIONS[kind] if num_transitions is None else num_transitions
        if isinstance(num_transitions, bool) or not isinstance(num_transitions, int) or num_transitions < (2 if kind == "medium-expert" else 1):
            raise ValueError(
                f"field 'num_transitions': got {num_transitions!r}, expected an integer >= "
                f"{2 if kind == 'medium-expert' else 1}"
            )
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"field 'seed': got {seed!r}, expected an integer >= 0")

    started = time.perf_counter()
    act_dim = task.spec()["action_dim"]
    card: dict = {
        "task": task.name,
        "generator": GENERATOR,
        "kind": kind,
        "robot": robot,
        "env_id": task.env_id,
        "seed": seed,
        "max_episode_steps": task.max_episode_steps,
        "action_sampling": "stochastic: a ~ tanh(N(mean, std)) of the behaviour policy",
    }
    if kind == "random":
        agent = make_agent("sac", cfg.agent, task.spec()["observation_dim"], act_dim, seed)
        params = agent.actor.params
        eval_result = _evaluate(task, cfg, params, seed)
        dataset = collect_rollouts(task, cfg.agent, params, num_transitions, seed, "random", progress)
        card.update(
            behaviour_policy="randomly initialised SAC actor (no training)",
            behaviour_policy_train_steps=0,
            behaviour_eval_return=eval_result["return"],
            behaviour_normalized_score=eval_result["normalized_score"],
            behaviour_agent=_agent_facts(cfg.agent),
        )
    else:
        trained = load_or_train_behaviour(task, seed=seed, config=cfg, behaviour_dir=behaviour_dir, progress=progress)
        facts = trained.facts
        if kind == "medium-replay":
            dataset = trained.medium_replay
            policy_steps, eval_return = facts["medium_step"], facts["medium_eval_return"]
            described = "the training run's replay buffer up to the medium snapshot"
        elif kind == "medium":
            dataset = collect_rollouts(task, cfg.agent, trained.medium_params, num_transitions, seed, "medium", progress)
            policy_steps, eval_return = facts["medium_step"], facts["medium_eval_return"]
            described = "medium snapshot"
        elif kind == "expert":
            dataset = collect_rollouts(task, cfg.agent, trained.expert_params, num_transitions, seed, "expert", progress)
            policy_steps, eval_return = facts["train_steps"], facts["expert_eval_return"]
            described = "final (expert) policy"
        else:  # medium-expert
            half = num_transitions // 2
            medium = collect_rollouts(task, cfg.agent, trained.medium_params, half, seed, "medium", progress)
            expert = collect_rollouts(task, cfg.agent, trained.expert_params, num_transitions - half, seed, "expert", progress)
            dataset = concatenate(medium, expert)
            policy_steps = [facts["medium_step"], facts["train_steps"]]
            eval_return = [facts["medium_eval_return"], facts["expert_eval_return"]]
            described = f"medium snapshot (first {half} transitions) then final (expert) policy"
            card["medium_transitions"] = half
        card.update(
            behaviour_policy=described,
            behaviour_policy_train_steps=policy_steps,
            behaviour_eval_return=eval_return,
            behaviour_normalized_score=(
                [task.normalized_score(r) for r in eval_return] if isinstance(eval_return, list) else task.normalized_score(eval_return)
            ),
            random_eval_return=facts["random_eval_return"],
            medium_eval_return=facts["medium_eval_return"],
            expert_eval_return=facts["expert_eval_return"],
            random_normalized_score=task.normalized_score(facts["random_eval_return"]),
            medium_normalized_score=task.normalized_score(facts["medium_eval_return"]),
            expert_normalized_score=task.normalized_score(facts["expert_eval_return"]),
            medium_threshold=facts["medium_threshold"],
            medium_step=facts["medium_step"],
            behaviour_training=facts,
            behaviour_cache={"dir": str(behaviour_dir) if behaviour_dir is not None else None, "reused": trained.reused},
        )
    card["generation_seconds"] = round(time.perf_counter() - started, 3)
    return dataset, card


# --------------------------------------------------------------------------------------------
# Behaviour training and its cache
# --------------------------------------------------------------------------------------------


def _resolve_config(behaviour: Optional[BehaviourConfig], train_steps: Optional[int]) -> BehaviourConfig:
    cfg = behaviour or BehaviourConfig()
    if train_steps is not None:
        cfg = dataclasses.replace(cfg, train_steps=train_steps)
    for name, minimum in (("train_steps", 1), ("random_steps", 0), ("eval_every", 1), ("eval_episodes", 1)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"field '{name}': got {value!r}, expected an integer >= {minimum}")
    if cfg.random_steps >= cfg.train_steps:
        raise ValueError(
            f"field 'train_steps': got {cfg.train_steps}, expected more than random_steps={cfg.random_steps} "
            "(the policy only learns after the random-action phase)"
        )
    if not 0.0 < cfg.medium_fraction <= 1.0:
        raise ValueError(f"field 'medium_fraction': got {cfg.medium_fraction!r}, expected a number in (0, 1]")
    validate(_run_config("hopper-medium", 0, cfg))  # range checks of the agent's fields
    return cfg


def _run_config(task_name: str, seed: int, cfg: BehaviourConfig) -> Config:
    """The project Config recorded in the behaviour checkpoints (a from-scratch SAC run)."""
    return Config(
        task=task_name,
        variant="behaviour-sac",
        seed=seed,
        agent=cfg.agent,
        finetune=FinetuneConfig(
            algorithm="sac",
            checkpoint="",
            warmup_steps=cfg.random_steps,
            num_steps=cfg.train_steps,
            utd_ratio=1,
            eval_every=cfg.eval_every,
            eval_episodes=cfg.eval_episodes,
            log_every=0,
            checkpoint_every=0,
        ),
        logging=LoggingConfig(tensorboard=False),
    )


def _agent_facts(agent: AgentConfig) -> dict:
    return {
        "algorithm": "sac",
        "critic_ensemble_size": agent.critic_ensemble_size,
        "critic_hidden_dims": list(agent.critic_hidden_dims),
        "actor_hidden_dims": list(agent.actor_hidden_dims),
        "layer_norm": agent.critic_layer_norm,
        "batch_size": agent.batch_size,
        "utd_ratio": 1,
    }


def cache_identity(task, seed: int, cfg: BehaviourConfig) -> dict:
    """What a cached behaviour run must match to be reused (JSON form)."""
    settings = to_dict(cfg)
    return {
        "format": CACHE_FORMAT,
        "env_id": task.env_id,
        "max_episode_steps": task.max_episode_steps,
        "seed": seed,
        "train_steps": settings.pop("train_steps"),
        "behaviour": settings,
    }


def _differences(cached: Any, wanted: Any, prefix: str = "") -> list[str]:
    if isinstance(cached, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(cached) | set(wanted)):
            out += _differences(cached.get(key), wanted.get(key), f"{prefix}{key}.")
        return out
    if cached != wanted:
        return [f"{prefix.rstrip('.')}: cache has {cached!r}, this call asks {wanted!r}"]
    return []


def load_or_train_behaviour(
    task, *, seed: int, config: BehaviourConfig, behaviour_dir: str | Path | None = None, progress: bool = True
) -> Behaviour:
    """The behaviour run of `task`'s robot under `seed`: read from `behaviour_dir` when it holds
    a complete matching run, otherwise trained (and, with a `behaviour_dir`, written there).
    A complete cache made with other settings raises `BehaviourCacheError`."""
    identity = cache_identity(task, seed, config)
    if behaviour_dir is not None:
        directory = Path(behaviour_dir)
        if (directory / CACHE_JSON).is_file():
            return _read_cache(directory, identity, config, task)
    trained = train_behaviour(task, seed=seed, config=config, progress=progress)
    if behaviour_dir is not None:
        _write_cache(Path(behaviour_dir), identity, trained, task, seed, config)
    return trained


def _read_cache(directory: Path, identity: dict, cfg: BehaviourConfig, task) -> Behaviour:
    where = directory / CACHE_JSON
    try:
        stored = json.loads(where.read_text())
        cached_identity, facts = stored["identity"], stored["facts"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BehaviourCacheError(f"behaviour_dir {str(directory)!r}: {CACHE_JSON} is unreadable ({e}); remove it to retrain") from None
    problems = _differences(cached_identity, identity)
    if problems:
        raise BehaviourCacheError(
            f"behaviour_dir {str(directory)!r} holds a behaviour run made with other settings: "
            + "; ".join(problems)
            + ". Pass the cached run's settings to reuse it, or use another (or an emptied) behaviour_dir to train anew"
        )
    spec = task.spec()
    params = {}
    for name in (MEDIUM_CKPT, EXPERT_CKPT):
        try:
            checkpoint = read_checkpoint(directory / name)
            params[name] = restore_agent(checkpoint, "sac", cfg.agent, spec).actor.params
        except ValueError as e:
            raise BehaviourCacheError(f"behaviour_dir {str(directory)!r}: cached policy {name} cannot be used ({e})") from None
    try:
        with np.load(directory / REPLAY_NPZ) as npz:
            replay = OfflineDataset(**{f.name: npz[f.name] for f in dataclasses.fields(OfflineDataset)})
    except (OSError, ValueError, KeyError) as e:
        raise BehaviourCacheError(f"behaviour_dir {str(directory)!r}: {REPLAY_NPZ} cannot be read ({e})") from None
    if len(replay) != facts["medium_step"]:
        raise BehaviourCacheError(
            f"behaviour_dir {str(directory)!r}: {REPLAY_NPZ} has {len(replay)} transitions, "
            f"{CACHE_JSON} says the medium snapshot is at step {facts['medium_step']}"
        )
    return Behaviour(cfg.agent, params[MEDIUM_CKPT], params[EXPERT_CKPT], replay, facts, reused=True)


def _write_cache(directory: Path, identity: dict, trained: Behaviour, task, seed: int, cfg: BehaviourConfig) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config = _run_config(task.name, seed, cfg)
    spec = task.spec()
    for name, (agent, counters) in trained.snapshots.items():
        save_checkpoint(directory / name, agent, config, spec, counters)
    buffer = io.BytesIO()
    replay = trained.medium_replay
    np.savez(buffer, **{f.name: getattr(replay, f.name) for f in dataclasses.fields(OfflineDataset)})
    atomic_write_bytes(directory / REPLAY_NPZ, buffer.getvalue())
    payload = {"identity": identity, "facts": trained.facts}
    atomic_write_bytes(directory / CACHE_JSON, (json.dumps(payload, indent=2) + "\n").encode())


class _Keys:
    """PRNG keys split in chunks (one jax call per chunk instead of one per step)."""

    def __init__(self, seed: int, chunk: int = 1024):
        self._key, self._chunk, self._keys, self._i = jax.random.PRNGKey(seed), chunk, np.zeros((0, 2), np.uint32), 0

    def next(self) -> np.ndarray:
        if self._i == len(self._keys):
            keys = np.asarray(jax.random.split(self._key, self._chunk + 1))
            self._key, self._keys, self._i = keys[0], keys[1:], 0
        self._i += 1
        return self._keys[self._i - 1]


def _evaluate(task, cfg: BehaviourConfig, params, seed: int) -> dict:
    policy = Policy(cfg.agent, task.spec()["action_dim"])
    env = task.make_env(seed + EVAL_SEED_OFFSET, training=False)
    try:
        return evaluate(
            lambda o: policy(params, o, None, deterministic=True),
            env,
            cfg.eval_episodes,
            seed + EVAL_SEED_OFFSET,
            normalize=task.episode_normalized_score,
        )
    finally:
        env.close()


def train_behaviour(task, *, seed: int, config: BehaviourConfig, progress: bool = True) -> Behaviour:
    """Trains the behaviour SAC online for `config.train_steps` env steps (see the module
    docstring) and returns its medium and final policies and the medium-replay transitions."""
    robot, _ = locomotion_kind(task)
    cfg = config
    started = time.perf_counter()
    spec = task.spec()
    obs_dim, act_dim = spec["observation_dim"], spec["action_dim"]
    agent = make_agent("sac", cfg.agent, obs_dim, act_dim, seed)
    policy = Policy(cfg.agent, act_dim)
    replay = ReplayBuffer(cfg.train_steps, obs_dim, act_dim)
    episode_ends = np.zeros(cfg.train_steps, bool)
    env = task.make_env(seed, training=False)  # locomotion rewards are used unscaled
    random_actions = np.random.default_rng([seed, _STREAM_RANDOM_ACTIONS])
    sample_rng = np.random.default_rng([seed, _STREAM_REPLAY])
    keys = _Keys(int(np.random.default_rng([seed, _STREAM_POLICY]).integers(2**31)))
    observation, _ = env.reset(seed=seed)

    evaluations: list[dict] = []
    candidates: list[tuple[int, float, Any]] = []  # (step, eval return, agent): running records
    updates, episodes, episode_start, last_return = 0, 0, 0, float("nan")

    def run_eval(step: int) -> dict:
        result = _evaluate(task, cfg, agent.actor.params, seed)
        entry = {"step": step, "return": result["return"], "return_std": result["return_std"],
                 "normalized_score": result["normalized_score"], "episode_length": result["episode_length"]}
        evaluations.append(entry)
        if step > cfg.random_steps and (not candidates or result["return"] > candidates[-1][1]):
            candidates.append((step, result["return"], agent))
        return entry

    bar = progress_bar(cfg.train_steps, f"behaviour SAC {robot} seed {seed}", progress)
    if progress:
        write_line(bar, f"[wsrl dataset] behaviour SAC: {cfg.train_steps} steps (the first {cfg.random_steps} random); "
                        f"the time left is printed after {ETA_STEPS} steps with updates")
    sac_started = None
    last_eval = run_eval(0)
    for step in range(1, cfg.train_steps + 1):
        if step <= cfg.random_steps:
            action = random_actions.uniform(-1.0, 1.0, act_dim).astype(np.float32)
        else:
            action = policy(agent.actor.params, observation, keys.next())
        next_observation, reward, terminated, truncated, _ = env.step(action)
        replay.add(observation, action, reward, next_observation, terminated)
        if terminated or truncated:
            episode_ends[step - 1] = True
            episodes += 1
            last_return = float(np.sum(replay.data["rewards"][episode_start:step], dtype=np.float64))
            episode_start = step
            observation, _ = env.reset()
        else:
            observation = next_observation
        if step > cfg.random_steps:
            batch = replay.sample(sample_rng, 1, cfg.agent.batch_size)
            agent, _ = agent.update(batch)
            updates += 1
            if updates == 1:
                sac_started = time.perf_counter()
            elif updates == 1 + ETA_STEPS and progress and step < cfg.train_steps:
                rate = ETA_STEPS / (time.perf_counter() - sac_started)
                write_line(bar, f"[wsrl dataset] behaviour SAC at {rate:.0f} steps/s: about {(cfg.train_steps - step) / rate / 3600:.1f} h left "
                                "(evaluations add to it)")
        if step % cfg.eval_every == 0 or step == cfg.train_steps:
            last_eval = run_eval(step)
        bar.update(1)
        if step % 100 == 0 or step == cfg.train_steps:
            bar.set_postfix(
                phase="random" if step <= cfg.random_steps else "sac",
                ret=f"{last_return:.0f}",
                eval=f"{last_eval['return']:.0f}",
                refresh=False,
            )
    bar.close()
    env.close()

    final_step, final_return, final_agent = cfg.train_steps, evaluations[-1]["return"], agent
    threshold = cfg.medium_fraction * final_return
    chosen = next(((s, r, a) for s, r, a in candidates if r >= threshold), (final_step, final_return, final_agent))
    medium_step, medium_return, medium_agent = chosen
    d = replay.data
    medium_replay = OfflineDataset(
        observations=d["observations"][:medium_step].copy(),
        actions=d["actions"][:medium_step].copy(),
        rewards=d["rewards"][:medium_step].copy(),
        next_observations=d["next_observations"][:medium_step].copy(),
        terminals=d["terminals"][:medium_step].copy(),
        episode_ends=episode_ends[:medium_step].copy(),
    )
    facts = {
        "algorithm": "sac",
        "agent": _agent_facts(cfg.agent),
        "train_steps": cfg.train_steps,
        "random_steps": cfg.random_steps,
        "updates": updates,
        "training_episodes": episodes,
        "eval_every": cfg.eval_every,
        "eval_episodes": cfg.eval_episodes,
        "evaluations": evaluations,
        "random_eval_return": evaluations[0]["return"],
        "expert_eval_return": final_return,
        "medium_fraction": cfg.medium_fraction,
        "medium_threshold": threshold,
        "medium_rule": "earliest evaluation after the random phase with eval return >= medium_fraction x final eval return",
        "medium_step": medium_step,
        "medium_eval_return": medium_return,
        "training_seconds": round(time.perf_counter() - started, 3),
    }
    snapshots = {
        MEDIUM_CKPT: (medium_agent, {"env_steps": medium_step, "eval_return": medium_return}),
        EXPERT_CKPT: (final_agent, {"env_steps": final_step, "updates": updates, "eval_return": final_return}),
    }
    return Behaviour(cfg.agent, medium_agent.actor.params, final_agent.actor.params, medium_replay, facts, snapshots=snapshots)


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------


def collect_rollouts(
    task, agent_config: AgentConfig, actor_params, num_transitions: int, seed: int, stream: str, progress: bool = True
) -> OfflineDataset:
    """Exactly `num_transitions` transitions of the policy `actor_params` (sampled actions) in
    `task`'s env: `ROLLOUT_ENVS` envs in lockstep, whole episodes in the order they finish, the
    last cut to size. `stream` (random / medium / expert) picks the seeds' random stream."""
    act_dim = task.spec()["action_dim"]
    policy = Policy(agent_config, act_dim)
    rng = np.random.default_rng([seed, _STREAM_ROLLOUTS[stream]])
    keys = _Keys(int(rng.integers(2**31)))
    envs = [task.make_env(seed, training=False) for _ in range(ROLLOUT_ENVS)]
    names = ("observations", "actions", "rewards", "next_observations", "terminals", "episode_ends")
    current: list[np.ndarray] = []
    running: list[dict] = []

    def start(i: int) -> None:
        observation, _ = envs[i].reset(seed=int(rng.integers(2**31)))
        current[i] = observation
        running[i] = {name: [] for name in names}

    for i in range(ROLLOUT_ENVS):
        current.append(None)  # type: ignore[arg-type]
        running.append({})
        start(i)
    finished: list[dict] = []
    total, last_return = 0, float("nan")
    bar = progress_bar(num_transitions, f"{task.name.split('-')[0]} {stream} rollouts", progress)
    while total < num_transitions:
        actions = policy(actor_params, np.asarray(current, np.float32), keys.next())
        for i, env in enumerate(envs):
            next_observation, reward, terminated, truncated, _ = env.step(actions[i])
            episode = running[i]
            for name, value in zip(names, (current[i], actions[i], reward, next_observation, float(terminated), terminated or truncated)):
                episode[name].append(value)
            if terminated or truncated:
                arrays = {
                    "observations": np.asarray(episode["observations"], np.float32),
                    "actions": np.asarray(episode["actions"], np.float32),
                    "rewards": np.asarray(episode["rewards"], np.float32),
                    "next_observations": np.asarray(episode["next_observations"], np.float32),
                    "terminals": np.asarray(episode["terminals"], np.float32),
                    "episode_ends": np.asarray(episode["episode_ends"], bool),
                }
                finished.append(arrays)
                total += len(arrays["rewards"])
                last_return = float(arrays["rewards"].sum())
                bar.update(min(len(arrays["rewards"]), num_transitions - bar.n))
                bar.set_postfix(episodes=len(finished), ret=f"{last_return:.0f}", refresh=False)
                if total >= num_transitions:
                    break
                start(i)
            else:
                current[i] = next_observation
    bar.close()
    for env in envs:
        env.close()
    columns = {name: np.concatenate([e[name] for e in finished])[:num_transitions] for name in names}
    return OfflineDataset(**columns)  # a cut last episode gets its episode end in __post_init__


def concatenate(*datasets: OfflineDataset) -> OfflineDataset:
    """The datasets one after the other (each already ends with an episode end)."""
    return OfflineDataset(
        **{f.name: np.concatenate([getattr(d, f.name) for d in datasets]) for f in dataclasses.fields(OfflineDataset)}
    )
