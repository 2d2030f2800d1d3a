"""The one checkpoint format: a single msgpack file written atomically.

Contents: format tag, algorithm, resolved config, observation/action spec, step counters, the
agent's state (params, target params, optimizer states, RNG) as a flax state dict and, in a
pre-training's checkpoint, its readiness verdict (learner/readiness.py).

The spec carries `observation_spec` (`envs.observations.ObservationSpec.to_json()`: the
observation's named parts); checkpoints written before named parts existed have only
`observation_dim`, read as a flat spec of that dimension. With cameras the state dict has an
"encoder" entry (the critic ensemble's observation encoder and its target copy).

Loading into another algorithm (pre-trained -> fine-tuning agent) copies the networks both
agents own, with their optimizer states (Appendix I keeps them):
- CQL / CalQL -> SAC: actor, critic ensemble (+ target), temperature; CQL's Lagrange
  multiplier is dropped.
- IQL -> SAC: actor and critic ensemble (+ target) with their optimizer states; IQL has no
  temperature, so SAC's starts fresh at `initial_temperature`, and the value network is
  dropped. The critic ensemble sizes must match, so pre-train IQL with the fine-tuning
  ensemble size (the `iql` variants do).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from flax import serialization

from envs.atomic_files import atomic_write_bytes
from learner.agents import AGENTS, observation_spec_of
from learner.config import AgentConfig, Config, config_from_dict, to_dict
from learner.networks import inverse_softplus

FORMAT = "wsrl-checkpoint-v1"
# Fields of AgentConfig that decide parameter shapes; they must agree to load a checkpoint.
ARCHITECTURE_FIELDS = (
    "critic_ensemble_size",
    "critic_hidden_dims",
    "critic_layer_norm",
    "actor_hidden_dims",
    "actor_layer_norm",
    "std_parameterization",
)
# ... and those that decide the observation encoder's, compared only when there is one.
ENCODER_FIELDS = ("encoder_channels", "encoder_strides", "encoder_kernel_size", "encoder_feature_dim")


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit the agent it is loaded into."""


@dataclass
class Checkpoint:
    algorithm: str
    config: Config
    spec: dict
    counters: dict
    state: dict  # the agent's flax state dict
    path: str = ""
    # The pre-training's readiness verdict (learner/readiness.py `assess`); None in checkpoints
    # of fine-tuning runs and in those written before readiness was recorded.
    readiness: Optional[dict] = None


