"""Learner throughput on this machine's CPU: the fused UTD-4 SAC update and its critic update.

For each network shape it prints

* ms per environment step: one call of the jitted `SACAgent.update` on a batch shaped
  (4, 256, ...) -- four critic updates, each followed by a soft target update, then one actor
  and temperature update on the 1024 transitions (what the learner runs per environment step
  at UTD 4);
* ms per critic update and critic updates/s: `SACAgent.update_critic` alone on (256, ...);
* the FLOPs of one critic update, counted analytically (matmuls only: forward + backward of
  the 10-critic ensemble on 256 samples, the sub-sampled target critics on the next
  observations and the policy forward that samples the next actions), the GFLOP/s that
  achieves and its fraction of this same process's fp32 matmul throughput (jitted
  1024x1024 @ 1024x1024, median; the better of a measurement before and one after the
  shapes); the same for the whole environment step (actor update included);
* page faults per environment step and XLA's scratch ("temp") memory of the compiled update.

Timings are medians over `--repeats` calls after warm-up, each call ending in
`block_until_ready`; the agent returned by a call is fed into the next, as in training.
Other processes on the same cores inflate every number (the load average is printed), so
compare variants within one run: `--variants a,b,...` runs them one after another, each in a
fresh process (XLA flags and malloc settings only take effect at process start). A variant
may combine several with `+` (e.g. `glibc-tunables+xla-no-ynn`). `--code-root` benchmarks
another checkout of the learner (e.g. an older commit in a `git worktree`) with this script;
`variant@path` does so for one variant, so that old and new code alternate in one run.
On a noisy host, `--interleaved` compares code variants (e.g. `fp32,bf16`) inside one
process instead, one call of each in turns, and prints the ratios to the first.

    python benchmarks/learner_throughput.py                 # all shapes, default code path
    python benchmarks/learner_throughput.py --quick         # locomotion only, fewer repeats
    python benchmarks/learner_throughput.py --variants default,glibc-tunables,vmap
    python benchmarks/learner_throughput.py --rounds 3 --variants default@/path/to/old/checkout,default
    python benchmarks/learner_throughput.py --shapes locomotion --interleaved --variants fp32,bf16
    python benchmarks/learner_throughput.py --list-variants
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Network shapes: obs dim, action dim and AgentConfig overrides. Everything not listed keeps
# the AgentConfig default: 10 critics, 2 sub-sampled target critics, batch 256, LayerNorm.
# The overrides follow configs/<family>.yaml for the fine-tuning (wsrl) agent.
SHAPES = {
    "locomotion": dict(obs=17, act=6, agent=dict(critic_hidden_dims=(256, 256), actor_hidden_dims=(256, 256))),
    # antmaze fine-tunes with the max over 10 sampled next actions in the TD target.
    "antmaze": dict(
        obs=29,
        act=8,
        agent=dict(
            critic_hidden_dims=(256, 256, 256, 256),
            actor_hidden_dims=(256, 256),
            max_target_backup="sampled_actions",
            max_target_backup_num_actions=10,
        ),
    ),
    # configs/adroit.yaml: actor 2x512 with a state-independent ("uniform") log-std.
    "adroit": dict(
        obs=39,
        act=28,
        agent=dict(critic_hidden_dims=(512, 512, 512), actor_hidden_dims=(512, 512), std_parameterization="uniform"),
    ),
}

GLIBC_TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"

# name -> (description, extra environment, in-process settings).
VARIANTS = {
    "default": ("the code as it is, default environment", {}, ()),
    "vmap": ("critic ensemble applied through flax nn.vmap(Critic) (CriticEnsemble.implementation)", {}, ("vmap",)),
    "glibc-tunables": (f"GLIBC_TUNABLES={GLIBC_TUNABLES}", {"GLIBC_TUNABLES": GLIBC_TUNABLES}, ()),
    "no-malloc": (
        "WSRL_KEEP_FREED_MEMORY=0: glibc's malloc as it comes (the training commands otherwise call "
        "learner.runs.keep_freed_memory() at start, and so does this script)",
        {"WSRL_KEEP_FREED_MEMORY": "0"},
        (),
    ),
    "xla-no-ynn": (
        "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= (no YNNPACK fusions)",
        {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="},
        (),
    ),
    "ynn-no-reduce": (
        "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce (YNNPACK for dots and elementwise only)",
        {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-reduce"},
        (),
    ),
    "ynn-dot-only": (
        "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot (YNNPACK for dots only)",
        {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"},
        (),
    ),
    "onednn-dot": (
        "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_experimental_onednn_fusion_type=dot",
        {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_experimental_onednn_fusion_type=dot"},
        (),
    ),
    "concurrency-scheduler": (
        "XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true",
        {"XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"},
        (),
    ),
    "xla-no-xnn": ("XLA_FLAGS=--xla_cpu_use_xnnpack=false", {"XLA_FLAGS": "--xla_cpu_use_xnnpack=false"}, ()),
    "single-thread": (
        "XLA_FLAGS=--xla_cpu_multi_thread_eigen=false, taskset to one core",
        {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"},
        ("one-core",),
    ),
    "donate": ("update re-jitted with donate_argnums=0 (the old agent's buffers are reused)", {}, ("donate",)),
    "unrolled": ("the M critic updates as an unrolled Python loop instead of SACAgent.update's lax.scan", {}, ("unrolled",)),
    "precision-highest": ("jax_default_matmul_precision=highest", {}, ("precision-highest",)),
    "bf16": (
        "agent.critic_matmul_dtype=bfloat16 (critic matmuls on bf16 inputs, float32 accumulation)",
        {},
        ("bf16",),
    ),
    "fp32": ("agent.critic_matmul_dtype=float32 (what 'auto' gives on CPUs without AVX512-BF16)", {}, ("fp32",)),
    # Initializations (values only, same shapes): does the default's small last-layer gain cost time?
    "no-final-scale": ("agent.kernel_scale_final=null (gain sqrt(2) on the last hidden layer too)", {}, ("no-final-scale",)),
    "xavier": ("agent.kernel_init=xavier_uniform, agent.kernel_scale_final=null (the initialization before the fidelity changes, "
               "but for the old 1e-2 on the policy heads)", {}, ("xavier",)),
}

# Variants that change only what is compiled, so `--interleaved` can time them in one process.
INTERLEAVABLE_SETTINGS = {"vmap", "donate", "unrolled", "bf16", "fp32", "no-final-scale", "xavier"}


def resolve_variant(name: str) -> tuple[str, dict, tuple]:
    """`a+b` -> merged (description, environment, settings) of variants a and b (a trailing
    `@path` names the checkout to run, see `--code-root`)."""
    descs, env, settings = [], {}, ()
    for part in name.split("@")[0].split("+"):
        if part not in VARIANTS:
            raise KeyError(part)
        desc, extra, sets = VARIANTS[part]
        descs.append(desc)
        for k, v in extra.items():
            env[k] = f"{env[k]} {v}" if k == "XLA_FLAGS" and k in env else v
        settings += sets
    return "; ".join(descs), env, settings


# ------------------------------------------------------------------------------------------
# FLOP counts (matmuls only; 1 multiply-add = 2 FLOPs; elementwise work not counted).


def _dense_macs(dims) -> int:
    return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def network_macs(config, obs_dim: int, act_dim: int) -> tuple[int, int, int, int]:
    """Multiply-adds per sample: (critic forward, critic input gradients of every layer but
    the first, policy forward, policy input gradients of every layer but the first)."""
    critic_dims = (obs_dim + act_dim,) + tuple(config.critic_hidden_dims) + (1,)
    heads = 2 if config.std_parameterization == "exp" else 1
    actor = tuple(config.actor_hidden_dims)
    p_fwd = _dense_macs((obs_dim,) + actor) + actor[-1] * act_dim * heads
    return _dense_macs(critic_dims), _dense_macs(critic_dims[1:]), p_fwd, p_fwd - obs_dim * actor[0]


def flop_counts(config, obs_dim: int, act_dim: int, num_updates: int = 4) -> dict:
    """Analytic FLOPs of one critic update and of one fused environment step."""
    E, B = config.critic_ensemble_size, config.batch_size
    n_next = config.max_target_backup_num_actions if config.max_target_backup == "sampled_actions" else 1
    n_target = E if config.max_target_backup == "ensemble_max" else config.critic_subsample_size
    hidden = tuple(config.critic_hidden_dims)
    c_fwd, c_dx, p_fwd, p_dx = network_macs(config, obs_dim, act_dim)

    ensemble = 2 * E * B * (2 * c_fwd + c_dx)  # forward, weight gradients, input gradients
    target = 2 * n_target * B * n_next * c_fwd
    policy_next = 2 * B * n_next * p_fwd
    critic_update = ensemble + target + policy_next

    MB = num_updates * B
    actor_update = (
        2 * MB * p_fwd  # policy forward
        + 2 * E * MB * c_fwd  # Q of every critic at the sampled actions
        # dQ/da of the min back through the minimizing critic only (the grouped backward of
        # `networks.ensemble_min_q_and_action_grad`; its padding rows are not counted); with
        # actor_q_reduction=mean, back through every critic.
        + 2 * (E if config.actor_q_reduction == "mean" else 1) * MB * (c_dx + act_dim * hidden[0])
        + 2 * MB * (p_fwd + p_dx)  # policy weight and input gradients
    )
    return {
        "critic_update": critic_update,
        "critic_update_parts": {"ensemble_fwd_bwd": ensemble, "target_critics": target, "policy_next": policy_next},
        "actor_update": actor_update,
        "env_step": num_updates * critic_update + actor_update,
    }


# ------------------------------------------------------------------------------------------
# Measurements (inside one process per variant).


def _timed(fn, repeats: int, warmup: int) -> dict:
    """Median, 10th and 90th percentile milliseconds of `fn()` (which must block), and the
    minor page faults per call."""
    import resource

    import numpy as np

    for _ in range(warmup):
        fn()
    times = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / repeats
    return {
        "median": float(np.median(times)),
        "p10": float(np.percentile(times, 10)),
        "p90": float(np.percentile(times, 90)),
        "faults": faults,
    }


def matmul_gflops(repeats: int, warmup: int = 3) -> dict:
    import jax
    import jax.numpy as jnp

    out = {}
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    cases = {
        "mm_1024": ((1024, 1024), (1024, 1024), lambda a, b: a @ b, 2 * 1024**3),
        # A critic hidden layer: 10 critics, 256 samples, 256 -> 256.
        "bmm_critic": ((10, 256, 256), (10, 256, 256), lambda a, b: jnp.einsum("ebi,eio->ebo", a, b), 2 * 10 * 256**3),
        # The same with bf16 inputs and float32 accumulation (critic_matmul_dtype=bfloat16).
        "mm_1024_bf16": (
            (1024, 1024),
            (1024, 1024),
            lambda a, b: jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32),
            2 * 1024**3,
        ),
    }
    for name, (sa, sb, f, flops) in cases.items():
        a = jax.random.normal(k1, sa, jnp.float32)
        b = jax.random.normal(k2, sb, jnp.float32)
        fn = jax.jit(f)
        ms = _timed(lambda: fn(a, b).block_until_ready(), repeats, warmup)["median"]
        out[name] = flops / (ms * 1e-3) / 1e9
    return out


def _random_batch(rng, m: int, b: int, obs_dim: int, act_dim: int) -> dict:
    import jax.numpy as jnp
    import numpy as np

    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return {
        "observations": f32(rng.normal(size=(m, b, obs_dim))),
        "actions": f32(rng.uniform(-1, 1, size=(m, b, act_dim))),
        "rewards": f32(rng.normal(size=(m, b))),
        "next_observations": f32(rng.normal(size=(m, b, obs_dim))),
        "terminals": f32(rng.uniform(size=(m, b)) < 0.01),
        "masks": f32(np.ones((m, b))),
        "mc_returns": f32(rng.normal(size=(m, b))),
    }


def _update_fn(agent, settings):
    """The compiled fused update to time (the agent's own `update` unless a variant asks)."""
    import jax

    if "donate" in settings:
        return jax.jit(type(agent).update.__wrapped__, donate_argnums=0)
    if "unrolled" in settings:

        def unrolled(agent, batch):
            infos = []
            for i in range(batch["rewards"].shape[0]):
                agent, info = agent.update_critic(jax.tree_util.tree_map(lambda x: x[i], batch))
                infos.append(info)
            flat = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
            agent, actor_info = agent.update_actor(flat)
            return agent, {**{k: sum(i[k] for i in infos) / len(infos) for k in infos[0]}, **actor_info}

        return jax.jit(unrolled)
    return type(agent).update


def _agent_config(spec: dict, settings):
    from learner.config import AgentConfig

    dtype = {"bf16": "bfloat16", "fp32": "float32"}
    chosen = [dtype[k] for k in settings if k in dtype]
    init = {}
    if "no-final-scale" in settings or "xavier" in settings:
        init["kernel_scale_final"] = None
    if "xavier" in settings:
        init["kernel_init"] = "xavier_uniform"
    return AgentConfig(**spec["agent"], **({"critic_matmul_dtype": chosen[-1]} if chosen else {}), **init)


def measure_interleaved(shape: str, variants: list, repeats: int, warmup: int, utd: int = 4) -> dict:
    """The fused update of every variant compiled in this one process, then timed call by
    call in turns (the order reversed every other turn): whatever else the machine does
    slows all variants alike, so the per-turn ratios to the first variant stay meaningful
    on a noisy host where separate processes' medians do not."""
    import jax
    import numpy as np

    from learner.agents import make_agent
    from learner.networks import CriticEnsemble

    spec = SHAPES[shape]
    entries = []
    for v in variants:
        settings = resolve_variant(v)[2]
        config = _agent_config(spec, settings)
        agent = make_agent("sac", config, spec["obs"], spec["act"], seed=0)
        batch = _random_batch(np.random.default_rng(0), utd, config.batch_size, spec["obs"], spec["act"])
        update = _update_fn(agent, settings)
        if update is type(agent).update:  # a jit of its own, so that no trace is shared
            update = jax.jit(type(agent).update.__wrapped__)
        if "donate" in settings:
            agent = jax.tree_util.tree_map(lambda x: x.copy(), agent)
        previous = CriticEnsemble.implementation
        CriticEnsemble.implementation = "vmap" if "vmap" in settings else "fused"
        try:
            compiled = update.lower(agent, batch).compile()
        finally:
            CriticEnsemble.implementation = previous
        entries.append({"variant": v, "update": compiled, "agent": agent, "batch": batch, "times": []})
    for turn in range(warmup + repeats):
        for e in entries if turn % 2 == 0 else entries[::-1]:
            t0 = time.perf_counter()
            e["agent"], info = e["update"](e["agent"], e["batch"])
            jax.block_until_ready((e["agent"], info))
            if turn >= warmup:
                e["times"].append((time.perf_counter() - t0) * 1e3)
    base = np.array(entries[0]["times"])
    return {
        "shape": shape,
        "variants": [
            {
                "variant": e["variant"],
                "median": float(np.median(e["times"])),
                "p10": float(np.percentile(e["times"], 10)),
                "ratio": float(np.median(np.array(e["times"]) / base)),
            }
            for e in entries
        ],
    }


def measure_shape(shape: str, settings, repeats: int, warmup: int, utd: int = 4) -> dict:
    import jax
    import numpy as np

    from learner.agents import make_agent

    spec = SHAPES[shape]
    config = _agent_config(spec, settings)
    agent = make_agent("sac", config, spec["obs"], spec["act"], seed=0)
    batch = _random_batch(np.random.default_rng(0), utd, config.batch_size, spec["obs"], spec["act"])
    single = jax.tree_util.tree_map(lambda x: x[0], batch)

    update = _update_fn(agent, settings)
    if "donate" in settings:
        # A fresh agent's target critic *is* its critic (the same buffers), which XLA refuses
        # to donate twice: give every leaf its own buffer first.
        agent = jax.tree_util.tree_map(lambda x: x.copy(), agent)
    try:
        memory = update.lower(agent, batch).compile().memory_analysis()
        temp_mb = memory.temp_size_in_bytes / 2**20
    except Exception:  # noqa: BLE001 -- diagnostics only
        temp_mb = float("nan")

    state = {"agent": agent}

    def step():
        state["agent"], info = update(state["agent"], batch)
        jax.block_until_ready((state["agent"], info))

    step_t = _timed(step, repeats, warmup)

    critic_fn = jax.jit(lambda agent, b: agent.update_critic(b))
    cstate = {"agent": state["agent"]}

    def critic_step():
        cstate["agent"], info = critic_fn(cstate["agent"], single)
        jax.block_until_ready((cstate["agent"], info))

    critic_t = _timed(critic_step, repeats, warmup)
    return {
        "shape": shape,
        "obs": spec["obs"],
        "act": spec["act"],
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in spec["agent"].items()},
        "env_step": step_t,
        "critic_update": critic_t,
        "temp_mb": temp_mb,
        "flops": flop_counts(config, spec["obs"], spec["act"], utd),
    }


