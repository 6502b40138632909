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
