"""Pause as a state the learner knows, and remote pause / resume / e-stop (issue 20):
ReportActorState only from a handshaken run, a paused robot listed as paused (and kept listed
by its heartbeat), the admin token of ActorCommand (never an actor's, the shared or the status
token), the commands reaching an in-process RobotActor with the simulated robot, and the
control-period statistics in `wsrl status`."""

from __future__ import annotations

import math
import time

import grpc
import pytest

from actor.client import LearnerClient
from actor.loop import EXIT_EMERGENCY_STOP, exit_status
from learner.cli import main
from learner.distributed.operator_commands import format_status
from learner.distributed.server import LearnerServer
from learner.distributed.trainer import Trainer
from protos.wsrl.v1 import learner_pb2 as pb
from tests.conftest import tiny_config
from tests.test_distributed import SPEC, hello, rid, start_learner
from tests.test_learner_hardening import code_of, error_of
from tests.test_robot_actor import checkpoint, learner_config, robot_actor, run_in_thread, wait_for  # noqa: F401 (fixture)
from tests.test_robot_actor import start_learner as start_robot_learner

ADMIN = "admin-token-0123456789"


@pytest.fixture
def server():
    s = start_learner(tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000}))
    yield s
    s.stop(grace=0)


def stats(**overrides) -> pb.ControlStats:
    return pb.ControlStats(**{"control_hz": 20.0, "steps": 100, "period_mean_ms": 50.0, "period_p99_ms": 50.3, "period_max_ms": 51.0,
                              "work_p99_ms": 2.0, "overruns": 1, **overrides})


def report(client, run_id=rid("r1"), actor_id="a", **fields):
    return client.report_state(pb.ActorStateReport(actor_id=actor_id, run_id=run_id, **fields))


def test_state_report_needs_a_handshake_and_valid_fields(server):
    client = LearnerClient(server.address)
    try:
        e = error_of(lambda: report(client, paused=True))  # nobody shook hands
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "call Handshake first" in e.details()
        hello(client)
        e = error_of(lambda: report(client, run_id=rid("other")))  # a run this learner does not know
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
        e = error_of(lambda: report(client, actor_id="x" * 500))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'actor_id'" in e.details() and len(e.details()) < 200
        for control, field in ((stats(period_p99_ms=math.nan), "control.period_p99_ms"), (stats(work_p99_ms=-1.0), "control.work_p99_ms"),
                               (stats(overruns=101), "control.overruns")):
            e = error_of(lambda: report(client, control=control))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and f"field '{field}'" in e.details()
        e = error_of(lambda: report(client, pause_reason="r" * 65))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'pause_reason'" in e.details()
        assert not server.trainer.actors["a"].state  # nothing refused was recorded
        answer = report(client, paused=True, pause_reason="operator", control=stats())
        assert list(answer.commands) == [] and answer.learner_id == server.learner_id
        (a,) = client.status().actors
        assert a.paused and not a.estopped and a.pause_reason == "operator"
        assert (a.control.period_mean_ms, a.control.period_p99_ms, a.control.overruns, a.control.steps) == (50.0, 50.3, 1, 100)
    finally:
        client.close()


def test_status_prints_pause_and_period_statistics():
    s = pb.StatusResponse(mode="async", actors=[
        pb.ActorStatus(actor_id="arm-1", run_label="abc123", env_steps=5918, pending=0, seconds_since_seen=0.25, paused=True,
                       pause_reason="remote", control=stats(steps=5918, overruns=0)),
        pb.ActorStatus(actor_id="arm-2", run_label="def456", env_steps=7, seconds_since_seen=3.0, estopped=True),
        pb.ActorStatus(actor_id="sim-0", run_label="0a0b0c", env_steps=40, pending=2, seconds_since_seen=0.5),
    ])
    lines = format_status(s).splitlines()
    assert lines[3] == "connected actors: 3"
    assert lines[4] == ("  arm-1 (run abc123): PAUSED (remote); 5918 env steps, 0 pending, seen 0.2 s ago; control at 20 Hz: period mean 50.00 ms, "
                        "p99 50.30 ms, max 51.00 ms, 0 overruns in 5918 steps")
    assert lines[5] == "  arm-2 (run def456): E-STOPPED; 7 env steps, 0 pending, seen 3.0 s ago"
    assert lines[6] == "  sim-0 (run 0a0b0c): 40 env steps, 2 pending, seen 0.5 s ago"


