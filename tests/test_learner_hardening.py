"""Learner hardening (issue 14): actor identity that cannot be borrowed, durable by default,
every field bounded, receive limits from the spec, (the property-based test driving random
valid and invalid message sequences through a real server: test_learner_properties.py).

Each test names the finding of the issue it covers (1-7; finding 8 belongs to start-up checks)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from actor.client import LearnerClient
from actor.loop import ActorError, ActorLoop, ActorSettings
from learner.distributed.auth import read_actor_tokens
from learner.distributed.server import LearnerServer
from learner.distributed.settings import DistributedSettings
from learner.distributed.trainer import Trainer
from learner.distributed.validation import max_request_bytes
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from tests.conftest import tiny_config
from tests.test_distributed import SPEC, health_status, hello, make_batch, rid, start_learner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():
    s = start_learner(tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000}), max_batch_size=16)
    yield s
    s.stop(grace=0)


def code_of(call) -> grpc.StatusCode:
    """The status code a call fails with (OK if it succeeds)."""
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


# ---- finding 1: a forged batch is stored and the real one dropped as a "duplicate" -----------


def test_status_shows_a_label_never_the_run_id(server, capsys):
    from learner.cli import main

    client = LearnerClient(server.address)
    try:
        run = "0123456789abcdef0123456789abcdef"
        hello(client, actor_id="robot-1", run_id=run)
        client.push(make_batch(2, actor_id="robot-1", run_id=run))
        (actor,) = client.status().actors
        assert actor.actor_id == "robot-1" and actor.run_id == "" and actor.run_label == codec.run_label(run) and len(actor.run_label) == 8
        assert actor.run_label not in run  # a hash, not a prefix of the secret
    finally:
        client.close()
    assert main(["status", server.address]) == 0
    out = capsys.readouterr().out
    assert f"robot-1 (run {codec.run_label(run)})" in out and run[:8] not in out


def test_a_resent_batch_is_a_duplicate_only_when_its_content_matches(server):
    """The attack of the issue: a batch forged under the victim's sequence number. Before: the
    real batch was acknowledged as a duplicate without a look at its content. Now: whichever
    came second, a batch whose content differs from what was stored is refused with
    ALREADY_EXISTS and counted; an identical resend is still a duplicate."""
    client, trainer = LearnerClient(server.address), server.trainer
    try:
        hello(client, run_id=rid("victim"))
        real0 = make_batch(3, seq=0, run_id=rid("victim"), rng=np.random.default_rng(10))
        assert client.push(real0).stored
        assert client.push(real0).duplicate  # a retry after a lost answer
        forged0 = make_batch(3, seq=0, run_id=rid("victim"), rng=np.random.default_rng(66))
        e = error_of(lambda: client.push(forged0))
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS and "batch 0 of this run was stored with other content" in e.details()
        # A forger who knows the run id stores first; the real batch is then refused, not dropped.
        forged1 = make_batch(3, seq=1, run_id=rid("victim"), rng=np.random.default_rng(67))
        assert client.push(forged1).stored
        real1 = make_batch(3, seq=1, run_id=rid("victim"), rng=np.random.default_rng(11))
        assert code_of(lambda: client.push(real1)) == grpc.StatusCode.ALREADY_EXISTS
        # The policy version is content too.
        changed = pb.TransitionBatch()
        changed.CopyFrom(real0)
        changed.policy_version = 0
        changed.policy_learner_id = "other"
        assert code_of(lambda: client.push(changed)) == grpc.StatusCode.ALREADY_EXISTS
        s = client.status()
        assert (s.conflicting_batches, s.duplicate_batches, s.env_steps) == (3, 1, 6)
        assert trainer.wait_processed(6, 10)
        np.testing.assert_array_equal(trainer.replay.data["observations"][:3], codec.decode_tensor(real0.observations, "o"))
    finally:
        client.close()


def test_the_actor_whose_batch_conflicts_says_so_loudly_and_stops(server, capsys):
    loop = ActorLoop(ActorSettings(learner=server.address, actor_id="victim", batch_size=2, pull_every=0))
    client = LearnerClient(server.address)
    try:
        loop.connect()
        loop.run(2)  # batch 0, stored
        # Someone who learned the run id pushes under the actor's next sequence number.
        assert client.push(make_batch(2, seq=1, actor_id="victim", run_id=loop.run_id)).stored
        with pytest.raises(ActorError, match="conflicting batch 1"):
            loop.run(4)
    finally:
        loop.close()
        client.close()
    captured = capsys.readouterr()
    assert "CONFLICT" in captured.err and "OTHER data under batch 1" in captured.err and loop.run_id not in captured.err
    assert server.trainer.status()["conflicting_batches"] == 1


def test_digests_survive_a_learner_restart(tmp_path):
    """The digests are part of the saved state: after --resume a changed resend of a durable
    batch is still refused."""
    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000})
    state = str(tmp_path / "state")
    first = start_learner(config, state_dir=state)
    client = LearnerClient(first.address)
    hello(client)
    batch = make_batch(3, seq=0)
    client.push(batch)
    client.close()
    first.stop(grace=0)
    trainer = Trainer(config, SPEC, DistributedSettings(state_dir=state))
    trainer.resume(state)
    second = LearnerServer(trainer).start()
    client = LearnerClient(second.address)
    try:
        assert client.push(batch).duplicate
        assert code_of(lambda: client.push(make_batch(3, seq=0, rng=np.random.default_rng(5)))) == grpc.StatusCode.ALREADY_EXISTS
    finally:
        client.close()
        second.stop(grace=0)


def test_per_actor_tokens_are_good_for_their_own_actor_only(tmp_path):
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# actor id, token\nrobot-a aaaaaaaaaaaaaaaa1\nrobot-b bbbbbbbbbbbbbbbb2\n")
    tokens = read_actor_tokens(str(tokens_file))
    assert tokens == {"aaaaaaaaaaaaaaaa1": "robot-a", "bbbbbbbbbbbbbbbb2": "robot-b"}
    for text, message in (("robot-a short\n", "expected at least 16"), ("robot-a\n", "got 1 fields"),
                          ("a aaaaaaaaaaaaaaaa1\nb aaaaaaaaaaaaaaaa1\n", "already given to actor 'a'"), ("bad/id aaaaaaaaaaaaaaaa1\n", "actor id 'bad/id'")):
        tokens_file.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_actor_tokens(str(tokens_file))
    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000})
    # Off loopback with per-actor tokens and no shared one; then with both.
    server = LearnerServer(Trainer(config, SPEC), "0.0.0.0:0", status_token="st4tus-token", actor_tokens=tokens).start()
    address = f"127.0.0.1:{server.port}"
    try:
        a, b, nobody = LearnerClient(address, "aaaaaaaaaaaaaaaa1"), LearnerClient(address, "bbbbbbbbbbbbbbbb2"), LearnerClient(address, "nope")
        assert hello(a, actor_id="robot-a").next_sequence == 0
        assert a.push(make_batch(2, actor_id="robot-a")).stored
        e = error_of(lambda: hello(a, actor_id="robot-b"))  # robot-a's token cannot act as robot-b
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "this token is for actor 'robot-a'" in e.details()
        assert code_of(lambda: a.push(make_batch(2, actor_id="robot-b"))) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: a.report(pb.ReportEpisodesRequest(actor_id="robot-b", run_id=rid("r1")))) == grpc.StatusCode.PERMISSION_DENIED
        assert a.pull("robot-a", -1)[0] == 0
        assert code_of(lambda: a.status()) == grpc.StatusCode.UNAUTHENTICATED  # status needs the status token
        assert code_of(lambda: hello(nobody)) == grpc.StatusCode.UNAUTHENTICATED
        assert hello(b, actor_id="robot-b").next_sequence == 0
        for c in (a, b, nobody):
            c.close()
    finally:
        server.stop(grace=0)
    server = LearnerServer(Trainer(config, SPEC), "0.0.0.0:0", token="shared-token-123", actor_tokens=tokens).start()
    try:
        shared = LearnerClient(f"127.0.0.1:{server.port}", "shared-token-123")
        assert hello(shared, actor_id="anyone").next_sequence == 0  # the shared token: any actor id
        shared.close()
    finally:
        server.stop(grace=0)


# ---- finding 2: with the default checkpoint_every 0, a SIGKILLed learner cannot be resumed ----


def test_wsrl_learner_saves_every_60_s_by_default():
    from learner.cli import build_parser
    from learner.distributed.launch import settings_from_args

    config = tiny_config()
    args = build_parser().parse_args(["learner"])
    assert settings_from_args(args, config).state_every_s == 60.0
    assert settings_from_args(build_parser().parse_args(["learner", "--save-every", "5"]), config).state_every_s == 5.0


def test_state_is_saved_at_start_and_on_a_timer_and_the_watermark_advances(tmp_path):
    """Without finetune.checkpoint_every: a state on disk from the start (so --resume always
    works), then timed saves of what arrived, each advancing the durable watermark answered to
    the actors (which trims their spools)."""
    from learner.distributed.learner_state import STATE_FILE, load_learner_state

    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000, "checkpoint_every": 0})
    state = tmp_path / "state"
    server = start_learner(config, state_dir=str(state), state_every_s=0.2)
    client, trainer = LearnerClient(server.address), server.trainer
    try:
        assert (state / STATE_FILE).exists() and trainer.processed == 0  # saved at start
        hello(client)
        assert client.push(make_batch(3, seq=0)).durable_sequence == 0
        deadline = time.monotonic() + 30
        while trainer._saved_env_steps < 3 and time.monotonic() < deadline:  # the timed save
            time.sleep(0.02)
        assert client.push(make_batch(2, seq=1)).durable_sequence == 1
        # What a learner resumed after a SIGKILL right now would load:
        resumed = Trainer(config, SPEC)
        load_learner_state(resumed, str(state))
        assert resumed.env_steps >= 3 and resumed.actors["a"].next_sequence[rid("r1")] >= 1
    finally:
        client.close()
        server.stop(grace=0)


def test_actor_spool_is_trimmed_as_the_watermark_advances(tmp_path):
    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000, "checkpoint_every": 0})
    server = start_learner(config, state_dir=str(tmp_path / "state"), state_every_s=0.05)
    spool = tmp_path / "spool"
    loop = ActorLoop(ActorSettings(learner=server.address, actor_id="robot", spool_dir=str(spool), batch_size=2, pull_every=0, step_period_s=0.01))
    try:
        loop.connect()
        loop.run(60)  # 30 batches over >= 0.6 s: several timed saves happen meanwhile
    finally:
        loop.close()
        server.stop(grace=0)
    left = sorted(spool.rglob("*.pb"))
    assert len(left) < 30 and loop._unconfirmed_n < 60  # trimmed (before: all 30 stayed)


def test_a_learner_started_with_defaults_and_killed_with_sigkill_resumes(tmp_path):
    """`wsrl learner` with the defaults (pointmass: finetune.checkpoint_every 0; the SAC variant,
    so that no pre-trained checkpoint is needed) is killed with
    SIGKILL after acknowledging batches and before any periodic save; `--resume` works (the
    state saved at start) and tells the client where to resend from; nothing is lost."""
    import os
    import re
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    run_dir = tmp_path / "run"
    overrides = ["agent.critic_hidden_dims=[16]", "agent.actor_hidden_dims=[16]", "agent.critic_ensemble_size=4", "agent.batch_size=8", "logging.tensorboard=false",
                 "logging.progress=false", "finetune.eval_episodes=1"]
    processes = []

    def start(name, *args):
        with open(tmp_path / f"{name}.log", "w") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "learner.cli", "learner", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 180
        while not (found := re.findall(r"on (127\.0\.0\.1:\d+) ->", (tmp_path / f"{name}.log").read_text())):
            assert processes[-1].poll() is None and time.monotonic() < deadline, (tmp_path / f"{name}.log").read_text()
            time.sleep(0.1)
        return processes[-1], found[0]

    client = None
    try:
        first, address = start("learner1", "--variant", "sac", "--run-dir", str(run_dir), "--bind", "127.0.0.1:0", "--forever", "--mode", "async", *overrides)
        launch = json.loads((run_dir / "launch.json").read_text())
        assert (launch["mode"], launch["forever"], launch["bind"], launch["max_utd"]) == ("async", True, "127.0.0.1:0", None)
        client = LearnerClient(address)
        hello(client)
        batches = [make_batch(3, seq=i) for i in range(3)]
        assert [client.push(b).durable_sequence for b in batches] == [0, 0, 0]  # kept by the sender
        client.close()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # The resume keeps how the learner was started (async, --forever) and says what a flag changed.
        second, address = start("learner2", "--resume", str(run_dir), "--bind", address)
        assert f"--resume: --bind {address} (was 127.0.0.1:0) (the rest as saved)" in (tmp_path / "learner2.log").read_text()
        client = LearnerClient(address)
        assert hello(client).next_sequence == 0  # from the state saved at start: resend from 0
        assert all(client.push(b).stored for b in batches)
        s = client.status()
        assert s.env_steps == 9 and s.duplicate_batches == 0 and s.mode == "async" and s.target_utd == 4.0
        assert json.loads((run_dir / "launch.json").read_text())["forever"] is True
    finally:
        if client is not None:
            client.close()
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_resume_restores_launch_flags_and_refuses_config_overrides(tmp_path, capsys):
    from learner.cli import build_parser, main
    from learner.distributed.launch import launch_settings

    parse = build_parser().parse_args
    saved = {"mode": "async", "max_lead": 8, "min_utd": 0.0, "max_utd": 2.0, "max_batch_size": 256, "publish_every": 2,
             "save_every": 30.0, "bind": "0.0.0.0:50051", "forever": True}
    restored, changed = launch_settings(parse(["learner", "--resume", "r"]), saved)
    assert restored == saved and changed == []
    restored, changed = launch_settings(parse(["learner", "--resume", "r", "--mode", "sync", "--max-lead", "8"]), saved)
    assert restored == {**saved, "mode": "sync"} and changed == ["--mode sync (was async)"]
    fresh, _ = launch_settings(parse(["learner"]))
    assert (fresh["mode"], fresh["max_lead"], fresh["forever"], fresh["bind"]) == ("sync", 64, False, "127.0.0.1:50051")
    # A config override with --resume is refused before anything starts, naming it.
    assert main(["learner", "--resume", str(tmp_path), "finetune.checkpoint_every=50"]) == 2
    assert "config arguments (finetune.checkpoint_every=50) are not applied to a resumed run" in capsys.readouterr().err


# ---- finding 3: sequence number 2^64 - 1 -------------------------------------------------------


def test_sequence_numbers_stay_within_int64(server):
    client = LearnerClient(server.address)
    try:
        e = error_of(lambda: hello(client, run_id=rid("huge"), next_sequence=2**64 - 1))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'next_sequence': got 18446744073709551615, expected at most 2^63 - 1" in e.details()
        top = 2**63 - 1
        assert hello(client, run_id=rid("top"), next_sequence=top).next_sequence == top
        ack = client.push(make_batch(2, seq=top, run_id=rid("top")))
        assert ack.stored and ack.next_sequence == 2**63
        assert client.push(make_batch(2, seq=top, run_id=rid("top"))).duplicate
        assert hello(client, run_id=rid("top")).next_sequence == 2**63  # the run still answers
        assert client.status().env_steps == 2
    finally:
        client.close()


# ---- finding 4: unbounded ids, records never removed ---------------------------------------------


def test_ids_are_bounded_and_errors_do_not_echo_them(server):
    client = LearnerClient(server.address)
    try:
        for actor_id, run_id, field in (("x" * 129, rid("r"), "actor_id"), ("", rid("r"), "actor_id"), ("a b", rid("r"), "actor_id"),
                                        ("a", "short", "run_id"), ("a", "y" * 129, "run_id"), ("a", "bad/run/id/0000000", "run_id")):
            for call in (lambda: hello(client, actor_id=actor_id, run_id=run_id), lambda: client.push(make_batch(1, actor_id=actor_id, run_id=run_id)),
                         lambda: client.report(pb.ReportEpisodesRequest(actor_id=actor_id, run_id=run_id))):
                e = error_of(call)
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and f"field '{field}'" in e.details(), e.details()
                assert len(e.details()) < 200 and "x" * 50 not in e.details() and "y" * 20 not in e.details()
        # A 1 MB id does not even reach a handler: the receive limit refuses it.
        assert code_of(lambda: hello(client, actor_id="x" * (1 << 20))) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert hello(client, actor_id="robot-7.lab:1@site_x", run_id=rid("ok")).next_sequence == 0
        # A long dtype / shape is quoted cut short.
        batch = make_batch(1, actor_id="robot-7.lab:1@site_x", run_id=rid("ok"))
        batch.rewards.dtype = "z" * 5000
        e = error_of(lambda: client.push(batch))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.details()) < 200 and "5000 characters" in e.details()
    finally:
        client.close()


def test_actor_records_expire_and_are_bounded():
    config = tiny_config(finetune={"warmup_steps": 1000, "num_steps": 2000})
    server = start_learner(config, max_actors=2, max_runs_per_actor=2, actor_ttl_s=0.3, run_evict_idle_s=0.2)
    client, trainer = LearnerClient(server.address), server.trainer
    try:
        hello(client, actor_id="a1")
        hello(client, actor_id="a2")
        e = error_of(lambda: hello(client, actor_id="a3"))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_actors=2" in e.details()
        time.sleep(0.4)
        hello(client, actor_id="a2")  # a2 is back (seen again); a1 stays idle
        assert hello(client, actor_id="a3").next_sequence == 0
        assert sorted(trainer.actors) == ["a2", "a3"]  # a1 forgotten after its idle time
        hello(client, actor_id="a3", run_id=rid("r2"))  # a3 now has 2 runs (r1, r2), both live
        e = error_of(lambda: hello(client, actor_id="a3", run_id=rid("r3")))  # a live run is never evicted
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_runs_per_actor=2" in e.details()
        time.sleep(0.25)
        hello(client, actor_id="a3", run_id=rid("r2"))  # r2 seen again; r1 idle past run_evict_idle_s
        hello(client, actor_id="a3", run_id=rid("r3"))  # at most 2 runs per actor: the idle one goes
        assert sorted(trainer.actors["a3"].next_sequence) == [rid("r2"), rid("r3")]
        assert code_of(lambda: client.push(make_batch(1, actor_id="a3", run_id=rid("r1")))) == grpc.StatusCode.FAILED_PRECONDITION
        assert len(client.status().actors) == 2
    finally:
        client.close()
        server.stop(grace=0)


# ---- finding 5: a 64 MiB receive limit for ~30 KB batches -------------------------------------------


def test_receive_limit_follows_the_spec_and_max_batch_size(server):
    # pointmass (2, 2), max_batch_size 16: a batch row is 4 x (2 + 2 + 2 + 1) + 3 = 31 bytes, so
    # the largest request is the episode report (1024 x 40 bytes): 40960 x 1.25 + 64 KiB.
    assert server.max_receive_bytes == max_request_bytes(SPEC, 16) == 116736
    camera = {"observation_dim": 64 * 64 * 3, "action_dim": 7}
    assert max_request_bytes(camera, 1024) == int(1024 * (4 * (2 * 12288 + 7 + 1) + 3) * 1.25) + 65536  # ~126 MB: grows with the spec
    client = LearnerClient(server.address)
    try:
        hello(client)
        assert client.push(make_batch(16, seq=0)).stored  # the largest legitimate batch passes
        big = make_batch(1, seq=1)
        big.observations.data = bytes(2 << 20)
        e = error_of(lambda: client.push(big))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.push(make_batch(2, seq=1)).stored and health_status(server.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        client.close()


def test_concurrent_pushes_are_bounded(server):
    service, limit = server.service, server.trainer.settings.max_inflight_pushes
    client = LearnerClient(server.address)
    try:
        hello(client)
        for _ in range(limit):  # as if `limit` pushes were being handled
            service._inflight.acquire()
        e = error_of(lambda: client.push(make_batch(2, seq=0)))
        assert e.code() == grpc.StatusCode.UNAVAILABLE and "max_inflight_pushes" in e.details()  # retried by actors
        service._inflight.release()
        assert client.push(make_batch(2, seq=0)).stored  # nothing of the refused one was kept
        for _ in range(limit - 1):
            service._inflight.release()
    finally:
        client.close()


# ---- finding 6: ReportEpisodes without a handshake, any value --------------------------------------


def test_report_episodes_needs_a_handshake_and_plausible_values(server):
    client = LearnerClient(server.address)

    def report(**episode):
        return client.report(pb.ReportEpisodesRequest(actor_id="a", run_id=rid("r1"), episodes=[pb.Episode(**episode)]))

    try:
        e = error_of(lambda: report(episode_return=1e300, length=2**64 - 1))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "Handshake" in e.details()  # never connected
        hello(client)
        rewards = np.array([0.5, -2.0, 1.0], np.float32)
        client.push(make_batch(3, rewards=rewards))  # the largest |reward| received: 2
        e = error_of(lambda: report(episode_return=1.0, length=2**64 - 1))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'episodes[0].length': got 18446744073709551615, expected 1..100" in e.details()
        assert code_of(lambda: report(episode_return=1.0, length=0)) == grpc.StatusCode.INVALID_ARGUMENT
        e = error_of(lambda: report(episode_return=1e300, length=100))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "field 'episodes[0].episode_return'" in e.details() and "+-200" in e.details()
        for value in (math.nan, math.inf, -201.0):
            assert code_of(lambda: report(episode_return=value, length=100)) == grpc.StatusCode.INVALID_ARGUMENT
        assert report(episode_return=-200.0, length=100).episodes == 1  # exactly at the bound
        assert report(episode_return=5.5, length=3).episodes == 2
        s = client.status()
        assert s.episodes == 2 and s.recent_return == pytest.approx((-200.0 + 5.5) / 2)
        too_many = pb.ReportEpisodesRequest(actor_id="a", run_id=rid("r1"), episodes=[pb.Episode(episode_return=0, length=1)] * 1025)
        assert code_of(lambda: client.report(too_many)) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        client.close()


# ---- finding 7: action bounds not compared at the handshake -----------------------------------------


def test_handshake_compares_the_action_bounds(server):
    client = LearnerClient(server.address)
    try:
        e = error_of(lambda: hello(client, spec={**SPEC, "action_low": [-5.0, -5.0], "action_high": [5.0, 5.0]}))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "spec.action_low: actor has [-5.0, -5.0], learner has [-1.0, -1.0]" in e.details() and "spec.action_high" in e.details()
        assert code_of(lambda: hello(client, spec={**SPEC, "action_low": [], "action_high": []})) == grpc.StatusCode.FAILED_PRECONDITION
        assert hello(client, spec=SPEC).next_sequence == 0
    finally:
        client.close()
