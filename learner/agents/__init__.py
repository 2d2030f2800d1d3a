"""Agents by algorithm name. Every agent is an immutable pytree with `create` and a jitted
`update(batch)` taking a batch shaped (M, B, ...): M critic updates, then one actor update."""

from __future__ import annotations

from envs.observations import ObservationSpec
from learner.agents.common import observation_spec_of
from learner.agents.cql import CalQLAgent, CQLAgent
from learner.agents.iql import IQLAgent
from learner.agents.sac import SACAgent
from learner.config import AgentConfig

AGENTS = {"sac": SACAgent, "cql": CQLAgent, "calql": CalQLAgent, "iql": IQLAgent}


def make_agent(algorithm: str, config: AgentConfig, observations: ObservationSpec | int, action_dim: int, seed: int = 0):
    """A freshly initialized agent of the named algorithm; `observations` is the task's
    ObservationSpec, or the dimension of a flat observation vector."""
    if algorithm not in AGENTS:
        raise ValueError(f"algorithm: got {algorithm!r}, expected one of {', '.join(AGENTS)}")
    return AGENTS[algorithm].create(config, observations, action_dim, seed)


__all__ = ["AGENTS", "CQLAgent", "CalQLAgent", "IQLAgent", "SACAgent", "make_agent", "observation_spec_of"]