def run_in_process(args) -> dict:
    _, _, settings = resolve_variant(args.variant.split(",")[0])
    if "one-core" in settings:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    try:  # what `wsrl finetune` / `wsrl learner` do at start (unless WSRL_KEEP_FREED_MEMORY=0)
        from learner.runs import keep_freed_memory
    except ImportError:  # an older checkout: malloc as it comes
        keep_freed_memory = None
    kept = bool(keep_freed_memory and keep_freed_memory())
    import jax

    if "precision-highest" in settings:
        jax.config.update("jax_default_matmul_precision", "highest")
    if "vmap" in settings:
        from learner.networks import CriticEnsemble

        if not hasattr(CriticEnsemble, "implementation"):
            raise RuntimeError("this checkout's CriticEnsemble has no `implementation` switch")
        CriticEnsemble.implementation = "vmap"
    try:
        from learner.networks import describe_matmul_dtype

        auto_dtype = describe_matmul_dtype("auto")
    except ImportError:  # an older checkout (float32 only, or opt-in bfloat16)
        auto_dtype = "critic matmuls float32 unless a variant says otherwise (this checkout has no 'auto')"
    load_before = os.getloadavg()
    mm_before = matmul_gflops(args.mm_repeats)
    if args.interleaved:
        variants = args.variant.split(",")
        results = [measure_interleaved(s, variants, args.repeats, args.warmup) for s in args.shapes]
    else:
        results = [measure_shape(s, settings, args.repeats, args.warmup) for s in args.shapes]
    mm_after = matmul_gflops(args.mm_repeats)
    return {
        "interleaved": bool(args.interleaved),
        "keep_freed_memory": kept,
        "auto_dtype": auto_dtype,
        "variant": args.variant,
        "code_root": args.code_root,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "cpus": len(os.sched_getaffinity(0)),
        "environment": {k: os.environ.get(k, "") for k in ("XLA_FLAGS", "GLIBC_TUNABLES")},
        "loadavg": [load_before[0], os.getloadavg()[0]],
        "matmul_gflops": {k: max(mm_before[k], mm_after[k]) for k in mm_before},
        "matmul_gflops_before_after": [mm_before, mm_after],
        "results": results,
    }


