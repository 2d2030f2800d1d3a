"""Start-up of the training commands as a new user meets it: checks before anything is
written (one line, exit 2, the run directory as found), every family starts or names the
command that makes its data, an actor says it waits, help texts list what exists."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import pytest

from learner.cli import OVERRIDE_EXAMPLE, build_parser, families, main
from learner.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def listing(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


@pytest.fixture
def pretrained(tmp_path):
    from envs.tasks import get_task
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint
    from tests.conftest import tiny_config

    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=3)
    return save_checkpoint(tmp_path / "pre.ckpt", agent, config, get_task("pointmass-goal").spec())


TINY = ["agent.critic_hidden_dims=[16]", "agent.actor_hidden_dims=[16]", "agent.critic_ensemble_size=4"]


@pytest.mark.parametrize("command", ["run", "learner", "finetune"])
def test_missing_checkpoint_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, command):
    run_dir = tmp_path / "runs" / "demo"
    assert main([command, "--checkpoint", str(tmp_path / "nonexistent.ckpt"), "--run-dir", str(run_dir), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    assert not run_dir.exists() and not (tmp_path / "runs").exists()


def test_checkpoint_that_does_not_fit_is_refused_naming_both_sides(tmp_path, capsys, pretrained):
    run_dir = tmp_path / "existing"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    assert main(["run", "--checkpoint", str(pretrained), "--run-dir", str(run_dir), "agent.critic_hidden_dims=[32]", "agent.actor_hidden_dims=[16]",
                 "agent.critic_ensemble_size=4"]) == 2
    err = capsys.readouterr().err
    assert "agent.critic_hidden_dims: checkpoint has (16,), this run has (32,)" in err and err.count("\n") == 1
    assert listing(run_dir) == ["notes.txt"]  # as found


def test_off_loopback_bind_without_token_writes_nothing(tmp_path, capsys, pretrained):
    run_dir = tmp_path / "learner"
    assert main(["learner", "--checkpoint", str(pretrained), "--run-dir", str(run_dir), "--bind", "0.0.0.0:0", *TINY]) == 2
    assert "auth token is required" in capsys.readouterr().err
    assert not run_dir.exists()


def test_a_run_dir_holding_a_run_is_refused_before_pretraining(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("task: x\n")
    assert main(["run", "--run-dir", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert listing(run_dir) == ["config.yaml"]


def test_locomotion_without_data_names_the_generate_command_and_then_finds_its_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", "locomotion", "--run-dir", "runs/loco"]) == 2
    err = capsys.readouterr().err
    command = "wsrl dataset generate --task hopper-medium-replay --out datasets/hopper-medium-replay.hdf5 --behaviour-dir datasets/hopper-behaviour"
    assert f"`{command}`" in err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()
    # The command it names parses, and its output is where the next start looks.
    args = build_parser().parse_args(command.split()[1:])
    assert args.task == "hopper-medium-replay" and args.behaviour_dir == "datasets/hopper-behaviour"
    from learner.startup import resolve_dataset

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "hopper-medium-replay.hdf5").write_bytes(b"")
    config = resolve_dataset(load_config("locomotion", "wsrl", []), announce=False)
    assert config.pretrain.dataset == os.path.join("datasets", "hopper-medium-replay.hdf5")


def test_actor_waiting_for_its_learner_says_so_and_gives_up_at_the_flag(capsys):
    started = time.monotonic()
    assert main(["actor", "--learner", "127.0.0.1:1", "--connect-timeout", "6"]) == 1
    captured = capsys.readouterr()
    waiting = [line for line in captured.out.splitlines() if "waiting for learner at 127.0.0.1:1, retrying in" in line]
    assert len(waiting) >= 2  # at 0.5 s and again within 5 s
    assert "not reachable within 6 s (--connect-timeout)" in captured.err
    assert time.monotonic() - started >= 6


def test_help_lists_every_family_and_its_example_parses():
    found = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert sorted(families()) == found and "pointmaze" in found
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for name in found:
        assert name in help_text
    assert " ".join(OVERRIDE_EXAMPLE) in " ".join(help_text.split())
    config = load_config("pointmass", "wsrl", list(OVERRIDE_EXAMPLE))  # the example is accepted
    assert config.finetune.utd_ratio == 2


def test_occupied_port_is_one_line_exit_2_in_under_a_second(tmp_path, capsys, pretrained):
    import socket

    run_dir = tmp_path / "learner"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.perf_counter()
        assert main(["learner", "--checkpoint", str(pretrained), "--run-dir", str(run_dir), "--bind", f"127.0.0.1:{port}", *TINY]) == 2
        elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert err == f"wsrl learner: error: --bind '127.0.0.1:{port}': port {port} is in use (another learner?); stop it or choose another port\n"
    assert elapsed < 5.0 and not run_dir.exists()  # under a second on a quiet box; the bound allows a loaded one


@pytest.mark.parametrize("bind, message", [
    ("no-such-host.invalid:50051", "host 'no-such-host.invalid' does not resolve"),
    ("192.0.2.1:50051", "'192.0.2.1' is not an address of this machine"),  # TEST-NET-1: never local
])
def test_unbindable_address_is_named(tmp_path, capsys, pretrained, bind, message):
    run_dir = tmp_path / "learner"
    assert main(["learner", "--checkpoint", str(pretrained), "--run-dir", str(run_dir), "--bind", bind, "--token", "t", *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not run_dir.exists()


def test_finetune_from_an_unsettled_pretraining_warns_once_and_starts(tmp_path, capsys):
    from learner.agents import make_agent
    from learner.checkpoint import save_checkpoint
    from learner.readiness import ReadinessThresholds, assess
    from learner.startup import check_checkpoint
    from tests.conftest import tiny_config

    config = tiny_config()
    agent = make_agent("calql", config.agent, 2, 2, seed=3)
    history = [{"step": s, "q_mean": -0.016 * s, "q_std": 1.0, "entropy": 0.23} for s in (4000, 4250, 4500, 4750, 5000)]
    moving = assess(history, -2.0, ReadinessThresholds())
    path = save_checkpoint(tmp_path / "pre.ckpt", agent, config, {"observation_dim": 2, "action_dim": 2}, {"pretrain_steps": 5000}, moving)
    check_checkpoint(dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, checkpoint=str(path))))
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"[wsrl] warning: checkpoint {path} comes from a pre-training that had not settled (at step 5000: "
                          "still moving: Q -16/1k steps")
    assert "entropy 0.23 vs target -2" in err


@pytest.mark.parametrize("flag", ["--token", "--status-token", "--admin-token"])
def test_an_empty_token_is_refused_naming_the_flag(tmp_path, capsys, pretrained, flag):
    """docs/robot.md passes "$WSRL_STATUS_TOKEN": unset, it was an empty token and the learner
    started on 0.0.0.0 without one. An empty token is now a start-up error."""
    run_dir = tmp_path / "learner"
    args = ["--token", "shared-token-123"] if flag != "--token" else []
    assert main(["learner", "--checkpoint", str(pretrained), "--run-dir", str(run_dir), "--bind", "0.0.0.0:0", *args, flag, "", *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{flag}: given empty (an unset shell variable such as $WSRL_" in err and err.count("\n") == 1
    assert not run_dir.exists()
