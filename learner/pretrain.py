"""`wsrl pretrain`: offline pre-training (CalQL by default, CQL, IQL) on a dataset.

The host stays out of the inner loop: the offline dataset is put on the device once, and each
dispatch runs `K` updates as one compiled `lax.scan` whose steps sample their own batch on the
device (`learner.pretrain.make_train_chunk`). The host only logs, evaluates and saves, and
always on chunk boundaries: K is chosen so that every `log_every`, `eval_every` and
`checkpoint_every` step ends a chunk (`steps_per_dispatch`).
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from actor.evaluation import evaluate
from actor.policy import Policy
from envs.tasks import get_task
from learner.agents import make_agent, observation_spec_of
from envs.atomic_files import atomic_write_bytes
from learner.checkpoint import read_checkpoint, restore_agent, save_checkpoint
from learner.config import Config, dump_yaml, pretraining_agent_config, to_dict
from learner.diagnostics import held_out_sample
from learner.networks import describe_matmul_dtype
from learner.readiness import SETTLED, ReadinessThresholds, ReadinessTracker
from learner.readiness import describe as describe_readiness
from learner.replay_buffer import ReplayBuffer, take_rows
from learner.run_logger import RunLogger, progress_bar, write_line
from learner.runs import (
    describe_device,
    offline_replay,
    prepare_run_dir,
    resolve_run_dir,
)
from learner.startup import RunDirGuard
from learner.summary import evaluation_score

# Updates over which the time left is measured (then printed once).
ETA_STEPS = 100

# The longest chunk of updates one dispatch runs. Longer chunks save nothing measurable (the
# per-dispatch cost is paid once per chunk) and make the progress bar coarse.
MAX_STEPS_PER_DISPATCH = 1_000
# ... and the longest time one should take, as measured before training (`time_per_step`): a
# Ctrl-C is acted on between dispatches, so this is how long a stop can wait (a 1,000-step
# chunk of kitchen's 512-unit CalQL takes ~13 min on 2 CPU cores).
TARGET_DISPATCH_S = 2.0
PROBE_STEPS = 3
# Dispatches of at most this many steps are not measured first (the probe compiles a
# single-step update of its own, seconds of work that short chunks do not need).
PROBE_MIN_STEPS = 16
CAMERA_READINESS_STATES = 256


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


@functools.lru_cache(maxsize=16)
def make_train_chunk(batch_size: int, num_steps: int) -> Callable:
    """A compiled `(agent, dataset, key) -> (agent, key, info)` that runs `num_steps` updates,
    each on a batch of `batch_size` transitions drawn uniformly (with replacement, as the host
    sampler did) on the device; `info` is the last update's metrics. One function per
    (batch_size, num_steps), so a process that pre-trains again (a resume, the time probe,
    tests) reuses its compilation."""

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


def time_per_step(agent, dataset: dict, key, batch_size: int) -> float:
    """Seconds one pre-training update takes here, measured on PROBE_STEPS single-update
    dispatches after one that compiles; the agent and key are not changed (the probe's
    updates are thrown away, so the run's steps do not depend on the machine's speed)."""
    step = make_train_chunk(batch_size, 1)
    probe, k, _ = step(agent, dataset, key)
    jax.block_until_ready(probe)
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        probe, k, _ = step(probe, dataset, k)
    jax.block_until_ready(probe)
    return (time.perf_counter() - started) / PROBE_STEPS


def pretrain(config: Config, run_dir: Optional[str] = None, stop: Any = None, resume: bool = False,
             resume_command: Optional[str] = None) -> Path:
    """Trains `config.pretrain.algorithm` offline; returns the final checkpoint's path
    (`<run_dir>/checkpoint.ckpt`).

    `stop`: an object whose `requested` event (e.g. `actor.interrupts.GracefulStop`) asks for a
    clean stop; it is looked at after every dispatch, and a stopped pre-training saves its
    checkpoint (with the state to continue from), its logs and `summary.json` ("interrupted":
    true) and returns. `resume`: continue the pre-training saved in `run_dir` (stopped, or
    finished with a smaller `pretrain.num_steps`) from its checkpoint: the agent with its
    optimizer states and RNG, the batch-sampling key and the readiness history, so the steps
    that follow are those an uninterrupted run would have taken. `resume_command`: what a stop
    tells the user to run to continue (default `wsrl pretrain --resume RUN_DIR`)."""
    p = config.pretrain
    task = get_task(config.task)
    spec = task.spec()
    observation_spec = observation_spec_of(spec)
    if resume:
        path = Path(run_dir)
        saved = read_checkpoint(path / "checkpoint.ckpt")
        start = int(saved.counters.get("pretrain_steps", 0))
        if "sample_key" not in saved.counters:
            raise ValueError(f"--resume {str(path)!r}: its checkpoint holds no state to continue from (written before pre-training could resume)")
        atomic_write_bytes(path / "config.yaml", dump_yaml(config).encode())  # the budget may have grown
        data = offline_replay(config, task)
        agent = restore_agent(saved, p.algorithm, pretraining_agent_config(config.agent), seed=config.seed)
        agent = agent.replace(rng=jnp.asarray(saved.state["rng"]))
        key = jax.random.wrap_key_data(jnp.asarray(saved.counters["sample_key"], jnp.uint32))
    else:
        with RunDirGuard(resolve_run_dir(config, "pretrain", run_dir)) as guard:  # a failed start leaves no trace
            path = prepare_run_dir(config, "pretrain", run_dir)
            data = offline_replay(config, task)
            guard.keep()
        start = 0
        agent = make_agent(p.algorithm, pretraining_agent_config(config.agent), observation_spec, spec["action_dim"], config.seed)
        # Batches are drawn with JAX's RNG on the device (the host loop used numpy's), so a seed
        # gives other batches than before this loop existed; it still fixes them.
        key = jax.random.fold_in(jax.random.key(config.seed), 0x5EED)
    policy = Policy(config.agent, spec["action_dim"], observation_spec)
    # pretrain.eval_every = 0 turns evaluation off altogether: no env is even built (a task
    # whose env is a real robot pre-trains from its demonstrations without touching it).
    eval_env = task.make_env(config.seed + 10_000, training=False) if p.eval_every else None
    checkpoint = path / "checkpoint.ckpt"
    # Camera agents run one update per dispatch: XLA:CPU computes convolution gradients inside
    # a loop body ~18x slower than outside one (learner/agents/sac.py, `_critic_updates`),
    # and an update from frames costs far more than a dispatch.
    limit = 1 if getattr(agent, "encoder", None) is not None else MAX_STEPS_PER_DISPATCH
    dataset = device_dataset(data)
    # (a resumed run's chunks also end on the step it resumes from)
    periods = (p.log_every, p.eval_every, p.checkpoint_every, start)
    if steps_per_dispatch(p.num_steps, periods, limit) > PROBE_MIN_STEPS:  # how many steps fit in TARGET_DISPATCH_S
        limit = max(1, min(limit, int(TARGET_DISPATCH_S / time_per_step(agent, dataset, key, config.agent.batch_size))))
    chunk = steps_per_dispatch(p.num_steps, periods, limit)
    train_chunk = make_train_chunk(config.agent.batch_size, chunk)

    thresholds = ReadinessThresholds.from_config(p)
    # The sample the forgetting diagnostics use (fewer states with cameras: each is a frame
    # through the encoder at every measurement).
    states = config.finetune.diagnostics_states if observation_spec.is_flat else min(config.finetune.diagnostics_states, CAMERA_READINESS_STATES)
    readiness = ReadinessTracker.for_agent(agent, held_out_sample(data, states, config.seed), thresholds, config.seed)
    if resume:
        readiness.restore(path, start, saved.counters.get("readiness_key"))

    def save(step: int, verdict: dict, interrupted: bool = False) -> None:
        counters = {"pretrain_steps": step, "sample_key": np.asarray(jax.random.key_data(key)).tolist(),
                    "readiness_key": np.asarray(readiness.rng).tolist(), "interrupted": interrupted}
        save_checkpoint(checkpoint, agent, config, spec, counters, verdict)

    def run_eval(step: int) -> dict:
        params = agent.policy_params()
        stats = evaluate(lambda o: policy(params, o, None, deterministic=True), eval_env, p.eval_episodes, config.seed + 10_000, task.normalizer)
        logger.log("eval", step, stats)
        readiness.record_evaluation(step, evaluation_score(stats))
        return stats

    with RunLogger(path, config.logging, to_dict(config), path.name) as logger:
        if resume:
            logger.resume_at(start)  # rows logged after the checkpoint (a kill) are replaced, not duplicated
        print(
            f"[wsrl pretrain] {p.algorithm} on {task.name}: {len(data)} transitions, {p.num_steps} steps ({chunk} per dispatch)"
            + (f", resumed at step {start}" if resume else "")
            + f"; {describe_device()}, {describe_matmul_dtype(config.agent.critic_matmul_dtype)} -> {path}", flush=True
        )
        if p.stop_when_settled:
            print(f"[wsrl pretrain] stops when settled (readiness measured every {p.log_every} steps), at {p.num_steps} steps at the latest",
                  flush=True)
        bar = progress_bar(p.num_steps, f"pretrain {p.algorithm}", config.logging.progress, initial=start)
        last_eval: dict = {}
        last_eval_step = 0
        postfix: dict = {}
        verdict: dict = readiness.assess()
        started, timed_from = None, 0
        step, interrupted = start, False
        for step in range(start + chunk, p.num_steps + 1, chunk):
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
                row = readiness.measure(agent, step, info)
                logger.log("readiness", step, {k: v for k, v in row.items() if k != "step"})
                verdict = readiness.assess()
                postfix["critic_loss"] = f"{float(info['critic_loss']):.3g}"
            if p.eval_every and step % p.eval_every == 0:
                last_eval, last_eval_step = run_eval(step), step
                postfix["eval_success"] = f"{last_eval['success_rate']:.2f}"
                verdict = readiness.assess()
                write_line(bar, f"[wsrl pretrain] step {step}: readiness {describe_readiness(verdict)}")
            if postfix:
                bar.set_postfix(**postfix, refresh=False)
            if p.checkpoint_every and step % p.checkpoint_every == 0:
                save(step, verdict)
            if stop is not None and stop.requested.is_set() and step < p.num_steps:
                interrupted = True
                break
            if p.stop_when_settled and verdict["verdict"] == SETTLED and step < p.num_steps:
                write_line(bar, f"[wsrl pretrain] settled at step {step} of {p.num_steps}: stopping (pretrain.stop_when_settled)")
                break
        jax.block_until_ready(agent)
        # A stop is prompt: no last evaluation (the resumed run makes it).
        final = run_eval(step) if p.eval_every and last_eval_step != step and step > start and not interrupted else last_eval
        if final:
            postfix["eval_success"] = f"{final['success_rate']:.2f}"
        bar.set_postfix(**postfix, refresh=False)
        bar.close()  # its last line shows the final values
        elapsed = time.perf_counter() - started if started is not None else 0.0
        verdict = readiness.assess()
        save(step, verdict, interrupted)
    write_pretrain_summary(path, config, step, final, verdict, elapsed, interrupted)
    if interrupted:
        print(f"[wsrl pretrain] stopped at step {step} of {p.num_steps}; checkpoint {checkpoint} (readiness: {describe_readiness(verdict)})",
              flush=True)
        print(f"[wsrl pretrain] continue with: {resume_command or f'wsrl pretrain --resume {path}'}", flush=True)
        return checkpoint
    result = f"eval return {final['return']:.3f}, success {final['success_rate']:.2f}" if final else "not evaluated (pretrain.eval_every=0)"
    rate = f" ({(step - start - chunk) / elapsed:.1f} steps/s after compiling)" if elapsed > 0 and step > start + chunk else ""
    print(f"[wsrl pretrain] done: {step} steps{rate}; {result}; checkpoint {checkpoint}", flush=True)
    print(f"[wsrl pretrain] readiness: {describe_readiness(verdict)}", flush=True)
    return checkpoint


def write_pretrain_summary(path: Path, config: Config, steps: int, final_eval: dict, readiness: dict, wall_time_s: float,
                           interrupted: bool = False) -> None:
    """`summary.json` of a pre-training run: steps done, the final evaluation and the
    readiness verdict with its numbers."""
    summary = {
        "schema": "wsrl-pretrain-summary-v1",
        "task": config.task,
        "variant": config.variant,
        "algorithm": config.pretrain.algorithm,
        "steps": steps,
        "num_steps": config.pretrain.num_steps,
        "final_eval": final_eval or None,
        "final_score": evaluation_score(final_eval) if final_eval else None,
        "readiness": readiness,
        "wall_time_s": wall_time_s,
        "interrupted": interrupted,
    }
    atomic_write_bytes(path / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
