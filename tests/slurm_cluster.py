"""A real single-node Slurm cluster on this machine, for tests of the Slurm adapter.

``SlurmCluster(folder).start()`` writes a slurm.conf for one node (``localhost``, two
partitions: ``debug`` with a 60-minute limit and ``long`` without one), then starts munged,
slurmctld and slurmd as child processes and waits until the node is idle. Everything the daemons
write (state, spool, logs, pid files) lives in the folder, except munged's files: munged runs as
the ``munge`` user and insists that every folder above its socket is searchable by all, which a
pytest tmp folder (mode 0700, owned by root) is not, so its socket, key and log go to a folder of
their own under /tmp, removed at ``stop()``. slurm.conf's ``AuthInfo=socket=...`` points every
daemon and client command at that socket, so the machine's own munged (if any) is not used.

Slurm's ports (6817 for slurmctld, 6818 for slurmd) are fixed, so one cluster runs per machine
at a time; ``start()`` refuses clearly if something already answers there. It needs root:
slurmd runs jobs as their users and munged must be started as ``munge``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SLURM_PORTS = (6817, 6818)  # slurmctld, slurmd
_PROGRAMS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "scontrol", "munged", "setpriv")
# Root's PATH has the sbin folders; a plain user's PATH may not, and the daemons live there.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
# Job states in which a job still has processes on the node.
_LIVE_STATES = "CONFIGURING,RUNNING,COMPLETING,SUSPENDED,STOPPED,SIGNALING,STAGE_OUT,RESIZING"


class SlurmClusterError(RuntimeError):
    """The test cluster could not start (the message carries the tail of the daemons' logs)."""


def _which(program: str) -> str | None:
    return shutil.which(program, path=_SEARCH_PATH)


def slurm_available() -> str | None:
    """None if this machine can run the test cluster, else why not (for a skip message)."""
    missing = [p for p in _PROGRAMS if _which(p) is None]
    if missing:
        return f"Slurm is not installed here (missing {', '.join(missing)}); apt-get install slurmctld slurmd slurm-client munge"
    if os.geteuid() != 0:
        return "the test Slurm cluster needs root (slurmd runs jobs as their users, munged runs as 'munge')"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no 'munge' user to run munged as (is the munge package installed?)"
    return None


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class SlurmCluster:
    """One node, two partitions, three daemons; ``env`` is what client commands need to find it.

    On the namespace test bed (tests/netns_bed.py) it is a cluster of its hosts instead: ``hosts``
    maps the controller's and the nodes' names to their addresses, and ``on_host(name)`` is the
    argv prefix that runs a command there. slurmctld and client commands then run on the
    controller host, one slurmd on each node host (each namespace has its own ports), and munged
    once, on this machine: its socket is a file, which every host reaches.
    """

    def __init__(self, folder: Path, cpus: int = 2, extra_conf: str = "", timeout: float = 20.0,
                 controller: tuple[str, str] = ("localhost", "127.0.0.1"), nodes: dict[str, str] | None = None,
                 on_host=None) -> None:  # fmt: skip
        self.folder = Path(folder)
        self.controller = controller
        self.nodes = nodes or {"localhost": "127.0.0.1"}
        self.on_host = on_host or (lambda host: [])
        self.cpus = cpus
        self.extra_conf = extra_conf  # more slurm.conf lines, e.g. "EnforcePartLimits=ALL"
        self.timeout = timeout
        self.conf_path = self.folder / "slurm.conf"
        self.env: dict[str, str] = {**os.environ, "SLURM_CONF": str(self.conf_path)}
        self.munge_dir: Path | None = None
        self.started_in: float | None = None  # seconds from start() to an idle node
        self._daemons: list[tuple[str, subprocess.Popen]] = []

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        reason = slurm_available()
        if reason:
            raise SlurmClusterError(reason)
        busy = [port for port in SLURM_PORTS if _port_answers(port)] if self.controller[0] == "localhost" else []
        if busy:
            raise SlurmClusterError(
                f"something already answers on Slurm's port(s) {', '.join(map(str, busy))}: another Slurm cluster "
                "(perhaps another test session) is running on this machine; stop it first, only one fits"
            )
        began = time.monotonic()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for sub in ("state", *(f"spool/{node}" for node in self.nodes)):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
            self._start_munged()
            self.conf_path.write_text(self._conf())
            self._spawn("slurmctld", [*self.on_host(self.controller[0]), _which("slurmctld"), "-D", "-i", "-c", "-f", str(self.conf_path)])
            for node in self.nodes:
                self._spawn("slurmd", [*self.on_host(node), _which("slurmd"), "-D", "-N", node, "-f", str(self.conf_path)])
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Cancel the cluster's jobs, then end the daemons this object started. Safe to repeat."""
        if self._daemons and self._alive("slurmctld") and self._alive("slurmd"):
            self._cancel_jobs()
        for _, process in reversed(self._daemons):  # slurmd, slurmctld, then munged
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._daemons = []
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests ----------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A client command against this cluster (``cluster.run("squeue", "-h")``)."""
        return subprocess.run([*self.on_host(self.controller[0]), *argv], env=self.env, capture_output=True, text=True,
                              timeout=30, check=check)  # fmt: skip

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of every daemon's log, to say why the cluster did not come up."""
        names = ["slurmctld.log", *(f"slurmd-{n}.log" for n in self.nodes), "slurmctld.out", "slurmd.out", "munged.out"]
        files = [self.folder / f for f in names]
        if self.munge_dir is not None:
            files.append(self.munge_dir / "munged.log")
        parts = []
        for file in files:
            if file.exists():
                tail = file.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {file}\n" + "\n".join(tail))
        return "\n".join(parts) or "(no logs written)"

    # -- internals ------------------------------------------------------------------------------

    def _conf(self) -> str:
        d = self.folder
        node_lines = "".join(f"NodeName={n} NodeAddr={a} CPUs={self.cpus} State=UNKNOWN\n" for n, a in self.nodes.items())
        names = ",".join(self.nodes)
        return f"""\
# Written by tests/slurm_cluster.py: no cgroups, no accounting database.
ClusterName=balsamtest
SlurmctldHost={self.controller[0]}({self.controller[1]})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_dir}/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
{self.extra_conf}
{node_lines}PartitionName=debug Nodes={names} Default=YES MaxTime=60 State=UP
PartitionName=long Nodes={names} MaxTime=INFINITE State=UP
"""

    def _start_munged(self) -> None:
        munge = pwd.getpwnam("munge")
        # Under /tmp, not TMPDIR: munged checks every folder above its socket.
        self.munge_dir = Path(tempfile.mkdtemp(prefix="balsam-munge-", dir="/tmp"))
        os.chmod(self.munge_dir, 0o755)
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        m = self.munge_dir
        self._spawn("munged", [
            _which("setpriv"), "--reuid", "munge", "--regid", "munge", "--init-groups",
            _which("munged"), "--foreground", f"--socket={m}/munge.socket", f"--key-file={key}",
            f"--log-file={m}/munged.log", f"--pid-file={m}/munged.pid", f"--seed-file={m}/munged.seed",
        ])  # fmt: skip
        self._wait("munged's socket", lambda: (m / "munge.socket").exists(), "munged")

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.folder / f"{name}.out", "ab") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self._daemons.append((name, process))

    def _alive(self, name: str) -> bool:
        return any(n == name and p.poll() is None for n, p in self._daemons)

    def _wait(self, what: str, ready, *daemons: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            # Dead daemons first: a client command against a dead slurmctld retries for seconds.
            dead = [name for name in daemons if not self._alive(name)]
            if dead:
                raise SlurmClusterError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.log_tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise SlurmClusterError(f"no {what} within {self.timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def _wait_idle(self) -> None:
        def idle() -> bool:
            done = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            states = done.stdout.split()
            return done.returncode == 0 and bool(states) and all(s == "idle" for s in states)

        self._wait("idle node in sinfo", idle, "munged", "slurmctld", "slurmd")

    def _cancel_jobs(self) -> None:
        # slurmd leaves running jobs' slurmstepd behind when it stops: end the jobs first.
        def live_jobs() -> list[str]:
            return self.run("squeue", "-h", "-o", "%A", "-t", _LIVE_STATES, check=False).stdout.split()

        queued = self.run("squeue", "-h", "-o", "%A", check=False).stdout.split()
        if queued:
            self.run("scancel", *queued, check=False)
        deadline = time.monotonic() + 15
        while live_jobs() and time.monotonic() < deadline:
            time.sleep(0.2)
