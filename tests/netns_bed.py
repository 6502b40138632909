"""A machine room on one machine: a login host and compute hosts as Linux namespaces, for tests.

``NetnsBed(folder, computes=3).start()`` makes, as root:

- a *switch*: a network namespace of its own holding a bridge, so the machine's own network
  namespace gets no interface, address or route of the bed (its traffic cannot leave it);
- one *host* per name (``login``, ``c1``, ``c2``...): a network namespace with a veth pair to the
  bridge and an address in ``SUBNET`` (login .1, compute hosts .11, .12...), ``lo`` up, and a holder
  process that has its own UTS namespace (``hostname`` says the host's name) and mount namespace
  (``/etc/hosts`` there names every host of the bed; ``private_dir`` mounts a tmpfs that only that
  host sees). Commands run on a host by entering the holder's namespaces (``nsenter``), which is
  also what ``rsh_agent`` does for Open MPI in place of ssh.

Everything else (files, PIDs) is shared, as on a cluster with a shared filesystem. ``stop()``
kills what was started on the hosts, the holders, and deletes the namespaces; it is safe to repeat
and runs from the fixture's finally even when a test fails.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
BALSAM = str(BIN / "balsam")
PYTHON = str(BIN / "python")
SUBNET = ipaddress.ip_network("10.231.0.0/24")
LOGIN_ADDRESS = str(SUBNET.network_address + 1)
_TOOLS = ("ip", "nsenter", "unshare", "mount")


def netns_available() -> str | None:
    """None if this machine can build the bed, else why not (for a skip message)."""
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 util-linux)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"balprobe{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine does not permit network namespaces: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def require_netns() -> None:
    """Skip the calling test where the bed cannot run, with the reason; a failure under ``BALSAM_REQUIRE_NETNS=1`` (CI)."""
    import pytest

    reason = netns_available()
    if reason:
        if os.environ.get("BALSAM_REQUIRE_NETNS") == "1":
            pytest.fail(f"BALSAM_REQUIRE_NETNS=1 but the namespace test bed cannot run here: {reason}")
        pytest.skip(f"the namespace test bed cannot run here: {reason}")


def running_bed(folder: Path, computes: int = 3) -> Iterator[NetnsBed]:
    """A started bed for a fixture (``yield from running_bed(...)``), stopped even when a test fails;
    skipped (or failed, under CI) where namespaces are not permitted."""
    require_netns()
    bed = NetnsBed(folder, computes=computes)
    try:
        bed.start()
        yield bed
    finally:
        bed.stop()


class Host:
    def __init__(self, bed: NetnsBed, name: str, address: str) -> None:
        self.bed, self.name, self.address = bed, name, address
        self.netns = f"{bed.tag}-{name}"
        self.holder: subprocess.Popen | None = None

    def prefix(self) -> list[str]:
        """The argv prefix that runs a command on this host."""
        assert self.holder is not None, f"host {self.name} is not up"
        return ["nsenter", f"--target={self.holder.pid}", "--net", "--uts", "--mount", "--"]


class NetnsBed:
    def __init__(self, folder: Path, computes: int = 3) -> None:
        self.folder = Path(folder)
        # Unique per bed: two test sessions on one machine each get their own namespaces.
        self.tag = f"bal{uuid.uuid4().hex[:6]}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {"login": Host(self, "login", LOGIN_ADDRESS)}
        for i in range(1, computes + 1):
            self.hosts[f"c{i}"] = Host(self, f"c{i}", str(SUBNET.network_address + 10 + i))
        self.hosts_file = self.folder / "hosts"
        self.agent = self.folder / "rsh-agent"
        self.started_in: float | None = None
        self.env: dict[str, str] = {}  # what every shell on the bed's hosts has set (e.g. SLURM_CONF): tests add to it
        self._processes: list[subprocess.Popen] = []

    @property
    def computes(self) -> list[str]:
        return [name for name in self.hosts if name != "login"]

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> NetnsBed:
        began = time.monotonic()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.hosts_file.write_text(
                "127.0.0.1 localhost\n" + "".join(f"{h.address} {h.name}\n" for h in self.hosts.values())
            )
            self._ip("netns", "add", self.switch)
            self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.switch, "link", "set", "br0", "up")
            for index, host in enumerate(self.hosts.values()):
                self._ip("netns", "add", host.netns)
                outer, inner = f"{self.tag}v{index}", f"{self.tag}h{index}"
                # Made inside the switch namespace, so the machine's own namespace never holds either end.
                self._ip("-n", self.switch, "link", "add", outer, "type", "veth", "peer", "name", inner)
                self._ip("-n", self.switch, "link", "set", inner, "netns", host.netns)
                self._ip("-n", self.switch, "link", "set", outer, "master", "br0", "up")
                self._ip("-n", host.netns, "link", "set", inner, "name", "eth0")
                self._ip("-n", host.netns, "addr", "add", f"{host.address}/{SUBNET.prefixlen}", "dev", "eth0")
                self._ip("-n", host.netns, "link", "set", "eth0", "up")
                self._ip("-n", host.netns, "link", "set", "lo", "up")
                self._start_holder(host)
            self._write_agent()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _start_holder(self, host: Host) -> None:
        ready = self.folder / f"{host.name}.ready"
        # Inside: its own UTS and mount namespaces; the host's name, and /etc/hosts naming the bed's hosts.
        # Entered with nsenter, not `ip netns exec`, which remounts /sys and so hides /sys/fs/cgroup from slurmd.
        script = (
            f"mount --bind {self.hosts_file} /etc/hosts && hostname {host.name} && touch {ready} && exec sleep infinity"
        )
        host.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{host.netns}", "unshare", "--uts", "--mount", "--propagation", "private",
             "sh", "-c", script],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not ready.exists():
            if host.holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"host {host.name} of the test bed did not come up")
            time.sleep(0.01)
        # nsenter execs unshare, which execs sh, which execs sleep: the holder's pid is the host's.

    def _write_agent(self) -> None:
        """Open MPI's launch agent: ``rsh-agent HOST COMMAND...`` runs COMMAND on HOST, as ssh would."""
        cases = "".join(f"  {h.name}) pid={h.holder.pid} ;;\n" for h in self.hosts.values())
        self.agent.write_text(
            "#!/bin/sh\n# written by tests/netns_bed.py: enters the namespaces of the host named first\n"
            'host=$1; shift\ncase "$host" in\n' + cases + '  *) echo "rsh-agent: no host $host in the test bed" >&2; exit 255 ;;\nesac\n'
            'exec nsenter --target=$pid --net --uts --mount -- /bin/sh -c "$*"\n'
        )
        self.agent.chmod(0o755)

    def stop(self) -> None:
        for process in reversed(self._processes):
            _end(process)
        self._processes = []
        for host in self.hosts.values():
            if host.holder is not None:
                _end(host.holder)
                host.holder = None
        # Deleting a network namespace with processes still in it leaves it alive: kill any left.
        for host in self.hosts.values():
            pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)

    def __enter__(self) -> NetnsBed:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- running things on hosts ----------------------------------------------------------------

    def run(self, host: str, argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120,
            check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
        proc = subprocess.run([*self.hosts[host].prefix(), *argv], env=env, capture_output=True, text=True,
                              timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"on {host}: {' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, host: str, argv: Sequence[str], *, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """A long-running process on ``host``, ended by ``stop()`` if the test has not ended it."""
        process = subprocess.Popen([*self.hosts[host].prefix(), *argv], env=env, stdin=subprocess.DEVNULL,
                                   start_new_session=True, **kwargs)  # fmt: skip
        self._processes.append(process)
        return process

    def end(self, process: subprocess.Popen) -> None:
        """End one process started by ``popen`` (and what it started) before the bed stops."""
        _end(process)
        if process in self._processes:
            self._processes.remove(process)

    def private_dir(self, host: str, path: Path, mode: str = "0700") -> Path:
        """Mount a tmpfs at ``path`` that only ``host`` sees (other hosts see the empty folder beneath).

        ``mode`` 0755 lets a site's database server, which runs as a user of its own, reach a site folder inside."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.run(host, ["mount", "-t", "tmpfs", "-o", f"mode={mode},size=256m", f"{self.tag}-{host}", str(path)])
        return Path(path)

    def _ip(self, *args: str) -> None:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


def host_env(bed: NetnsBed, site: Path, **extra: str) -> dict[str, str]:
    """What a user's shell on a host of the bed has: this install first on PATH, the site, Slurm's
    configuration (once the bed's Slurm is up), Open MPI's launch agent."""
    return {
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "BALSAM_SITE": str(site),
        # The bed has no sshd on the compute hosts: Open MPI (PRRTE) enters a host's namespaces instead.
        "PRTE_MCA_plm_ssh_agent": str(bed.agent), **bed.env, **extra,
    }  # fmt: skip


def on_site(bed: NetnsBed, host: str, site: Path, code: str, *args: str, timeout: float = 120) -> object:
    """Run Python ``code`` on ``host`` with ``site`` = the opened Site; what it prints, read as JSON."""
    script = f"import json, sys\nfrom balsam.site.api import Site\nsite = Site.open({str(site)!r})\n{code}"
    out = bed.run(host, [PYTHON, "-c", script, *args], env=host_env(bed, site), timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def _end(process: subprocess.Popen) -> None:
    """End a process and its session (what it started), politely first."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
