from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    CREATED: _ClassVar[JobState]
    AWAITING_PARENTS: _ClassVar[JobState]
    READY: _ClassVar[JobState]
    STAGED_IN: _ClassVar[JobState]
    PREPROCESSED: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    RUN_DONE: _ClassVar[JobState]
    POSTPROCESSED: _ClassVar[JobState]
    STAGED_OUT: _ClassVar[JobState]
    JOB_FINISHED: _ClassVar[JobState]
    RUN_ERROR: _ClassVar[JobState]
    RUN_TIMEOUT: _ClassVar[JobState]
    RESTART_READY: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
    USER_KILLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
CREATED: JobState
AWAITING_PARENTS: JobState
READY: JobState
STAGED_IN: JobState
PREPROCESSED: JobState
RUNNING: JobState
RUN_DONE: JobState
POSTPROCESSED: JobState
STAGED_OUT: JobState
JOB_FINISHED: JobState
RUN_ERROR: JobState
RUN_TIMEOUT: JobState
RESTART_READY: JobState
FAILED: JobState
USER_KILLED: JobState
