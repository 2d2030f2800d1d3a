"""Pre-training readiness (learner/readiness.py): the drift and verdict arithmetic against
hand-computed values, the measurement against the agent's own networks, and `wsrl pretrain`
recording, printing and acting on the verdict."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from learner import readiness
from learner.readiness import MOVING, SETTLED, UNMEASURED, ReadinessThresholds, assess, describe, slope_per_1k, window
from tests.conftest import tiny_config


def test_slope_per_1k_hand_computed():
    assert slope_per_1k([0, 1000, 2000, 3000], [0, -2, -4, -6]) == pytest.approx(-2.0)
    # x mean 2500, dx = -1500, -500, 500, 1500; y mean 2.5, dy = -1.5, 0.5, -0.5, 1.5:
    # sum dx*dy = 4000, sum dx^2 = 5e6 -> 8e-4 per step, 0.8 per 1k steps.
    assert slope_per_1k([1000, 2000, 3000, 4000], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(slope_per_1k([500], [1.0]))
    assert math.isnan(slope_per_1k([500, 500], [1.0, 2.0]))
    with pytest.raises(ValueError, match="steps and values"):
        slope_per_1k([1, 2], [1.0])


def _history(steps, q, entropy=None, lagrange=None, q_std=0.5):
    rows = []
    for i, step in enumerate(steps):
        row = {"step": step, "q_mean": q[i], "q_std": q_std}
        if entropy is not None:
            row["entropy"] = entropy[i]
        if lagrange is not None:
            row["lagrange"] = lagrange[i]
        rows.append(row)
    return rows


def test_window_is_the_last_quarter_or_the_last_four_rows():
    history = _history(list(range(250, 4001, 250)), [float(i) for i in range(16)])
    steps, values = window(history, "q_mean")
    assert steps == [3000.0, 3250.0, 3500.0, 3750.0, 4000.0]  # step >= 0.75 * 4000
    assert values == [11.0, 12.0, 13.0, 14.0, 15.0]
    # at 1,000 steps the last quarter holds 2 rows: the last 4 are taken instead
    steps, _ = window(history[:4], "q_mean")
    assert steps == [250.0, 500.0, 750.0, 1000.0]
    # NaN and missing values are skipped
    history[-1]["q_mean"] = float("nan")
    assert window(history, "q_mean")[0][-1] == 3750.0
    assert window(history, "lagrange") == ([], [])


def test_assess_still_moving_names_the_numbers():
    # Q falls 16 per 1k steps at a scale of ~88 (the point maze at 5k steps); entropy
    # 0.23 against a target of -2.
    steps = [4000, 4250, 4500, 4750, 5000]
    q = [-75.5 - 0.016 * (s - 4000) for s in steps]
    r = assess(_history(steps, q, entropy=[0.3, 0.3, 0.25, 0.2, 0.23]), -2.0, ReadinessThresholds())
    assert r["verdict"] == MOVING
    assert r["q_drift_per_1k"] == pytest.approx(-16.0)
    assert r["q_scale"] == pytest.approx(abs(np.mean(q)))  # mean Q -83.5
    assert r["q_drift"] == pytest.approx(16.0 / 83.5)
    assert r["entropy_gap"] == pytest.approx(2.23)
    line = describe(r)
    assert line.startswith("still moving: Q -16/1k steps (19.2% of 83.5, > 2.0%)")
    assert "entropy 0.23 vs target -2 (off by 2.23 > 0.5)" in line


def test_assess_settled_and_the_thresholds_decide():
    steps = [7000, 7500, 8000, 8500, 9000, 9500, 10000]
    q = [-50.0, -50.4, -49.8, -50.1, -50.3, -49.9, -50.2]
    history = _history(steps, q, entropy=[-1.9] * 7)
    r = assess(history, -2.0, ReadinessThresholds(), [(5000, 90.0), (10000, 100.0)])
    # window: steps >= 7500 -> 6 rows; the slope of [-50.4, -49.8, -50.1, -50.3, -49.9, -50.2]
    expected = slope_per_1k(steps[1:], q[1:])
    assert r["verdict"] == SETTLED and r["reasons"] == []
    assert r["q_drift_per_1k"] == pytest.approx(expected)
    assert r["q_drift"] == pytest.approx(abs(expected) / 50.1166666, rel=1e-5)
    assert (r["eval_step"], r["eval_score"]) == (10000, 100.0)
    assert describe(r).startswith("settled: Q ")
    assert "eval 100 at step 10000" in describe(r)
    # a stricter entropy threshold turns the same history into "still moving"
    strict = assess(history, -2.0, ReadinessThresholds(entropy_gap=0.05))
    assert strict["verdict"] == MOVING and "entropy -1.90 vs target -2" in strict["reasons"][0]
    # Q's scale has a floor of the sample's std and of 1: Q near 0 is not "drifting 1000%"
    flat = assess(_history([1000, 2000, 3000, 4000], [0.01, 0.02, 0.03, 0.04], q_std=0.1), None, ReadinessThresholds())
    assert flat["q_scale"] == 1.0 and flat["q_drift"] == pytest.approx(0.01) and flat["verdict"] == SETTLED


def test_assess_lagrange_drift_and_unmeasured():
    steps = [1000, 2000, 3000, 4000]
    q = [-10.0] * 4
    # lambda 1.0 -> 1.3: slope 0.1 per 1k at a mean of 1.15 -> 8.7% > 5%
    r = assess(_history(steps, q, lagrange=[1.0, 1.1, 1.2, 1.3]), None, ReadinessThresholds())
    assert r["lagrange_drift"] == pytest.approx(0.1 / 1.15)
    assert r["verdict"] == MOVING and r["reasons"][0].startswith("Lagrange multiplier 1.3 drifting 8.7%/1k steps")
    # too few measurements: unmeasured, unless another signal already says "moving"
    few = assess(_history([250, 500], [-1.0, -2.0], entropy=[-2.0, -2.0]), -2.0, ReadinessThresholds())
    assert few["verdict"] == UNMEASURED and few["reasons"] == ["Q drift unmeasured (2 measurement(s), 4 needed)"]
    few_moving = assess(_history([250, 500], [-1.0, -2.0], entropy=[1.0, 1.0]), -2.0, ReadinessThresholds())
    assert few_moving["verdict"] == MOVING and len(few_moving["reasons"]) == 2
    assert assess([], -2.0, ReadinessThresholds())["verdict"] == UNMEASURED


def test_unsettled_warning():
    moving = assess(_history([1000, 2000, 3000, 4000], [-10.0, -20.0, -30.0, -40.0]), None, ReadinessThresholds())
    text = readiness.unsettled_warning(moving, "pre/checkpoint.ckpt")
    assert text.startswith("[wsrl] warning: checkpoint pre/checkpoint.ckpt comes from a pre-training that had not settled (at step 4000: still moving: Q -10/1k steps")
    settled = assess(_history([1000, 2000, 3000, 4000], [-10.0] * 4), None, ReadinessThresholds())
    assert readiness.unsettled_warning(settled, "x") is None
    assert readiness.unsettled_warning(None, "x") is None  # older checkpoints record no verdict


def test_tracker_measures_the_agents_own_networks():
    from learner.agents import make_agent
    from learner.agents.common import sample_policy

    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=1)
    rng = np.random.default_rng(0)
    sample = {"observations": rng.normal(size=(32, 2)).astype(np.float32),
              "actions": rng.uniform(-1, 1, size=(32, 2)).astype(np.float32)}
    tracker = readiness.ReadinessTracker.for_agent(agent, sample, ReadinessThresholds(), seed=5)
    assert tracker.target_entropy == -2.0  # -action_dim
    row = tracker.measure(agent, 100, {"cql_q_gap": np.float32(1.5)})
    q = np.asarray(agent.q_values(sample["observations"], sample["actions"]))
    assert row["q_mean"] == pytest.approx(float(q.mean()), rel=1e-5)
    assert row["q_std"] == pytest.approx(float(q.mean(axis=0).std()), rel=1e-4)
    _, key = jax.random.split(jax.random.PRNGKey(5 + 0x5E77))
    _, log_probs = sample_policy(agent.actor, agent.actor.params, sample["observations"], key)
    assert row["entropy"] == pytest.approx(-float(log_probs.mean()), rel=1e-5)
    assert row["temperature"] == pytest.approx(float(agent.temperature_value))
    assert row["cql_q_gap"] == 1.5 and row["step"] == 100 and "lagrange" not in row
    iql = make_agent("iql", config.agent, 2, 2, seed=1)
    iql_tracker = readiness.ReadinessTracker.for_agent(iql, sample, ReadinessThresholds())
    assert iql_tracker.target_entropy is None and "temperature" not in iql_tracker.measure(iql, 1)


def test_checkpoint_round_trips_the_verdict(tmp_path, pretrained):
    from learner.agents import make_agent
    from learner.checkpoint import read_checkpoint, save_checkpoint

    _, agent = pretrained
    verdict = assess(_history([1000, 2000, 3000, 4000], [-10.0] * 4), -2.0, ReadinessThresholds())
    spec = {"task": "pointmass-goal", "observation_dim": 2, "action_dim": 2}
    path = save_checkpoint(tmp_path / "r.ckpt", agent, tiny_config(), spec, {"pretrain_steps": 4000}, verdict)
    assert read_checkpoint(path).readiness == json.loads(json.dumps(verdict))
    bare = save_checkpoint(tmp_path / "bare.ckpt", make_agent("sac", tiny_config().agent, 2, 2), tiny_config(), spec)
    assert read_checkpoint(bare).readiness is None


def test_pretrain_records_prints_and_stops_when_settled(tmp_path, capsys):
    from learner.checkpoint import read_checkpoint
    from learner.pretrain import pretrain

    # A budget of 40 steps measured every 4: the verdict with default thresholds is recorded;
    # with thresholds no tiny run can miss, it stops at the 4th measurement (step 16).
    config = tiny_config(pretrain={"num_steps": 40, "log_every": 4, "eval_every": 20})
    path = pretrain(config, str(tmp_path / "full"))
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["readiness"]["step"] == 40
    assert summary["readiness"]["verdict"] in (SETTLED, MOVING)
    assert read_checkpoint(path).readiness == summary["readiness"]
    assert "[wsrl pretrain] step 20: readiness " in out
    assert f"[wsrl pretrain] readiness: {describe(summary['readiness'])}" in out
    rows = (tmp_path / "full" / "readiness.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["step", "entropy", "q_mean", "q_std"] and len(rows) == 11

    loose = tiny_config(pretrain={"num_steps": 40, "log_every": 4, "eval_every": 20, "stop_when_settled": True,
                                  "readiness_q_drift": 1e9, "readiness_entropy_gap": 1e9})
    path = pretrain(loose, str(tmp_path / "early"))
    out = capsys.readouterr().out
    assert "settled at step 16 of 40: stopping" in out
    assert read_checkpoint(path).counters["pretrain_steps"] == 16
    summary = json.loads((tmp_path / "early" / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["readiness"]["verdict"] == SETTLED
    assert summary["final_eval"] is not None  # evaluated at the step it stopped


class _StopAfter:
    """A `stop` whose request is seen at the n-th look (after the n-th dispatch)."""

    def __init__(self, n: int):
        outer = self
        self.looks = 0

        class Requested:
            def is_set(self):
                outer.looks += 1
                return outer.looks >= n

        self.requested = Requested()


def test_pretrain_stopped_then_resumed_equals_one_uninterrupted_run(tmp_path, capsys):
    """A stop saves what continues the run exactly: the resumed pre-training ends with the
    agent (parameters, optimizer states, RNG), logs and verdict of an uninterrupted one."""
    import csv

    from learner.checkpoint import read_checkpoint
    from learner.cli import main
    from learner.pretrain import pretrain
    from tests.conftest import leaves_equal

    config = tiny_config(pretrain={"num_steps": 24, "log_every": 4, "eval_every": 12})
    full = read_checkpoint(pretrain(config, str(tmp_path / "full")))
    part = tmp_path / "part"
    pretrain(config, str(part), stop=_StopAfter(2))  # dispatches of 4 steps: stops at step 8
    out = capsys.readouterr().out
    assert "[wsrl pretrain] stopped at step 8 of 24" in out and f"continue with: wsrl pretrain --resume {part}" in out
    stopped = read_checkpoint(part / "checkpoint.ckpt")
    assert stopped.counters["pretrain_steps"] == 8 and stopped.counters["interrupted"] is True
    assert json.loads((part / "summary.json").read_text())["interrupted"] is True

    assert main(["pretrain", "--resume", str(part)]) == 0
    resumed = read_checkpoint(part / "checkpoint.ckpt")
    assert resumed.counters["pretrain_steps"] == 24 and resumed.counters["interrupted"] is False
    assert leaves_equal(resumed.state, full.state)
    assert resumed.readiness == full.readiness
    for name in ("train.csv", "readiness.csv", "eval.csv"):
        rows = lambda d: list(csv.DictReader(open(d / name)))  # noqa: E731
        assert rows(part) == rows(tmp_path / "full"), name

    # Finished: nothing to continue unless the budget grows; other fields cannot change.
    assert main(["pretrain", "--resume", str(part)]) == 2
    assert "the pre-training finished at 24 steps; to pre-train longer give pretrain.num_steps=N with N > 24" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(part), "agent.actor_lr=0.1"]) == 2
    assert "'agent.actor_lr' cannot change when a pre-training continues" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(part), "pretrain.num_steps=32"]) == 0
    assert read_checkpoint(part / "checkpoint.ckpt").counters["pretrain_steps"] == 32
    assert main(["pretrain", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no pre-training there" in capsys.readouterr().err


def test_unmeasured_warning_says_so():
    text = readiness.unsettled_warning(assess([], -2.0, ReadinessThresholds()), "c.ckpt")
    assert text == ("[wsrl] warning: checkpoint c.ckpt: its pre-training's readiness was not measured (no measurement yet: "
                    "pretrain.log_every=0, or too few steps); nothing says it had settled (docs/readiness.md)")
