import csv
import importlib.util

import numpy as np
import pytest

from learner.config import LoggingConfig
from learner.run_logger import RunLogger


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csv_per_group_widens_when_new_columns_appear(tmp_path):
    with RunLogger(tmp_path, LoggingConfig(tensorboard=False)) as logger:
        logger.log("train", 1, {"critic_loss": np.float32(0.5)})
        logger.log("train", 2, {"critic_loss": 0.25, "q_mean": 3.0})
        logger.log("eval", 2, {"return": -1.0})
    rows = read(tmp_path / "train.csv")
    assert list(rows[0]) == ["step", "critic_loss", "q_mean"]
    assert rows[0] == {"step": "1", "critic_loss": "0.5", "q_mean": ""}
    assert rows[1] == {"step": "2", "critic_loss": "0.25", "q_mean": "3.0"}
    assert read(tmp_path / "eval.csv") == [{"step": "2", "return": "-1.0"}]


def test_tensorboard_event_file_is_written(tmp_path):
    with RunLogger(tmp_path, LoggingConfig(tensorboard=True)) as logger:
        logger.log("train", 1, {"x": 1.0, "nan_is_skipped": float("nan")})
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb installed: the missing-package error cannot occur")
def test_wandb_requested_but_missing_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="'logging.wandb' is true but wandb is not installed"):
        RunLogger(tmp_path, LoggingConfig(tensorboard=False, wandb=True))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")
def test_wandb_offline_mode_writes_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    with RunLogger(tmp_path, LoggingConfig(tensorboard=False, wandb=True, wandb_mode="offline")) as logger:
        logger.log("train", 1, {"x": 1.0})
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_resume_keeps_rows_up_to_the_saved_step_and_replaces_later_ones(tmp_path):
    """A run killed after its state was saved at step 4 had logged up to step 6; the resumed
    run continues from 4: rows 5 and 6 are replaced, rows up to 4 kept, nothing duplicated."""
    with RunLogger(tmp_path, LoggingConfig(tensorboard=True)) as logger:
        for step in range(0, 7):
            logger.log("train", step, {"loss": float(step)})
            logger.log("learner", step, {"updates": float(step)})
    with RunLogger(tmp_path, LoggingConfig(tensorboard=True)) as logger:
        logger.resume_at(4, restart_groups=("learner",))
        logger.log("learner", 4, {"updates": 40.0})  # the resumed learner's start row
        for step in range(5, 8):
            logger.log("train", step, {"loss": 10.0 * step, "new_column": 1.0})
            logger.log("learner", step, {"updates": 10.0 * step})
    train = read(tmp_path / "train.csv")
    assert [r["step"] for r in train] == ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert [float(r["loss"]) for r in train] == [0, 1, 2, 3, 4, 50, 60, 70]
    assert train[0]["new_column"] == "" and train[-1]["new_column"] == "1.0"
    learner = read(tmp_path / "learner.csv")
    assert [(r["step"], float(r["updates"])) for r in learner] == [("0", 0), ("1", 1), ("2", 2), ("3", 3), ("4", 40), ("5", 50), ("6", 60), ("7", 70)]
