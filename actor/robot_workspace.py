"""The robot's workspace limits: where they come from (settings or the env) and the projection of actions into them.

Part of robot mode (actor/robot.py). The limits bound the position the env reports in
`info["workspace_position"]` (envs/robot.py). In 'stop' mode the control loop makes a position
outside them a safety stop; in 'project' mode it limits each action (`_project`, after the
clip to the action bounds and the `max_action_change` limit) so the next position stays inside.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from envs.robot import find_attribute


@dataclasses.dataclass(frozen=True)
class WorkspaceLimits:
    """Bounds on the position the env reports (`info["workspace_position"]`, k values)."""

    low: np.ndarray
    high: np.ndarray
    mode: str  # 'stop' or 'project'
    scale: Optional[np.ndarray] = None  # project: position change per unit env action (k values)

    def contains(self, position: np.ndarray) -> bool:
        return bool(np.all(position >= self.low) and np.all(position <= self.high))


class RobotWorkspace:
    """`RobotActor`'s workspace limits (module docstring): a mixin of `RobotActor`, whose
    `__init__` sets what these methods read (settings, env, spec, the action bounds in policy
    and env units, the last reported position)."""

    def _workspace_limits(self) -> Optional[WorkspaceLimits]:
        """The limits of the settings, else the env's `workspace_bounds`, else None."""
        s = self.settings
        low, high = s.workspace_low, s.workspace_high
        if not low:
            bounds = find_attribute(self.env, "workspace_bounds")
            if bounds is None:
                return None
            try:
                low, high = bounds
            except (TypeError, ValueError):
                raise ValueError(f"robot env field 'workspace_bounds': got {bounds!r}, expected (low, high)") from None
        low, high = np.asarray(low, np.float64).reshape(-1), np.asarray(high, np.float64).reshape(-1)
        if low.shape != high.shape or not np.all(low <= high) or not np.all(np.isfinite(low) & np.isfinite(high)):
            raise ValueError(f"workspace limits: low {low.tolist()} and high {high.tolist()}, expected as many finite values each, low <= high")
        scale = None
        if s.workspace_mode == "project":
            value = find_attribute(self.env, "workspace_action_scale")
            if value is None:
                raise ValueError(f"actor setting 'workspace_mode': 'project' needs the env's 'workspace_action_scale' attribute (envs/robot.py: "
                                 f"position change per unit action), which {s.env!r} lacks; use --workspace-mode stop")
            if len(low) > self.spec["action_dim"]:
                raise ValueError(f"workspace limits: {len(low)} position components, expected at most the action's {self.spec['action_dim']} "
                                 "(project mode moves component i with action component i)")
            try:
                scale = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), low.shape).copy()
            except ValueError:
                raise ValueError(f"robot env field 'workspace_action_scale': got {value!r}, expected one number or {len(low)}") from None
        return WorkspaceLimits(low, high, s.workspace_mode, scale)

    def _project(self, action: np.ndarray) -> np.ndarray:
        """Limits the action so the predicted next position (position + scale * env action)
        stays within the workspace; a position already outside may only move back."""
        w, position = self.workspace, self._workspace_position
        k = len(w.low)
        with np.errstate(divide="ignore", invalid="ignore"):
            to_low, to_high = (w.low - position) / w.scale, (w.high - position) / w.scale
        # Allowed env-unit action per component (a zero scale: that component moves nothing).
        env_lo = np.where(w.scale > 0, to_low, np.where(w.scale < 0, to_high, -np.inf))
        env_hi = np.where(w.scale > 0, to_high, np.where(w.scale < 0, to_low, np.inf))
        # Env units -> policy units (the inverse of the actor's RescaleAction).
        lo, hi, base_lo, base_hi = self._low[:k], self._high[:k], self._base_low[:k], self._base_high[:k]
        span = (hi - lo) / (base_hi - base_lo)
        projected = action.copy()
        projected[:k] = np.minimum(np.maximum(action[:k], lo + (env_lo - base_lo) * span), lo + (env_hi - base_lo) * span)
        return np.clip(projected, self._low, self._high).astype(np.float32)