def test_admin_commands_need_the_admin_token(tmp_path):
    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000})
    tokens = {"robot-a-token-0001": "robot-a"}
    for bad, why in (("short", "at least 16"), ("shared-token-123", "different from --token"), ("robot-a-token-0001", "different from")):
        with pytest.raises(ValueError, match=why):
            LearnerServer(Trainer(config, SPEC), "0.0.0.0:0", token="shared-token-123", actor_tokens=tokens, admin_token=bad)
    server = LearnerServer(Trainer(config, SPEC), "0.0.0.0:0", token="shared-token-123", status_token="st4tus-token-0001",
                           actor_tokens=tokens, admin_token=ADMIN).start()
    address = f"127.0.0.1:{server.port}"
    command = pb.ActorCommandRequest(actor_id="robot-a", kind=pb.ACTOR_COMMAND_ESTOP)
    clients = {t: LearnerClient(address, t) for t in (None, "wrong-token-000000", "shared-token-123", "robot-a-token-0001", "st4tus-token-0001", ADMIN)}
    try:
        hello(clients["robot-a-token-0001"], actor_id="robot-a")
        for token, client in clients.items():
            if token != ADMIN:
                e = error_of(lambda: client.actor_command(command))
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED and "admin token" in e.details(), token
        assert not server.trainer.actors["robot-a"].commands  # nothing was queued by them
        admin = clients[ADMIN]
        e = error_of(lambda: admin.actor_command(pb.ActorCommandRequest(actor_id="robot-z", kind=pb.ACTOR_COMMAND_PAUSE)))
        assert e.code() == grpc.StatusCode.NOT_FOUND and "no actor 'robot-z' has shaken hands" in e.details()
        e = error_of(lambda: admin.actor_command(pb.ActorCommandRequest(actor_id="z" * 300, kind=pb.ACTOR_COMMAND_PAUSE)))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.details()) < 200
        e = error_of(lambda: admin.actor_command(pb.ActorCommandRequest(actor_id="robot-a")))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'kind'" in e.details()
        assert code_of(lambda: admin.actor_command(pb.ActorCommandRequest(actor_id="robot-a", kind=pb.ACTOR_COMMAND_PAUSE, wait_s=31))) == grpc.StatusCode.INVALID_ARGUMENT
        e = error_of(lambda: admin.actor_command(command))  # it never reported its state: not a robot actor
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "never reported its state" in e.details()
        actor = clients["robot-a-token-0001"]
        report(actor, actor_id="robot-a")
        # Queued for the handshaken run: pause then resume leave only the resume (the latest
        # wins); the e-stop stays. The actor gets them with its next state report.
        first = admin.actor_command(pb.ActorCommandRequest(actor_id="robot-a", kind=pb.ACTOR_COMMAND_PAUSE))
        second = admin.actor_command(pb.ActorCommandRequest(actor_id="robot-a", kind=pb.ACTOR_COMMAND_RESUME))
        third = admin.actor_command(command)
        assert not first.acknowledged and (first.id, second.id, third.id) == (1, 2, 3)
        answer = report(actor, actor_id="robot-a")
        assert [(c.id, c.kind) for c in answer.commands] == [(2, pb.ACTOR_COMMAND_RESUME), (3, pb.ACTOR_COMMAND_ESTOP)]
        answer = report(actor, actor_id="robot-a", acked_command=3, learner_id=server.learner_id)
        assert list(answer.commands) == [] and server.trainer.actors["robot-a"].acked == 3
        # An actor's token cannot report another actor's state.
        assert code_of(lambda: report(actor, actor_id="robot-b")) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        for client in clients.values():
            client.close()
        server.stop(grace=0)
    # Off loopback without --admin-token, the commands are refused outright.
    server = LearnerServer(Trainer(config, SPEC), "0.0.0.0:0", token="shared-token-123").start()
    try:
        client = LearnerClient(f"127.0.0.1:{server.port}", "shared-token-123")
        e = error_of(lambda: client.actor_command(command))
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED and "disabled off loopback without --admin-token" in e.details()
        client.close()
    finally:
        server.stop(grace=0)


