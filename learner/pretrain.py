"""`wsrl pretrain`: offline pre-training (CalQL by default, CQL, IQL) on a dataset."""

from __future__ import annotations

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
from learner.run_logger import RunLogger, progress_bar
from learner.runs import offline_replay, prepare_run_dir


def pretrain(config: Config, run_dir: Optional[str] = None) -> Path:
    """Trains `config.pretrain.algorithm` offline; returns the final checkpoint's path
    (`<run_dir>/checkpoint.ckpt`)."""
    p = config.pretrain
    task = get_task(config.task)
    spec = task.spec()
    path = prepare_run_dir(config, "pretrain", run_dir)
    data = offline_replay(config, task)
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
            f"[wsrl pretrain] {p.algorithm} on {task.name}: {len(data)} transitions, {p.num_steps} steps, "
            f"{describe_matmul_dtype(config.agent.critic_matmul_dtype)} -> {path}"
        )
        bar = progress_bar(p.num_steps, f"pretrain {p.algorithm}", config.logging.progress)
        last_eval: dict = {}
        for step in range(1, p.num_steps + 1):
            bar.update(1)
            agent, info = agent.update(data.sample(rng, 1, config.agent.batch_size))
            if p.log_every and step % p.log_every == 0:
                logger.log("train", step, info)
                bar.set_postfix(critic_loss=f"{float(info['critic_loss']):.3g}", eval_success=last_eval.get("success_rate", "-"), refresh=False)
            if p.eval_every and step % p.eval_every == 0:
                last_eval = run_eval(step)
            if p.checkpoint_every and step % p.checkpoint_every == 0:
                save_checkpoint(checkpoint, agent, config, spec, {"pretrain_steps": step})
        bar.close()
        jax.block_until_ready(agent)
        final = run_eval(p.num_steps) if p.eval_every and p.num_steps % p.eval_every else last_eval
        save_checkpoint(checkpoint, agent, config, spec, {"pretrain_steps": p.num_steps})
    result = f"eval return {final['return']:.3f}, success {final['success_rate']:.2f}" if final else "not evaluated (pretrain.eval_every=0)"
    print(f"[wsrl pretrain] done: {result}; checkpoint {checkpoint}")
    return checkpoint
