"""`summary.json`: the result of a fine-tuning run, one schema for `wsrl finetune`, `wsrl
learner` and `wsrl run`, and the lines every training command ends with."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

from envs.atomic_files import atomic_write_bytes
from learner.diagnostics import dip_and_recovery

SCHEMA = "wsrl-summary-v1"


def evaluation_score(stats: dict) -> float:
    """The score curves and the dip are measured in: the D4RL normalized score where the task
    has one, else the success rate."""
    return float(stats.get("normalized_score", stats["success_rate"]))


def run_summary(command: str, config, evaluations: Sequence[tuple[int, dict]], warmup_steps: int, env_steps: int, updates: int,
                wall_time_s: float, interrupted: bool = False) -> dict:
    """The summary of a run from its evaluations ((env step, eval row) pairs, any order).

    Keys: final/best score (the normalized score, or the success rate where the task has none:
    `score_metric` says which) and the step of the best, `final_normalized_score` /
    `best_normalized_score` (None without one), the dip after warmup and the recovery step
    (`learner.diagnostics.dip_and_recovery`, against the step-0 evaluation), the final eval
    row, counters, wall time and rates."""
    evaluations = sorted(evaluations, key=lambda e: e[0])
    steps = [s for s, _ in evaluations]
    scores = [evaluation_score(row) for _, row in evaluations]
    has_normalized = bool(evaluations) and all("normalized_score" in row for _, row in evaluations)
    summary = {
        "schema": SCHEMA,
        "command": command,
        "task": config.task,
        "variant": config.variant,
        "algorithm": config.finetune.algorithm,
        "score_metric": "normalized_score" if has_normalized else "success_rate",
        "evaluations": len(evaluations),
        "final_step": steps[-1] if steps else None,
        "final_score": scores[-1] if scores else None,
        "best_score": max(scores) if scores else None,
        "best_step": steps[scores.index(max(scores))] if scores else None,
        "final_normalized_score": scores[-1] if has_normalized else None,
        "best_normalized_score": max(scores) if has_normalized else None,
        "final_eval": evaluations[-1][1] if evaluations else None,
        "env_steps": env_steps,
        "updates": updates,
        "wall_time_s": wall_time_s,
        "env_steps_per_s": env_steps / wall_time_s if wall_time_s > 0 else None,
        "updates_per_s": updates / wall_time_s if wall_time_s > 0 else None,
        "interrupted": interrupted,
    }
    if evaluations:
        summary.update(dip_and_recovery(steps, scores, None, warmup_steps))
    else:
        summary.update({"dip": None, "dip_step": None, "recovery_step": None, "pretrained_score": None, "min_score": None})
    return summary


def _json_value(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_summary(run_dir: Path, summary: dict) -> Path:
    """Writes `summary.json` (atomically; NaN as null, so any JSON reader takes it)."""
    clean = {k: ({kk: _json_value(vv) for kk, vv in v.items()} if isinstance(v, dict) else _json_value(v)) for k, v in summary.items()}
    path = Path(run_dir) / "summary.json"
    atomic_write_bytes(path, (json.dumps(clean, indent=2) + "\n").encode())
    return path


def result_lines(summary: dict, run_dir: Path, prefix: str) -> list[str]:
    """The last lines a training command prints: final score, dip/recovery, files, plot command."""
    lines = []
    metric = "normalized score" if summary["score_metric"] == "normalized_score" else "success rate"
    if summary["final_score"] is None:
        lines.append(f"{prefix} no evaluation was made")
    else:
        lines.append(f"{prefix} final {metric} {summary['final_score']:.3g} at env step {summary['final_step']} "
                     f"(best {summary['best_score']:.3g} at {summary['best_step']}; {summary['evaluations']} evaluations)")
        dip = summary.get("dip")
        if dip is None or (isinstance(dip, float) and math.isnan(dip)):
            lines.append(f"{prefix} dip after warmup: no evaluation after warmup")
        else:
            recovery = "never recovered" if summary["recovery_step"] is None else f"recovered by env step {summary['recovery_step']}"
            lines.append(f"{prefix} dip after warmup {dip:+.3g} at env step {summary['dip_step']} ({recovery})")
    rate = f", {summary['env_steps_per_s']:.1f} env steps/s, {summary['updates_per_s']:.1f} updates/s" if summary["env_steps_per_s"] else ""
    stopped = " (interrupted)" if summary.get("interrupted") else ""
    lines.append(f"{prefix} {summary['env_steps']} env steps, {summary['updates']} updates in {summary['wall_time_s']:.0f} s{rate}{stopped}")
    files = [name for name in ("summary.json", "eval.csv", "train.csv", "episode.csv", "checkpoint.ckpt") if (Path(run_dir) / name).exists()]
    lines.append(f"{prefix} files: {run_dir}/ ({', '.join(files)})")
    if summary["final_score"] is not None:  # a curve needs evaluations
        lines.append(f"{prefix} plot: wsrl plot {run_dir}")
    return lines


def print_result(summary: dict, run_dir: Path, prefix: str, write: Optional[callable] = None) -> None:
    for line in result_lines(summary, run_dir, prefix):
        (write or print)(line)