def test_remote_pause_resume_and_estop_reach_a_robot_actor(tmp_path, monkeypatch, checkpoint, capsys):
    """`wsrl pause|resume|estop` against an in-process learner and RobotActor (the simulated
    robot at 50 Hz): each is acknowledged, the pause holds the robot and shows in `wsrl
    status` (with the period statistics) even after its last push is long past, the resume
    steps again, the e-stop ends the run with exit status 3."""
    server = start_robot_learner(learner_config(checkpoint))
    actor = robot_actor(server.address, tmp_path, monkeypatch, control_hz=50.0)
    address = server.address
    try:
        actor.connect()
        thread, result = run_in_thread(actor)
        wait_for(lambda: actor.env_steps >= 10, 30, "10 steps")
        assert main(["pause", address, "robot", "--wait", "10"]) == 0
        assert actor.paused and "acknowledged pause after" in capsys.readouterr().out
        time.sleep(0.05)  # the step under way when the flag was set finishes (one period)
        steps = actor.env_steps
        time.sleep(0.3)
        assert actor.env_steps == steps  # held
        # Its last push long ago (as after a minute's pause): the heartbeat keeps it listed.
        with server.trainer.cond:
            server.trainer.actors["robot"].last_seen -= 120.0
        wait_for(lambda: any(a.actor_id == "robot" for a in LearnerClient(address).status().actors), 5, "the heartbeat")
        (a,) = LearnerClient(address).status().actors
        assert a.paused and a.pause_reason == "remote" and a.control.steps == steps and a.control.control_hz == 50.0
        assert 15.0 < a.control.period_mean_ms < 60.0 and a.control.period_max_ms >= a.control.period_mean_ms
        assert main(["status", address]) == 0
        assert "robot (run " in (out := capsys.readouterr().out) and "PAUSED (remote)" in out and "control at 50 Hz: period mean" in out
        assert main(["resume", address, "robot", "--wait", "10"]) == 0
        assert not actor.paused
        wait_for(lambda: actor.env_steps > steps, 10, "steps after the resume")
        wait_for(lambda: not server.trainer.actors["robot"].state.get("paused", True), 5, "the resumed state")
        assert main(["estop", address, "robot", "--wait", "10"]) == 0
        thread.join(30)
        assert not thread.is_alive() and "error" not in result
        assert result["emergency_stopped"] and exit_status(result) == EXIT_EMERGENCY_STOP == 3
        assert server.trainer.actors["robot"].state["estopped"]
        assert actor.remote_commands == 3
    finally:
        actor.close()
        server.stop(grace=0)
    assert main(["pause", address, "robot", "--wait", "0"]) == 1  # the learner is gone
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_which_token_actor_command_needs():
    from learner.cli import parse_args
    from learner.distributed.auth import AuthInterceptor

    method = "/wsrl.v1.Learner/ActorCommand"
    assert AuthInterceptor("t", None, status_open=True).required_token(method) is None  # loopback, no admin token: open, as GetStatus
    assert AuthInterceptor("t", "s", status_open=False).required_token(method) == ""  # off loopback without one: refused
    assert AuthInterceptor("t", "s", status_open=True, admin_token=ADMIN).required_token(method) == ADMIN
    assert AuthInterceptor("t", None, status_open=False, admin_token=ADMIN).required_token("/wsrl.v1.Learner/ReportActorState") == "t"
    assert parse_args(["learner", "--admin-token", ADMIN]).admin_token == ADMIN
    args = parse_args(["estop", "127.0.0.1:50051", "arm-1", "--wait", "2"])
    assert (args.command, args.address, args.actor_id, args.wait) == ("estop", "127.0.0.1:50051", "arm-1", 2.0)


