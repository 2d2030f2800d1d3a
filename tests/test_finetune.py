import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actor.policy import Policy
from learner.checkpoint import read_checkpoint
from learner.cli import main
from learner.finetune import Finetuner
from learner.networks import auto_matmul_dtype
from tests.conftest import leaves_equal, tiny_config


def test_warmup_acts_with_the_frozen_policy_and_does_not_update(pretrained):
    path, pre_agent = pretrained
    config = tiny_config(finetune={"checkpoint": str(path), "warmup_steps": 5, "num_steps": 8, "utd_ratio": 3})
    runner = Finetuner(config)
    policy = Policy(config.agent, 2)
    rng = runner.action_rng
    # Make the live actor differ from the pre-trained one: warmup must ignore it.
    live = runner.agent
    runner.agent = live.replace(actor=live.actor.replace(params=jax.tree_util.tree_map(jnp.zeros_like, live.actor.params)))
    for step in range(5):
        obs = runner.observation.copy()
        episode, info = runner.step()
        rng, key = jax.random.split(rng)
        expected = policy(pre_agent.actor.params, obs, key)
        np.testing.assert_array_equal(runner.replay.data["actions"][step], expected)
        assert info is None
    runner.agent = live
    assert runner.updates == 0 and len(runner.replay) == 5
    assert leaves_equal(runner.agent.critic.params, pre_agent.critic.params)  # bit-identical
    assert leaves_equal(runner.agent.actor.params, pre_agent.actor.params)
    # Step K+1: the first update; then exactly M critic and 1 actor update per env step.
    critic_steps0 = int(runner.agent.critic.step)
    for n in range(1, 4):
        _, info = runner.step()
        assert info is not None and runner.updates == n
        assert int(runner.agent.critic.step) - critic_steps0 == 3 * n
        assert int(runner.agent.actor.step) == int(pre_agent.actor.step) + n
        assert int(runner.agent.temperature.step) == int(pre_agent.temperature.step) + n
    assert not runner.in_warmup
    assert not leaves_equal(runner.agent.actor.params, pre_agent.actor.params)


def test_time_limits_are_not_terminals_and_calql_gets_mc_returns(pretrained):
    path, _ = pretrained
    config = tiny_config(finetune={"checkpoint": str(path), "algorithm": "calql", "warmup_steps": 150, "num_steps": 150})
    runner = Finetuner(config)
    # Act with a policy that never moves: every episode hits the 100-step time limit.
    runner.act = lambda obs: np.zeros(2, np.float32)
    episodes = []
    for _ in range(100):
        episode, _ = runner.step()
        if episode:
            episodes.append(episode)
    assert len(episodes) == 1 and episodes[0]["length"] == 100 and episodes[0]["success"] == 0.0
    assert runner.replay.data["terminals"][:100].sum() == 0  # truncation keeps bootstrapping
    # CalQL: the failed episode's returns-to-go use the sparse convention -5 / (1 - 0.99)
    np.testing.assert_allclose(runner.replay.data["mc_returns"][:100], -500.0, rtol=1e-5)
    runner.step()
    assert np.isneginf(runner.replay.data["mc_returns"][100])  # episode still running


