"""Ctrl-C as a terminal sends it: the command runs in a pseudo-terminal in its own process
group (session), and SIGINT (or SIGTERM) goes to the whole group, as the terminal's line
discipline sends it to the foreground group. One signal: a clean stop with the learner's state
and final checkpoint saved, exit status 128 + signal; a second one: out at once, no traceback,
no process of the group left behind."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from learner.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "agent.critic_hidden_dims=[16]", "agent.actor_hidden_dims=[16]", "agent.critic_ensemble_size=4", "agent.batch_size=8",
    "finetune.utd_ratio=2", "finetune.eval_episodes=1", "finetune.log_every=5", "finetune.diagnostics_every=0",
    "logging.tensorboard=false", "logging.progress=false",
]
# Generous bounds: these catch a hang, they do not measure speed (2 shared CPU cores).
STOP_TIMEOUT_S = 90
FORCE_TIMEOUT_S = 20


class Terminal:
    """A command in a pseudo-terminal, session leader of its own process group."""

    def __init__(self, *args: str):
        master, slave = pty.openpty()
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "learner.cli", *args], cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
                                        start_new_session=True, env=env)
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 240) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in the output:\n{self.output}")

    def signal_group(self, sig: int) -> None:
        os.killpg(self.process.pid, sig)

    def finish(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"still running {timeout} s after the signal:\n{self.output}") from None
        finally:
            self.reader.join(5)

    def group_is_gone(self) -> bool:
        for _ in range(50):
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        if self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.process.wait()
        os.close(self.master)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from envs.tasks import get_task
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint
    from tests.conftest import tiny_config

    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=3)
    return save_checkpoint(tmp_path_factory.mktemp("pre") / "pre.ckpt", agent, config, get_task("pointmass-goal").spec())


def learner_status(address: str):
    from actor.client import LearnerClient

    client = LearnerClient(address)
    try:
        return client.status()
    finally:
        client.close()


def wait_until(address: str, condition, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = learner_status(address)
            if condition(s):
                return s
        except Exception:
            pass
        time.sleep(0.3)
    raise AssertionError("the learner never reached the expected state")


def assert_saved(run_dir: Path, interrupted: bool = True) -> dict:
    """The learner state and the final checkpoint agree; summary.json says it was stopped."""
    from flax import serialization

    state = serialization.msgpack_restore((run_dir / "learner_state" / "learner_state.msgpack").read_bytes())
    counters = json.loads(state["counters"])
    final = read_checkpoint(run_dir / "checkpoint.ckpt")
    assert final.counters["processed_steps"] == counters["processed"] > 0
    assert final.counters["updates"] == counters["updates"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is interrupted and summary["env_steps"] == counters["processed"]
    return summary


@pytest.mark.parametrize("phase", ["warmup", "training"])
def test_wsrl_run_stops_cleanly_on_one_ctrl_c_to_its_process_group(checkpoint, tmp_path, phase):
    run_dir = tmp_path / "run"
    sig = signal.SIGINT
    warmup = 100_000 if phase == "warmup" else 10
    evaluator = [] if phase == "warmup" else ["--no-evaluator"]
    term = Terminal("run", "--checkpoint", str(checkpoint), "--run-dir", str(run_dir), "--batch-size", "4", *evaluator,
                    f"finetune.warmup_steps={warmup}", "finetune.num_steps=200000", "finetune.eval_every=50", *TINY)
    try:
        address = term.wait_for(r"learner on (127\.0\.0\.1:\d+)").group(1)
        if phase == "warmup":
            term.wait_for(r"evaluation at env step 0 ")  # the evaluator is running
            wait_until(address, lambda s: s.env_steps > 0 and not s.training)
        else:
            wait_until(address, lambda s: s.updates >= 5)
        term.signal_group(sig)
        assert term.finish(STOP_TIMEOUT_S) == 128 + sig
        out = term.output
        assert "Traceback" not in out, out
        assert f"{signal.Signals(sig).name}: stopping" in out and "[wsrl run] stopped" in out, out
        assert term.group_is_gone(), "a process of the group outlived wsrl run"
        summary = assert_saved(run_dir)
        if phase == "warmup":
            # Step 0 (the pre-trained policy) was evaluated before the stop, by the evaluator.
            assert summary["evaluations"] >= 1 and (run_dir / "eval.csv").read_text().splitlines()[1].startswith("0,")
        else:
            assert summary["updates"] >= 5
    finally:
        term.close()


def test_second_ctrl_c_exits_at_once_and_leaves_no_process(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    term = Terminal("run", "--checkpoint", str(checkpoint), "--run-dir", str(run_dir), "--batch-size", "4", "--no-evaluator",
                    "finetune.warmup_steps=100000", "finetune.num_steps=200000", *TINY)
    try:
        address = term.wait_for(r"learner on (127\.0\.0\.1:\d+)").group(1)
        wait_until(address, lambda s: s.env_steps > 0)
        term.signal_group(signal.SIGINT)
        term.wait_for(r"SIGINT: stopping", timeout=10)
        term.signal_group(signal.SIGINT)
        assert term.finish(FORCE_TIMEOUT_S) == 130
        assert "Traceback" not in term.output and "exiting now" in term.output, term.output
        assert term.group_is_gone()
    finally:
        term.close()


def test_learner_and_actor_alone_stop_on_ctrl_c_and_sigterm(checkpoint, tmp_path):
    """`wsrl actor` flushes and exits 130 on Ctrl-C; `wsrl learner` saves its state and
    checkpoint on SIGTERM and exits 143."""
    run_dir = tmp_path / "learner"
    learner = Terminal("learner", "--checkpoint", str(checkpoint), "--run-dir", str(run_dir), "--bind", "127.0.0.1:0",
                       "finetune.warmup_steps=10", "finetune.num_steps=200000", *TINY)
    actor = None
    try:
        address = learner.wait_for(r"serving policy version 0 on (127\.0\.0\.1:\d+)").group(1)
        assert re.search(r"device cpu.*critic matmuls", learner.output)
        actor = Terminal("actor", "--learner", address, "--actor-id", "a0", "--batch-size", "4")
        wait_until(address, lambda s: s.updates >= 3)
        actor.signal_group(signal.SIGINT)
        assert actor.finish(STOP_TIMEOUT_S) == 130
        assert "Traceback" not in actor.output and "a0 done" in actor.output, actor.output
        sent = wait_until(address, lambda s: s.processed_steps == s.env_steps).env_steps
        learner.signal_group(signal.SIGTERM)
        assert learner.finish(STOP_TIMEOUT_S) == 128 + signal.SIGTERM
        assert "Traceback" not in learner.output, learner.output
        summary = assert_saved(run_dir)
        assert summary["env_steps"] == sent
    finally:
        learner.close()
        if actor is not None:
            actor.close()


def test_wsrl_run_stopped_in_pretraining_and_in_finetuning_resumes_to_the_end(tmp_path):
    """Ctrl-C during the pre-training of `wsrl run` keeps it and says how to continue;
    `wsrl run --resume` continues it, then a Ctrl-C during fine-tuning saves the learner; the
    second `--resume` finishes the run: exit 0, every env step once, one summary computed
    from the whole eval.csv."""
    import csv

    run_dir = tmp_path / "run"
    pretraining = ["pretrain.num_steps=4000", "pretrain.log_every=20", "pretrain.eval_every=0", "pretrain.dataset_episodes=10",
                   "agent.cql_num_actions=2"]
    term = Terminal("run", "--run-dir", str(run_dir), "--batch-size", "4", *pretraining, "finetune.warmup_steps=20",
                    "finetune.num_steps=2000", "finetune.eval_every=500", *TINY)
    try:
        deadline = time.monotonic() + 240
        readiness = run_dir / "pretrain" / "readiness.csv"
        while not (readiness.is_file() and len(readiness.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
            time.sleep(0.1)
        term.signal_group(signal.SIGINT)
        assert term.finish(STOP_TIMEOUT_S) == 130
        out = term.output
        assert "Traceback" not in out and f"continue with: wsrl run --resume {run_dir}" in out, out
        stopped = read_checkpoint(run_dir / "pretrain" / "checkpoint.ckpt").counters
        assert stopped["interrupted"] is True and 40 <= stopped["pretrain_steps"] < 4000
        assert not (run_dir / "learner_state").exists()
    finally:
        term.close()

    term = Terminal("run", "--resume", str(run_dir))
    try:
        term.wait_for(rf"resumed at step {stopped['pretrain_steps']}")
        address = term.wait_for(r"learner on (127\.0\.0\.1:\d+)").group(1)
        assert read_checkpoint(run_dir / "pretrain" / "checkpoint.ckpt").counters["pretrain_steps"] == 4000
        first = wait_until(address, lambda s: s.updates >= 5)
        term.signal_group(signal.SIGINT)
        assert term.finish(STOP_TIMEOUT_S) == 130
        assert f"continue with: wsrl run --resume {run_dir}" in term.output and "Traceback" not in term.output, term.output
        summary = assert_saved(run_dir)
        assert first.processed_steps <= summary["env_steps"] < 2000
    finally:
        term.close()

    term = Terminal("run", "--resume", str(run_dir))
    try:
        assert term.finish(240) == 0, term.output
        assert "[wsrl run] done" in term.output and "Traceback" not in term.output, term.output
        summary = assert_saved(run_dir, interrupted=False)
        assert summary["env_steps"] == 2000
        rows = list(csv.DictReader(open(run_dir / "eval.csv")))
        steps = [int(float(r["step"])) for r in rows]
        # Step 0 and the end at least (an evaluation pending at the stop is dropped with its
        # snapshot), each once, and the summary counts them all, before the stop included.
        assert steps[0] == 0 and steps[-1] == 2000 and steps == sorted(set(steps)) and set(steps) <= {0, 500, 1000, 1500, 2000}
        assert summary["evaluations"] == len(rows) and summary["pretrained_score"] == float(rows[0]["normalized_score"])
    finally:
        term.close()


def test_an_attached_actor_stops_with_a_line_and_exit_0_when_its_learner_has_finished(checkpoint, tmp_path):
    """`wsrl learner` (no --forever) stops at finetune.num_steps; its last acks tell the
    attached `wsrl actor` (no step limit of its own), which stops at once with a line and exit
    status 0 instead of retrying a learner that is gone; one final evaluation."""
    import csv

    run_dir = tmp_path / "learner"
    learner = Terminal("learner", "--checkpoint", str(checkpoint), "--run-dir", str(run_dir), "--bind", "127.0.0.1:0",
                       "finetune.warmup_steps=10", "finetune.num_steps=80", "finetune.eval_every=0", *TINY)
    actor = None
    try:
        address = learner.wait_for(r"serving policy version 0 on (127\.0\.0\.1:\d+)").group(1)
        actor = Terminal("actor", "--learner", address, "--actor-id", "a0", "--batch-size", "4")
        assert learner.finish(STOP_TIMEOUT_S) == 0, learner.output
        finished_at = time.monotonic()
        assert actor.finish(30) == 0, actor.output
        assert time.monotonic() - finished_at < 15  # not a retry loop against a learner that is gone
        assert "the learner has trained all its env steps and is stopping; stopping too" in actor.output, actor.output
        assert "Traceback" not in actor.output + learner.output
        summary = assert_saved(run_dir, interrupted=False)
        assert 80 <= summary["env_steps"] <= 80 + 4 * 4  # at most the batches in flight past the budget
        steps = [int(float(r["step"])) for r in csv.DictReader(open(run_dir / "eval.csv"))]
        assert len(steps) == 1 and steps[0] >= 80  # no evaluator attached: the one final evaluation
    finally:
        learner.close()
        if actor is not None:
            actor.close()
