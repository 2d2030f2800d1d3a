"""Learning from pixels: the fused UTD-4 update with one encoder shared by the 10 critics vs
one encoder per critic, and the actor's policy inference latency per step.

* **learner**: one call of the jitted `SACAgent.update` on a batch shaped (4, 256, ...) of a
  64x64x3 camera + state task (4 critic updates with random shifts, each with its soft target
  updates, then the actor and temperature update on the 1024 transitions), AgentConfig
  defaults otherwise (10 critics of 2 x 256, DrQ encoder 4 x 32 conv + 50 features). Two
  variants in one run, alternating calls: `shared` (the design: one `ObservationEncoder`
  whose features feed the unchanged fused critic ensemble) and `separate` (each critic its own
  encoder: 10 encoders trained by their critics, the 2 sub-sampled target critics' target
  encoders for the TD target, the policy on encoder 0's features; the same fused critic code
  per critic, vmapped); with `--with-scan` also `scan` (the shared design with its M critic
  updates in a `lax.scan`, which XLA:CPU runs far slower with convolutions: why camera
  agents unroll them). Medians over `--repeats` calls after a warm-up call, and the ratios.
* **actor**: `actor.policy.Policy.sample` on one observation (batch 1) with the published
  parameters, as a robot's control loop calls it: median, p99 and max ms per step over
  `--steps` calls, against a 10 Hz control period (100 ms).

    python benchmarks/pixel_learner.py                      # the figures in benchmarks/README.md
    python benchmarks/pixel_learner.py --repeats 3 --batch-size 64   # quicker
    python benchmarks/pixel_learner.py --batch-size 64 --encoder-strides 2,2,2 --with-scan  # + the scan variant
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from actor.networks import make_encoder  # noqa: E402
from actor.policy import Policy  # noqa: E402
from envs.observations import ObservationPart, ObservationSpec  # noqa: E402
from learner import losses  # noqa: E402
from learner.agents import SACAgent  # noqa: E402
from learner.agents.common import TrainState, batch_masks, critic_subsample_indices, sample_policy  # noqa: E402
from learner.config import AgentConfig  # noqa: E402
from learner.networks import _ensemble_q, augment_observations, describe_matmul_dtype, encoder_dtype  # noqa: E402

CONTROL_PERIOD_MS = 100.0  # 10 Hz


def _tree_index(tree, index):
    return jax.tree_util.tree_map(lambda x: x[index], tree)


class SeparateEncodersSAC(SACAgent):
    """SAC whose critics each own an encoder (parameters with a leading critic axis): what the
    shared design avoids. Benchmark only."""

    @classmethod
    def create_separate(cls, config: AgentConfig, spec: ObservationSpec, action_dim: int, seed: int = 0):
        agent = cls.create(config, spec, action_dim, seed)
        module = make_encoder(config, spec, encoder_dtype(config.critic_matmul_dtype))
        zeros = jax.tree_util.tree_map(jnp.asarray, spec.zeros((1,)))
        keys = jax.random.split(jax.random.PRNGKey(seed + 1), config.critic_ensemble_size)
        params = jax.vmap(lambda k: module.init(k, zeros)["params"])(keys)
        state = TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(config.critic_lr), target_params=params)
        return agent.replace(encoder=state.replace(step=jnp.zeros((), jnp.int32)))

    def _encode_each(self, params, observations):
        """(E', B, F): critic i's encoder on the observations, for the E' encoders in `params`."""
        return jax.vmap(lambda p: self.encoder.apply_fn({"params": p}, observations))(params)

    def _q_each(self, critic_params, features, actions):
        """(E', B): critic i on its own features (the fused single-critic ensemble, vmapped)."""
        c = self.config
        dtype = encoder_dtype(c.critic_matmul_dtype)

        def one(params, x):
            single = jax.tree_util.tree_map(lambda leaf: leaf[None], params)
            return _ensemble_q(single, x, actions, len(c.critic_hidden_dims), c.critic_layer_norm, dtype)[0]

        return jax.vmap(one)(critic_params["critics"], features)

    def _update_critic_and_encoder(self, batch):
        c = self.config
        rng, k_actions, k_subsample, _, k_aug = jax.random.split(self.rng, 5)
        k_obs, k_next = jax.random.split(k_aug)
        observations = augment_observations(k_obs, batch["observations"], c.encoder_augment_pad)
        next_observations = augment_observations(k_next, batch["next_observations"], c.encoder_augment_pad)
        policy_features = jax.lax.stop_gradient(self.encoder.apply_fn({"params": _tree_index(self.encoder.params, 0)}, next_observations))
        next_actions, next_log_probs = sample_policy(self.actor, self.actor.params, policy_features, k_actions)
        picked = critic_subsample_indices(k_subsample, c.critic_ensemble_size, c.critic_subsample_size)
        target_features = self._encode_each(_tree_index(self.encoder.target_params, picked), next_observations)
        next_qs = self._q_each(_tree_index(self.critic.target_params, picked), target_features, next_actions)
        next_q, _ = losses.reduce_target_q(next_qs[..., None], next_log_probs[..., None], "min")  # one next action
        target = jax.lax.stop_gradient(losses.td_target(batch["rewards"], batch_masks(batch), next_q, c.discount, None, self.temperature_value))

        def loss_fn(params):
            critic_params, encoder_params = params
            qs = self._q_each(critic_params, self._encode_each(encoder_params, observations), batch["actions"])
            loss = losses.critic_loss(qs, target)
            return loss, {"critic_loss": loss}

        grads, info = jax.grad(loss_fn, has_aux=True)((self.critic.params, self.encoder.params))
        critic = self.critic.apply_gradients(grads=grads[0]).soft_update_target(c.tau)
        encoder = self.encoder.apply_gradients(grads=grads[1]).soft_update_target(c.tau)
        return self.replace(critic=critic, encoder=encoder, rng=rng), info

    def update_actor(self, batch):
        rng, key, k_aug = jax.random.split(self.rng, 3)
        shifted = augment_observations(k_aug, batch["observations"], self.config.encoder_augment_pad)
        features = jax.lax.stop_gradient(self._encode_each(self.encoder.params, shifted))
        critic_params = jax.lax.stop_gradient(self.critic.params)
        temperature = self.temperature_value

        def actor_loss_fn(params):
            actions, log_probs = sample_policy(self.actor, params, features[0], key)
            q = self._q_each(critic_params, features, actions).min(0)
            loss = losses.actor_loss(log_probs, q[None], temperature, "min")
            return loss, {"actor_loss": loss, "entropy": -log_probs.mean()}

        grads, info = jax.grad(actor_loss_fn, has_aux=True)(self.actor.params)
        actor = self.actor.apply_gradients(grads=grads)

        def temperature_loss_fn(params):
            return losses.temperature_loss(self.temperature.apply_fn({"params": params}), info["entropy"], self.target_entropy)

        temperature_state = self.temperature.apply_gradients(grads=jax.grad(temperature_loss_fn)(self.temperature.params))
        return self.replace(actor=actor, temperature=temperature_state, rng=rng), info


class ScannedCriticUpdatesSAC(SACAgent):
    """The shared design with its M critic updates in a `lax.scan`, as flat-vector agents run
    them: what `SACAgent._critic_updates` avoids for camera agents (XLA:CPU computes
    convolution gradients in a loop body far slower). Benchmark only."""

    def _critic_updates(self, batch):
        agent, infos = jax.lax.scan(lambda agent, minibatch: agent.update_critic(minibatch), self, batch)
        return agent, jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), infos)


