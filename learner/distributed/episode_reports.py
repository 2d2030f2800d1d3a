"""Episodes reported by actors: their plausibility check, counts, and `episode.csv` rows at the step each episode ended."""

from __future__ import annotations

import collections
from typing import Optional


class EpisodeReports:
    """The `Trainer`'s episode reports (handler side, under its `cond`; logged under its
    `log_lock`); the state it keeps is set up by `Trainer.__init__`."""

    def check_episode(self, episode: dict) -> Optional[str]:
        """Why a reported episode is implausible (None if it is not): its length must be within
        [1, the task's time limit] and its return finite, within length x the largest |reward|
        of any accepted transition (the episode's own transitions are pushed before it is
        reported)."""
        length, value = episode["length"], episode["return"]
        if not 1 <= length <= self.episode_limit:
            return f"'length': got {length}, expected 1..{self.episode_limit} (the task's time limit)"
        with self.cond:
            bound = length * self.max_abs_reward
        if not abs(value) <= bound * (1 + 1e-5) + 1e-6:
            return f"'episode_return': got {value:.6g}, expected a finite number within +-{bound:.6g} (length x the largest |reward| received)"
        return None

    def report_episodes(self, actor_id: str, episodes: list[dict], run_id: Optional[str] = None) -> int:
        """Records episode stats reported by an actor; returns the total episode count.

        With `run_id`, the (actor, run) must have shaken hands (else UnknownRun), and each
        episode's `episode.csv` row is logged at the exact env step its last transition was
        inserted at (the k-th report of a run is its k-th episode end), with `warmup` 1 when
        that step is within the first K; a report that arrives before its transitions waits
        for them."""
        if run_id is not None:
            self.check_run(actor_id, run_id)
        with self.cond:
            self.episodes += len(episodes)
            self.recent_returns.extend(e["return"] for e in episodes)
            total, step = self.episodes, self.env_steps
            if run_id is not None:
                self._episode_reports.setdefault((actor_id, run_id), collections.deque()).extend(episodes)
        if run_id is not None:
            self._log_episodes((actor_id, run_id))
        elif self.logger is not None:
            with self.log_lock:
                for e in episodes:
                    self.logger.log("episode", step, {**e, "warmup": float(step <= self.warmup_env_steps)})
        return total

    def _log_episodes(self, key: tuple) -> None:
        """Logs the reported episodes of `key` whose last step has been inserted."""
        rows = []
        with self.cond:
            reports, ends = self._episode_reports.get(key), self._episode_ends.get(key)
            while reports and ends:
                rows.append((ends.popleft(), reports.popleft()))
        if self.logger is not None and rows:
            with self.log_lock:
                for step, e in rows:
                    self.logger.log("episode", step, {**e, "warmup": float(step <= self.warmup_env_steps)})

    def _log_unmatched_episodes(self) -> None:
        """At stop: reported episodes whose last transition never arrived, at the accepted count."""
        with self.cond:
            left = [e for reports in self._episode_reports.values() for e in reports]
            self._episode_reports.clear()
            step = self.env_steps
        if self.logger is not None and left:
            with self.log_lock:
                for e in left:
                    self.logger.log("episode", step, {**e, "warmup": float(step <= self.warmup_env_steps)})
