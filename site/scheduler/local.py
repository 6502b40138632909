"""The local scheduler: a batch job is a background process on this host (a workstation's default).

Each job is a detached process running the batch script under coreutils ``timeout``, so it
ends at its wall time like a real allocation, and a cancel reaches the script as a SIGTERM. Its record is a small JSON file in the state
folder; the exit code lands in a second file when the script ends. A job whose process is gone
without an exit code (the host rebooted, someone killed it) is reported finished, "lost".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from balsam.site.scheduler.base import (
    BackfillWindow,
    BatchRequest,
    BatchState,
    BatchStatus,
    SchedulerError,
)

NAME = "local"

# $1 script, $2 output file, $3 exit code file, $4 minutes. coreutils `timeout` ends the script at
# its wall time (SIGTERM, SIGKILL 30 s later); a SIGTERM to this shell (a cancel) is passed on to
# it the same way. The exit code is written to a temporary name first, so no one reads half of it.
_WRAPPER = """
timeout --kill-after=30 "$4m" "$1" > "$2" 2>&1 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while :; do wait "$child"; code=$?; kill -0 "$child" 2>/dev/null || break; done
echo "$code" > "$3.tmp" && mv "$3.tmp" "$3"
"""


class LocalScheduler:
    name = NAME

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        # Jobs this object started are its children: polled, so none lingers as a zombie.
        self._children: list[subprocess.Popen] = []

    def submit(self, request: BatchRequest) -> str:
        if request.nodes != 1:
            raise SchedulerError(f"the local scheduler runs on this host only: ask for 1 node, not {request.nodes}")
        if not os.access(request.script, os.X_OK):
            raise SchedulerError(f"batch script {request.script} is missing or not executable")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        job_id = self._next_id()
        process = subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, "balsam-local-job", str(request.script), str(request.output),
             str(self._exit_file(job_id)), str(request.minutes)],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=request.script.parent,
        )  # fmt: skip
        self._children.append(process)
        record = {
            "pid": process.pid, "started": _start_time(process.pid), "name": request.name,
            "nodes": request.nodes, "minutes": request.minutes, "submitted": time.time(),
        }  # fmt: skip
        self._record_file(job_id).write_text(json.dumps(record))
        return job_id

    def status(self) -> list[BatchStatus]:
        self._children = [child for child in self._children if child.poll() is None]
        listing = []
        for file in sorted(self.state_dir.glob("*.json"), key=lambda f: int(f.stem)):
            job_id = file.stem
            record = json.loads(file.read_text())
            common = {"id": job_id, "name": record["name"], "nodes": record["nodes"], "minutes": record["minutes"]}
            exit_file = self._exit_file(job_id)
            if exit_file.exists():
                code = int(exit_file.read_text().strip() or -1)
                reason = {0: "completed", 124: "timed out", 137: "killed at the wall time"}.get(code, f"exit code {code}")
                if record.get("cancelled"):
                    reason = "cancelled"
                listing.append(BatchStatus(state=BatchState.FINISHED, native_state="exited", reason=reason, exit_code=code, **common))
            elif self._alive(record):
                listing.append(BatchStatus(state=BatchState.RUNNING, native_state="running", **common))
            else:
                listing.append(BatchStatus(state=BatchState.FINISHED, native_state="lost", reason="the process ended without an exit code", **common))
        return listing

    def delete(self, job_id: str) -> None:
        file = self._record_file(job_id)
        if not file.exists():
            return  # never ours, or long gone: nothing to stop
        record = json.loads(file.read_text())
        if self._alive(record):
            file.write_text(json.dumps({**record, "cancelled": True}))
            try:
                os.kill(record["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass

    def backfill(self) -> list[BackfillWindow]:
        return []  # one host, no other users' reservations to fit between

    def _next_id(self) -> str:
        # O_EXCL on the record makes the id ours even if two submits race.
        taken = [int(f.stem) for f in self.state_dir.glob("*.json") if f.stem.isdigit()]
        job_id = max(taken, default=0) + 1
        while True:
            try:
                os.close(os.open(self._record_file(str(job_id)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return str(job_id)
            except FileExistsError:
                job_id += 1

    def _record_file(self, job_id: str) -> Path:
        return self.state_dir / f"{job_id}.json"

    def _exit_file(self, job_id: str) -> Path:
        return self.state_dir / f"{job_id}.exit"

    @staticmethod
    def _alive(record: dict) -> bool:
        # The same pid with the same start time: not a stranger that reused the number.
        started = _start_time(record["pid"])
        return started is not None and started == record["started"]


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22 (start time); the command name in field 2 may hold spaces, so count from its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None  # a zombie: finished, waiting for a parent that no longer cares
    return int(fields[19])
