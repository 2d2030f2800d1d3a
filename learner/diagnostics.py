"""Forgetting diagnostics for fine-tuning runs (paper Section 3 and Appendix E, Figures 3, 8,
11, 19, 20), the evaluation "dip" and recovery, and optional evaluation videos.

What is measured, every `compute()` of `ForgettingDiagnostics`, on two state distributions
("offline": a fixed held-out sample of the offline dataset, never trained on; "online": a
uniform sample of the online replay buffer):

- `*_q_mean`: mean over critics and samples of Q_i(s, a) on the data actions;
- `*_td_error`: mean over critics and samples of (Q_i(s, a) - y)^2 with the agent's own TD
  target y (the TD term of its critic loss, without any CQL/CalQL regularizer);
- `kl_policy_*`: KL(pi_pre(.|s) || pi(.|s)), exact, averaged over states;
- `kl_q_softmax_*`: KL(softmax_a Q_pre(s, .) || softmax_a Q(s, .)) over N actions per state,
  half sampled from pi_pre(.|s) and half from pi(.|s), averaged over states.

The pure functions (`gaussian_kl`, `policy_kl`, `monte_carlo_policy_kl`, `q_softmax_kl`,
`td_target`, `td_errors`, `mean_q`) take arrays and agents and can be used on their own.

Every agent in `learner.agents` is supported: SAC/CQL/CalQL (through `critic_target`) and IQL
(through its value network). The policies are the tanh-Gaussians of `learner.networks`.
Camera observations too: the critics and policies then read encoder features, the current
networks the current encoder's and the pre-trained ones the pre-trained encoder's (images are
not shifted here: the diagnostics measure the networks, not the augmentation).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from actor import distributions
from envs.observations import index_observations
from learner import losses
from learner.agents.common import batch_masks, repeat_states

Batch = Mapping[str, Any]

# Fields of a transition batch the diagnostics read.
BATCH_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals")

# The keys `ForgettingDiagnostics.compute` returns, always all of them (NaN where undefined).
DIAGNOSTIC_KEYS = (
    "offline_q_mean",
    "offline_td_error",
    "online_q_mean",
    "online_td_error",
    "kl_policy_offline",
    "kl_policy_online",
    "kl_q_softmax_offline",
    "kl_q_softmax_online",
)


# ---- KL divergences ---------------------------------------------------------------------------


@jax.jit
def gaussian_kl(mean_p: jnp.ndarray, log_std_p: jnp.ndarray, mean_q: jnp.ndarray, log_std_q: jnp.ndarray) -> jnp.ndarray:
    """KL(p || q) between diagonal Gaussians, summed over the last axis (the dimensions):

        sum_d  log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2

    Shapes broadcast; the result has the broadcast shape without the last axis.
    """
    var_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
    mahalanobis = jnp.square((mean_p - mean_q) * jnp.exp(-log_std_q))
    return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + mahalanobis) - 0.5, axis=-1)


@partial(jax.jit, static_argnames=("actor_apply",))
def policy_kl(actor_apply: Callable, pre_params: Any, params: Any, observations: jnp.ndarray) -> jnp.ndarray:
    """KL(pi_pre(.|s) || pi(.|s)) per state (shape observations.shape[:-1]), exact.

    `actor_apply` is the policy module's apply (e.g. `agent.actor.apply_fn`), returning the
    mean and (clipped) log-std of the Gaussian that tanh squashes; `pre_params`/`params` are
    the two parameter sets.

    Why the closed form is exact for tanh-Gaussians: both policies are the pushforward of a
    Gaussian under the same bijection a = tanh(u). The densities are p(a) = N_p(u) |du/da| and
    q(a) = N_q(u) |du/da| with the *same* Jacobian factor, so log p(a)/q(a) = log N_p(u)/N_q(u)
    and E_{a~p}[log p(a)/q(a)] = E_{u~N_p}[log N_p(u)/N_q(u)] = KL(N_p || N_q). (KL divergence is
    invariant under any bijection applied to both arguments.) `monte_carlo_policy_kl` checks
    this on tanh samples.
    """
    mean_p, log_std_p = actor_apply({"params": pre_params}, observations)
    mean_q, log_std_q = actor_apply({"params": params}, observations)
    return gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)


@partial(jax.jit, static_argnames=("actor_apply", "num_samples"))
def monte_carlo_policy_kl(
    actor_apply: Callable, pre_params: Any, params: Any, observations: jnp.ndarray, rng: jax.Array, num_samples: int
) -> jnp.ndarray:
    """Monte-Carlo estimate of KL(pi_pre(.|s) || pi(.|s)) per state from `num_samples` squashed
    actions a ~ pi_pre: mean of log pi_pre(a|s) - log pi(a|s), both evaluated on the action a
    (in [-1, 1], through atanh, as `distributions.tanh_gaussian_log_prob` does).

    A reference for `policy_kl` (which is exact and cheaper); inaccurate where tanh saturates
    in float32 (|pre-tanh| > ~9), where actions round to +-1.
    """
    mean_p, log_std_p = actor_apply({"params": pre_params}, observations)
    mean_q, log_std_q = actor_apply({"params": params}, observations)
    expand = lambda x: jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (num_samples, x.shape[-1]))  # noqa: E731
    mean_p, log_std_p, mean_q, log_std_q = map(expand, (mean_p, log_std_p, mean_q, log_std_q))
    actions, _ = distributions.sample_tanh_gaussian(rng, mean_p, log_std_p)
    log_p = distributions.tanh_gaussian_log_prob(actions, mean_p, log_std_p)
    log_q = distributions.tanh_gaussian_log_prob(actions, mean_q, log_std_q)
    return jnp.mean(log_p - log_q, axis=-1)


@partial(jax.jit, static_argnames=("temperature",))
def q_softmax_kl(q_pre_values: jnp.ndarray, q_values: jnp.ndarray, temperature: float = 1.0) -> jnp.ndarray:
    """KL(softmax(Q_pre / T) || softmax(Q / T)) over the last axis (the actions of a state),
    one value per state: q_pre_values and q_values shaped (..., N) -> (...).

    Invariant to adding a per-state constant to either argument (softmax is).
    """
    log_p = jax.nn.log_softmax(q_pre_values / temperature, axis=-1)
    log_q = jax.nn.log_softmax(q_values / temperature, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


# ---- Q-values and TD errors --------------------------------------------------------------------


def _is_iql(agent) -> bool:
    return hasattr(agent, "value") and not hasattr(agent, "critic_target")


def td_target(agent, batch: Batch, rng: jax.Array) -> jnp.ndarray:
    """The agent's own TD target y (B,) for a flat batch (fields shaped (B, ...)).

    SAC, CQL, CalQL: `agent.critic_target(batch, action_rng, subsample_rng)` - the target the
    critic loss uses (target critics, sub-sampled min or ensemble max, max-target backup,
    entropy backup, discount, masks 1 - terminal) - with the keys derived from `rng` as
    `update_critic` derives them from `agent.rng` (`_, action_rng, subsample_rng, _ =
    jax.random.split(rng, 4)`): with rng = agent.rng and flat observations this is exactly the
    target of the agent's next `update_critic(batch)`.
    IQL: r + discount * (1 - terminal) * V(s') with the current value network (its critic
    update bootstraps from the value network just updated on the same batch; between updates
    the two coincide). `rng` is unused.
    Camera observations: the policy and the value network read the encoder's features of the
    next observations, the target critics the target encoder's (as the update does, without
    its random shifts).
    """
    next_observations = batch["next_observations"]
    if hasattr(agent, "critic_target"):
        _, action_rng, subsample_rng, _ = jax.random.split(rng, 4)
        if getattr(agent, "encoder", None) is None:
            target, _ = agent.critic_target(batch, action_rng, subsample_rng)
        else:
            features = {**batch, "next_observations": agent.features(next_observations)}
            target, _ = agent.critic_target(features, action_rng, subsample_rng, agent.features(next_observations, target=True))
        return target
    if _is_iql(agent):
        next_v = agent.value.apply_fn({"params": agent.value.params}, agent.features(next_observations))
        return losses.td_target(batch["rewards"], batch_masks(batch), next_v, agent.config.discount)
    raise TypeError(f"td_target: agent {type(agent).__name__} has neither `critic_target` nor a value network")


@jax.jit
def td_errors(agent, batch: Batch, rng: jax.Array) -> jnp.ndarray:
    """Signed TD errors Q_i(s, a) - y of every critic, shape (E, B), with y = `td_target`.
    Their mean square is the TD term of the agent's critic loss (`losses.critic_loss`); with
    rng = agent.rng, the very value the agent's next `update_critic(batch)` reports as
    `critic_loss` (SAC, CQL, CalQL)."""
    return agent.q_values(batch["observations"], batch["actions"]) - td_target(agent, batch, rng)[None]


@jax.jit
def mean_q(agent, batch: Batch) -> jnp.ndarray:
    """Mean over critics and samples of Q_i(s, a) on the batch's actions."""
    return agent.q_values(batch["observations"], batch["actions"]).mean()


