"""CPU seconds of the processes a benchmark runs: a database server, the coordinator, a child process of its own.

On a shared, loaded machine the wall time of a run depends on what else runs; the CPU time each
part used much less, so benchmarks print it beside their rates.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from balsam.site import Site

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu_s(site: Site) -> float:
    """CPU seconds used so far by the site's PostgreSQL server and the backends it forked."""
    return cluster_cpu_s(site.settings.db_dir / "pgdata")


def cluster_cpu_s(pgdata: Path) -> float:
    """CPU seconds used so far by the PostgreSQL server of ``pgdata`` and the backends it forked."""
    return process_cpu_s(int((pgdata / "postmaster.pid").read_text().split()[0]))


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and its children, those running and those it has waited for."""
    try:
        fields = _stat(pid)
        running = children(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # a backend that ended between two reads
    # utime + stime of the process, and of its children it has waited for (ended backends)
    return sum(int(f) for f in fields[11:15]) / TICK + sum(process_cpu_s(c) for c in running)


def children(pid: int) -> list[int]:
    """The process's children running now (raises FileNotFoundError once it has ended)."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def run_measured(argv: list[str], **popen) -> tuple[int, float, float]:
    """Run a process to its end: (exit code, its own CPU seconds, the CPU seconds of the children it waited for).

    Read from its /proc entry once it has exited but before it is reaped (``WNOWAIT``): a process's
    rusage as its parent gets it adds both together."""
    proc = subprocess.Popen(argv, **popen)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    fields = _stat(proc.pid)
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return proc.wait(), own, children
