"""The pixel task end to end (issue 19): `wsrl run --config pixels` (pre-training on the
scripted camera data, warmup with the frozen policy, fine-tuning over gRPC, evaluation and the
forgetting diagnostics), then the same checkpoint fine-tuned by a separate `wsrl learner`
process fed by a `wsrl actor --robot` process that renders the camera. Tiny networks and
budgets (a 4-filter encoder with stride 4): the run proves the wiring, not the learning."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from envs import pixel_reach
from learner.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]

try:
    pixel_reach.PixelReachEnv().close()
    _UNAVAILABLE = None
except pixel_reach.RenderingUnavailable as e:  # as tests/test_pixel_task.py: say why and skip
    _UNAVAILABLE = str(e)
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"headless rendering unavailable: {_UNAVAILABLE}")

WARMUP, STEPS, UTD = 6, 14, 2
TINY = [
    "agent.critic_ensemble_size=2", "agent.critic_hidden_dims=[16]", "agent.actor_hidden_dims=[16]", "agent.batch_size=8",
    "agent.cql_num_actions=2", "agent.encoder_channels=[4]", "agent.encoder_strides=[4]", "agent.encoder_feature_dim=8",
    "pretrain.dataset_episodes=4", "pretrain.num_steps=4", "pretrain.eval_every=0", "pretrain.eval_episodes=1",
    f"finetune.warmup_steps={WARMUP}", f"finetune.num_steps={STEPS}", f"finetune.utd_ratio={UTD}", "finetune.eval_every=7",
    "finetune.eval_episodes=1", "finetune.diagnostics_every=7", "finetune.diagnostics_states=8", "finetune.log_every=1",
    "logging.tensorboard=false", "logging.progress=false",
]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """One `wsrl run --config pixels` (its run directory), shared by the tests below."""
    from learner.cli import main

    run_dir = tmp_path_factory.mktemp("pixels") / "run"
    cwd = os.getcwd()
    os.chdir(run_dir.parent)  # mujoco may write MUJOCO_LOG.TXT into the working directory
    try:
        assert main(["run", "--config", "pixels", "--run-dir", str(run_dir), "--batch-size", "4", *TINY]) == 0
    finally:
        os.chdir(cwd)
    return run_dir


def test_wsrl_run_pretrains_warms_up_finetunes_and_evaluates_from_pixels(pixel_run):
    pre = read_checkpoint(pixel_run / "pretrain" / "checkpoint.ckpt")
    final = read_checkpoint(pixel_run / "checkpoint.ckpt")
    for checkpoint in (pre, final):
        parts = {p["name"]: p for p in checkpoint.spec["observation_spec"]}
        assert parts["camera"]["shape"] == [64, 64, 3] and parts["camera"]["dtype"] == "uint8"
        assert parts["state"]["shape"] == [4]
    # The encoder was pre-trained, then fine-tuned: UTD critic updates per env step after warmup.
    assert int(pre.state["encoder"]["step"]) == 4
    assert final.counters["env_steps"] == final.counters["processed_steps"] == STEPS
    assert final.counters["updates"] == STEPS - WARMUP
    assert int(final.state["critic"]["step"]) - int(pre.state["critic"]["step"]) == UTD * (STEPS - WARMUP)
    assert int(final.state["encoder"]["step"]) - int(pre.state["encoder"]["step"]) == UTD * (STEPS - WARMUP)

    evals = _rows(pixel_run / "eval.csv")
    assert [int(r["step"]) for r in evals] == [0, 7, 14]
    assert [int(float(r["policy_version"])) for r in evals] == [0, 1, 8]  # version = updates = step - K after warmup
    assert all(float(r["episode_length"]) > 0 for r in evals)
    summary = json.loads((pixel_run / "summary.json").read_text())
    assert summary["evaluations"] == 3 and summary["final_normalized_score"] == float(evals[-1]["normalized_score"])

    # Forgetting diagnostics on camera observations: zero KL before any update, finite later.
    diagnostics = _rows(pixel_run / "diagnostics.csv")
    assert [int(r["step"]) for r in diagnostics] == [0, 7, 14]
    assert float(diagnostics[0]["kl_policy_offline"]) == 0.0 and math.isnan(float(diagnostics[0]["online_q_mean"]))
    last = {k: float(v) for k, v in diagnostics[-1].items()}
    assert all(math.isfinite(v) for v in last.values()) and last["kl_policy_offline"] > 0


def test_separate_learner_and_robot_actor_processes_train_from_the_camera(pixel_run, tmp_path):
    """`wsrl learner` and `wsrl actor --robot --env pixel-reach`, two processes over loopback,
    camera frames compressed on the wire: the learner trains on them and finishes, and the
    robot actor stops with it."""
    pytest.importorskip("zstandard")
    checkpoint = pixel_run / "pretrain" / "checkpoint.ckpt"
    run_dir = tmp_path / "learner"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    learner_log, actor_log = tmp_path / "learner.log", tmp_path / "actor.log"

    def start(args, log):
        with open(log, "w") as out:
            return subprocess.Popen([sys.executable, "-m", "learner.cli", *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)

    learner = start(["learner", "--config", "pixels", "--checkpoint", str(checkpoint), "--run-dir", str(run_dir),
                     "--bind", "127.0.0.1:0", "--mode", "async", *TINY,
                     "finetune.diagnostics_every=0"], learner_log)  # (checked above; a compile less)
    actor = None
    try:
        deadline = time.monotonic() + 180
        while not (found := re.findall(r"on (127\.0\.0\.1:\d+) ->", learner_log.read_text())):
            assert learner.poll() is None and time.monotonic() < deadline, learner_log.read_text()
            time.sleep(0.2)
        actor = start(["actor", "--robot", "--env", "pixel-reach", "--learner", found[0], "--actor-id", "cam-1",
                       "--spool-dir", str(tmp_path / "spool"), "--control-hz", "50", "--batch-size", "4",
                       "--compress", "zstd", "--status-every", "0"], actor_log)
        assert learner.wait(timeout=300) == 0, learner_log.read_text()
        # The learner's last answers said it was done: the robot actor stops by itself, exit 0.
        assert actor.wait(timeout=60) == 0, actor_log.read_text()
    finally:
        for process in (actor, learner):
            if process is not None and process.poll() is None:
                # A second SIGTERM: exit at once (the learner is gone, nothing can be flushed;
                # the spool keeps what the actor holds).
                process.terminate()
                time.sleep(0.5)
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    text = actor_log.read_text()
    assert "connected to learner" in text and "the learner has trained all its env steps and is stopping; stopping too" in text, text
    final = read_checkpoint(run_dir / "checkpoint.ckpt")
    pre = read_checkpoint(checkpoint)
    assert final.counters["processed_steps"] >= STEPS and final.counters["updates"] >= 1
    assert int(final.state["encoder"]["step"]) > int(pre.state["encoder"]["step"])
    assert np.isfinite(float(_rows(run_dir / "eval.csv")[-1]["normalized_score"]))