# ------------------------------------------------------------------------------------------
# Reporting.


def print_report(report: dict, file=sys.stdout) -> None:
    mm = report["matmul_gflops"]["mm_1024"]
    bmm = report["matmul_gflops"]["bmm_critic"]
    env = ", ".join(f"{k}={v!r}" for k, v in report["environment"].items() if v) or "no XLA_FLAGS/GLIBC_TUNABLES"
    if report.get("interleaved"):
        print("\n== interleaved in one process: " + report["variant"], file=file)
    else:
        print(f"\n== variant {report['variant']}: {resolve_variant(report['variant'])[0]}", file=file)
    print(
        f"   code {report['code_root']}; jax {report['jax']} on {report['cpus']} CPU cores; {env}; "
        f"load average {report['loadavg'][0]:.2f} -> {report['loadavg'][1]:.2f}; default: {report.get('auto_dtype', '?')}; "
        f"malloc: {'freed memory kept' if report.get('keep_freed_memory') else 'as it comes'}",
        file=file,
    )
    print(
        f"   fp32 matmul: {mm:.0f} GFLOP/s (1024^3); {bmm:.0f} GFLOP/s (10 x [256x256 @ 256x256], a critic layer); "
        f"bf16 inputs, fp32 accumulation: {report['matmul_gflops'].get('mm_1024_bf16', float('nan')):.0f} GFLOP/s (1024^3)",
        file=file,
    )
    if report.get("interleaved"):
        for r in report["results"]:
            for v in r["variants"]:
                print(
                    f"   {r['shape']:10s} {v['variant']:24s} {v['median']:7.1f} ms/env step (p10 {v['p10']:6.1f}), "
                    f"{v['ratio']:.3f}x the first (median of per-turn ratios)",
                    file=file,
                )
        return
    print(
        f"   {'shape':10s} {'ms/env step [p10,p90]':>22s} {'faults':>7s} {'temp MB':>7s} | "
        f"{'critic ms':>9s} {'upd/s':>6s} {'GFLOP':>6s} {'GFLOP/s':>7s} {'of mm':>6s} | "
        f"{'step GFLOP':>10s} {'GFLOP/s':>7s} {'of mm':>6s}",
        file=file,
    )
    for r in report["results"]:
        s, c = r["env_step"], r["critic_update"]
        fc, fs = r["flops"]["critic_update"] / 1e9, r["flops"]["env_step"] / 1e9
        c_rate, s_rate = fc / (c["median"] * 1e-3), fs / (s["median"] * 1e-3)
        print(
            f"   {r['shape']:10s} {s['median']:8.1f} [{s['p10']:5.1f},{s['p90']:6.1f}] {s['faults']:7.0f} {r['temp_mb']:7.1f} | "
            f"{c['median']:9.2f} {1e3 / c['median']:6.1f} {fc:6.3f} {c_rate:7.1f} {c_rate / mm:6.1%} | "
            f"{fs:10.3f} {s_rate:7.1f} {s_rate / mm:6.1%}",
            file=file,
        )
    print(
        "   (ms/env step: median, 10th and 90th percentile of one fused UTD-4 update; faults: minor page faults "
        "per update; critic: one update_critic on 256; 'of mm' = achieved / 1024^3 matmul GFLOP/s)",
        file=file,
    )


