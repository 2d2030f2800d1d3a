"""Evaluation during distributed fine-tuning: the schedule, the evaluator over gRPC, the
checks on reported results, and summary.json."""

from __future__ import annotations

import csv
import math

import grpc
import numpy as np
import pytest

from actor.client import LearnerClient
from actor.evaluator import EvaluatorSettings, run_evaluator
from actor.loop import ActorLoop, ActorSettings
from envs.tasks import get_task
from learner.distributed.evaluations import Evaluations
from learner.distributed.server import LearnerServer
from learner.distributed.serving import _evaluate
from learner.distributed.settings import DistributedSettings
from learner.distributed.trainer import Trainer
from learner.run_logger import RunLogger
from learner.summary import SCHEMA, run_summary
from protos.wsrl.v1 import learner_pb2 as pb
from tests.conftest import tiny_config

SPEC = get_task("pointmass-goal").spec()


def test_schedule_snapshots_the_version_current_at_each_step():
    """eval_every 4, num_steps 10: steps 0, 4, 8 and 10 (the end); the version is whatever was
    published when the step was reached, also when a jump skips past a scheduled step."""
    e = Evaluations(eval_every=4, num_steps=10, episodes=2, seed=0)
    for processed, version in [(0, 0), (1, 0), (3, 0), (4, 1), (5, 2), (9, 6), (10, 7)]:
        e.observe(processed, version, version, params={"v": version})
    assert {s: v for s, (v, _, _) in e.pending.items()} == {0: 0, 4: 1, 8: 6, 10: 7}
    assert e.next_task(-1) == (0, 0) and e.next_task(4) == (8, 6) and e.next_task(10) is None
    # With --forever, multiples of eval_every go on after num_steps.
    e.observe(16, 9, 9, params={})
    assert sorted(e.pending) == [0, 4, 8, 10, 12, 16]
    # A resumed learner at step 9 evaluates from 10 on (0..8 belong to the run before).
    r = Evaluations(eval_every=4, num_steps=10, episodes=2, seed=0)
    r.resume_at(9)
    r.observe(9, 5, 5, {})
    r.observe(11, 6, 6, {})
    assert sorted(r.pending) == [10]


def test_no_eval_every_means_step_0_and_the_end():
    e = Evaluations(eval_every=0, num_steps=7, episodes=1, seed=0)
    for p in range(9):
        e.observe(p, p, p, {})
    assert sorted(e.pending) == [0, 7]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint

    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=3)
    return save_checkpoint(tmp_path_factory.mktemp("pre") / "pre.ckpt", agent, config, SPEC)


