"""The one config system: typed dataclasses, YAML files in `configs/`, dotted CLI overrides.

A run's config is resolved in this order, each step overriding the previous one:

1. the dataclass defaults below (the paper's Appendix I values where it gives one);
2. the `defaults:` section of a family file in `configs/` (e.g. `configs/antmaze.yaml`);
3. the chosen entry of that file's `variants:` section (`wsrl`, `calql`, `cql`, `iql`, `sac`);
4. `section.field=value` overrides from the command line (values parsed as YAML).

Every value is type-checked and range-checked; a bad one raises `ConfigError` naming the
field, the value given and what was expected. The resolved config is written next to every
run's outputs (`config.yaml`) and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

ALGORITHMS = ("sac", "cql", "calql", "iql")


class ConfigError(ValueError):
    """A config value, key or file is invalid; the message names the field."""


@dataclass(frozen=True)
class AgentConfig:
    """Networks and update rules shared by pre-training and fine-tuning.

    Pre-training and fine-tuning read the same section so that the networks they build are
    the same shape and a pre-trained checkpoint loads into the fine-tuning agent.
    """

    # Networks.
    critic_ensemble_size: int = 10
    critic_hidden_dims: tuple[int, ...] = (256, 256)
    critic_layer_norm: bool = True
    # One output layer shared by all critics (the reference implementation's reading: a single
    # Dense(1) outside the vmapped MLP) instead of one per critic (REDQ's and RLPD's independent
    # networks, the default). Kept as E identical copies that every step moves by the summed
    # gradient of all critics, which is exactly a shared layer (docs/fidelity.md).
    critic_shared_output: bool = False
    # Input element type of the critic ensemble's hidden-layer matmuls: "float32",
    # "bfloat16" (bf16 inputs, float32 accumulation, ~0.3% error on Q: what JAX does by
    # default on TPU, where the paper ran), or "auto": bfloat16 on TPUs, NVIDIA GPUs of
    # compute capability >= 8.0 and x86 CPUs with AVX512-BF16 / AMX-BF16, float32 elsewhere
    # (learner/networks.py auto_matmul_dtype). Speed and learning parity: benchmarks/README.md,
    # docs/results.md. Runs print which one "auto" chose.
    critic_matmul_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    actor_hidden_dims: tuple[int, ...] = (256, 256)
    actor_layer_norm: bool = True
    # "exp": a state-dependent log-std head; "uniform": one learned log-std per action
    # dimension (the reference's antmaze setting).
    std_parameterization: Literal["exp", "uniform"] = "exp"
    # Kernel initializer of every Dense layer: "orthogonal" (gain sqrt(2), the reference
    # implementation's) or "xavier_uniform". Biases start at zero.
    kernel_init: Literal["orthogonal", "xavier_uniform"] = "orthogonal"
    # Gain of the initializer of the last hidden layer of every MLP trunk (critics, actor,
    # IQL value), the reference's `kernel_scale_final`; null: the default gain.
    kernel_scale_final: Optional[float] = 1e-2
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    # Camera observations (tasks whose observation spec has images; ignored by flat-vector
    # tasks, which build no encoder). Per camera a DrQ-style conv trunk trained from scratch
    # (actor/networks.py ObservationEncoder): `encoder_channels[i]` filters of
    # `encoder_kernel_size`^2 with stride `encoder_strides[i]` and ReLU, then Dense to
    # `encoder_feature_dim` + LayerNorm + tanh; the cameras' features and the state vector are
    # concatenated. One encoder is shared by all critics and trained by the critic loss; the
    # target critics use a Polyak-averaged copy (rate `tau`); the policy reads its features
    # without passing gradients into it. Its convolutions compute in the critic ensemble's
    # `critic_matmul_dtype`.
    encoder_channels: tuple[int, ...] = (32, 32, 32, 32)
    encoder_strides: tuple[int, ...] = (2, 1, 1, 1)
    encoder_kernel_size: int = 3
    encoder_feature_dim: int = 50
    # DrQ's random shift on the learner: images padded by this many pixels (edge pixels
    # repeated) and cropped back to their size at a random offset, per sample, for
    # observations and next observations; 0 turns augmentation off.
    encoder_augment_pad: int = 4
    # A local file of pre-trained conv-trunk parameters loaded into every camera's trunk of a
    # fresh agent (learner/networks.py load_pretrained_encoder: flax msgpack of one
    # `ConvEncoder`'s parameter tree, as `save_encoder_params` writes it); "" trains from scratch.
    encoder_pretrained: str = ""

    # SAC (Haarnoja et al. 2018; RLPD's high-UTD recipe, Appendix I).
    discount: float = 0.99
    tau: float = 5e-3
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 1e-4
    initial_temperature: float = 1.0
    target_entropy: Optional[float] = None  # None means -|A|
    backup_entropy: bool = False
    batch_size: int = 256
    # TD target: min over this many randomly sub-sampled target critics (REDQ).
    critic_subsample_size: int = 2
    # "none"; "sampled_actions": max over N sampled next actions of the sub-sampled min
    # (the reference code's antmaze target); "ensemble_max": max over all target critics
    # (Appendix I's wording).
    max_target_backup: Literal["none", "sampled_actions", "ensemble_max"] = "none"
    max_target_backup_num_actions: int = 10
    # How the actor objective reduces the critic ensemble.
    actor_q_reduction: Literal["min", "mean"] = "min"
    # SO2's perturbed value update: Gaussian noise of this variance, clipped to
    # +-target_action_noise_clip, added to the next actions of the TD target (0: off).
    # Online fine-tuning only: pre-training ignores it (see `pretraining_agent_config`).
    target_action_noise_variance: float = 0.0
    target_action_noise_clip: float = 0.6

    # CQL / CalQL (Kumar et al. 2020; Nakamoto et al. 2023).
    cql_alpha: float = 5.0
    cql_num_actions: int = 10
    cql_importance_sample: bool = True
    cql_temperature: float = 1.0
    # The TD target of the CQL/CalQL agents (pre-training and CQL/CalQL fine-tuning), with
    # the values of `max_target_backup`: the reference uses "sampled_actions" (CQL's max
    # target backup) on every environment.
    cql_max_target_backup: Literal["none", "sampled_actions", "ensemble_max"] = "sampled_actions"
    # Which critics the CQL penalty is computed on: "subsample" the critic_subsample_size
    # critics drawn at random each critic step (the reference, with a 10-critic ensemble and
    # subsample 2), "all" every critic of the ensemble.
    cql_penalty_critics: Literal["subsample", "all"] = "subsample"
    # Without the Lagrange form, the gap is clipped to [min, max] before its mean (the
    # reference's cql_clip_diff_min/max; null: no bound, the reference's default).
    cql_clip_diff_min: Optional[float] = None
    cql_clip_diff_max: Optional[float] = None
    # Dual ("Lagrange") CQL: critic loss TD + lambda * (mean(gap) - cql_target_action_gap),
    # lambda >= 0 learned (softplus-parameterized, initial cql_alpha_lagrange_init) once per
    # fused update so that the gap stays near its target; cql_alpha is not used then.
    cql_lagrange: bool = False
    cql_target_action_gap: float = 0.8
    cql_alpha_lagrange_init: float = 1.0
    cql_alpha_lagrange_lr: float = 3e-4
    # true: lambda * cql_alpha * (mean(gap) - target), the original CQL code's dual form
    # (min_q_weight * alpha_prime); false: the reference's and the CQL paper's lambda * (...).
    cql_lagrange_times_alpha: bool = False

    # IQL (Kostrikov et al. 2021).
    iql_expectile: float = 0.7
    iql_awr_temperature: float = 3.0  # inverse temperature beta
    iql_awr_max_weight: float = 100.0
    value_lr: float = 3e-4


def pretraining_agent_config(agent: AgentConfig) -> AgentConfig:
    """The agent settings offline pre-training uses: the fine-tuning-only ones (SO2's target
    noise) reset, so every method that starts from the same pre-training shares it."""
    return dataclasses.replace(agent, target_action_noise_variance=0.0, target_action_noise_clip=AgentConfig.target_action_noise_clip)


@dataclass(frozen=True)
class PretrainConfig:
    """Offline pre-training (`wsrl pretrain`)."""

    algorithm: Literal["cql", "calql", "iql"] = "calql"
    # "builtin" makes the task's embedded dataset; anything else is a path to a dataset file.
    dataset: str = "builtin"
    dataset_episodes: int = 200
    num_steps: int = 250_000
    eval_every: int = 25_000  # 0: no evaluation at all (no env is built)
    eval_episodes: int = 10
    log_every: int = 1_000
    checkpoint_every: int = 50_000
    # Readiness (learner/readiness.py, docs/readiness.md), measured every `log_every` steps on
    # a fixed sample of the offline data: pre-training has settled when the critics' mean Q
    # drifts by at most `readiness_q_drift` of its scale per 1k steps, the policy's entropy is
    # within `readiness_entropy_gap` nats of the target entropy (learned temperature), and
    # dual CQL's Lagrange multiplier drifts by at most `readiness_lagrange_drift` per 1k steps.
    readiness_q_drift: float = 0.02
    readiness_entropy_gap: float = 0.5
    readiness_lagrange_drift: float = 0.05
    # Stop as soon as the readiness verdict is "settled" (num_steps stays the upper bound).
    stop_when_settled: bool = False


@dataclass(frozen=True)
class FinetuneConfig:
    """Online fine-tuning (`wsrl finetune`), Algorithm 1."""

    algorithm: Literal["sac", "cql", "calql", "iql"] = "sac"
    # Path to a pre-trained checkpoint; empty means train from scratch (the SAC baseline).
    checkpoint: str = ""
    # What the online agent takes from the checkpoint: "pretrained" every network with its
    # optimizer state (WSRL); "actor" only the policy (JSRL); "scratch" nothing, and `wsrl run`
    # and `wsrl experiment` do not pre-train for it (SAC(fast), RLPD).
    init: Literal["pretrained", "actor", "scratch"] = "pretrained"
    warmup_steps: int = 5_000
    # Who fills the first `warmup_steps` transitions: "policy" the frozen pre-trained policy
    # (WSRL); "random" uniform random actions; "dataset" `warmup_steps` transitions sampled
    # from the offline dataset before the first env step (no warmup env steps then).
    warmup: Literal["policy", "random", "dataset"] = "policy"
    # Online steps after warmup during which only the critics are updated (Appendix F).
    freeze_policy_steps: int = 0
    # JSRL: at each episode start, with probability jsrl_initial_prob decaying linearly to 0
    # over jsrl_decay_steps env steps, the frozen pre-trained policy rolls in for a
    # Geometric(1 - jsrl_rollin_discount) number of steps (Appendix I).
    jsrl: bool = False
    jsrl_initial_prob: float = 0.5
    jsrl_decay_steps: int = 100_000
    jsrl_rollin_discount: float = 0.99
    num_steps: int = 300_000  # environment steps, warmup included
    utd_ratio: int = 4
    # Size of the online replay buffer; 0 means num_steps (nothing is ever overwritten).
    replay_capacity: int = 0
    # Share of every batch drawn from the offline dataset (retention baselines); 0 for WSRL.
    offline_mixing_ratio: float = 0.0
    # Share of every batch drawn from the transitions a human acted in (robot interventions,
    # HIL-SERL's recipe; `wsrl learner` with robot actors). 0, the default, keeps WSRL as the
    # paper runs it: interventions are stored and sampled like any other transition.
    intervention_ratio: float = 0.0
    eval_every: int = 20_000
    eval_episodes: int = 20
    log_every: int = 1_000
    checkpoint_every: int = 50_000
    # Forgetting diagnostics (learner/diagnostics.py) every this many env steps (0: off):
    # Q, TD error and KL to the pre-trained policy / Q on held-out offline and online states.
    diagnostics_every: int = 20_000
    diagnostics_states: int = 1024


@dataclass(frozen=True)
class LoggingConfig:
    """Where and how runs report (see `learner.logging`)."""

    run_dir: str = ""  # empty: runs/<task>-<variant>-<phase>-<timestamp>
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "wsrl"
    wandb_mode: Literal["online", "offline"] = "offline"
    progress: bool = True
    # One rendered evaluation episode per fine-tuning evaluation, under RUN_DIR/videos/
    # (MUJOCO_GL=egl renders MuJoCo tasks headless).
    eval_videos: bool = False


@dataclass(frozen=True)
class Config:
    task: str = "pointmass-goal"
    variant: str = "wsrl"
    seed: int = 0
    agent: AgentConfig = field(default_factory=AgentConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ----------------------------------------------------------------------------------------
# Coercion of raw (YAML / CLI) values into typed fields.


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _coerce(name: str, tp: Any, value: Any) -> Any:
    def fail() -> typing.NoReturn:
        raise ConfigError(f"config field '{name}': got {value!r}, expected {_describe(tp)}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(name, inner, value)
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail()
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        (inner, _) = typing.get_args(tp)
        return tuple(_coerce(f"{name}[{i}]", inner, v) for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    raise TypeError(f"unsupported config type {tp} for {name}")


def _merge(obj: Any, updates: dict, prefix: str = "") -> Any:
    """Returns a copy of dataclass `obj` with `updates` (a nested dict) applied and coerced."""
    if not isinstance(updates, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.')}': expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in updates.items():
        full = prefix + str(key)
        if key not in names:
            raise ConfigError(
                f"unknown config field '{full}'; valid fields here: {', '.join(sorted(names))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, full + ".")
        else:
            changes[key] = _coerce(full, hints[key], value)
    return dataclasses.replace(obj, **changes)


def parse_override(text: str) -> dict:
    """`'agent.actor_lr=3e-4'` -> `{'agent': {'actor_lr': 0.0003}}` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected the form section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None
    nested: dict = _fix_yaml_floats(value)
    for part in reversed(key.strip().split(".")):
        if not part:
            raise ConfigError(f"override {text!r}: empty field name")
        nested = {part: nested}
    return nested


