"""Pre-training readiness: has the offline agent settled enough to fine-tune from?

Fine-tuning from a pre-training that has not settled fails in ways that look like the method's
fault: on the point maze, CalQL stopped at 5k steps (Q still falling 16 per 1k steps, the
temperature at 0.64 with the policy's entropy at 0.23 against a target of -2) collapses to a
policy that stands still within 1.5k online steps, while the same run pre-trained to 20k steps
dips and recovers as the paper describes (docs/results.md). So `wsrl pretrain` measures, every
`pretrain.log_every` steps on a fixed sample of the offline data (the held-out sample the
forgetting diagnostics use, `learner.diagnostics.held_out_sample`):

- `q_mean`: the critics' mean Q on the data actions, and from its history the *drift*: the
  least-squares slope over the last quarter of the steps done so far (at least `MIN_PROBES`
  measurements), per 1,000 steps, relative to the scale max(|mean Q|, std of Q over the
  sample, 1);
- `entropy`: the policy's entropy on the sample states (one sampled action per state), beside
  the SAC target entropy: with a learned temperature the two meet at its equilibrium;
- `temperature`, and for dual CQL / CalQL the Lagrange multiplier (its relative drift, as Q's)
  and the CQL gap of the last update;
- the evaluation score (informational: 10-20 evaluation episodes are too noisy to gate on).

`assess` turns the history into a verdict: "settled" when every gated signal is within its
threshold (`ReadinessThresholds`, from `pretrain.readiness_*`), "still moving" with the
signals that are not, "unmeasured" with too few measurements. The thresholds and the
measurements behind them are in docs/readiness.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from learner.agents.common import sample_policy

# Measurements the drift is fitted on, at least (else the verdict is "unmeasured").
MIN_PROBES = 4
# The drift is fitted on the last this share of the steps done so far.
WINDOW_SHARE = 0.25

SETTLED, MOVING, UNMEASURED = "settled", "still moving", "unmeasured"


@dataclass(frozen=True)
class ReadinessThresholds:
    """The largest values at which a signal counts as settled."""

    q_drift: float = 0.02  # |slope of mean Q| per 1k steps / Q's scale
    entropy_gap: float = 0.5  # |entropy - target entropy|, nats (agents with a learned temperature)
    lagrange_drift: float = 0.05  # |slope of the Lagrange multiplier| per 1k steps / its value (dual CQL)

    @classmethod
    def from_config(cls, pretrain_config) -> "ReadinessThresholds":
        p = pretrain_config
        return cls(p.readiness_q_drift, p.readiness_entropy_gap, p.readiness_lagrange_drift)


# ---- pure functions ----------------------------------------------------------------------------


def slope_per_1k(steps: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of `values` against `steps`, per 1,000 steps (NaN with fewer than 2
    distinct steps)."""
    x = np.asarray(steps, np.float64)
    y = np.asarray(values, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"steps and values: got shapes {x.shape} and {y.shape}, expected equal 1-D shapes")
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    dx = x - x.mean()
    return float(1000.0 * np.sum(dx * (y - y.mean())) / np.sum(dx * dx))


