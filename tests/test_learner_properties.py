"""Property-based test of the learner server (issue 14): random sequences of valid and invalid
messages through a real server on loopback, with a model predicting every answer."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from actor.client import LearnerClient
from protos import codec
from protos.wsrl.v1 import learner_pb2 as pb
from tests.conftest import tiny_config
from tests.test_distributed import health_status, hello, make_batch, start_learner
from tests.test_learner_hardening import code_of

pytest.importorskip("hypothesis")  # in the `test` extra (pyproject.toml)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OPS = st.lists(
    st.tuples(
        st.sampled_from(["handshake", "push_next", "push_resend", "push_changed", "push_gap", "push_invalid", "push_bad_id",
                         "push_unknown_run", "report", "report_bad"]),
        st.integers(0, 2),  # which of three runs
        st.integers(1, 6),  # batch size
        st.integers(0, 2**32),  # seed for contents
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module")
def fuzz_server():
    s = start_learner(tiny_config(finetune={"warmup_steps": 10**6, "num_steps": 10**5}), max_batch_size=8)
    yield s
    s.stop(grace=0)


_example = iter(range(10**9))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_random_message_sequences_keep_the_invariants(fuzz_server, ops):
    """Random sequences of handshakes, pushes (next, resent, changed, gapped, invalid, bad ids,
    unknown runs) and reports against one real server. A model predicts every answer; then:
    nothing refused is stored, nothing accepted is lost or stored twice (the rows added equal
    the accepted batches in order), and the server keeps answering."""
    trainer = fuzz_server.trainer
    client = LearnerClient(fuzz_server.address)
    n = next(_example)
    runs = [f"run{n:08d}x{i}-fuzz-case" for i in range(3)]
    expected = {}  # run -> next sequence, once shaken hands
    sent = {}  # (run, seq) -> the stored batch
    accepted = []
    start_rows = trainer.env_steps
    try:
        for op, which, size, seed in ops:
            run = runs[which]
            rng = np.random.default_rng(seed)
            batch = None
            if op == "handshake":
                assert hello(client, actor_id="fuzz", run_id=run).next_sequence == expected.setdefault(run, 0)
                continue
            if op.startswith("report"):
                bad = op == "report_bad"
                episode = pb.Episode(episode_return=1e300 if bad else 0.0, length=1)
                want = grpc.StatusCode.FAILED_PRECONDITION if run not in expected else (grpc.StatusCode.INVALID_ARGUMENT if bad else grpc.StatusCode.OK)
                assert code_of(lambda: client.report(pb.ReportEpisodesRequest(actor_id="fuzz", run_id=run, episodes=[episode]))) == want
                continue
            if run not in expected or op == "push_unknown_run":
                batch = make_batch(size, seq=0, actor_id="fuzz", run_id=run if run not in expected else run + "-never", rng=rng)
                assert code_of(lambda: client.push(batch)) == grpc.StatusCode.FAILED_PRECONDITION
                continue
            nxt = expected[run]
            if op == "push_next":
                batch = make_batch(size, seq=nxt, actor_id="fuzz", run_id=run, rng=rng)
                ack = client.push(batch)
                assert ack.stored and ack.next_sequence == nxt + 1
                expected[run], sent[(run, nxt)] = nxt + 1, batch
                accepted.append(batch)
            elif op in ("push_resend", "push_changed") and nxt > 0:
                seq = int(rng.integers(0, nxt))
                original = sent[(run, seq)]
                if op == "push_resend":
                    assert client.push(original).duplicate
                else:
                    changed = make_batch(size, seq=seq, actor_id="fuzz", run_id=run, rng=rng)
                    same = changed.SerializeToString() == original.SerializeToString()
                    assert code_of(lambda: client.push(changed)) == (grpc.StatusCode.OK if same else grpc.StatusCode.ALREADY_EXISTS)
            elif op == "push_gap":
                batch = make_batch(size, seq=nxt + 1 + int(rng.integers(0, 2**62)), actor_id="fuzz", run_id=run, rng=rng)
                assert code_of(lambda: client.push(batch)) == grpc.StatusCode.OUT_OF_RANGE
            elif op == "push_invalid":
                kind = int(rng.integers(0, 3))
                overrides = [{"actions": np.full((size, 2), 1.5, np.float32)}, {"rewards": np.full(size, np.nan, np.float32)},
                             {"observations": np.zeros((size, 3), np.float32)}][kind]
                batch = make_batch(size, seq=nxt, actor_id="fuzz", run_id=run, rng=rng, **overrides)
                assert code_of(lambda: client.push(batch)) == grpc.StatusCode.INVALID_ARGUMENT
            elif op == "push_bad_id":
                batch = make_batch(size, seq=nxt, actor_id="fu zz", run_id=run, rng=rng)
                assert code_of(lambda: client.push(batch)) == grpc.StatusCode.INVALID_ARGUMENT
        assert health_status(fuzz_server.address) == health_pb2.HealthCheckResponse.SERVING
        total = sum(len(codec.decode_tensor(b.rewards, "r")) for b in accepted)
        assert trainer.wait_processed(start_rows + total, 30) and trainer.env_steps == start_rows + total
        if accepted:
            rows = trainer.replay.data["observations"][start_rows : start_rows + total]
            np.testing.assert_array_equal(rows, np.concatenate([codec.decode_tensor(b.observations, "o") for b in accepted]))
        assert trainer.error is None
    finally:
        client.close()
