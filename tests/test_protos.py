"""The wire vocabulary: generated modules current, and the one state machine shared with it."""

import subprocess
import sys
from pathlib import Path

from balsam.protos import states_pb2
from balsam.states import JobState, from_wire

ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_generated_modules_match_the_proto_files():
    check = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout


def test_the_state_machine_is_the_protobuf_enum():
    wire = [name for name in states_pb2.JobState.keys() if name != "JOB_STATE_UNSPECIFIED"]
    assert [s.value for s in JobState] == wire
    for state in JobState:
        assert from_wire(state.number) is state


def test_an_unset_or_unknown_wire_state_is_refused():
    import pytest

    from balsam.errors import BalsamError

    for number in (0, 99):
        with pytest.raises(BalsamError, match=f"invalid job state number {number}"):
            from_wire(number)


def test_a_task_spec_crosses_the_wire_unchanged():
    """Every field of a task, to its message and back: only the fields a task has are sent (a bare
    task is its name and app), and a sender that writes every field (params "{}", a zero resources
    message) is read the same."""
    from balsam.protos import argo_pb2 as pb
    from balsam.resources import DEFAULT, Resources
    from balsam.taskspec import TaskSpec
    from balsam.wire.convert import task_spec_from_wire, task_spec_to_wire

    full = TaskSpec(
        name="sim.1", app="sim", params={"n": 3, "x": 0.5, "flag": True, "label": "a b"},
        resources=Resources(nodes=2, ranks_per_node=4, wall_time_min=1.5), parents=("prep",),
        inputs={"in.dat": "prep/out.dat"}, outputs=("out.dat",), site="theta", tags={"phase": "1"},
    )  # fmt: skip
    bare = TaskSpec(name="t0", app="run")
    for task in (full, bare):
        message = task_spec_to_wire(task)
        assert task_spec_from_wire(pb.TaskSpec.FromString(message.SerializeToString()), "tasks[0]") == task
    assert [field.name for field, _ in task_spec_to_wire(bare).ListFields()] == ["name", "app"]
    written_out = pb.TaskSpec(name="t0", app="run", params_json="{}", resources=pb.Resources())
    read = task_spec_from_wire(written_out, "tasks[0]")
    assert read == bare and read.resources is DEFAULT


def test_a_time_crosses_the_wire_as_protobufs_own_conversion_gives_it_and_comes_back_unchanged():
    # Our integer conversion (balsam.wire.convert.timestamp) against protobuf's FromDatetime, over
    # times before and after the epoch, in several zones and naive (local time).
    import random
    from datetime import UTC, datetime, timedelta, timezone

    from google.protobuf.timestamp_pb2 import Timestamp

    from balsam.wire.convert import from_timestamp, timestamp

    rng = random.Random(7)
    times = [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randint(-6 * 10**16, 6 * 10**16)) for _ in range(3000)]
    times += [t.astimezone(timezone(timedelta(minutes=rng.randint(-720, 720)))) for t in times[:1000] if 1 < t.year < 9999]
    times += [datetime(2026, 12, 7, 12, 0, 0, 123456), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    for when in times:
        theirs = Timestamp()
        theirs.FromDatetime(when.astimezone(UTC))
        assert timestamp(when) == theirs, when
        if when.tzinfo is not None and theirs != Timestamp():  # the epoch itself reads as unset
            assert from_timestamp(timestamp(when)) == when
    assert timestamp(None) == Timestamp() and from_timestamp(Timestamp()) is None


def test_a_stamp_from_the_wire_reads_as_protobufs_own_conversion_reads_it_and_one_out_of_range_is_refused():
    # Our integer conversion (balsam.wire.convert.from_timestamp) against protobuf's ToDatetime, over
    # every second and nanosecond a stamp may hold, its edges, and what lies past them.
    import random
    from datetime import UTC

    import pytest
    from google.protobuf.timestamp_pb2 import Timestamp

    from balsam.errors import BadRequest
    from balsam.wire.convert import from_timestamp

    first, last = -62_135_596_800, 253_402_300_799
    rng = random.Random(11)
    stamps = [(rng.randint(first, last), rng.randrange(10**9)) for _ in range(5000)]
    stamps += [(first, 0), (last, 999_999_999), (-1, 999_999_999), (0, 1), (0, 999), (1, 0), (1_765_000_000, 123_456_789)]
    for seconds, nanos in stamps:
        stamp = Timestamp(seconds=seconds, nanos=nanos)
        assert from_timestamp(stamp) == stamp.ToDatetime(tzinfo=UTC), (seconds, nanos)
    for seconds, nanos in [(first - 1, 0), (last + 1, 0), (0, -1), (5, 10**9), (-(2**63), 0), (2**63 - 1, 0)]:
        with pytest.raises(BadRequest, match="out of range"):
            from_timestamp(Timestamp(seconds=seconds, nanos=nanos))
