"""A real Argo federation for tests: the coordinator and site agents as their own processes.

Nothing is simulated: ``Federation`` starts ``argo server start`` and, per site, ``Site.init``
(an embedded PostgreSQL each) and the site's agent daemon, whose elastic queue starts real
launchers with the local scheduler. ``TcpProxy`` sits between a site and the coordinator so a
test can cut the network and restore it.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from balsam.argo.client import ArgoClient
from balsam.postgres import free_port
from balsam.site.agent import agent_pid, start_agent, stop_agent
from balsam.site.api import Site
from balsam.site.postgres import EmbeddedPostgres

ARGO = [sys.executable, "-m", "balsam.argo.cli"]
# Every run of the app appends "SITE TASK" to one log shared by all sites, as it starts (closed at
# once: an unclosed file is written only when the process ends): how tests count runs.
RUN_APP = (
    f"{shlex.quote(sys.executable)} -c 'import sys, time, os; "
    "log = open(sys.argv[1], \"a\"); log.write(os.environ[\"BALSAM_SITE_NAME\"] + \" \" + sys.argv[2] + \"\\n\"); log.close();"
    " time.sleep(float(sys.argv[3]))'"
    " {log} {task} {seconds}"
)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def workers_of(server_pid: int) -> list[int]:
    """The server's worker processes, its sync workers and its placement process (not
    multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server_pid and b"spawn_main" in argv:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def killing(fed, pids: Callable[[], list[int]], every_s: float, up_to: int) -> Iterator[list[int]]:
    """While in the block, once the federation's tasks run: every ``every_s``, SIGKILL the processes
    ``pids()`` names that are alive and not killed before, until ``up_to`` were; yields the pids killed."""
    killed: list[int] = []
    stop = threading.Event()

    def kill() -> None:
        while not stop.is_set() and len(killed) < up_to:
            if not fed.runs():
                stop.wait(0.05)
                continue
            for pid in pids():
                if pid not in killed and alive(pid):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            stop.wait(every_s)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        stop.set()
        killer.join()


class Federation:
    def __init__(self, root: Path, site_timeout_s: float = 30.0) -> None:
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        self.data = root / "argo"
        self.site_timeout_s = site_timeout_s
        self.sites: dict[str, Site] = {}
        self.runs_log = root / "runs.log"
        self.runs_log.touch()

    # -- the coordinator -------------------------------------------------------------------

    def argo(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*ARGO, *args], capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"argo {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    def start_server(self, *extra: str) -> None:
        self.argo("server", "start", "--data", str(self.data), "--address", self.address, "--site-timeout", str(self.site_timeout_s), *extra)
        # The operator's token, for every client of this test process and the `argo` it runs.
        os.environ["ARGO_TOKEN"] = self.owner_token()

    def owner_token(self) -> str:
        return (self.data / "owner-token").read_text().strip()

    def enrol(self, name: str) -> None:
        """The site gets its own credential, as an operator enrols a site: a one-time token, exchanged."""
        from balsam.site.argo_sync import enrol

        token = self.argo("site", "enrol", name, "--data", str(self.data)).stdout.strip()
        enrol(self.sites[name].settings, token)

    def server_pid(self) -> int | None:
        from balsam.argo.server import server_pid

        return server_pid(self.data)

    def client(self) -> ArgoClient:
        return ArgoClient(self.address, timeout_s=30)

    # -- sites -----------------------------------------------------------------------------

    def add_site(self, name: str, address: str | None = None, start: bool = True) -> Site:
        site = Site.init(self.root / name, name=name)
        site.add_app("run", RUN_APP)
        settings = site.settings
        eq = settings.elastic_queue
        eq.enabled, eq.job_mode, eq.interval_s, eq.max_nodes, eq.min_wall_min, eq.max_wall_min = True, "serial", 0.5, 1, 5, 10
        settings.argo.address = address or self.address
        settings.argo.heartbeat_s = 0.5
        settings.argo.queue_wait_s = 5.0
        settings.transfer.read_roots = [str(self.root)]  # the other sites' outputs, on this one filesystem
        settings.save()
        self.sites[name] = site
        self.enrol(name)
        if start:
            self.start_agent(name)
        return site

    def start_agent(self, name: str) -> None:
        env_before = os.environ.get("BALSAM_SITE_NAME")
        os.environ["BALSAM_SITE_NAME"] = name  # inherited by the agent, its launchers and their jobs
        try:
            start_agent(self.sites[name].settings, wait_s=60)
        finally:
            if env_before is None:
                os.environ.pop("BALSAM_SITE_NAME", None)
            else:
                os.environ["BALSAM_SITE_NAME"] = env_before

    def agent_pid(self, name: str) -> int | None:
        return agent_pid(self.sites[name].settings)

    def kill_site(self, name: str) -> list[int]:
        """SIGKILL the site's agent and everything it started (launchers, their jobs); its database stays.

        Only this site's processes: told apart by its folder (the agent's and launchers' ``--site``,
        the jobs' ``BALSAM_SITE``), never by its name, which other tests running at the same time
        on this machine may give their sites too."""
        path = str(self.sites[name].settings.path)
        victims = []
        for pid in _pids():
            if pid == os.getpid():
                continue
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            started_for_it = any(a == "--site" and b == path for a, b in zip(argv, argv[1:]))
            if (started_for_it or f"BALSAM_SITE={path}".encode() in environ) and not any("postgres" in a for a in argv[:1]):
                victims.append(pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: agent_pid(self.sites[name].settings) is None, 10, f"the agent of {name} to be gone")
        return victims

    def runs(self) -> list[tuple[str, str]]:
        return [tuple(line.split(" ", 1)) for line in self.runs_log.read_text().splitlines() if line.strip()]

    def local_jobs(self, name: str) -> list:
        return [job for job in self.sites[name].jobs() if job.argo_task_id]

    # -- the end ---------------------------------------------------------------------------

    def stop(self) -> None:
        for name, site in self.sites.items():
            try:
                self.kill_site(name)  # the agent and any launcher still running
            except AssertionError:
                pass
            stop_agent(site.settings)
            site.close()
            EmbeddedPostgres(site.settings).stop()
        from balsam.argo.server import stop_server

        if (self.data / "argo.toml").exists():
            stop_server(self.data)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


class TcpProxy:
    """Forwards a local port to ``target``; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener:
            # close() alone does not wake a thread blocked in accept(): that thread would go on
            # accepting the site's reconnection, and the cut would not cut. shutdown() wakes it.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # accepted as the cut came: it is cut too
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