def test_evaluator_evaluates_every_scheduled_version_over_grpc(checkpoint, tmp_path):
    """Sync mode, K = 4, eval_every 6, 20 env steps: rows at 0, 6, 12, 18, 20 with the version
    current at each step (step - K after warmup); the last one equals an in-process evaluation
    of the final policy with the same seeds."""
    k, n = 4, 20
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": k, "num_steps": n, "eval_every": 6, "eval_episodes": 2})
    with RunLogger(tmp_path, config.logging) as logger:
        trainer = Trainer(config, SPEC, DistributedSettings(), logger=logger)
        server = LearnerServer(trainer).start()
        try:
            loop = ActorLoop(ActorSettings(learner=server.address, batch_size=3, pull_every=2, num_steps=n))
            loop.run()
            loop.close()
            assert trainer.wait_processed(n, 60)
            result = run_evaluator(EvaluatorSettings(learner=server.address, evaluator_id="ev"))
            final = _evaluate(config, trainer.agent.actor.params)
        finally:
            server.stop(grace=0)
    with open(tmp_path / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert result == {"evaluations": 5, "last_step": n}
    assert [int(r["step"]) for r in rows] == [0, 6, 12, 18, 20]
    assert [int(float(r["policy_version"])) for r in rows] == [0, 6 - k, 12 - k, 18 - k, 20 - k]
    last = rows[-1]
    assert float(last["normalized_score"]) == pytest.approx(final["normalized_score"])
    assert float(last["return"]) == pytest.approx(final["return"]) and float(last["success_rate"]) == final["success_rate"]
    assert trainer.evaluations.finished(n)


@pytest.fixture
def server_with_pending(checkpoint):
    config = tiny_config(finetune={"checkpoint": str(checkpoint), "warmup_steps": 100, "num_steps": 200, "eval_every": 50, "eval_episodes": 3})
    trainer = Trainer(config, SPEC, DistributedSettings())
    server = LearnerServer(trainer).start()  # start() snapshots step 0
    yield server
    server.stop(grace=0)


def _result(task, **changes):
    fields = dict(evaluator_id="ev", env_step=task.env_step, policy_version=task.policy_version, learner_id=task.learner_id, episodes=task.episodes,
                  mean_return=-10.0, return_std=1.0, success_rate=1 / 3, episode_length=50.0, normalized_score=12.5)
    fields.update(changes)
    return pb.EvaluationResult(**fields)


@pytest.mark.parametrize("changes, code, field", [
    ({"env_step": 7}, grpc.StatusCode.INVALID_ARGUMENT, "env_step"),
    ({"policy_version": 3}, grpc.StatusCode.INVALID_ARGUMENT, "policy_version"),
    ({"episodes": 2}, grpc.StatusCode.INVALID_ARGUMENT, "episodes"),
    ({"mean_return": math.nan}, grpc.StatusCode.INVALID_ARGUMENT, "mean_return"),
    ({"return_std": -1.0}, grpc.StatusCode.INVALID_ARGUMENT, "return_std"),
    ({"success_rate": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "success_rate"),
    ({"episode_length": 0.0}, grpc.StatusCode.INVALID_ARGUMENT, "episode_length"),
    ({"episode_length": 1.8e19}, grpc.StatusCode.INVALID_ARGUMENT, "episode_length"),  # past the task's 100-step limit
    ({"success_rate": 0.5}, grpc.StatusCode.INVALID_ARGUMENT, "success_rate"),  # not a count of 3 episodes
    ({"evaluator_id": "intruder"}, grpc.StatusCode.INVALID_ARGUMENT, "evaluator_id"),  # did not pull this step's policy
    ({"normalized_score": math.inf}, grpc.StatusCode.INVALID_ARGUMENT, "normalized_score"),
    ({"learner_id": "someone-else"}, grpc.StatusCode.FAILED_PRECONDITION, "learner_id"),
])
def test_bad_evaluation_reports_are_refused_naming_the_field(server_with_pending, changes, code, field):
    client = LearnerClient(server_with_pending.address)
    try:
        task = client.next_evaluation("ev", -1)
        assert task.available and task.env_step == 0 and task.policy_version == 0 and task.episodes == 3
        client.pull_evaluation_policy("ev", task)  # only an evaluator that pulled the policy may report
        with pytest.raises(grpc.RpcError) as e:
            client.report_evaluation(_result(task, **changes))
        assert e.value.code() == code and f"'{field}'" in e.value.details()
        assert server_with_pending.trainer.evaluations.history() == []  # nothing was logged
        # The good report is taken once; a repeat is acknowledged, not logged again.
        assert client.report_evaluation(_result(task)).recorded
        assert not client.report_evaluation(_result(task)).recorded
        (step, row), = server_with_pending.trainer.evaluations.history()
        assert step == 0 and row["normalized_score"] == 12.5 and row["success_rate"] == pytest.approx(1 / 3)
    finally:
        client.close()


def test_evaluation_policy_is_the_snapshot_params(server_with_pending):
    client = LearnerClient(server_with_pending.address)
    try:
        task = client.next_evaluation("ev", -1)
        params = client.pull_evaluation_policy("ev", task)
        _, _, snapshot = server_with_pending.trainer.evaluations.pending[0]
        leaves = lambda tree: [np.asarray(x) for x in __import__("jax").tree_util.tree_leaves(tree)]
        assert all(np.array_equal(a, b) for a, b in zip(leaves(params), leaves(snapshot)))
        with pytest.raises(grpc.RpcError) as e:
            client.pull_evaluation_policy("ev", pb.EvaluationTask(env_step=50, num_chunks=1, policy_version=0))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "'env_step'" in e.value.details()
    finally:
        client.close()


def test_run_summary_by_hand():
    """Scores 50 at step 0, 30 at 10, 60 at 20, warmup 5: dip -20 at 10, back at 20."""
    config = tiny_config()
    rows = [(20, {"normalized_score": 60.0, "success_rate": 1.0}), (0, {"normalized_score": 50.0, "success_rate": 0.5}),
            (10, {"normalized_score": 30.0, "success_rate": 0.0})]
    s = run_summary("run", config, rows, warmup_steps=5, env_steps=20, updates=15, wall_time_s=4.0)
    assert s["schema"] == SCHEMA and s["score_metric"] == "normalized_score"
    assert (s["final_score"], s["best_score"], s["best_step"], s["final_step"], s["evaluations"]) == (60.0, 60.0, 20, 20, 3)
    assert (s["dip"], s["dip_step"], s["recovery_step"], s["pretrained_score"]) == (-20.0, 10, 20, 50.0)
    assert (s["env_steps_per_s"], s["updates_per_s"]) == (5.0, 3.75)
    no_normalized = run_summary("run", config, [(0, {"success_rate": 0.5})], 5, 0, 0, 1.0)
    assert no_normalized["score_metric"] == "success_rate" and no_normalized["final_normalized_score"] is None


def test_episode_rows_carry_the_exact_step_and_warmup_flag(tmp_path):
    """Two episodes of one actor run end at inserted steps 3 and 7 (K = 5); one is reported
    before its transitions arrive, one after: rows at 3 (warmup) and 7 (not)."""
    config = tiny_config(finetune={"warmup_steps": 5, "num_steps": 20})

    def arrays(ends):
        n = len(ends)
        return {"observations": np.zeros((n, 2), np.float32), "actions": np.zeros((n, 2), np.float32), "rewards": np.ones(n, np.float32),
                "next_observations": np.zeros((n, 2), np.float32), "terminals": np.zeros(n, bool), "episode_ends": np.asarray(ends, bool)}

    with RunLogger(tmp_path, config.logging) as logger:
        trainer = Trainer(config, SPEC, DistributedSettings(), logger=logger)
        trainer.register("a", "r", 0)
        trainer.start()
        trainer.report_episodes("a", [{"return": 3.0, "length": 3, "success": 0.0, "policy_version": 0}], "r")  # before
        trainer.submit("a", "r", 0, arrays([0, 0, 1, 0]))
        trainer.submit("a", "r", 1, arrays([0, 0, 1]))
        assert trainer.wait_processed(7, 30)
        trainer.report_episodes("a", [{"return": 4.0, "length": 4, "success": 1.0, "policy_version": 2}], "r")  # after
        trainer.stop()
    with open(tmp_path / "episode.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), float(r["warmup"]), float(r["return"])) for r in rows] == [(3, 1.0, 3.0), (7, 0.0, 4.0)]


def test_an_evaluator_attaches_with_its_own_per_actor_token_only():
    """Issue 27: with --actor-tokens and no shared token no evaluator could attach; a token
    listed for an evaluator id now serves the evaluator calls of that id (and no other)."""
    config = tiny_config(finetune={"warmup_steps": 100, "num_steps": 200, "eval_every": 50, "eval_episodes": 3})
    tokens = {"eeeeeeeeeeeeeeee3": "evaluator-0", "aaaaaaaaaaaaaaaa1": "robot-a"}
    server = LearnerServer(Trainer(config, SPEC, DistributedSettings()), "0.0.0.0:0", status_token="st4tus-token", actor_tokens=tokens).start()
    address = f"127.0.0.1:{server.port}"
    evaluator, robot = LearnerClient(address, "eeeeeeeeeeeeeeee3"), LearnerClient(address, "aaaaaaaaaaaaaaaa1")
    try:
        task = evaluator.next_evaluation("evaluator-0", -1)
        assert task.available and task.env_step == 0
        evaluator.pull_evaluation_policy("evaluator-0", task)
        assert evaluator.report_evaluation(_result(task, evaluator_id="evaluator-0")).recorded
        with pytest.raises(grpc.RpcError) as e:  # the evaluator's token is not another evaluator's
            evaluator.next_evaluation("evaluator-1", -1)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "this token is for evaluator 'evaluator-0'" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:  # nor is a robot's token an evaluator's
            robot.next_evaluation("evaluator-0", -1)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        evaluator.close()
        robot.close()
        server.stop(grace=0)