# ---- the periodic diagnostics ------------------------------------------------------------------


@partial(jax.jit, static_argnames=("num_actions",))
def _state_diagnostics(agent, pretrained: dict, batch, rng, num_actions: int) -> dict:
    """Q mean, TD error, policy KL and softmax-Q KL on one flat batch of transitions.
    `pretrained`: the pre-trained "actor", "critic" and (camera observations) "encoder" params."""
    k_td, k_pre, k_cur = jax.random.split(rng, 3)
    actor_apply, critic_apply = agent.actor.apply_fn, agent.critic.apply_fn
    # What the networks read: the observations, or each encoder's features of them.
    features = agent.features(batch["observations"])
    if pretrained.get("encoder") is None:
        pre_features = features
    else:
        pre_features = agent.encoder.apply_fn({"params": pretrained["encoder"]}, batch["observations"])

    qs = critic_apply({"params": agent.critic.params}, features, batch["actions"])  # (E, B)
    td = qs - td_target(agent, batch, k_td)[None]

    mean_pre, log_std_pre = actor_apply({"params": pretrained["actor"]}, pre_features)
    mean_cur, log_std_cur = actor_apply({"params": agent.actor.params}, features)
    kl_policy = gaussian_kl(mean_pre, log_std_pre, mean_cur, log_std_cur)

    # N actions per state: the first half from pi_pre, the second from pi.
    half = num_actions // 2
    expand = lambda x, n: jnp.broadcast_to(x[:, None], (x.shape[0], n, x.shape[-1]))  # noqa: E731
    a_pre, _ = distributions.sample_tanh_gaussian(k_pre, expand(mean_pre, half), expand(log_std_pre, half))
    a_cur, _ = distributions.sample_tanh_gaussian(
        k_cur, expand(mean_cur, num_actions - half), expand(log_std_cur, num_actions - half)
    )
    actions = jnp.concatenate([a_pre, a_cur], axis=1)  # (B, N, A)

    def chunk_kl(xs):
        f, f_pre, a = xs
        q_pre = critic_apply({"params": pretrained["critic"]}, repeat_states(f_pre, num_actions), a).mean(axis=0)  # (b, N)
        q_cur = critic_apply({"params": agent.critic.params}, repeat_states(f, num_actions), a).mean(axis=0)
        return q_softmax_kl(q_pre, q_cur)

    # A few states at a time (a sequential lax.map): the critics' activations for all B*N
    # state-action pairs (E x B*N x hidden floats) would not stay in cache.
    b = features.shape[0]
    chunk = _chunk_size(b, num_actions)
    if chunk < b:
        split = lambda x: x.reshape((b // chunk, chunk) + x.shape[1:])  # noqa: E731
        kl_q = jax.lax.map(chunk_kl, (split(features), split(pre_features), split(actions))).reshape(b)
    else:
        kl_q = chunk_kl((features, pre_features, actions))
    return {"q_mean": qs.mean(), "td_error": jnp.mean(td**2), "kl_policy": kl_policy.mean(), "kl_q_softmax": kl_q.mean()}


def _chunk_size(num_states: int, num_actions: int, max_rows: int = 512) -> int:
    """The largest divisor of num_states with chunk * num_actions <= max_rows (at least 1)."""
    best = 1
    for c in range(1, num_states + 1):
        if num_states % c == 0 and c * num_actions <= max_rows:
            best = c
    return best


def _rows(sample, indices: Optional[np.ndarray] = None) -> dict:
    """The BATCH_FIELDS of a mapping, an `OfflineDataset`-like object or a `ReplayBuffer`,
    as float32 numpy arrays (optionally only the given rows)."""
    if hasattr(sample, "data") and hasattr(sample, "capacity"):  # ReplayBuffer: its filled rows
        n = len(sample)
        if not sample.spec.is_flat:  # camera frames live in a shared pool: gather the rows asked for
            rows = sample.rows(np.arange(n) if indices is None else np.asarray(indices))
            return {k: _as_float(rows[k]) for k in BATCH_FIELDS}
        fields = {k: sample.data[k][:n] for k in BATCH_FIELDS}
    elif isinstance(sample, Mapping):
        fields = {k: sample[k] for k in BATCH_FIELDS}
    else:
        fields = {k: getattr(sample, k) for k in BATCH_FIELDS}
    if indices is not None:
        fields = {k: index_observations(v, indices) if isinstance(v, Mapping) else np.asarray(v)[indices] for k, v in fields.items()}
    return {k: _as_float(v) for k, v in fields.items()}


def _as_float(value):
    """float32 arrays; dict observations keep their parts' dtypes (camera frames stay uint8)."""
    if isinstance(value, Mapping):
        return {k: np.asarray(v) for k, v in value.items()}
    return np.asarray(value, np.float32)


def _num_rows(sample) -> int:
    if hasattr(sample, "data") and hasattr(sample, "capacity"):
        return len(sample)
    return len(sample["rewards"] if isinstance(sample, Mapping) else sample.rewards)


def held_out_sample(source, size: int, seed: int = 0, exclude: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """`size` transitions drawn without replacement from an offline dataset (`OfflineDataset`),
    a `ReplayBuffer` (its filled rows) or a mapping of arrays with the `BATCH_FIELDS` (all of
    them if it holds fewer), never from the row indices in `exclude` (e.g. rows a retention
    baseline trains on). Returns a dict of float32 numpy arrays, rows in their original order."""
    n = _num_rows(source)
    candidates = np.arange(n) if exclude is None else np.setdiff1d(np.arange(n), np.asarray(exclude))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(candidates, size=min(size, len(candidates)), replace=False)
    return _rows(source, np.sort(chosen))


class ForgettingDiagnostics:
    """Periodic forgetting diagnostics of a fine-tuning run against its pre-trained start.

    Build it once when fine-tuning starts, from the agent as loaded (`from_agent`) or from
    the pre-trained parameters; call `compute(agent, online_replay)` whenever metrics are
    logged. The offline states are a fixed sample (drawn once, `num_states` transitions of
    `offline_sample`) so successive values are comparable; online states are drawn afresh,
    uniformly from the buffer (with replacement), `num_states` of them (the same count as the
    offline sample, so one compiled function serves both).

    `num_actions` (N) actions per state enter the softmax-Q KL: N//2 sampled from pi_pre and
    N - N//2 from pi. Q there is the *mean* over the critic ensemble (the ensemble's value
    estimate; the min would mix in the ensemble's disagreement, which changes as members
    drift apart independently of what the ensemble predicts), evaluated with both the
    pre-trained and the current critic parameters (online networks, not targets).

    The pre-trained networks are evaluated with the current agent's apply functions: the
    pre-trained parameters must fit the current agent's networks (they do whenever the agent
    was restored from the checkpoint they came from). With camera observations the pre-trained
    encoder's parameters are kept too (`pretrained_encoder_params`): the pre-trained critics
    and policy read its features.

    Cost: the softmax-Q KL dominates - 2 x num_states x N state-action pairs through all E
    critics, per distribution - so time grows linearly in num_states, N and E. Defaults
    (1024 states, N = 4) with 256x256 networks and E = 10: ~0.55 CPU-seconds per `compute()`
    (both distributions) on this project's 2-core machine; N = 10 about doubles it. The first
    call compiles (seconds); later calls reuse it as long as the agent's structure is the same.

    Wiring into a fine-tuning loop (`learner.finetune.Finetuner` as `runner`):

        diagnostics = ForgettingDiagnostics.from_agent(
            runner.agent, held_out_sample(offline_replay(config, runner.task), 2048, seed), seed=seed)
        ...
        logger.log("diagnostics", step, diagnostics.compute(runner.agent, runner.replay))

    Pass the online `ReplayBuffer` itself (not a `MixedSampler`, which would mix offline rows
    into the "online" states). With the offline-data retention baselines the offline sample is
    only held out if its rows are excluded from the buffer that is trained on.
    """

    keys = DIAGNOSTIC_KEYS

    def __init__(
        self,
        pretrained_actor_params: Any,
        pretrained_critic_params: Any,
        offline_sample=None,
        *,
        num_states: int = 1024,
        num_actions: int = 4,
        seed: int = 0,
        pretrained_encoder_params: Any = None,
    ):
        if num_states < 1:
            raise ValueError(f"num_states: got {num_states}, expected an integer >= 1")
        if num_actions < 2:
            raise ValueError(f"num_actions: got {num_actions}, expected an integer >= 2 (half from each policy)")
        copy = lambda tree: jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)  # noqa: E731
        self.pretrained = {
            "actor": copy(pretrained_actor_params),
            "critic": copy(pretrained_critic_params),
            "encoder": None if pretrained_encoder_params is None else copy(pretrained_encoder_params),
        }
        self.num_actions = num_actions
        self.offline_batch = None
        if offline_sample is not None:
            sample = held_out_sample(offline_sample, num_states, seed)
            if len(sample["rewards"]) == 0:
                raise ValueError("offline_sample: got an empty sample, expected at least one transition")
            self.offline_batch = jax.tree_util.tree_map(jnp.asarray, sample)
            num_states = len(sample["rewards"])
        self.num_states = num_states
        self._np_rng = np.random.default_rng(seed + 1)
        self._rng = jax.random.PRNGKey(seed)

    @classmethod
    def from_agent(cls, agent, offline_sample=None, **kwargs) -> "ForgettingDiagnostics":
        """Diagnostics against `agent` as it is now (call it right after loading the
        checkpoint, before any update): frozen copies of its actor, critic and (camera
        observations) encoder parameters."""
        encoder = getattr(agent, "encoder", None)
        return cls(agent.actor.params, agent.critic.params, offline_sample,
                   pretrained_encoder_params=None if encoder is None else encoder.params, **kwargs)

    def _diagnose(self, agent, batch) -> dict:
        self._rng, key = jax.random.split(self._rng)
        return _state_diagnostics(agent, self.pretrained, batch, key, num_actions=self.num_actions)

    def compute(self, agent, online_replay=None) -> dict[str, float]:
        """The diagnostics of `agent` (any agent of `learner.agents`) as Python floats, keyed
        by `DIAGNOSTIC_KEYS`. `online_replay` is the online buffer (anything with `len()` and
        `sample(rng, num_batches, batch_size)`); the online keys are NaN when it is None or
        empty, the offline keys when no offline sample was given."""
        nan = {"q_mean": math.nan, "td_error": math.nan, "kl_policy": math.nan, "kl_q_softmax": math.nan}
        offline = nan if self.offline_batch is None else self._diagnose(agent, self.offline_batch)
        if online_replay is None or len(online_replay) == 0:
            online = nan
        else:
            sample = online_replay.sample(self._np_rng, 1, self.num_states)
            first = {k: jax.tree_util.tree_map(lambda x: x[0], sample[k]) for k in BATCH_FIELDS}
            online = self._diagnose(agent, jax.tree_util.tree_map(jnp.asarray, _rows(first)))
        offline, online = jax.device_get((offline, online))
        result = {}
        for name, values in (("offline", offline), ("online", online)):
            result[f"{name}_q_mean"] = float(values["q_mean"])
            result[f"{name}_td_error"] = float(values["td_error"])
            result[f"kl_policy_{name}"] = float(values["kl_policy"])
            result[f"kl_q_softmax_{name}"] = float(values["kl_q_softmax"])
        return {k: result[k] for k in DIAGNOSTIC_KEYS}


# ---- the evaluation dip and recovery -----------------------------------------------------------


def dip_and_recovery(
    steps: Sequence[float], scores: Sequence[float], pretrained_score: Optional[float], warmup_steps: int
) -> dict:
    """The "dip" of a fine-tuning run's evaluation curve and when it recovers.

    steps, scores: the evaluation history (any order; sorted by step here). Only evaluations
    with step > warmup_steps count (during warmup the frozen pre-trained policy acts).
    pretrained_score: the pre-trained policy's score; None: the score of the earliest
    evaluation (a fine-tuning run evaluates the loaded agent at step 0).

    Returns
    - "dip": min(score after warmup) - pretrained_score (< 0: performance fell below the
      pre-trained level; >= 0: no dip); NaN when there is no evaluation after warmup;
    - "dip_step": the step of that minimum (the first, on ties), or None;
    - "recovery_step": the first evaluation step >= dip_step whose score is >=
      pretrained_score: after a dip, the first step back at the pre-trained level; without a
      dip, dip_step itself. None if it never recovers (or no evaluation after warmup);
    - "pretrained_score", "min_score".
    """
    steps = np.asarray(steps, np.float64)
    scores = np.asarray(scores, np.float64)
    if steps.shape != scores.shape or steps.ndim != 1:
        raise ValueError(f"steps and scores: got shapes {steps.shape} and {scores.shape}, expected equal 1-D shapes")
    order = np.argsort(steps, kind="stable")
    steps, scores = steps[order], scores[order]
    if pretrained_score is None:
        if len(scores) == 0:
            raise ValueError("pretrained_score: None needs at least one evaluation to take it from")
        pretrained_score = float(scores[0])
    pretrained_score = float(pretrained_score)
    after = steps > warmup_steps
    result = {"dip": math.nan, "dip_step": None, "recovery_step": None, "pretrained_score": pretrained_score, "min_score": math.nan}
    if not after.any():
        return result
    s, v = steps[after], scores[after]
    i = int(np.argmin(v))
    result.update(dip=float(v[i] - pretrained_score), dip_step=_as_step(s[i]), min_score=float(v[i]))
    recovered = np.nonzero(v[i:] >= pretrained_score)[0]
    if len(recovered):
        result["recovery_step"] = _as_step(s[i + int(recovered[0])])
    return result


def _as_step(step: float):
    return int(step) if float(step).is_integer() else float(step)


# ---- evaluation videos -------------------------------------------------------------------------


class RenderUnavailable(RuntimeError):
    """The env cannot produce rgb_array frames (no renderer, or no working OpenGL backend)."""


# gymnasium-robotics envs that wrap the MuJoCo env they render through.
_INNER_ENV_ATTRIBUTES = ("point_env", "ant_env", "robot_env")


def enable_rgb_array(env) -> None:
    """Switches a task env built without a render mode (as `Task.make_env` builds them) to
    rgb_array rendering: sets `render_mode = "rgb_array"` on its unwrapped MuJoCo env (and the
    inner MuJoCo env of maze/kitchen envs). gymnasium's MujocoEnv creates its offscreen
    renderer whatever the mode, so no rebuild is needed. Raises RenderUnavailable for envs
    that have no MuJoCo renderer (e.g. the built-in point-mass room)."""
    seen, found = set(), False
    todo = [env, getattr(env, "unwrapped", env)]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if hasattr(e, "mujoco_renderer"):
            e.render_mode = "rgb_array"
            found = True
        todo.extend(getattr(e, name) for name in _INNER_ENV_ATTRIBUTES if hasattr(e, name))
    if not found:
        raise RenderUnavailable(f"env {type(getattr(env, 'unwrapped', env)).__name__} has no MuJoCo renderer for rgb_array frames")
    unwrapped = getattr(env, "unwrapped", env)
    if hasattr(unwrapped, "render_mode"):
        try:
            unwrapped.render_mode = "rgb_array"
        except AttributeError:
            pass


def _render(env) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as e:  # no GL context, missing libraries, ...
        raise RenderUnavailable(
            f"rendering failed ({type(e).__name__}: {e}); headless MuJoCo needs MUJOCO_GL=egl (or osmesa with libosmesa6)"
        ) from e
    if frame is None:
        raise RenderUnavailable("env.render() returned None: the env was not made with render_mode='rgb_array'")
    return np.asarray(frame, np.uint8)


def mp4_backend() -> Optional[str]:
    """The imageio plugin that can write mp4 here ("pyav" or "FFMPEG"), or None (install
    `imageio[ffmpeg]` or `imageio[pyav]` for one)."""
    import importlib.util

    if importlib.util.find_spec("imageio") is None:
        return None
    if importlib.util.find_spec("av") is not None:
        return "pyav"
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        return "FFMPEG"
    return None


def _write_frames(frames: np.ndarray, path: Path, fps: float, video_format: str) -> Path:
    if video_format == "gif":
        import imageio.v3 as iio

        target = path.with_suffix(".gif")
        iio.imwrite(target, frames, plugin="pillow", duration=1000.0 / fps, loop=0)
        return target
    backend = mp4_backend() if video_format in ("auto", "mp4") else None
    if backend is not None:
        import imageio.v3 as iio

        target = path.with_suffix(".mp4")
        if backend == "pyav":
            iio.imwrite(target, frames, plugin="pyav", codec="libx264", fps=max(1, int(round(fps))))
        else:
            iio.imwrite(target, frames, plugin="FFMPEG", fps=fps)
        return target
    if video_format == "mp4":
        raise RuntimeError("video_format 'mp4': imageio has no mp4 backend here (install imageio[ffmpeg] or imageio[pyav])")
    target = path.with_suffix(".npz")
    np.savez_compressed(target, frames=frames, fps=np.asarray(fps))
    return target


def record_episode_video(
    policy_fn: Callable[[np.ndarray], np.ndarray],
    task,
    path: str | Path,
    seed: int = 0,
    max_steps: Optional[int] = None,
    *,
    fps: Optional[float] = None,
    frame_every: int = 1,
    video_format: str = "auto",
) -> dict:
    """Runs one episode of `policy_fn` (observation -> action in the env's action space) and
    writes its rgb_array frames.

    task: a `Task` (its evaluation env, unscaled rewards, switched to rgb_array rendering by
    `enable_rgb_array`) or an already-made env (e.g. `gym.make(id, render_mode="rgb_array")`,
    used as is and not closed). max_steps: stop after this many steps (default: when the
    episode ends). frame_every: keep every k-th frame (frames are ~480x480x3 bytes each).
    video_format: "auto" (mp4 if imageio has an mp4 backend, see `mp4_backend`, else .npz),
    "mp4", "gif" (imageio's pillow plugin) or "npz" (`frames` (T, H, W, 3) uint8 and `fps`). The suffix of `path` is replaced
    accordingly. Headless machines need `MUJOCO_GL=egl` set before mujoco is imported.

    Returns {"path", "frames", "return", "length"}. Raises RenderUnavailable when the env
    cannot render.
    """
    if video_format not in ("auto", "mp4", "gif", "npz"):
        raise ValueError(f"video_format: got {video_format!r}, expected 'auto', 'mp4', 'gif' or 'npz'")
    if frame_every < 1:
        raise ValueError(f"frame_every: got {frame_every}, expected an integer >= 1")
    owned = hasattr(task, "make_env")
    env = task.make_env(seed, training=False) if owned else task
    try:
        if owned:
            enable_rgb_array(env)
        observation, _ = env.reset(seed=seed)
        frames = [_render(env)]
        total, length, done = 0.0, 0, False
        while not done and (max_steps is None or length < max_steps):
            observation, reward, terminated, truncated, _ = env.step(policy_fn(observation))
            total, length = total + float(reward), length + 1
            done = terminated or truncated
            if length % frame_every == 0 or done or length == max_steps:  # the last frame always
                frames.append(_render(env))
        if fps is None:
            render_fps = (getattr(env, "metadata", None) or {}).get("render_fps") or 30
            fps = float(render_fps) / frame_every
    finally:
        if owned:
            env.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = _write_frames(np.stack(frames), path, fps, video_format)
    return {"path": str(written), "frames": len(frames), "return": total, "length": length}
