"""Evaluation during distributed fine-tuning: the learner's side.

At env step 0 (the pre-trained policy), every `finetune.eval_every` env steps and at
`finetune.num_steps`, the training thread records the policy version current at that step
(a reference to its params: no copy, no stall of the update loop). Evaluator processes
(`actor/evaluator.py`, started by `wsrl run`, or `wsrl actor --evaluate` elsewhere) ask for the
earliest pending one (NextEvaluation), pull its params (PullEvaluationPolicy), run
`finetune.eval_episodes` deterministic episodes and report (ReportEvaluation); each result is
checked and logged once, as `wsrl finetune` logs its evaluations (`eval.csv`, TensorBoard).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Optional

# Snapshots kept waiting for an evaluator at most; beyond, the oldest is dropped (a learner
# without an evaluator must not hold every version of a long run).
MAX_PENDING = 256


class EvaluationRejected(ValueError):
    """A reported evaluation that does not match what was asked; names the field."""


class Evaluations:
    """The evaluation schedule, the pending snapshots and the results (thread-safe)."""

    def __init__(self, eval_every: int, num_steps: int, episodes: int, seed: int, logger: Any = None,
                 log_lock: Optional[threading.Lock] = None, max_pending: int = MAX_PENDING):
        self.eval_every, self.num_steps, self.episodes, self.seed = eval_every, num_steps, episodes, seed
        self.logger = logger
        self.log_lock = log_lock or threading.Lock()
        self.max_pending = max_pending
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[int, int, Any]] = {}  # env step -> (version, updates, params)
        self.results: dict[int, dict] = {}  # env step -> logged row
        self.next_step: Optional[int] = 0  # the next scheduled step not yet snapshotted
        self.dropped = 0
        self.last_seen = -math.inf  # monotonic time of the last evaluator call
        self.handed_out: dict[int, float] = {}  # env step -> when an evaluator pulled its params
        self.pulled_by: dict[int, set] = {}  # env step -> the evaluator ids that pulled its params
        self._chunks: dict[int, list[bytes]] = {}

    def schedule_after(self, step: int) -> Optional[int]:
        """The first scheduled evaluation step > `step`: multiples of eval_every, and
        num_steps (beyond it, with `--forever`, multiples of eval_every go on)."""
        candidates = []
        if self.eval_every:
            candidates.append((step // self.eval_every + 1) * self.eval_every)
        if step < self.num_steps:
            candidates.append(self.num_steps)
        return min(candidates) if candidates else None

    def resume_at(self, processed: int) -> None:
        """A resumed learner: evaluations up to `processed` belong to the run before."""
        with self.lock:
            self.next_step = self.schedule_after(processed) if processed > 0 else 0

    def restore(self, rows: list[dict]) -> None:
        """A resumed learner's earlier results (eval.csv rows, each with its "step"), so that
        its summary is computed from the whole run; nothing is logged again."""
        with self.lock:
            for row in rows:
                step = int(float(row["step"]))
                self.results[step] = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}

    def observe(self, processed: int, version: int, updates: int, params: Any) -> None:
        """Called by the training thread after each env step (and its update): snapshots the
        current policy for every scheduled step reached."""
        with self.lock:
            while self.next_step is not None and processed >= self.next_step:
                self.pending[self.next_step] = (version, updates, params)
                self.next_step = self.schedule_after(self.next_step)
            while len(self.pending) > self.max_pending:
                oldest = min(self.pending)
                del self.pending[oldest]
                self._chunks.pop(oldest, None)
                self.dropped += 1
                if self.dropped == 1:
                    print(f"[wsrl learner] more than {self.max_pending} evaluations wait for an evaluator; dropping the oldest "
                          "(attach one with `wsrl actor --evaluate --learner HOST:PORT`)", flush=True)

    def evaluator_active(self, within_s: float = 15.0, working_s: float = 1800.0) -> bool:
        """Whether an evaluator called in the last `within_s` seconds, or pulled a pending
        evaluation's params in the last `working_s` (long episodes make no calls)."""
        now = time.monotonic()
        with self.lock:
            working = any(now - t < working_s for s, t in self.handed_out.items() if s in self.pending)
        return working or now - self.last_seen < within_s

    def next_task(self, after_step: int) -> Optional[tuple[int, int]]:
        """(env step, version) of the earliest pending evaluation after `after_step`."""
        with self.lock:
            self.last_seen = time.monotonic()
            steps = sorted(s for s in self.pending if s > after_step)
            return (steps[0], self.pending[steps[0]][0]) if steps else None

    def chunks(self, step: int, encode: Callable[[int, Any], list[bytes]], evaluator_id: Optional[str] = None) -> Optional[list[bytes]]:
        """The serialized PolicyChunk messages of the snapshot at `step` (encoded once), or
        None; `evaluator_id` (the caller) may report this step's result afterwards."""
        with self.lock:
            self.last_seen = time.monotonic()
            if step not in self.pending:
                return None
            chunks = self._chunks.get(step)
            version, _, params = self.pending[step]
            self.handed_out[step] = time.monotonic()
            if evaluator_id is not None:
                self.pulled_by.setdefault(step, set()).add(evaluator_id)
        if chunks is None:
            chunks = encode(version, params)
            with self.lock:
                if step in self.pending:
                    self._chunks[step] = chunks
        return chunks

    def report(self, step: int, version: int, stats: dict, evaluator_id: Optional[str] = None, episode_limit: Optional[int] = None) -> bool:
        """Checks and logs one result. True if logged now, False for a repeat of a logged one;
        raises EvaluationRejected for one that was never asked for, that comes from an
        evaluator other than one that pulled this step's policy (`evaluator_id`; None: not
        checked), or that does not add up (`check_stats`)."""
        with self.lock:
            self.last_seen = time.monotonic()
            if step in self.results:
                return False
            if step not in self.pending:
                raise EvaluationRejected(f"field 'env_step': no evaluation is pending at {step} (pending: {sorted(self.pending) or 'none'})")
            expected_version, updates, _ = self.pending[step]
            pulled = self.pulled_by.get(step, set())
        if evaluator_id is not None and evaluator_id not in pulled:
            raise EvaluationRejected(f"field 'evaluator_id': {short_id(evaluator_id)} did not pull the policy of env step {step} "
                                     "(PullEvaluationPolicy), so it cannot report its evaluation")
        if version != expected_version:
            raise EvaluationRejected(f"field 'policy_version': got {version}, expected {expected_version} (the version current at env step {step})")
        stats = dict(stats)
        check_stats(stats, self.episodes, episode_limit)
        stats.pop("episodes", None)
        return self._record(step, {**stats, "policy_version": version, "updates": updates}, replace=False)

    def record_local(self, step: int, stats: dict, version: int, updates: int) -> None:
        """A result the learner computed itself (its final evaluation without an evaluator)."""
        self._record(step, {**stats, "policy_version": version, "updates": updates}, replace=True)

    def _record(self, step: int, row: dict, replace: bool) -> bool:
        """Stores and logs `row` as the evaluation of `step`; False (nothing logged) when the
        step already has one and `replace` is False."""
        with self.lock:
            if step in self.results and not replace:
                return False
            self.results[step] = row
            self.pending.pop(step, None)
            self._chunks.pop(step, None)
            self.pulled_by.pop(step, None)
        if self.logger is not None:
            with self.log_lock:
                self.logger.log("eval", step, row)
        return True

    def finished(self, processed: int) -> bool:
        with self.lock:
            return processed >= self.num_steps and not self.pending

    def history(self) -> list[tuple[int, dict]]:
        """(env step, row) of every logged result, by step."""
        with self.lock:
            return sorted(self.results.items())


