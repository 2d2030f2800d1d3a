"""The one logger interface: `RunLogger.log(group, step, metrics)`.

Every run writes one CSV per group (`train.csv`, `eval.csv`, `episode.csv`, ...) in its run
directory, always; TensorBoard event files when `logging.tensorboard` is on; Weights & Biases
when `logging.wandb` is on (mode "offline" writes locally and needs no network).
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from learner.config import LoggingConfig


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class _CSVWriter:
    """Appends rows; when a row brings new columns, the file is rewritten with the wider header.
    An existing file (a resumed run) is appended to, its rows kept."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        self._file = None
        if path.is_file() and path.stat().st_size > 0:
            with open(path, newline="") as f:
                self.columns = next(csv.reader(f), [])
            self._file = open(path, "a", newline="")

    def write(self, row: dict) -> None:
        new = [k for k in row if k not in self.columns]
        if new:
            old_rows = []
            if self._file is not None:
                self._file.close()
                with open(self.path, newline="") as f:
                    old_rows = list(csv.DictReader(f))
            self.columns += new
            tmp = self.path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                writer.writerows(old_rows)
            tmp.replace(self.path)
            self._file = open(self.path, "a", newline="")
        csv.DictWriter(self._file, self.columns).writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RunLogger:
    def __init__(self, run_dir: str | Path, config: LoggingConfig = LoggingConfig(), run_config: Optional[dict] = None, run_name: str = ""):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._csv: dict[str, _CSVWriter] = {}
        self._tensorboard = None
        self._wandb_run = None
        if config.tensorboard:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))
        if config.wandb:
            try:
                import wandb
            except ImportError:
                raise RuntimeError(
                    "config field 'logging.wandb' is true but wandb is not installed; "
                    "pip install 'wsrl[wandb]' or set logging.wandb=false"
                ) from None
            self._wandb_run = wandb.init(
                project=config.wandb_project,
                name=run_name or self.run_dir.name,
                dir=str(self.run_dir),
                mode=config.wandb_mode,
                config=run_config or {},
            )

    def resume_at(self, step: int, restart_groups: tuple[str, ...] = ()) -> None:
        """A resumed run continues from `step`: in every CSV log of the run directory the rows
        up to `step` are kept and later ones (logged before a kill, after the state the run
        resumes from was saved) are dropped, so they are replaced, never duplicated; in
        `restart_groups` (groups the resumed run logs again at `step` itself, such as the
        learner's counters) the rows at `step` go too. TensorBoard discards its events after
        `step` the same way."""
        for writer in self._csv.values():
            writer.close()
        self._csv = {}
        for path in sorted(self.run_dir.glob("*.csv")):
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                columns, rows = reader.fieldnames or [], list(reader)
            last = step - 0.5 if path.stem in restart_groups else step
            kept = [r for r in rows if _row_step(r) <= last]
            if len(kept) == len(rows):
                continue
            tmp = path.with_suffix(".csv.tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(kept)
            tmp.replace(path)
        if self._tensorboard is not None:
            from tensorboardX import SummaryWriter

            self._tensorboard.close()
            self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step + 1)

    def log(self, group: str, step: int, metrics: Mapping[str, Any]) -> None:
        """Records `metrics` (scalars) under `group` at `step` in every enabled sink."""
        values = {k: _scalar(v) for k, v in metrics.items()}
        if group not in self._csv:
            self._csv[group] = _CSVWriter(self.run_dir / f"{group}.csv")
        self._csv[group].write({"step": step, **values})
        if self._tensorboard is not None:
            for key, value in values.items():
                if math.isfinite(value):
                    self._tensorboard.add_scalar(f"{group}/{key}", value, step)
        if self._wandb_run is not None:
            self._wandb_run.log({f"{group}/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        for writer in self._csv.values():
            writer.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _row_step(row: dict) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return math.nan


def write_line(bar, text: str) -> None:
    """Prints a line above a progress bar (never glued onto it), also when the bar is off."""
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar (steps/s shown by tqdm), starting at `initial` (a resumed run); redrawn
    rarely when stderr is not a terminal so logs from CI or `nohup` stay readable."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not enabled, unit="step", mininterval=0.5 if interactive else 15.0, dynamic_ncols=interactive,
                initial=initial)