def test_cli_pretrain_then_finetune_end_to_end(tmp_path, capsys):
    pre_dir, ft_dir = tmp_path / "pre", tmp_path / "ft"
    common = [
        "agent.critic_hidden_dims=[16]", "agent.actor_hidden_dims=[16]", "agent.critic_ensemble_size=4",
        "agent.batch_size=8", "agent.cql_num_actions=2", "logging.tensorboard=true", "logging.progress=false",
    ]
    assert main(["pretrain", "--run-dir", str(pre_dir), *common, "pretrain.num_steps=6", "pretrain.dataset_episodes=4",
                 "pretrain.eval_every=3", "pretrain.eval_episodes=1", "pretrain.log_every=2"]) == 0
    ckpt = read_checkpoint(pre_dir / "checkpoint.ckpt")
    assert ckpt.algorithm == "calql" and ckpt.counters["pretrain_steps"] == 6 and ckpt.readiness["step"] == 6
    assert int(ckpt.state["critic"]["step"]) == 6
    assert main(["finetune", "--checkpoint", str(pre_dir / "checkpoint.ckpt"), "--run-dir", str(ft_dir), *common,
                 "finetune.warmup_steps=4", "finetune.num_steps=7", "finetune.eval_every=5", "finetune.eval_episodes=1",
                 "finetune.log_every=1"]) == 0
    final = read_checkpoint(ft_dir / "checkpoint.ckpt")
    assert final.algorithm == "sac" and final.counters["env_steps"] == 7 and final.counters["updates"] == 3
    # both start-up lines say what agent.critic_matmul_dtype "auto" chose on this machine
    dtype, reason = auto_matmul_dtype()
    out = capsys.readouterr().out
    printed = [line for line in out.splitlines() if line.startswith(("[wsrl pretrain] calql", "[wsrl finetune] sac"))]
    assert len(printed) == 2 and all(f"critic matmuls {dtype} (auto: {reason})" in line for line in printed), printed
    assert all(f"device {jax.devices()[0].platform}" in line for line in printed), printed
    # the result at the end: the final score, the dip, the files and the plot command
    summary = json.loads((ft_dir / "summary.json").read_text())
    assert summary["schema"] == "wsrl-summary-v1" and summary["command"] == "finetune" and summary["evaluations"] == 3
    last = out.splitlines()[-5:]
    assert last[0].startswith(f"[wsrl finetune] final normalized score {summary['final_score']:.3g} at env step 7")
    assert last[1].startswith("[wsrl finetune] dip after warmup") and last[-1] == f"[wsrl finetune] plot: wsrl plot {ft_dir}"
    assert (ft_dir / "config.yaml").exists() and list((ft_dir / "tensorboard").iterdir())
    with open(ft_dir / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [5, 6, 7]
    for key in ("critic_loss", "q_mean", "q_min", "q_max", "target_q", "actor_loss", "entropy", "temperature", "updates"):
        assert key in rows[0]
    with open(ft_dir / "eval.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [0, 5, 7]
    # the same run directory is never overwritten
    assert main(["finetune", "--checkpoint", str(pre_dir / "checkpoint.ckpt"), "--run-dir", str(ft_dir), *common]) == 2


def test_cli_rejects_bad_config_with_a_message(capsys):
    assert main(["finetune", "finetune.warmup_steps=-1"]) == 2
    assert "'finetune.warmup_steps': got -1, expected an integer >= 0" in capsys.readouterr().err


def test_finetune_logs_forgetting_diagnostics_and_the_dip(pretrained, tmp_path):
    import json

    from learner.diagnostics import DIAGNOSTIC_KEYS
    from learner.finetune import finetune

    path, _ = pretrained
    config = tiny_config(finetune={"checkpoint": str(path), "warmup_steps": 4, "num_steps": 12, "eval_every": 4,
                                   "diagnostics_every": 6, "diagnostics_states": 8})
    run = finetune(config, str(tmp_path / "run"))
    with open(run / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["step"]) for r in rows] == [0.0, 6.0, 12.0]
    assert set(DIAGNOSTIC_KEYS) <= set(rows[0])
    # At the start the agent is the pre-trained one: both KLs vanish; the buffer is empty.
    assert float(rows[0]["kl_policy_offline"]) == pytest.approx(0.0, abs=1e-6)
    assert float(rows[0]["kl_q_softmax_offline"]) == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["online_q_mean"] == "nan" and float(rows[2]["kl_policy_online"]) > 0
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "eval.csv") as f:
        evals = [(float(r["step"]), float(r["normalized_score"])) for r in csv.DictReader(f)]
    after_warmup = [score for step, score in evals if step > 4]
    assert summary["dip"] == pytest.approx(min(after_warmup) - evals[0][1])
    assert summary["env_steps"] == 12 and summary["final_eval"]["normalized_score"] == evals[-1][1]
