import datetime

from balsam.protos import states_pb2 as _states_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Resources(_message.Message):
    __slots__ = ("nodes", "ranks_per_node", "threads_per_rank", "gpus_per_rank", "node_packing_count", "wall_time_min")
    NODES_FIELD_NUMBER: _ClassVar[int]
    RANKS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_RANK_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_PACKING_COUNT_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_MIN_FIELD_NUMBER: _ClassVar[int]
    nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    node_packing_count: int
    wall_time_min: float
    def __init__(self, nodes: _Optional[int] = ..., ranks_per_node: _Optional[int] = ..., threads_per_rank: _Optional[int] = ..., gpus_per_rank: _Optional[int] = ..., node_packing_count: _Optional[int] = ..., wall_time_min: _Optional[float] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("name", "app", "params_json", "resources", "parents", "inputs", "outputs", "site", "tags")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    app: str
    params_json: str
    resources: Resources
    parents: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.ScalarMap[str, str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    site: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., app: _Optional[str] = ..., params_json: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., parents: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Mapping[str, str]] = ..., outputs: _Optional[_Iterable[str]] = ..., site: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SubmitChunk(_message.Message):
    __slots__ = ("name", "tasks", "project")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    name: str
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    project: str
    def __init__(self, name: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., project: _Optional[str] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("workflow_id", "task_count")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: int
    task_count: int
    def __init__(self, workflow_id: _Optional[int] = ..., task_count: _Optional[int] = ...) -> None: ...

class WorkflowRef(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: int
    def __init__(self, workflow_id: _Optional[int] = ...) -> None: ...

class StateCount(_message.Message):
    __slots__ = ("workflow_id", "site", "state", "count")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: int
    site: str
    state: _states_pb2.JobState
    count: int
    def __init__(self, workflow_id: _Optional[int] = ..., site: _Optional[str] = ..., state: _Optional[_Union[_states_pb2.JobState, str]] = ..., count: _Optional[int] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("id", "name", "status", "created_at", "task_count", "counts", "project", "ended_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    task_count: int
    counts: _containers.RepeatedCompositeFieldContainer[StateCount]
    project: str
    ended_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_count: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[StateCount, _Mapping]]] = ..., project: _Optional[str] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListWorkflowsReply(_message.Message):
    __slots__ = ("workflows",)
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    def __init__(self, workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ...) -> None: ...

class CancelReply(_message.Message):
    __slots__ = ("killed",)
    KILLED_FIELD_NUMBER: _ClassVar[int]
    killed: int
    def __init__(self, killed: _Optional[int] = ...) -> None: ...

class AddTasksRequest(_message.Message):
    __slots__ = ("workflow_id", "tasks")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: int
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    def __init__(self, workflow_id: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ...) -> None: ...

class AddTasksReply(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: int
    def __init__(self, added: _Optional[int] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "workflow_id", "name", "app", "state", "site", "attempt", "has_return_code", "return_code", "message", "parents", "params_json", "sites_tried", "waiting", "attempts")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    HAS_RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    SITES_TRIED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    workflow_id: int
    name: str
    app: str
    state: _states_pb2.JobState
    site: str
    attempt: int
    has_return_code: bool
    return_code: int
    message: str
    parents: _containers.RepeatedScalarFieldContainer[str]
    params_json: str
    sites_tried: _containers.RepeatedScalarFieldContainer[str]
    waiting: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    def __init__(self, id: _Optional[str] = ..., workflow_id: _Optional[int] = ..., name: _Optional[str] = ..., app: _Optional[str] = ..., state: _Optional[_Union[_states_pb2.JobState, str]] = ..., site: _Optional[str] = ..., attempt: _Optional[int] = ..., has_return_code: _Optional[bool] = ..., return_code: _Optional[int] = ..., message: _Optional[str] = ..., parents: _Optional[_Iterable[str]] = ..., params_json: _Optional[str] = ..., sites_tried: _Optional[_Iterable[str]] = ..., waiting: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "site", "state", "ready_at", "placed_at", "started_at", "ended_at")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    number: int
    site: str
    state: _states_pb2.JobState
    ready_at: _timestamp_pb2.Timestamp
    placed_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    def __init__(self, number: _Optional[int] = ..., site: _Optional[str] = ..., state: _Optional[_Union[_states_pb2.JobState, str]] = ..., ready_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("workflow_id",)
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: int
    def __init__(self, workflow_id: _Optional[int] = ...) -> None: ...

class ListTasksReply(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "task_id", "workflow_id", "site", "from_state", "to_state", "at", "message", "workflow_status", "attempt")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    id: int
    task_id: str
    workflow_id: int
    site: str
    from_state: _states_pb2.JobState
    to_state: _states_pb2.JobState
    at: _timestamp_pb2.Timestamp
    message: str
    workflow_status: str
    attempt: int
    def __init__(self, id: _Optional[int] = ..., task_id: _Optional[str] = ..., workflow_id: _Optional[int] = ..., site: _Optional[str] = ..., from_state: _Optional[_Union[_states_pb2.JobState, str]] = ..., to_state: _Optional[_Union[_states_pb2.JobState, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., workflow_status: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("workflow_id", "site", "states", "after_id", "until_done")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_DONE_FIELD_NUMBER: _ClassVar[int]
    workflow_id: int
    site: str
    states: _containers.RepeatedScalarFieldContainer[_states_pb2.JobState]
    after_id: int
    until_done: bool
    def __init__(self, workflow_id: _Optional[int] = ..., site: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_states_pb2.JobState, str]]] = ..., after_id: _Optional[int] = ..., until_done: _Optional[bool] = ...) -> None: ...

class SummaryRequest(_message.Message):
    __slots__ = ("workflow_id", "site")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    workflow_id: int
    site: str
    def __init__(self, workflow_id: _Optional[int] = ..., site: _Optional[str] = ...) -> None: ...

class SummaryReply(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[StateCount]
    def __init__(self, counts: _Optional[_Iterable[_Union[StateCount, _Mapping]]] = ...) -> None: ...

class SiteInfo(_message.Message):
    __slots__ = ("name", "apps", "nodes", "scheduler", "transfer_endpoint", "status", "last_seen", "backlog", "running", "queue_wait_s", "assigned", "max_tasks", "channel_error", "lease_until")
    NAME_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ERROR_FIELD_NUMBER: _ClassVar[int]
    LEASE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    apps: _containers.RepeatedScalarFieldContainer[str]
    nodes: int
    scheduler: str
    transfer_endpoint: str
    status: str
    last_seen: _timestamp_pb2.Timestamp
    backlog: int
    running: int
    queue_wait_s: float
    assigned: int
    max_tasks: int
    channel_error: str
    lease_until: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., apps: _Optional[_Iterable[str]] = ..., nodes: _Optional[int] = ..., scheduler: _Optional[str] = ..., transfer_endpoint: _Optional[str] = ..., status: _Optional[str] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backlog: _Optional[int] = ..., running: _Optional[int] = ..., queue_wait_s: _Optional[float] = ..., assigned: _Optional[int] = ..., max_tasks: _Optional[int] = ..., channel_error: _Optional[str] = ..., lease_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListSitesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSitesReply(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[SiteInfo]
    def __init__(self, sites: _Optional[_Iterable[_Union[SiteInfo, _Mapping]]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("name", "apps", "nodes", "scheduler", "transfer_endpoint", "max_tasks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    apps: _containers.RepeatedScalarFieldContainer[str]
    nodes: int
    scheduler: str
    transfer_endpoint: str
    max_tasks: int
    def __init__(self, name: _Optional[str] = ..., apps: _Optional[_Iterable[str]] = ..., nodes: _Optional[int] = ..., scheduler: _Optional[str] = ..., transfer_endpoint: _Optional[str] = ..., max_tasks: _Optional[int] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("site", "last_applied", "coordinator", "channel_error")
    SITE_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ERROR_FIELD_NUMBER: _ClassVar[int]
    site: str
    last_applied: int
    coordinator: str
    channel_error: str
    def __init__(self, site: _Optional[str] = ..., last_applied: _Optional[int] = ..., coordinator: _Optional[str] = ..., channel_error: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("backlog", "running", "queue_wait_s", "nodes", "models", "number", "launchers_end_s", "launchers_bounded")
    class ModelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: RuntimeModel
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[RuntimeModel, _Mapping]] = ...) -> None: ...
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    LAUNCHERS_END_S_FIELD_NUMBER: _ClassVar[int]
    LAUNCHERS_BOUNDED_FIELD_NUMBER: _ClassVar[int]
    backlog: int
    running: int
    queue_wait_s: float
    nodes: int
    models: _containers.MessageMap[str, RuntimeModel]
    number: int
    launchers_end_s: float
    launchers_bounded: bool
    def __init__(self, backlog: _Optional[int] = ..., running: _Optional[int] = ..., queue_wait_s: _Optional[float] = ..., nodes: _Optional[int] = ..., models: _Optional[_Mapping[str, RuntimeModel]] = ..., number: _Optional[int] = ..., launchers_end_s: _Optional[float] = ..., launchers_bounded: _Optional[bool] = ...) -> None: ...

class RuntimeModel(_message.Message):
    __slots__ = ("serial_s", "parallel_s", "feature")
    SERIAL_S_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_S_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    serial_s: float
    parallel_s: float
    feature: str
    def __init__(self, serial_s: _Optional[float] = ..., parallel_s: _Optional[float] = ..., feature: _Optional[str] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task_id", "attempt", "job_id", "from_state", "to_state", "at", "message", "has_return_code", "return_code", "outputs")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    job_id: int
    from_state: _states_pb2.JobState
    to_state: _states_pb2.JobState
    at: _timestamp_pb2.Timestamp
    message: str
    has_return_code: bool
    return_code: int
    outputs: _containers.RepeatedCompositeFieldContainer[OutputFile]
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., job_id: _Optional[int] = ..., from_state: _Optional[_Union[_states_pb2.JobState, str]] = ..., to_state: _Optional[_Union[_states_pb2.JobState, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., has_return_code: _Optional[bool] = ..., return_code: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[OutputFile, _Mapping]]] = ...) -> None: ...

class OutputFile(_message.Message):
    __slots__ = ("name", "location", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    location: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., location: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class SpawnedTask(_message.Message):
    __slots__ = ("task_id", "workflow_id", "job_id", "spec")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    workflow_id: int
    job_id: int
    spec: TaskSpec
    def __init__(self, task_id: _Optional[str] = ..., workflow_id: _Optional[int] = ..., job_id: _Optional[int] = ..., spec: _Optional[_Union[TaskSpec, _Mapping]] = ...) -> None: ...

class SiteMessage(_message.Message):
    __slots__ = ("seq", "event", "spawned")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SPAWNED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    event: TaskEvent
    spawned: SpawnedTask
    def __init__(self, seq: _Optional[int] = ..., event: _Optional[_Union[TaskEvent, _Mapping]] = ..., spawned: _Optional[_Union[SpawnedTask, _Mapping]] = ...) -> None: ...

class SiteEnvelope(_message.Message):
    __slots__ = ("hello", "heartbeat", "messages", "ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    messages: _containers.RepeatedCompositeFieldContainer[SiteMessage]
    ack: int
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[SiteMessage, _Mapping]]] = ..., ack: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("last_applied", "last_seq", "coordinator")
    LAST_APPLIED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    last_applied: int
    last_seq: int
    coordinator: str
    def __init__(self, last_applied: _Optional[int] = ..., last_seq: _Optional[int] = ..., coordinator: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("task_id", "attempt", "workflow_id", "workflow", "spec", "coordinator", "waits_for")
    class WaitsForEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    WAITS_FOR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    workflow_id: int
    workflow: str
    spec: TaskSpec
    coordinator: str
    waits_for: _containers.ScalarMap[str, int]
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., workflow_id: _Optional[int] = ..., workflow: _Optional[str] = ..., spec: _Optional[_Union[TaskSpec, _Mapping]] = ..., coordinator: _Optional[str] = ..., waits_for: _Optional[_Mapping[str, int]] = ...) -> None: ...

class KillOrder(_message.Message):
    __slots__ = ("task_id", "attempt", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("seq", "assign", "kill")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    assign: Assignment
    kill: KillOrder
    def __init__(self, seq: _Optional[int] = ..., assign: _Optional[_Union[Assignment, _Mapping]] = ..., kill: _Optional[_Union[KillOrder, _Mapping]] = ...) -> None: ...

class LeaseGrant(_message.Message):
    __slots__ = ("heartbeat", "seconds")
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    heartbeat: int
    seconds: float
    def __init__(self, heartbeat: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class CoordinatorEnvelope(_message.Message):
    __slots__ = ("welcome", "messages", "ack", "confirmed", "lease")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    messages: _containers.RepeatedCompositeFieldContainer[CoordinatorMessage]
    ack: int
    confirmed: int
    lease: LeaseGrant
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[CoordinatorMessage, _Mapping]]] = ..., ack: _Optional[int] = ..., confirmed: _Optional[int] = ..., lease: _Optional[_Union[LeaseGrant, _Mapping]] = ...) -> None: ...

class SiteRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class MarkLostReply(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: int
    def __init__(self, held: _Optional[int] = ...) -> None: ...

class TriggerRule(_message.Message):
    __slots__ = ("name", "folder", "recursive", "patterns", "ignore", "app", "params_json", "resources", "tags", "site", "workflow", "settle_s", "skip_existing", "id", "workflow_id", "files", "created_at")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    SETTLE_S_FIELD_NUMBER: _ClassVar[int]
    SKIP_EXISTING_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    folder: str
    recursive: bool
    patterns: _containers.RepeatedScalarFieldContainer[str]
    ignore: _containers.RepeatedScalarFieldContainer[str]
    app: str
    params_json: str
    resources: Resources
    tags: _containers.ScalarMap[str, str]
    site: str
    workflow: str
    settle_s: float
    skip_existing: bool
    id: int
    workflow_id: int
    files: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., folder: _Optional[str] = ..., recursive: _Optional[bool] = ..., patterns: _Optional[_Iterable[str]] = ..., ignore: _Optional[_Iterable[str]] = ..., app: _Optional[str] = ..., params_json: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., site: _Optional[str] = ..., workflow: _Optional[str] = ..., settle_s: _Optional[float] = ..., skip_existing: _Optional[bool] = ..., id: _Optional[int] = ..., workflow_id: _Optional[int] = ..., files: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TriggerRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTriggersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTriggersReply(_message.Message):
    __slots__ = ("rules",)
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[TriggerRule]
    def __init__(self, rules: _Optional[_Iterable[_Union[TriggerRule, _Mapping]]] = ...) -> None: ...

class RemoveTriggerReply(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: int
    def __init__(self, files: _Optional[int] = ...) -> None: ...
