"""`wsrl finetune`: the single-process reference of Algorithm 1 (WSRL).

1. Load the pre-trained checkpoint into the online agent (optimizer states kept).
2. Warmup: the first K = `warmup_steps` env steps act with the *frozen* pre-trained policy;
   their transitions fill the (empty) online replay buffer; no updates happen.
3. Afterwards every env step adds one transition and runs one fused update: M = `utd_ratio`
   critic updates on M fresh batches, then one actor update on their union.
No offline data is kept (unless `offline_mixing_ratio` > 0, for the retention baselines).
Time limits are truncations: stored with terminal = 0 so the target bootstraps through them.

The baselines and ablations of the paper are switches of the same loop: `finetune.warmup`
(random actions, or K transitions of the offline dataset instead of warmup env steps),
`finetune.freeze_policy_steps` (critic-only updates after warmup), `finetune.jsrl` (roll-ins
of the frozen pre-trained policy), `finetune.init` (what the checkpoint provides) and
`offline_mixing_ratio` (retention, RLPD).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from actor.evaluation import evaluate
from actor.policy import Policy, jsrl_rollin_steps
from envs.datasets import mc_returns
from envs.tasks import get_task
from learner.agents import observation_spec_of
from learner.checkpoint import save_checkpoint
from learner.config import Config, to_dict
from learner.diagnostics import RenderUnavailable, record_episode_video
from learner.networks import describe_matmul_dtype
from learner.run_logger import RunLogger, progress_bar
from learner.runs import (
    describe_device,
    initial_agent,
    make_diagnostics,
    online_replay,
    prepare_run_dir,
    resolve_run_dir,
)
from learner.startup import RunDirGuard
from learner.summary import print_result, run_summary, write_summary

# Env steps with updates over which the time left is measured (then printed once), after the
# first ETA_SKIP ones (which include compiling the update).
ETA_STEPS = 100
ETA_SKIP = 20


class Finetuner:
    """Holds the agent, envs and replay of one fine-tuning run; `step()` is one env step."""

    def __init__(self, config: Config):
        f = config.finetune
        self.config = config
        self.task = get_task(config.task)
        self.spec = self.task.spec()
        act_dim = self.spec["action_dim"]
        self.agent = initial_agent(config, self.spec)
        # The frozen pre-trained policy acts during warmup: an independent copy of its params
        # (with cameras, of the encoder it reads too).
        self.pretrained_actor_params = jax.tree_util.tree_map(jnp.array, self.agent.policy_params())
        self.policy = Policy(config.agent, act_dim, observation_spec_of(self.spec))
        self.replay, self.sampler, self.warmup_env_steps = online_replay(config, self.task, self.spec)
        self.uses_mc_returns = f.algorithm == "calql"
        self.env = self.task.make_env(config.seed, training=True)
        self.eval_env = self.task.make_env(config.seed + 10_000, training=False)
        self.sample_rng = np.random.default_rng(config.seed)
        self.action_rng = jax.random.PRNGKey(config.seed + 1)
        # Random warmup actions and JSRL's roll-in draws, apart from the streams above so the
        # default run's randomness does not depend on these switches.
        self.schedule_rng = np.random.default_rng(config.seed + 3)
        self.env_steps = 0
        self.updates = 0  # fused UTD updates (each = utd_ratio critic + 1 actor update)
        self.episodes = 0
        self.observation, _ = self.env.reset(seed=config.seed)
        self._episode_slots: list[int] = []
        self._episode_rewards: list[float] = []
        self._episode_success = False
        self.rollin_steps_left = self._draw_rollin()

    @property
    def in_warmup(self) -> bool:
        """True while the next env step is one of the first K (acts with the frozen policy or,
        with `finetune.warmup: random`, at random)."""
        return self.env_steps < self.warmup_env_steps

    def _draw_rollin(self) -> int:
        """Roll-in steps of the episode starting now (0 unless JSRL draws one)."""
        f = self.config.finetune
        if not f.jsrl:
            return 0
        return jsrl_rollin_steps(self.schedule_rng, self.env_steps, f.jsrl_initial_prob, f.jsrl_decay_steps, f.jsrl_rollin_discount)

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self.in_warmup and self.config.finetune.warmup == "random":
            return self.schedule_rng.uniform(-1.0, 1.0, self.spec["action_dim"]).astype(np.float32)
        frozen = self.in_warmup or self.rollin_steps_left > 0
        if self.rollin_steps_left > 0:
            self.rollin_steps_left -= 1
        params = self.pretrained_actor_params if frozen else self.agent.policy_params()
        action, self.action_rng = self.policy.sample(params, observation, self.action_rng)
        return action

    def step(self) -> tuple[Optional[dict], Optional[dict]]:
        """One env step, then one fused update once past warmup.

        Returns (episode stats if an episode just ended, update metrics if an update ran)."""
        f = self.config.finetune
        action = self.act(self.observation)
        next_observation, reward, terminated, truncated, info = self.env.step(action)
        slot = self.replay.add(self.observation, action, reward, next_observation, terminated)
        self.env_steps += 1
        self._episode_slots.append(slot)
        self._episode_rewards.append(float(reward))
        self._episode_success = self._episode_success or bool(info.get("success", False))
        episode = None
        if terminated or truncated:
            episode = self._end_episode()
        else:
            self.observation = next_observation
        update_info = None
        online_steps = self.env_steps - self.warmup_env_steps
        if online_steps > 0:
            batch = self.sampler.sample(self.sample_rng, f.utd_ratio, self.config.agent.batch_size)
            if online_steps <= f.freeze_policy_steps:
                self.agent, update_info = self.agent.update_critics(batch)
            else:
                self.agent, update_info = self.agent.update(batch)
            self.updates += 1
        return episode, update_info

    def _end_episode(self) -> dict:
        rewards = np.asarray(self._episode_rewards, np.float32)
        if self.uses_mc_returns:
            ends = np.zeros(len(rewards), bool)
            ends[-1] = True
            returns = mc_returns(rewards, ends, self.config.agent.discount, self.task.sparse_failure_reward)
            self.replay.set_mc_returns(np.asarray(self._episode_slots), returns)
        self.episodes += 1
        stats = {"return": float(rewards.sum()), "length": len(rewards), "success": float(self._episode_success)}
        self._episode_slots, self._episode_rewards, self._episode_success = [], [], False
        self.observation, _ = self.env.reset()
        self.rollin_steps_left = self._draw_rollin()
        return stats

    def evaluate(self) -> dict:
        params = self.agent.policy_params()
        c = self.config
        return evaluate(
            lambda o: self.policy(params, o, None, deterministic=True),
            self.eval_env,
            c.finetune.eval_episodes,
            c.seed + 10_000,
            normalize=self.task.normalizer,
        )

    def counters(self) -> dict:
        return {"env_steps": self.env_steps, "updates": self.updates, "episodes": self.episodes}


def finetune(config: Config, run_dir: Optional[str] = None) -> Path:
    """Runs Algorithm 1 for `finetune.num_steps` env steps; returns the run directory."""
    f = config.finetune
    with RunDirGuard(resolve_run_dir(config, "finetune", run_dir)) as guard:  # a failed start leaves no trace
        path = prepare_run_dir(config, "finetune", run_dir)
        runner = Finetuner(config)
        guard.keep()
    checkpoint = path / "checkpoint.ckpt"
    source = (f"from {f.checkpoint}" + (" (policy only)" if f.init == "actor" else "")) if f.checkpoint else "from scratch"
    extras = "".join(
        text for on, text in (
            (f.freeze_policy_steps > 0, f", policy frozen for {f.freeze_policy_steps} steps"),
            (f.jsrl, ", JSRL roll-ins"),
            (f.offline_mixing_ratio > 0, f", {f.offline_mixing_ratio:.0%} offline data per batch"),
        ) if on
    )
    print(
        f"[wsrl finetune] {f.algorithm} on {runner.task.name} {source}; warmup {f.warmup_steps} steps "
        f"({f.warmup}), UTD {f.utd_ratio}{extras}; {describe_device()}, {describe_matmul_dtype(config.agent.critic_matmul_dtype)}; "
        f"{f.num_steps} env steps -> {path}", flush=True
    )
    diagnostics = make_diagnostics(config, runner.task, runner.agent) if f.diagnostics_every else None
    history: list[tuple[int, dict]] = []  # (env step, eval row) of every evaluation

    def run_eval(step: int) -> dict:
        stats = runner.evaluate()
        logger.log("eval", step, {**stats, "updates": runner.updates})
        history.append((step, stats))
        if config.logging.eval_videos:
            record_eval_video(runner, path / "videos" / f"step{step:08d}", config.seed + 20_000 + step)
        return stats

    with RunLogger(path, config.logging, to_dict(config), path.name) as logger:
        last_eval = run_eval(0)
        if diagnostics is not None:
            logger.log("diagnostics", 0, diagnostics.compute(runner.agent, runner.replay))
        bar = progress_bar(f.num_steps, f"finetune {f.algorithm}", config.logging.progress)
        last_return, started = float("nan"), time.perf_counter()
        bar.write(f"[wsrl finetune] {f.num_steps} env steps ({runner.warmup_env_steps} warmup); the time left is printed after "
                  f"{ETA_STEPS} steps with updates")
        online_started = None
        while runner.env_steps < f.num_steps:
            episode, info = runner.step()
            step = runner.env_steps
            bar.update(1)
            if episode is not None:
                last_return = episode["return"]
                logger.log("episode", step, {**episode, "warmup": float(step <= runner.warmup_env_steps)})
            if info is not None and f.log_every and step % f.log_every == 0:
                elapsed = time.perf_counter() - started
                logger.log("train", step, {**info, "env_steps": step, "updates": runner.updates, "env_steps_per_s": step / elapsed})
            if f.eval_every and step % f.eval_every == 0:
                last_eval = run_eval(step)
            if step == runner.warmup_env_steps + ETA_SKIP:  # past the first (compiling) updates
                online_started = time.perf_counter()
            if online_started is not None and step == runner.warmup_env_steps + ETA_SKIP + ETA_STEPS and step < f.num_steps:
                rate = ETA_STEPS / (time.perf_counter() - online_started)
                bar.write(f"[wsrl finetune] {rate:.1f} env steps/s with updates: about {(f.num_steps - step) / rate / 60:.1f} min left")
            if diagnostics is not None and step % f.diagnostics_every == 0:
                logger.log("diagnostics", step, diagnostics.compute(runner.agent, runner.replay))
            if f.checkpoint_every and step % f.checkpoint_every == 0:
                save_checkpoint(checkpoint, runner.agent, config, runner.spec, runner.counters())
            if step % 100 == 0 or step == f.num_steps:
                bar.set_postfix(
                    phase="warmup" if runner.in_warmup else "online",
                    ret=f"{last_return:.1f}",
                    eval_success=f"{last_eval['success_rate']:.2f}",
                    refresh=False,
                )
        if not (f.eval_every and f.num_steps % f.eval_every == 0):
            last_eval = run_eval(f.num_steps)
        bar.set_postfix(phase="online", ret=f"{last_return:.1f}", eval_success=f"{last_eval['success_rate']:.2f}", refresh=False)
        bar.close()  # its last line shows the final values
        save_checkpoint(checkpoint, runner.agent, config, runner.spec, runner.counters())
    wall = time.perf_counter() - started
    summary = run_summary("finetune", config, history, runner.warmup_env_steps, runner.env_steps, runner.updates, wall)
    write_summary(path, summary)
    print(f"[wsrl finetune] done: checkpoint {checkpoint}", flush=True)
    print_result(summary, path, "[wsrl finetune]")
    return path




def record_eval_video(runner: Finetuner, path: Path, seed: int) -> None:
    """One deterministic evaluation episode rendered to `path` (+ the format's suffix)."""
    params = runner.agent.policy_params()
    try:
        record_episode_video(lambda o: runner.policy(params, o, None, deterministic=True), runner.task, path, seed)
    except RenderUnavailable as e:
        from tqdm.auto import tqdm

        tqdm.write(f"[wsrl finetune] no evaluation video: {e}")
