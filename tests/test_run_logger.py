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