def make_batch(spec: ObservationSpec, m: int, b: int, action_dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def obs():
        return {p.name: (rng.integers(0, 256, (m, b, *p.shape), dtype=np.uint8) if p.is_image
                         else rng.normal(size=(m, b, *p.shape)).astype(np.float32)) for p in spec.parts}

    return {
        "observations": obs(), "actions": rng.uniform(-1, 1, (m, b, action_dim)).astype(np.float32),
        "rewards": rng.normal(size=(m, b)).astype(np.float32), "next_observations": obs(),
        "terminals": np.zeros((m, b), np.float32), "mc_returns": np.zeros((m, b), np.float32),
    }


def time_updates(agents: dict, batch: dict, repeats: int) -> dict:
    """Median seconds per `update` call of each agent, calls alternating between agents."""
    batch = jax.device_put(batch)
    for name in agents:  # compile + warm up
        start = time.perf_counter()
        agents[name], _ = agents[name].update(batch)
        jax.block_until_ready(agents[name])
        print(f"# {name}: first call (compiling) {time.perf_counter() - start:.1f} s", flush=True)
    times = {name: [] for name in agents}
    for i in range(repeats):
        for name in agents:
            start = time.perf_counter()
            agents[name], _ = agents[name].update(batch)
            jax.block_until_ready(agents[name])
            times[name].append(time.perf_counter() - start)
            print(f"# {name}: call {i + 1}: {times[name][-1] * 1e3:.1f} ms", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=int, default=64, help="camera height = width (pixels)")
    parser.add_argument("--state-dim", type=int, default=8)
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--utd", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed update calls per variant")
    parser.add_argument("--steps", type=int, default=300, help="timed policy steps on the actor")
    parser.add_argument("--matmul-dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--encoder-strides", default="2,1,1,1",
                        help="conv strides, one 32-filter layer each (default DrQ's; configs/pixels.yaml: 2,2,2)")
    parser.add_argument("--skip-separate", action="store_true", help="time the shared encoder only")
    parser.add_argument("--with-scan", action="store_true",
                        help="also time the shared encoder with the M critic updates in a lax.scan (slow on CPU)")
    parser.add_argument("--skip-learner", action="store_true", help="time the actor's policy inference only")
    args = parser.parse_args()

    spec = ObservationSpec((ObservationPart("state", (args.state_dim,), "float32"), ObservationPart("camera", (args.image, args.image, 3), "uint8")))
    strides = tuple(int(x) for x in args.encoder_strides.split(","))
    config = AgentConfig(batch_size=args.batch_size, critic_matmul_dtype=args.matmul_dtype,
                         encoder_channels=(32,) * len(strides), encoder_strides=strides)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {jax.devices()[0].platform}, {os.cpu_count()} CPUs, load {load:.1f}; {describe_matmul_dtype(config.critic_matmul_dtype)}; "
          f"obs {args.image}x{args.image}x3 + state {args.state_dim}, action {args.action_dim}, batch ({args.utd}, {args.batch_size}), "
          f"{config.critic_ensemble_size} critics of {list(config.critic_hidden_dims)}, encoder {list(config.encoder_channels)} "
          f"strides {list(config.encoder_strides)} -> {config.encoder_feature_dim}")

    shared = SACAgent.create(config, spec, args.action_dim, seed=0)
    # The actor: published parameters -> Policy (actor/ only), one observation per step.
    policy = Policy(config, args.action_dim, spec)
    params = jax.device_put(shared.policy_params())
    rng = np.random.default_rng(1)
    obs = [{"state": rng.normal(size=args.state_dim).astype(np.float32),
            "camera": rng.integers(0, 256, (args.image, args.image, 3), dtype=np.uint8)} for _ in range(16)]
    key = jax.random.PRNGKey(0)
    for i in range(10):  # compile + warm up
        _, key = policy.sample(params, obs[i % 16], key)
    step_ms = []
    for i in range(args.steps):
        start = time.perf_counter()
        action, key = policy.sample(params, obs[i % 16], key)
        step_ms.append((time.perf_counter() - start) * 1e3)
    step_ms.sort()
    median, p99 = statistics.median(step_ms), step_ms[min(len(step_ms) - 1, int(0.99 * len(step_ms)))]
    print(f"\n## actor: policy inference, batch 1 ({args.steps} steps)")
    print(f"median {median:.2f} ms, p99 {p99:.2f} ms, max {step_ms[-1]:.2f} ms per step; "
          f"{median / CONTROL_PERIOD_MS:.1%} of a 10 Hz control period ({CONTROL_PERIOD_MS:.0f} ms)")

    if args.skip_learner:
        return
    agents = {"shared": shared}
    if not args.skip_separate:
        agents["separate"] = SeparateEncodersSAC.create_separate(config, spec, args.action_dim, seed=0)
    if args.with_scan:
        agents["scan"] = ScannedCriticUpdatesSAC.create(config, spec, args.action_dim, seed=0)
    batch = make_batch(spec, args.utd, args.batch_size, args.action_dim)
    times = time_updates(agents, batch, args.repeats)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print("\n## learner: fused UTD-%d update (ms per call, median of %d)" % (args.utd, args.repeats))
    for name, ms in medians.items():
        print(f"{name:>9}: {ms:9.1f} ms   (min {min(times[name]) * 1e3:.1f}, max {max(times[name]) * 1e3:.1f})")
    for name in ("separate", "scan"):
        if name in medians:
            print(f"    ratio: {name} / shared = {medians[name] / medians['shared']:.2f}x")


if __name__ == "__main__":
    main()