def short_id(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def check_stats(stats: dict, episodes: int, episode_limit: Optional[int] = None) -> None:
    """Raises EvaluationRejected naming the first field out of range: the mean episode length
    must be at most `episode_limit` (the task's time limit) and the success rate a count of
    `episodes` episodes."""
    if stats.get("episodes", episodes) != episodes:
        raise EvaluationRejected(f"field 'episodes': got {stats['episodes']}, expected {episodes} (finetune.eval_episodes)")
    length, rate = stats["episode_length"], stats["success_rate"]
    most = float(episode_limit) if episode_limit else math.inf
    checks = [
        ("mean_return", stats["return"], math.isfinite(stats["return"]), "a finite number"),
        ("return_std", stats["return_std"], math.isfinite(stats["return_std"]) and stats["return_std"] >= 0, "a finite number >= 0"),
        ("success_rate", rate, 0.0 <= rate <= 1.0 and abs(rate * episodes - round(rate * episodes)) < 1e-6,
         f"a number in [0, 1] that is a count of {episodes} episodes"),
        ("episode_length", length, math.isfinite(length) and 1 <= length <= most,
         "a number >= 1" + (f" and <= {episode_limit} (the task's time limit)" if episode_limit else "")),
    ]
    if "normalized_score" in stats:
        checks.append(("normalized_score", stats["normalized_score"], math.isfinite(stats["normalized_score"]), "a finite number"))
    for field, value, ok, expected in checks:
        if not ok:
            raise EvaluationRejected(f"field '{field}': got {value!r}, expected {expected}")