def print_summary(reports: list, variants: list, file=sys.stdout) -> None:
    """Per variant and shape: the best and the median of the rounds' median ms/env step."""
    import numpy as np

    print(f"\n== summary over {max(r['round'] for r in reports) + 1} rounds (ms per env step: best round / median of rounds; "
          "critic: fastest critic-update median over rounds and its fraction of the fastest matmul measurement)", file=file)
    shapes = [r["shape"] for r in reports[0]["results"]]
    for v in variants:
        runs = [r for r in reports if r["variant"] == v]
        cells = []
        for i, shape in enumerate(shapes):
            steps = [r["results"][i]["env_step"]["median"] for r in runs]
            best = runs[int(np.argmin(steps))]
            c = min(r["results"][i]["critic_update"]["median"] for r in runs)
            frac = best["results"][i]["flops"]["critic_update"] / (c * 1e-3) / 1e9 / max(r["matmul_gflops"]["mm_1024"] for r in runs)
            cells.append(f"{shape} {min(steps):6.1f} / {np.median(steps):6.1f} (critic {c:5.2f} ms, {frac:4.0%})")
        print(f"   {v:32s} " + "\n   {:32s} ".format("").join(cells), file=file)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--variants", default="default", help="comma-separated variants, each possibly a+b (--list-variants)")
    parser.add_argument("--list-variants", action="store_true")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (compilation included)")
    parser.add_argument("--mm-repeats", type=int, default=30)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="cycle through all variants this many times (fresh processes) and summarize: on a shared "
        "machine the best round is the least disturbed one",
    )
    parser.add_argument("--quick", action="store_true", help="locomotion only (unless --shapes), 10 repeats")
    parser.add_argument("--code-root", default=str(ROOT), help="checkout whose `learner` package to benchmark")
    parser.add_argument(
        "--interleaved", action="store_true",
        help=f"time all variants in one process, one call each in turns (only variants made of "
        f"{', '.join(sorted(INTERLEAVABLE_SETTINGS))} and default; same checkout): robust to a noisy host; "
        "prints ms per env step and ratios to the first variant, no critic-alone figures",
    )
    parser.add_argument("--json", help="also write every report to this file")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.list_variants:
        for name, (desc, _, _) in VARIANTS.items():
            print(f"{name:22s} {desc}")
        return
    if args.quick:
        args.repeats, args.warmup, args.mm_repeats = 10, 3, 10
        if args.shapes == ",".join(SHAPES):
            args.shapes = "locomotion"
    args.shapes = [s for s in args.shapes.split(",") if s]
    for s in args.shapes:
        if s not in SHAPES:
            parser.error(f"--shapes: unknown shape {s!r}; expected some of {', '.join(SHAPES)}")
    args.code_root = str(Path(args.code_root).resolve())

    if args.variant:  # child process
        sys.path.insert(0, args.code_root)
        Path(args.out).write_text(json.dumps(run_in_process(args)))
        return

    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        try:
            resolve_variant(v)
        except KeyError as e:
            parser.error(f"--variants: unknown variant {e.args[0]!r}; see --list-variants")
    if args.interleaved:
        for v in variants:
            extra, settings = resolve_variant(v)[1:]
            if extra or "@" in v or not set(settings) <= INTERLEAVABLE_SETTINGS:
                parser.error(f"--interleaved: variant {v!r} needs a process of its own (environment, "
                             f"process-wide setting or another checkout)")
        variants = [",".join(variants)]  # one child process times them all
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for v in variants:
                out = Path(tmp) / "report.json"
                code_root = str(Path(v.split("@")[1]).resolve()) if "@" in v else args.code_root
                env = {**os.environ, **resolve_variant(v.split(",")[0])[1]}
                env["PYTHONPATH"] = code_root + os.pathsep + env.get("PYTHONPATH", "")
                cmd = [
                    sys.executable, str(Path(__file__).resolve()), "--variant", v, "--out", str(out),
                    "--shapes", ",".join(args.shapes), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                    "--mm-repeats", str(args.mm_repeats), "--code-root", code_root,
                ] + (["--interleaved"] if args.interleaved else [])
                subprocess.run(cmd, env=env, check=True)
                report = json.loads(out.read_text())
                report["round"] = round_
                if args.rounds > 1:
                    print(f"\n-- round {round_ + 1}/{args.rounds}", end="")
                print_report(report)
                sys.stdout.flush()
                reports.append(report)
    if args.rounds > 1 and not args.interleaved:
        print_summary(reports, variants)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