def window(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `key` over the last WINDOW_SHARE of the steps the history covers
    (step >= (1 - WINDOW_SHARE) * last step), or the last MIN_PROBES rows where that holds
    fewer; rows where the value is missing or NaN are skipped."""
    rows = [r for r in history if r.get(key) is not None and not math.isnan(float(r[key]))]
    if not rows:
        return [], []
    start = (1.0 - WINDOW_SHARE) * float(rows[-1]["step"])
    chosen = [r for r in rows if float(r["step"]) >= start]
    if len(chosen) < MIN_PROBES:
        chosen = rows[-MIN_PROBES:]
    return [float(r["step"]) for r in chosen], [float(r[key]) for r in chosen]


def relative_drift(steps: Sequence[float], values: Sequence[float], scale: float) -> float:
    """|slope per 1k steps| / scale (scale > 0)."""
    return abs(slope_per_1k(steps, values)) / scale


def assess(history: Sequence[dict], target_entropy: Optional[float], thresholds: ReadinessThresholds,
           evaluations: Sequence[tuple[int, float]] = ()) -> dict:
    """The readiness verdict from the measurement history (rows with "step", "q_mean",
    "q_std" and, where the agent has them, "entropy", "temperature", "lagrange", "cql_q_gap";
    in step order) and the evaluations ((step, score) pairs).

    Returns a JSON-able dict: "verdict" (SETTLED, MOVING or UNMEASURED), "reasons" (what is
    not settled, one phrase each), "step", the last values, "q_drift_per_1k" (absolute),
    "q_scale", "q_drift" (relative), "entropy_gap", "lagrange_drift", "eval_score" /
    "eval_step" (the last evaluation) and "thresholds".
    """
    result: dict[str, Any] = {
        "verdict": UNMEASURED, "reasons": [], "step": None, "probes": 0,
        "q_mean": None, "q_drift_per_1k": None, "q_scale": None, "q_drift": None,
        "entropy": None, "target_entropy": target_entropy, "entropy_gap": None, "temperature": None,
        "lagrange": None, "lagrange_drift": None, "cql_q_gap": None, "eval_score": None, "eval_step": None,
        "thresholds": {"q_drift": thresholds.q_drift, "entropy_gap": thresholds.entropy_gap,
                       "lagrange_drift": thresholds.lagrange_drift},
    }
    if evaluations:
        step, score = sorted(evaluations)[-1]
        result.update(eval_step=int(step), eval_score=float(score))
    if not history:
        result["reasons"] = ["no measurement yet"]
        return result
    last = history[-1]
    result["step"] = int(last["step"])
    for key in ("q_mean", "entropy", "temperature", "lagrange", "cql_q_gap"):
        if last.get(key) is not None and not math.isnan(float(last[key])):
            result[key] = float(last[key])
    steps, q = window(history, "q_mean")
    result["probes"] = len(steps)
    reasons, unmeasured = [], None
    if len(steps) < MIN_PROBES:
        unmeasured = f"Q drift unmeasured ({len(steps)} measurement(s), {MIN_PROBES} needed)"
    else:
        scale = max(abs(float(np.mean(q))), float(last.get("q_std") or 0.0), 1.0)
        slope = slope_per_1k(steps, q)
        result.update(q_drift_per_1k=slope, q_scale=scale, q_drift=abs(slope) / scale)
        if result["q_drift"] > thresholds.q_drift:
            reasons.append(f"Q {slope:+.3g}/1k steps ({result['q_drift']:.1%} of {scale:.3g}, > {thresholds.q_drift:.1%})")
    if target_entropy is not None and result["entropy"] is not None:
        gap = result["entropy"] - target_entropy
        result["entropy_gap"] = gap
        if abs(gap) > thresholds.entropy_gap:
            reasons.append(f"entropy {result['entropy']:.2f} vs target {target_entropy:.3g} (off by {abs(gap):.2f} > {thresholds.entropy_gap:g})")
    lagrange_steps, lagrange = window(history, "lagrange")
    if len(lagrange_steps) >= MIN_PROBES:
        value = max(abs(float(np.mean(lagrange))), 1e-3)
        result["lagrange_drift"] = relative_drift(lagrange_steps, lagrange, value)
        if result["lagrange_drift"] > thresholds.lagrange_drift:
            reasons.append(f"Lagrange multiplier {result['lagrange']:.3g} drifting {result['lagrange_drift']:.1%}/1k steps "
                           f"(> {thresholds.lagrange_drift:.1%})")
    if unmeasured is not None:  # still moving where another signal says so, else unmeasured
        result["verdict"] = MOVING if reasons else UNMEASURED
        result["reasons"] = reasons + [unmeasured]
        return result
    result["verdict"] = MOVING if reasons else SETTLED
    result["reasons"] = reasons
    return result


def describe(readiness: dict) -> str:
    """One line: "settled: Q -0.2/1k steps (0.4% of 46), entropy -1.9 vs target -2, ..." or
    "still moving: <what is not settled>"."""
    r = readiness
    if r["verdict"] == UNMEASURED:
        return f"unmeasured: {'; '.join(r['reasons'])}"
    if r["verdict"] == MOVING:
        text = f"still moving: {'; '.join(r['reasons'])}"
    else:
        parts = [f"Q {r['q_drift_per_1k']:+.3g}/1k steps ({r['q_drift']:.1%} of {r['q_scale']:.3g})"]
        if r.get("entropy_gap") is not None:
            parts.append(f"entropy {r['entropy']:.2f} vs target {r['target_entropy']:.3g}")
        if r.get("lagrange_drift") is not None:
            parts.append(f"Lagrange multiplier {r['lagrange']:.3g} ({r['lagrange_drift']:.1%}/1k steps)")
        text = "settled: " + ", ".join(parts)
    extras = []
    if r.get("temperature") is not None:
        extras.append(f"temperature {r['temperature']:.3g}")
    if r.get("eval_score") is not None:
        extras.append(f"eval {r['eval_score']:.3g} at step {r['eval_step']}")
    return text + (f" [{', '.join(extras)}]" if extras else "")


def unsettled_warning(readiness: Optional[dict], checkpoint: str) -> Optional[str]:
    """The warning a fine-tuning start prints for a checkpoint whose pre-training had not
    settled (None when it had, or when the checkpoint records no verdict)."""
    if not readiness or readiness.get("verdict") == SETTLED:
        return None
    step = readiness.get("step")
    if readiness.get("verdict") == UNMEASURED:
        return (f"[wsrl] warning: checkpoint {checkpoint}: its pre-training's readiness was not measured ({'; '.join(readiness['reasons'])}: "
                "pretrain.log_every=0, or too few steps); nothing says it had settled (docs/readiness.md)")
    return (f"[wsrl] warning: checkpoint {checkpoint} comes from a pre-training that had not settled "
            f"(at step {step}: {describe(readiness)}); fine-tuning from it can collapse (docs/readiness.md). "
            "Pre-train longer, or with pretrain.stop_when_settled=true")


# ---- measurement -------------------------------------------------------------------------------


@jax.jit
def _probe(agent, batch: dict, rng: jax.Array) -> dict:
    features = agent.features(batch["observations"])
    q = agent.critic.apply_fn({"params": agent.critic.params}, features, batch["actions"])  # (E, B)
    _, log_probs = sample_policy(agent.actor, agent.actor.params, jax.lax.stop_gradient(features), rng)
    return {"q_mean": q.mean(), "q_std": q.mean(axis=0).std(), "entropy": -log_probs.mean()}


class ReadinessTracker:
    """Measures an offline agent every time `measure` is called and keeps the history that
    `assess` reads. `sample`: a fixed batch of offline transitions (`held_out_sample`)."""

    def __init__(self, sample: dict, thresholds: ReadinessThresholds, target_entropy: Optional[float], seed: int = 0):
        self.batch = jax.tree_util.tree_map(jnp.asarray, {k: sample[k] for k in ("observations", "actions")})
        self.thresholds = thresholds
        self.target_entropy = target_entropy
        self.history: list[dict] = []
        self.evaluations: list[tuple[int, float]] = []
        self._rng = jax.random.PRNGKey(seed + 0x5E77)

    @classmethod
    def for_agent(cls, agent, sample: dict, thresholds: ReadinessThresholds, seed: int = 0) -> "ReadinessTracker":
        """The target entropy gates the verdict only for agents with a learned temperature."""
        target = float(agent.target_entropy) if hasattr(agent, "temperature") and hasattr(agent, "target_entropy") else None
        return cls(sample, thresholds, target, seed)

    @property
    def rng(self) -> jax.Array:
        """The key of the next measurement (saved with a pre-training's checkpoint)."""
        return self._rng

    def restore(self, run_dir, step: int, rng: Optional[Sequence[int]] = None) -> None:
        """A resumed pre-training's history: the rows of RUN_DIR/readiness.csv and eval.csv up
        to `step`, and the measurement key saved with its checkpoint."""
        import csv
        from pathlib import Path

        from learner.summary import evaluation_score

        def rows(name):
            path = Path(run_dir) / name
            if not path.is_file():
                return []
            with open(path, newline="") as f:
                return [r for r in csv.DictReader(f) if float(r["step"]) <= step]

        self.history = [{k: (int(float(v)) if k == "step" else float(v)) for k, v in r.items() if v not in ("", None)}
                        for r in rows("readiness.csv")]
        self.evaluations = [(int(float(r["step"])), evaluation_score({k: float(v) for k, v in r.items() if v not in ("", None)}))
                            for r in rows("eval.csv")]
        if rng is not None:
            self._rng = jnp.asarray(rng, jnp.uint32)

    def measure(self, agent, step: int, train_info: Optional[dict] = None) -> dict:
        """One measurement row (floats; logged as the "readiness" stream)."""
        self._rng, key = jax.random.split(self._rng)
        row = {k: float(v) for k, v in jax.device_get(_probe(agent, self.batch, key)).items()}
        if hasattr(agent, "temperature"):
            row["temperature"] = float(agent.temperature_value)
        lagrange = agent.lagrange_value() if hasattr(agent, "lagrange_value") else None
        if lagrange is not None:
            row["lagrange"] = float(lagrange)
        if train_info is not None and "cql_q_gap" in train_info:
            row["cql_q_gap"] = float(train_info["cql_q_gap"])
        row["step"] = int(step)
        self.history.append(row)
        return row

    def record_evaluation(self, step: int, score: float) -> None:
        self.evaluations.append((int(step), float(score)))

    def assess(self) -> dict:
        return assess(self.history, self.target_entropy, self.thresholds, self.evaluations)