def test_an_estop_cannot_be_diverted_by_a_handshake_under_the_robots_id(server, monkeypatch):
    """A command goes to the run that reports its state (the robot), not to the run that
    shook hands last: a later handshake under the robot's id receives and completes nothing.
    A robot that restarts (a new run reporting its state) still gets what it had not carried
    out. Issue 27: before, the handshake took the e-stop and the robot kept stepping."""
    import learner.distributed.command_queue as command_queue

    robot, intruder = LearnerClient(server.address), LearnerClient(server.address)
    trainer = server.trainer
    try:
        hello(robot, actor_id="arm", run_id=rid("robot"))
        report(robot, actor_id="arm", run_id=rid("robot"))
        hello(intruder, actor_id="arm", run_id=rid("intruder"))  # shook hands after the robot, reports nothing
        command_id, target, _ = trainer.queue_command("arm", pb.ACTOR_COMMAND_ESTOP)
        assert target == rid("robot")
        # The intruder reporting a state of its own (it may, with the shared token) gets the
        # e-stop too, but its acknowledgement completes nothing: the robot's is needed.
        assert [(c.id, c.kind) for c in report(intruder, actor_id="arm", run_id=rid("intruder")).commands] == [(command_id, pb.ACTOR_COMMAND_ESTOP)]
        report(intruder, actor_id="arm", run_id=rid("intruder"), acked_command=command_id, learner_id=server.learner_id)
        assert not trainer.wait_command("arm", command_id, 0.2)
        assert [(c.id, c.kind) for c in report(robot, actor_id="arm", run_id=rid("robot")).commands] == [(command_id, pb.ACTOR_COMMAND_ESTOP)]
        report(robot, actor_id="arm", run_id=rid("robot"), acked_command=command_id, learner_id=server.learner_id)
        assert trainer.wait_command("arm", command_id, 0.2)
        assert trainer.actors["arm"].commands == []

        # The robot restarts before carrying out a pause: once its old run no longer reports
        # (STATE_LIVE_S), its new run gets the pause and its acknowledgement completes it.
        pause_id, _, _ = trainer.queue_command("arm", pb.ACTOR_COMMAND_PAUSE)
        monkeypatch.setattr(command_queue, "STATE_LIVE_S", 0.0)
        time.sleep(0.01)
        hello(robot, actor_id="arm", run_id=rid("robot-restarted"))
        assert [c.id for c in report(robot, actor_id="arm", run_id=rid("robot-restarted")).commands] == [pause_id]
        monkeypatch.setattr(command_queue, "STATE_LIVE_S", 10.0)  # the new run is live, the old one long gone
        trainer.actors["arm"].state_seen[rid("robot")] -= 60.0
        report(robot, actor_id="arm", run_id=rid("robot-restarted"), acked_command=pause_id, learner_id=server.learner_id)
        assert trainer.wait_command("arm", pause_id, 0.2) and trainer.actors["arm"].commands == []
    finally:
        robot.close()
        intruder.close()


def test_a_burst_of_handshakes_cannot_evict_a_live_run(server):
    """64 handshakes under a live actor's id: refused once the id holds max_runs_per_actor
    runs seen recently (RESOURCE_EXHAUSTED); the live run stays known, so its batches are
    never stored twice. Issue 27: before, the 64th handshake evicted it and its 4,082
    transitions were stored a second time."""
    trainer = server.trainer
    client = LearnerClient(server.address)
    try:
        hello(client, actor_id="a1", run_id=rid("live"))
        limit = trainer.settings.max_runs_per_actor
        for i in range(limit - 1):
            hello(client, actor_id="a1", run_id=rid(f"burst{i}"))
        e = error_of(lambda: hello(client, actor_id="a1", run_id=rid("one-too-many")))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "a live run is never forgotten" in e.details()
        assert rid("live") in trainer.actors["a1"].next_sequence
        # Once the oldest run has been idle for run_evict_idle_s, it makes room as before.
        record = trainer.actors["a1"]
        record.run_seen[rid("live")] -= trainer.settings.run_evict_idle_s + 1
        hello(client, actor_id="a1", run_id=rid("one-too-many"))
        assert rid("live") not in record.next_sequence and rid("one-too-many") in record.next_sequence
    finally:
        client.close()
