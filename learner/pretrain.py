"""`wsrl pretrain`: offline pre-training (CalQL by default, CQL, IQL) on a dataset.

The host stays out of the inner loop: the offline dataset is put on the device once, and each
dispatch runs `K` updates as one compiled `lax.scan` whose steps sample their own batch on the
device (`learner.pretrain.make_train_chunk`). The host only logs, evaluates and saves, and
always on chunk boundaries: K is chosen so that every `log_every`, `eval_every` and
`checkpoint_every` step ends a chunk (`steps_per_dispatch`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import jax

from actor.evaluation import evaluate
from actor.policy import Policy
from envs.tasks import get_task
from learner.agents import make_agent, observation_spec_of
from learner.checkpoint import save_checkpoint
from learner.config import Config, pretraining_agent_config, to_dict
from learner.networks import describe_matmul_dtype
from learner.replay_buffer import ReplayBuffer, take_rows
from learner.run_logger import RunLogger, progress_bar, write_line
from learner.runs import (
    describe_device,
    offline_replay,
    prepare_run_dir,
    resolve_run_dir,
)
from learner.startup import RunDirGuard

# Updates over which the time left is measured (then printed once).
ETA_STEPS = 100

# The longest chunk of updates one dispatch runs. Longer chunks save nothing measurable (the
# per-dispatch cost is paid once per chunk) and make the progress bar coarse.
MAX_STEPS_PER_DISPATCH = 1_000


def steps_per_dispatch(num_steps: int, periods: tuple[int, ...], limit: int = MAX_STEPS_PER_DISPATCH) -> int:
    """The chunk length K: the largest divisor of gcd(num_steps, each non-zero period) that is
    at most `limit`, so every logging/evaluation/checkpoint step and the last step end a chunk
    and every chunk has the same length (one compilation)."""
    if num_steps < 1:
        raise ValueError(f"pretrain.num_steps: got {num_steps}, expected an integer >= 1")
    g = num_steps
    for period in periods:
        if period:
            g = math.gcd(g, period)
    return max(d for d in range(1, min(g, limit) + 1) if g % d == 0)


def device_dataset(data: ReplayBuffer) -> dict:
    """The buffer's filled part on the device (one copy, made once), as the
    `ReplayBuffer.storage` pytree: camera frames go once each, as uint8, and `take_rows`
    gathers batches from it inside the compiled loop."""
    n = len(data)
    if n == 0:
        raise ValueError("pretrain: the offline dataset is empty")
    return jax.device_put(data.storage(n))


def make_train_chunk(batch_size: int, num_steps: int) -> Callable:
    """A compiled `(agent, dataset, key) -> (agent, key, info)` that runs `num_steps` updates,
    each on a batch of `batch_size` transitions drawn uniformly (with replacement, as the host
    sampler did) on the device; `info` is the last update's metrics."""

    @jax.jit
    def train_chunk(agent, dataset, key):
        size = dataset["data"]["rewards"].shape[0]

        def step(carry, _):
            agent, key = carry
            key, k_sample = jax.random.split(key)
            idx = jax.random.randint(k_sample, (1, batch_size), 0, size)  # M = 1 update per step
            batch = take_rows(dataset, idx)  # camera parts: frames gathered through their references
            agent, info = agent.update(batch)
            return (agent, key), info

        if num_steps == 1:  # no loop at all (camera agents: see `pretrain`)
            (agent, key), info = step((agent, key), None)
            return agent, key, info
        (agent, key), infos = jax.lax.scan(step, (agent, key), None, length=num_steps)
        return agent, key, jax.tree_util.tree_map(lambda x: x[-1], infos)

    return train_chunk


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
    observation_spec = observation_spec_of(spec)
    agent = make_agent(p.algorithm, pretraining_agent_config(config.agent), observation_spec, spec["action_dim"], config.seed)
    policy = Policy(config.agent, spec["action_dim"], observation_spec)
    # pretrain.eval_every = 0 turns evaluation off altogether: no env is even built (a task
    # whose env is a real robot pre-trains from its demonstrations without touching it).
    eval_env = task.make_env(config.seed + 10_000, training=False) if p.eval_every else None
    checkpoint = path / "checkpoint.ckpt"
    # Camera agents run one update per dispatch: XLA:CPU computes convolution gradients inside
    # a loop body ~18x slower than outside one (learner/agents/sac.py, `_critic_updates`),
    # and an update from frames costs far more than a dispatch.
    limit = 1 if getattr(agent, "encoder", None) is not None else MAX_STEPS_PER_DISPATCH
    chunk = steps_per_dispatch(p.num_steps, (p.log_every, p.eval_every, p.checkpoint_every), limit)
    train_chunk = make_train_chunk(config.agent.batch_size, chunk)
    dataset = device_dataset(data)
    # Batches are drawn with JAX's RNG on the device (the host loop used numpy's), so a seed
    # gives other batches than before this loop existed; it still fixes them.
    key = jax.random.fold_in(jax.random.key(config.seed), 0x5EED)

    def run_eval(step: int) -> dict:
        params = agent.policy_params()
        stats = evaluate(lambda o: policy(params, o, None, deterministic=True), eval_env, p.eval_episodes, config.seed + 10_000, task.normalizer)
        logger.log("eval", step, stats)
        return stats

    with RunLogger(path, config.logging, to_dict(config), path.name) as logger:
        print(
            f"[wsrl pretrain] {p.algorithm} on {task.name}: {len(data)} transitions, {p.num_steps} steps ({chunk} per dispatch); "
            f"{describe_device()}, {describe_matmul_dtype(config.agent.critic_matmul_dtype)} -> {path}", flush=True
        )
        bar = progress_bar(p.num_steps, f"pretrain {p.algorithm}", config.logging.progress)
        last_eval: dict = {}
        postfix: dict = {}
        started, timed_from = None, 0
        for step in range(chunk, p.num_steps + 1, chunk):
            agent, key, info = train_chunk(agent, dataset, key)
            bar.update(chunk)
            if started is None:  # the rate is measured after the first (compiling) dispatch
                jax.block_until_ready(agent)
                started, timed_from = time.perf_counter(), step
            elif timed_from and step - timed_from >= ETA_STEPS and step < p.num_steps:
                jax.block_until_ready(agent)
                rate = (step - timed_from) / (time.perf_counter() - started)
                write_line(bar, f"[wsrl pretrain] {rate:.1f} updates/s: about {(p.num_steps - step) / rate / 60:.1f} min left"
                                + (" plus the evaluations" if p.eval_every else ""))
                timed_from = 0  # said once
            if p.log_every and step % p.log_every == 0:
                logger.log("train", step, info)
                postfix["critic_loss"] = f"{float(info['critic_loss']):.3g}"
            if p.eval_every and step % p.eval_every == 0:
                last_eval = run_eval(step)
                postfix["eval_success"] = f"{last_eval['success_rate']:.2f}"
            if postfix:
                bar.set_postfix(**postfix, refresh=False)
            if p.checkpoint_every and step % p.checkpoint_every == 0:
                save_checkpoint(checkpoint, agent, config, spec, {"pretrain_steps": step})
        jax.block_until_ready(agent)
        final = run_eval(p.num_steps) if p.eval_every and p.num_steps % p.eval_every else last_eval
        if final:
            postfix["eval_success"] = f"{final['success_rate']:.2f}"
        bar.set_postfix(**postfix, refresh=False)
        bar.close()  # its last line shows the final values
        elapsed = time.perf_counter() - started if started is not None else 0.0
        save_checkpoint(checkpoint, agent, config, spec, {"pretrain_steps": p.num_steps})
    result = f"eval return {final['return']:.3f}, success {final['success_rate']:.2f}" if final else "not evaluated (pretrain.eval_every=0)"
    rate = f" ({(p.num_steps - chunk) / elapsed:.1f} steps/s after compiling)" if elapsed > 0 and p.num_steps > chunk else ""
    print(f"[wsrl pretrain] done: {p.num_steps} steps{rate}; {result}; checkpoint {checkpoint}", flush=True)
    return checkpoint