_YAML11_MISSED_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _fix_yaml_floats(tree: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as a string; turn such strings back into numbers."""
    if isinstance(tree, dict):
        return {k: _fix_yaml_floats(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_fix_yaml_floats(v) for v in tree]
    if isinstance(tree, str) and _YAML11_MISSED_FLOAT.match(tree.strip()):
        return float(tree)
    return tree


def config_path(name_or_path: str) -> Path:
    """A family name (`antmaze`) resolves to `configs/antmaze.yaml`; otherwise a file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")))
        raise ConfigError(f"config file {str(path)!r} not found; known families: {known}")
    return path


COMMON_VARIANTS_FILE = CONFIGS_DIR / "common" / "methods.yaml"


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict:
    with open(path) as f:
        return _fix_yaml_floats(yaml.safe_load(f) or {})


def variant_table(path: Path, data: dict) -> dict[str, dict]:
    """Every variant of a family file, unresolved: configs/common/methods.yaml's entries, each
    merged with the family's variant of the same name (`resolve_variant` follows `base`)."""
    common = _read_yaml(COMMON_VARIANTS_FILE) if COMMON_VARIANTS_FILE.is_file() else {}
    family = data.get("variants") or {}
    if not isinstance(family, dict):
        raise ConfigError(f"{path}: 'variants' must be a mapping of variant name -> settings")
    table = {name: dict(entry or {}) for name, entry in common.items()}
    for name, entry in family.items():
        table[name] = _deep_merge(table.get(name, {}), entry or {})
    return table


def resolve_variant(path: Path, table: dict[str, dict], name: str, chain: tuple[str, ...] = ()) -> dict:
    """The settings of variant `name` with its `base: NAME` chain merged underneath."""
    chain = (*chain, name)
    entry = dict(table[name])
    base = entry.pop("base", None)
    if base is None:
        return entry
    if base not in table:
        raise ConfigError(f"{path}: variant {name!r} field 'base': unknown variant {base!r}")
    if base in chain:
        raise ConfigError(f"{path}: variant {name!r} field 'base': cycle {' -> '.join((*chain, base))}")
    return _deep_merge(resolve_variant(path, table, base, chain), entry)


def load_config(
    family: str = "pointmass", variant: str = "wsrl", overrides: typing.Sequence[str] = ()
) -> Config:
    """Resolves defaults <- family file defaults <- variant <- CLI overrides, then validates."""
    path = config_path(family)
    data = _read_yaml(path)
    unknown = set(data) - {"defaults", "variants"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; expected defaults, variants")
    variants = variant_table(path, data)
    if variant not in variants:
        raise ConfigError(
            f"config field 'variant': {variant!r} is not defined in {path.name} or {COMMON_VARIANTS_FILE.name}; "
            f"expected one of {', '.join(sorted(variants))}"
        )
    config = _merge(Config(), data.get("defaults") or {})
    config = _merge(config, resolve_variant(path, variants, variant))
    config = dataclasses.replace(config, variant=variant)
    for text in overrides:
        config = _merge(config, parse_override(text))
    validate(config)
    return config


def config_from_dict(data: dict) -> Config:
    """Rebuilds a Config from `to_dict` output (e.g. one stored in a checkpoint)."""
    config = _merge(Config(), data)
    validate(config)
    return config


def to_dict(config: Any) -> dict:
    """A plain nested dict (tuples as lists) suitable for YAML/JSON."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [convert(x) for x in v]
        return v

    return convert(config)


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _check(condition: bool, name: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"config field '{name}': got {value!r}, expected {expected}")


def validate(config: Config) -> None:
    """Range checks that types alone cannot express."""
    a, p, f = config.agent, config.pretrain, config.finetune
    _check(a.critic_ensemble_size >= 1, "agent.critic_ensemble_size", a.critic_ensemble_size, "an integer >= 1")
    _check(
        1 <= a.critic_subsample_size <= a.critic_ensemble_size,
        "agent.critic_subsample_size",
        a.critic_subsample_size,
        f"an integer in [1, agent.critic_ensemble_size={a.critic_ensemble_size}]",
    )
    for name in ("critic_hidden_dims", "actor_hidden_dims"):
        dims = getattr(a, name)
        _check(len(dims) >= 1 and all(d >= 1 for d in dims), f"agent.{name}", list(dims), "a non-empty list of positive integers")
    _check(0.0 < a.discount <= 1.0, "agent.discount", a.discount, "a number in (0, 1]")
    _check(0.0 < a.tau <= 1.0, "agent.tau", a.tau, "a number in (0, 1]")
    for name in ("actor_lr", "critic_lr", "temperature_lr", "value_lr", "cql_alpha_lagrange_lr", "initial_temperature", "cql_alpha_lagrange_init", "cql_temperature", "iql_awr_temperature", "iql_awr_max_weight"):
        v = getattr(a, name)
        _check(v > 0 and math.isfinite(v), f"agent.{name}", v, "a finite number > 0")
    _check(a.kernel_scale_final is None or a.kernel_scale_final > 0, "agent.kernel_scale_final", a.kernel_scale_final, "a number > 0 or null")
    _check(len(a.encoder_channels) >= 1 and all(c >= 1 for c in a.encoder_channels), "agent.encoder_channels",
           list(a.encoder_channels), "a non-empty list of positive integers")
    _check(len(a.encoder_strides) == len(a.encoder_channels) and all(s >= 1 for s in a.encoder_strides), "agent.encoder_strides",
           list(a.encoder_strides), f"{len(a.encoder_channels)} positive integers (one per agent.encoder_channels entry)")
    _check(a.encoder_kernel_size >= 1, "agent.encoder_kernel_size", a.encoder_kernel_size, "an integer >= 1")
    _check(a.encoder_feature_dim >= 1, "agent.encoder_feature_dim", a.encoder_feature_dim, "an integer >= 1")
    _check(a.encoder_augment_pad >= 0, "agent.encoder_augment_pad", a.encoder_augment_pad, "an integer >= 0 (0: no augmentation)")
    _check(a.log_std_min < a.log_std_max, "agent.log_std_min", a.log_std_min, f"a number < agent.log_std_max={a.log_std_max}")
    _check(a.batch_size >= 1, "agent.batch_size", a.batch_size, "an integer >= 1")
    _check(a.max_target_backup_num_actions >= 1, "agent.max_target_backup_num_actions", a.max_target_backup_num_actions, "an integer >= 1")
    _check(a.cql_alpha >= 0, "agent.cql_alpha", a.cql_alpha, "a number >= 0")
    _check(a.cql_num_actions >= 1, "agent.cql_num_actions", a.cql_num_actions, "an integer >= 1")
    if a.cql_clip_diff_min is not None and a.cql_clip_diff_max is not None:
        _check(
            a.cql_clip_diff_min < a.cql_clip_diff_max, "agent.cql_clip_diff_min", a.cql_clip_diff_min,
            f"a number < agent.cql_clip_diff_max={a.cql_clip_diff_max} (or null)",
        )
    _check(0.0 < a.iql_expectile < 1.0, "agent.iql_expectile", a.iql_expectile, "a number in (0, 1)")
    _check(p.num_steps >= 1, "pretrain.num_steps", p.num_steps, "an integer >= 1")
    for name in ("readiness_q_drift", "readiness_entropy_gap", "readiness_lagrange_drift"):
        v = getattr(p, name)
        _check(v > 0 and math.isfinite(v), f"pretrain.{name}", v, "a finite number > 0")
    _check(not p.stop_when_settled or p.log_every > 0, "pretrain.stop_when_settled", p.stop_when_settled,
           "false when pretrain.log_every is 0 (readiness is measured every log_every steps)")
    _check(p.dataset_episodes >= 1, "pretrain.dataset_episodes", p.dataset_episodes, "an integer >= 1")
    for section, s in (("pretrain", p), ("finetune", f)):
        for name in ("eval_every", "log_every", "checkpoint_every"):
            v = getattr(s, name)
            _check(v >= 0, f"{section}.{name}", v, "an integer >= 0 (0 disables)")
        _check(s.eval_episodes >= 1, f"{section}.eval_episodes", s.eval_episodes, "an integer >= 1")
    _check(f.warmup_steps >= 0, "finetune.warmup_steps", f.warmup_steps, "an integer >= 0")
    _check(f.num_steps >= 1, "finetune.num_steps", f.num_steps, "an integer >= 1")
    _check(f.utd_ratio >= 1, "finetune.utd_ratio", f.utd_ratio, "an integer >= 1")
    _check(f.replay_capacity >= 0, "finetune.replay_capacity", f.replay_capacity, "an integer >= 0 (0 means finetune.num_steps)")
    _check(0.0 <= f.offline_mixing_ratio < 1.0, "finetune.offline_mixing_ratio", f.offline_mixing_ratio, "a number in [0, 1)")
    _check(0.0 <= f.intervention_ratio < 1.0, "finetune.intervention_ratio", f.intervention_ratio, "a number in [0, 1)")
    _check(f.diagnostics_every >= 0, "finetune.diagnostics_every", f.diagnostics_every, "an integer >= 0 (0 disables)")
    _check(f.diagnostics_states >= 2, "finetune.diagnostics_states", f.diagnostics_states, "an integer >= 2")
    _check(f.freeze_policy_steps >= 0, "finetune.freeze_policy_steps", f.freeze_policy_steps, "an integer >= 0")
    _check(0.0 <= f.jsrl_initial_prob <= 1.0, "finetune.jsrl_initial_prob", f.jsrl_initial_prob, "a number in [0, 1]")
    _check(f.jsrl_decay_steps >= 1, "finetune.jsrl_decay_steps", f.jsrl_decay_steps, "an integer >= 1")
    _check(0.0 <= f.jsrl_rollin_discount < 1.0, "finetune.jsrl_rollin_discount", f.jsrl_rollin_discount, "a number in [0, 1)")
    _check(a.target_action_noise_variance >= 0, "agent.target_action_noise_variance", a.target_action_noise_variance, "a number >= 0")
    _check(a.target_action_noise_clip > 0, "agent.target_action_noise_clip", a.target_action_noise_clip, "a number > 0")
    _check(
        not (f.jsrl and f.init == "scratch"),
        "finetune.jsrl", f.jsrl, "false with finetune.init=scratch (JSRL rolls in the pre-trained policy)",
    )
    _check(config.seed >= 0, "seed", config.seed, "an integer >= 0")
