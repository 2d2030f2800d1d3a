"""`wsrl pretrain`: offline pre-training (CalQL by default, CQL, IQL) on a dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from envs.tasks import get_task
from learner.acting import Policy
from learner.agents import make_agent
from learner.checkpoint import save_checkpoint
from learner.config import Config, pretraining_agent_config, to_dict
from learner.evaluation import evaluate
from learner.networks import describe_matmul_dtype
from learner.run_logger import RunLogger, progress_bar, write_line
from learner.runs import describe_device, offline_replay, prepare_run_dir, resolve_run_dir
from learner.startup import RunDirGuard

# Updates over which the time left is measured (then printed once).
ETA_STEPS = 100


def pretrain(config: Config, run_dir: Optional[str] = None) -> Path:
    """Trains `config.pretrain.algorithm` offline; returns the final checkpoint's path
    (`<run_dir>/checkpoint.ckpt`)."""
    p = config.pretrain
    task = get_task(config.task)
    spec = task.spec()
    with RunDirGuard(resolve_run_dir(config, "pretrain", run_dir)) as guard:  # a failed start leaves no trace
        path = prepare_run_dir(config, "pretrain", run_dir)
        data = offline_replay(config, task)
        guard.keep()
    agent = make_agent(p.algorithm, pretraining_agent_config(config.agent), spec["observation_dim"], spec["action_dim"], config.seed)
    policy = Policy(config.agent, spec["action_dim"])
    # pretrain.eval_every = 0 turns evaluation off altogether: no env is even built (a task
    # whose env is a real robot pre-trains from its demonstrations without touching it).
    eval_env = task.make_env(config.seed + 10_000, training=False) if p.eval_every else None
    rng = np.random.default_rng(config.seed)
    checkpoint = path / "checkpoint.ckpt"

    def run_eval(step: int) -> dict:
        params = agent.actor.params
        stats = evaluate(lambda o: policy(params, o, None, deterministic=True), eval_env, p.eval_episodes, config.seed + 10_000, task.normalizer)
        logger.log("eval", step, stats)
        return stats

    with RunLogger(path, config.logging, to_dict(config), path.name) as logger:
        print(
            f"[wsrl pretrain] {p.algorithm} on {task.name}: {len(data)} transitions, {p.num_steps} steps; "
            f"{describe_device()}, {describe_matmul_dtype(config.agent.critic_matmul_dtype)} -> {path}", flush=True
        )
        bar = progress_bar(p.num_steps, f"pretrain {p.algorithm}", config.logging.progress)
        last_eval: dict = {}
        postfix: dict = {}
        started = None
        for step in range(1, p.num_steps + 1):
            bar.update(1)
            agent, info = agent.update(data.sample(rng, 1, config.agent.batch_size))
            if step == 1:  # the rate is measured after the first (compiling) update
                jax.block_until_ready(agent)
                started = time.perf_counter()
            elif step == 1 + ETA_STEPS and step < p.num_steps:
                jax.block_until_ready(agent)
                rate = ETA_STEPS / (time.perf_counter() - started)
                write_line(bar, f"[wsrl pretrain] {rate:.1f} updates/s: about {(p.num_steps - step) / rate / 60:.1f} min left"
                                + (" plus the evaluations" if p.eval_every else ""))
            if p.log_every and step % p.log_every == 0:
                logger.log("train", step, info)
                postfix["critic_loss"] = f"{float(info['critic_loss']):.3g}"
            if p.eval_every and step % p.eval_every == 0:
                last_eval = run_eval(step)
                postfix["eval_success"] = f"{last_eval['success_rate']:.2f}"
            if postfix and (step % max(1, p.log_every or 100) == 0 or step % max(1, p.eval_every or 100) == 0):
                bar.set_postfix(**postfix, refresh=False)
            if p.checkpoint_every and step % p.checkpoint_every == 0:
                save_checkpoint(checkpoint, agent, config, spec, {"pretrain_steps": step})
        jax.block_until_ready(agent)
        final = run_eval(p.num_steps) if p.eval_every and p.num_steps % p.eval_every else last_eval
        if final:
            postfix["eval_success"] = f"{final['success_rate']:.2f}"
        bar.set_postfix(**postfix, refresh=False)
        bar.close()  # its last line shows the final values
        save_checkpoint(checkpoint, agent, config, spec, {"pretrain_steps": p.num_steps})
    result = f"eval return {final['return']:.3f}, success {final['success_rate']:.2f}" if final else "not evaluated (pretrain.eval_every=0)"
    print(f"[wsrl pretrain] done: {result}; checkpoint {checkpoint}", flush=True)
    return checkpoint