def save_checkpoint(path: str | Path, agent: Any, config: Config, spec: dict, counters: Optional[dict] = None,
                    readiness: Optional[dict] = None) -> Path:
    """Writes `agent` with its config, `spec` (the task's spec dict; `observation_spec` is
    added from its `observation_dim` where it has none), `counters` and (pre-training) the
    `readiness` verdict, atomically."""
    state = jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(agent))
    spec = {**spec, "observation_spec": observation_spec_of(spec).to_json()}
    payload = {
        "format": FORMAT,
        "algorithm": agent.algorithm,
        "config": json.dumps(to_dict(config)),
        "spec": json.dumps(spec),
        "counters": json.dumps(counters or {}),
        "state": state,
    }
    if readiness is not None:
        payload["readiness"] = json.dumps(readiness)
    atomic_write_bytes(Path(path), serialization.msgpack_serialize(payload))
    return Path(path)


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types on corrupt input
        raise CheckpointError(f"checkpoint {str(path)!r} is not a readable wsrl checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"checkpoint {str(path)!r}: format {found!r}, expected {FORMAT!r}")
    return Checkpoint(
        algorithm=payload["algorithm"],
        config=config_from_dict(json.loads(payload["config"])),
        spec=json.loads(payload["spec"]),
        counters=json.loads(payload["counters"]),
        state=payload["state"],
        path=str(path),
        readiness=json.loads(payload["readiness"]) if "readiness" in payload else None,
    )


def check_compatible(checkpoint: Checkpoint, agent_config: AgentConfig, spec: dict) -> None:
    """Raises CheckpointError naming both sides of every mismatch in dims or architecture."""
    problems = []
    theirs_obs, ours_obs = _observation_spec(checkpoint.spec, "checkpoint"), _observation_spec(spec, "run")
    if theirs_obs != ours_obs and theirs_obs.is_flat and ours_obs.is_flat:
        problems.append(f"observation_dim: checkpoint has {theirs_obs.state_dim}, this run expects {ours_obs.state_dim}")
    elif theirs_obs != ours_obs:
        problems.append(f"observation_spec: checkpoint has {theirs_obs.to_json()}, this run expects {ours_obs.to_json()}")
    if checkpoint.spec.get("action_dim") != spec.get("action_dim"):
        problems.append(f"action_dim: checkpoint has {checkpoint.spec.get('action_dim')}, this run expects {spec.get('action_dim')}")
    fields = ARCHITECTURE_FIELDS + (ENCODER_FIELDS if not ours_obs.is_flat else ())
    for name in fields:
        theirs, ours = getattr(checkpoint.config.agent, name), getattr(agent_config, name)
        if theirs != ours:
            problems.append(f"agent.{name}: checkpoint has {theirs!r}, this run has {ours!r}")
    if problems:
        raise CheckpointError(f"checkpoint {checkpoint.path!r} does not fit this run: " + "; ".join(problems))


def _observation_spec(spec: dict, where: str):
    try:
        return observation_spec_of(spec)
    except ValueError as e:
        raise CheckpointError(f"{where} spec: {e}") from None


def _check_shapes(template: Any, loaded: Any, where: str) -> None:
    flat_t = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(template)[0]}
    flat_l = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    if flat_t.keys() != flat_l.keys():
        missing = sorted(flat_t.keys() - flat_l.keys())[:3]
        extra = sorted(flat_l.keys() - flat_t.keys())[:3]
        raise CheckpointError(f"checkpoint '{where}' has a different structure: missing {missing}, unexpected {extra}")
    for key, value in flat_t.items():
        if np.shape(value) != np.shape(flat_l[key]):
            raise CheckpointError(
                f"checkpoint '{where}{key}': shape {np.shape(flat_l[key])} in the checkpoint, {np.shape(value)} expected"
            )


def restore_agent(
    checkpoint: Checkpoint,
    algorithm: Optional[str] = None,
    agent_config: Optional[AgentConfig] = None,
    spec: Optional[dict] = None,
    seed: int = 0,
) -> Any:
    """An agent of `algorithm` (default: the checkpoint's) built with `agent_config` (default:
    the checkpoint's), with every network both algorithms own copied from the checkpoint
    together with its optimizer state. The RNG is fresh from `seed`."""
    algorithm = algorithm or checkpoint.algorithm
    agent_config = agent_config or checkpoint.config.agent
    spec = spec or checkpoint.spec
    check_compatible(checkpoint, agent_config, spec)
    # The checkpoint's encoder replaces any pre-trained one: do not read (or need) that file.
    template_config = dataclasses.replace(agent_config, encoder_pretrained="")
    agent = AGENTS[algorithm].create(template_config, _observation_spec(spec, "run"), spec["action_dim"], seed)
    agent = agent.replace(config=agent_config)
    template = serialization.to_state_dict(agent)
    loaded = _upgrade_lagrange(template, checkpoint.state)
    shared = [k for k in template if k != "rng" and k in loaded and template[k] is not None and loaded[k] is not None]
    for key in shared:
        _check_shapes(template[key], loaded[key], key)
    state = {**template, **{k: loaded[k] for k in shared}}
    return serialization.from_state_dict(agent, state)


def _upgrade_lagrange(template: dict, state: dict) -> dict:
    """Checkpoints written before dual CQL's lambda was softplus-parameterized store it as
    log(lambda) (params {"log_value"}); carry the value over as softplus^-1(lambda), keeping
    its step count, with a fresh optimizer state (the old Adam moments were of log(lambda))."""
    old, new = state.get("lagrange"), template.get("lagrange")
    if not (isinstance(old, dict) and isinstance(new, dict) and "log_value" in (old.get("params") or {})):
        return state
    value = float(np.exp(np.asarray(old["params"]["log_value"], np.float64)))
    raw = np.asarray(inverse_softplus(max(value, 1e-30)), np.float32)
    return {**state, "lagrange": {**new, "step": old.get("step", new.get("step")), "params": {"raw_value": raw}}}

