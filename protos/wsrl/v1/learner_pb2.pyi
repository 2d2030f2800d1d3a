from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActorCommandKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTOR_COMMAND_UNSPECIFIED: _ClassVar[ActorCommandKind]
    ACTOR_COMMAND_PAUSE: _ClassVar[ActorCommandKind]
    ACTOR_COMMAND_RESUME: _ClassVar[ActorCommandKind]
    ACTOR_COMMAND_ESTOP: _ClassVar[ActorCommandKind]
ACTOR_COMMAND_UNSPECIFIED: ActorCommandKind
ACTOR_COMMAND_PAUSE: ActorCommandKind
ACTOR_COMMAND_RESUME: ActorCommandKind
ACTOR_COMMAND_ESTOP: ActorCommandKind

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data", "encoding")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    encoding: str
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., encoding: _Optional[str] = ...) -> None: ...

class ObservationPart(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class NamedTensor(_message.Message):
    __slots__ = ("name", "tensor")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    tensor: Tensor
    def __init__(self, name: _Optional[str] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Spec(_message.Message):
    __slots__ = ("task", "observation_dim", "action_dim", "action_low", "action_high", "observation_parts")
    TASK_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_DIM_FIELD_NUMBER: _ClassVar[int]
    ACTION_DIM_FIELD_NUMBER: _ClassVar[int]
    ACTION_LOW_FIELD_NUMBER: _ClassVar[int]
    ACTION_HIGH_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_PARTS_FIELD_NUMBER: _ClassVar[int]
    task: str
    observation_dim: int
    action_dim: int
    action_low: _containers.RepeatedScalarFieldContainer[float]
    action_high: _containers.RepeatedScalarFieldContainer[float]
    observation_parts: _containers.RepeatedCompositeFieldContainer[ObservationPart]
    def __init__(self, task: _Optional[str] = ..., observation_dim: _Optional[int] = ..., action_dim: _Optional[int] = ..., action_low: _Optional[_Iterable[float]] = ..., action_high: _Optional[_Iterable[float]] = ..., observation_parts: _Optional[_Iterable[_Union[ObservationPart, _Mapping]]] = ...) -> None: ...

class HandshakeRequest(_message.Message):
    __slots__ = ("protocol_version", "spec", "config_fingerprint", "actor_id", "run_id", "next_sequence")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    spec: Spec
    config_fingerprint: str
    actor_id: str
    run_id: str
    next_sequence: int
    def __init__(self, protocol_version: _Optional[int] = ..., spec: _Optional[_Union[Spec, _Mapping]] = ..., config_fingerprint: _Optional[str] = ..., actor_id: _Optional[str] = ..., run_id: _Optional[str] = ..., next_sequence: _Optional[int] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("protocol_version", "spec", "config_fingerprint", "agent_config_json", "next_sequence", "policy_version", "mode", "warmup_steps", "max_batch_size", "learner_id", "actor_behaviour_json", "encodings")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    AGENT_CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_BEHAVIOUR_JSON_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    spec: Spec
    config_fingerprint: str
    agent_config_json: str
    next_sequence: int
    policy_version: int
    mode: str
    warmup_steps: int
    max_batch_size: int
    learner_id: str
    actor_behaviour_json: str
    encodings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol_version: _Optional[int] = ..., spec: _Optional[_Union[Spec, _Mapping]] = ..., config_fingerprint: _Optional[str] = ..., agent_config_json: _Optional[str] = ..., next_sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., mode: _Optional[str] = ..., warmup_steps: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., learner_id: _Optional[str] = ..., actor_behaviour_json: _Optional[str] = ..., encodings: _Optional[_Iterable[str]] = ...) -> None: ...

class TransitionBatch(_message.Message):
    __slots__ = ("actor_id", "run_id", "sequence", "policy_version", "observations", "actions", "rewards", "next_observations", "terminals", "episode_ends", "policy_learner_id", "interventions", "observation_parts", "next_observation_parts")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    TERMINALS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ENDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVENTIONS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_PARTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBSERVATION_PARTS_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    run_id: str
    sequence: int
    policy_version: int
    observations: Tensor
    actions: Tensor
    rewards: Tensor
    next_observations: Tensor
    terminals: Tensor
    episode_ends: Tensor
    policy_learner_id: str
    interventions: Tensor
    observation_parts: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    next_observation_parts: _containers.RepeatedCompositeFieldContainer[NamedTensor]
    def __init__(self, actor_id: _Optional[str] = ..., run_id: _Optional[str] = ..., sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., observations: _Optional[_Union[Tensor, _Mapping]] = ..., actions: _Optional[_Union[Tensor, _Mapping]] = ..., rewards: _Optional[_Union[Tensor, _Mapping]] = ..., next_observations: _Optional[_Union[Tensor, _Mapping]] = ..., terminals: _Optional[_Union[Tensor, _Mapping]] = ..., episode_ends: _Optional[_Union[Tensor, _Mapping]] = ..., policy_learner_id: _Optional[str] = ..., interventions: _Optional[_Union[Tensor, _Mapping]] = ..., observation_parts: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ..., next_observation_parts: _Optional[_Iterable[_Union[NamedTensor, _Mapping]]] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("stored", "duplicate", "next_sequence", "policy_version", "env_steps", "updates", "durable_sequence", "learner_finished")
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    DURABLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FINISHED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    duplicate: bool
    next_sequence: int
    policy_version: int
    env_steps: int
    updates: int
    durable_sequence: int
    learner_finished: bool
    def __init__(self, stored: _Optional[bool] = ..., duplicate: _Optional[bool] = ..., next_sequence: _Optional[int] = ..., policy_version: _Optional[int] = ..., env_steps: _Optional[int] = ..., updates: _Optional[int] = ..., durable_sequence: _Optional[int] = ..., learner_finished: _Optional[bool] = ...) -> None: ...

class PullPolicyRequest(_message.Message):
    __slots__ = ("actor_id", "have_version", "have_learner_id", "index", "version")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    HAVE_LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    have_version: int
    have_learner_id: str
    index: int
    version: int
    def __init__(self, actor_id: _Optional[str] = ..., have_version: _Optional[int] = ..., have_learner_id: _Optional[str] = ..., index: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class PolicyChunk(_message.Message):
    __slots__ = ("version", "unchanged", "index", "num_chunks", "total_bytes", "data", "sha256", "learner_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    unchanged: bool
    index: int
    num_chunks: int
    total_bytes: int
    data: bytes
    sha256: str
    learner_id: str
    def __init__(self, version: _Optional[int] = ..., unchanged: _Optional[bool] = ..., index: _Optional[int] = ..., num_chunks: _Optional[int] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., sha256: _Optional[str] = ..., learner_id: _Optional[str] = ...) -> None: ...

class Episode(_message.Message):
    __slots__ = ("episode_return", "length", "success", "policy_version")
    EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    episode_return: float
    length: int
    success: bool
    policy_version: int
    def __init__(self, episode_return: _Optional[float] = ..., length: _Optional[int] = ..., success: _Optional[bool] = ..., policy_version: _Optional[int] = ...) -> None: ...

class ReportEpisodesRequest(_message.Message):
    __slots__ = ("actor_id", "run_id", "episodes")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    run_id: str
    episodes: _containers.RepeatedCompositeFieldContainer[Episode]
    def __init__(self, actor_id: _Optional[str] = ..., run_id: _Optional[str] = ..., episodes: _Optional[_Iterable[_Union[Episode, _Mapping]]] = ...) -> None: ...

class ReportEpisodesResponse(_message.Message):
    __slots__ = ("episodes",)
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    episodes: int
    def __init__(self, episodes: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActorStatus(_message.Message):
    __slots__ = ("actor_id", "run_id", "env_steps", "pending", "seconds_since_seen", "run_label", "paused", "estopped", "pause_reason", "control")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_SEEN_FIELD_NUMBER: _ClassVar[int]
    RUN_LABEL_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    ESTOPPED_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    run_id: str
    env_steps: int
    pending: int
    seconds_since_seen: float
    run_label: str
    paused: bool
    estopped: bool
    pause_reason: str
    control: ControlStats
    def __init__(self, actor_id: _Optional[str] = ..., run_id: _Optional[str] = ..., env_steps: _Optional[int] = ..., pending: _Optional[int] = ..., seconds_since_seen: _Optional[float] = ..., run_label: _Optional[str] = ..., paused: _Optional[bool] = ..., estopped: _Optional[bool] = ..., pause_reason: _Optional[str] = ..., control: _Optional[_Union[ControlStats, _Mapping]] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("mode", "env_steps", "processed_steps", "updates", "critic_updates", "achieved_utd", "policy_version", "buffer_size", "warmup_steps", "episodes", "recent_return", "actors", "training", "rejected_batches", "duplicate_batches", "conflicting_batches", "target_utd", "intervention_steps")
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_STEPS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    CRITIC_UPDATES_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_UTD_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    RECENT_RETURN_FIELD_NUMBER: _ClassVar[int]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    CONFLICTING_BATCHES_FIELD_NUMBER: _ClassVar[int]
    TARGET_UTD_FIELD_NUMBER: _ClassVar[int]
    INTERVENTION_STEPS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    env_steps: int
    processed_steps: int
    updates: int
    critic_updates: int
    achieved_utd: float
    policy_version: int
    buffer_size: int
    warmup_steps: int
    episodes: int
    recent_return: float
    actors: _containers.RepeatedCompositeFieldContainer[ActorStatus]
    training: bool
    rejected_batches: int
    duplicate_batches: int
    conflicting_batches: int
    target_utd: float
    intervention_steps: int
    def __init__(self, mode: _Optional[str] = ..., env_steps: _Optional[int] = ..., processed_steps: _Optional[int] = ..., updates: _Optional[int] = ..., critic_updates: _Optional[int] = ..., achieved_utd: _Optional[float] = ..., policy_version: _Optional[int] = ..., buffer_size: _Optional[int] = ..., warmup_steps: _Optional[int] = ..., episodes: _Optional[int] = ..., recent_return: _Optional[float] = ..., actors: _Optional[_Iterable[_Union[ActorStatus, _Mapping]]] = ..., training: _Optional[bool] = ..., rejected_batches: _Optional[int] = ..., duplicate_batches: _Optional[int] = ..., conflicting_batches: _Optional[int] = ..., target_utd: _Optional[float] = ..., intervention_steps: _Optional[int] = ...) -> None: ...

class ControlStats(_message.Message):
    __slots__ = ("control_hz", "steps", "period_mean_ms", "period_p99_ms", "period_max_ms", "work_p99_ms", "overruns")
    CONTROL_HZ_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_P99_MS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    WORK_P99_MS_FIELD_NUMBER: _ClassVar[int]
    OVERRUNS_FIELD_NUMBER: _ClassVar[int]
    control_hz: float
    steps: int
    period_mean_ms: float
    period_p99_ms: float
    period_max_ms: float
    work_p99_ms: float
    overruns: int
    def __init__(self, control_hz: _Optional[float] = ..., steps: _Optional[int] = ..., period_mean_ms: _Optional[float] = ..., period_p99_ms: _Optional[float] = ..., period_max_ms: _Optional[float] = ..., work_p99_ms: _Optional[float] = ..., overruns: _Optional[int] = ...) -> None: ...

class QueuedCommand(_message.Message):
    __slots__ = ("id", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: ActorCommandKind
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[_Union[ActorCommandKind, str]] = ...) -> None: ...

class ActorStateReport(_message.Message):
    __slots__ = ("actor_id", "run_id", "paused", "estopped", "pause_reason", "control", "acked_command", "learner_id")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    ESTOPPED_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    ACKED_COMMAND_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    run_id: str
    paused: bool
    estopped: bool
    pause_reason: str
    control: ControlStats
    acked_command: int
    learner_id: str
    def __init__(self, actor_id: _Optional[str] = ..., run_id: _Optional[str] = ..., paused: _Optional[bool] = ..., estopped: _Optional[bool] = ..., pause_reason: _Optional[str] = ..., control: _Optional[_Union[ControlStats, _Mapping]] = ..., acked_command: _Optional[int] = ..., learner_id: _Optional[str] = ...) -> None: ...

class ActorStateResponse(_message.Message):
    __slots__ = ("commands", "learner_id", "learner_finished")
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FINISHED_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[QueuedCommand]
    learner_id: str
    learner_finished: bool
    def __init__(self, commands: _Optional[_Iterable[_Union[QueuedCommand, _Mapping]]] = ..., learner_id: _Optional[str] = ..., learner_finished: _Optional[bool] = ...) -> None: ...

class ActorCommandRequest(_message.Message):
    __slots__ = ("actor_id", "kind", "wait_s")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    kind: ActorCommandKind
    wait_s: float
    def __init__(self, actor_id: _Optional[str] = ..., kind: _Optional[_Union[ActorCommandKind, str]] = ..., wait_s: _Optional[float] = ...) -> None: ...

class ActorCommandResponse(_message.Message):
    __slots__ = ("id", "acknowledged", "seconds", "run_label", "seconds_since_seen")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_LABEL_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_SEEN_FIELD_NUMBER: _ClassVar[int]
    id: int
    acknowledged: bool
    seconds: float
    run_label: str
    seconds_since_seen: float
    def __init__(self, id: _Optional[int] = ..., acknowledged: _Optional[bool] = ..., seconds: _Optional[float] = ..., run_label: _Optional[str] = ..., seconds_since_seen: _Optional[float] = ...) -> None: ...

class NextEvaluationRequest(_message.Message):
    __slots__ = ("evaluator_id", "after_step")
    EVALUATOR_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_STEP_FIELD_NUMBER: _ClassVar[int]
    evaluator_id: str
    after_step: int
    def __init__(self, evaluator_id: _Optional[str] = ..., after_step: _Optional[int] = ...) -> None: ...

class EvaluationTask(_message.Message):
    __slots__ = ("available", "finished", "env_step", "policy_version", "learner_id", "num_chunks", "episodes", "seed")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    ENV_STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    available: bool
    finished: bool
    env_step: int
    policy_version: int
    learner_id: str
    num_chunks: int
    episodes: int
    seed: int
    def __init__(self, available: _Optional[bool] = ..., finished: _Optional[bool] = ..., env_step: _Optional[int] = ..., policy_version: _Optional[int] = ..., learner_id: _Optional[str] = ..., num_chunks: _Optional[int] = ..., episodes: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class EvaluationPolicyRequest(_message.Message):
    __slots__ = ("evaluator_id", "env_step", "index")
    EVALUATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_STEP_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    evaluator_id: str
    env_step: int
    index: int
    def __init__(self, evaluator_id: _Optional[str] = ..., env_step: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class EvaluationResult(_message.Message):
    __slots__ = ("evaluator_id", "env_step", "policy_version", "learner_id", "episodes", "mean_return", "return_std", "success_rate", "episode_length", "normalized_score")
    EVALUATOR_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_STEP_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    MEAN_RETURN_FIELD_NUMBER: _ClassVar[int]
    RETURN_STD_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    EPISODE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_SCORE_FIELD_NUMBER: _ClassVar[int]
    evaluator_id: str
    env_step: int
    policy_version: int
    learner_id: str
    episodes: int
    mean_return: float
    return_std: float
    success_rate: float
    episode_length: float
    normalized_score: float
    def __init__(self, evaluator_id: _Optional[str] = ..., env_step: _Optional[int] = ..., policy_version: _Optional[int] = ..., learner_id: _Optional[str] = ..., episodes: _Optional[int] = ..., mean_return: _Optional[float] = ..., return_std: _Optional[float] = ..., success_rate: _Optional[float] = ..., episode_length: _Optional[float] = ..., normalized_score: _Optional[float] = ...) -> None: ...

class EvaluationAck(_message.Message):
    __slots__ = ("recorded", "pending")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    pending: int
    def __init__(self, recorded: _Optional[bool] = ..., pending: _Optional[int] = ...) -> None: ...
