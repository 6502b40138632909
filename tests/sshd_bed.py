"""Real sshd on hosts of the namespace bed (tests/netns_bed.py), for the rsync transfer backend.

``SshKeys(folder, hosts)`` makes, in a folder of the test: one host key per host, a user key, a
known_hosts file naming every host's key under its name and address (what the site's
``transfer.ssh_known_hosts`` points to) and an authorized_keys file holding the user key.
``start_sshd(bed, host, keys)`` runs Debian's ``sshd -D`` on that host, listening on the host's
address only, with a configuration of its own (key logins only, none of the machine's own sshd
settings); the bed's ``stop()`` ends it with everything else.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from netns_bed import NetnsBed

SSHD = "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """None if sshd, ssh, ssh-keygen and rsync are here, else what is missing (for a skip message)."""
    missing = [tool for tool in ("ssh", "ssh-keygen", "rsync") if shutil.which(tool) is None]
    if not Path(SSHD).is_file():
        missing.append("sshd")
    return f"missing {', '.join(missing)} (apt-get install openssh-server rsync)" if missing else None


class SshKeys:
    def __init__(self, folder: Path, hosts: dict[str, str]) -> None:
        """``hosts``: name -> address of every host that runs sshd."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self.identity = self.folder / "id_ed25519"
        self.known_hosts = self.folder / "known_hosts"
        self.authorized_keys = self.folder / "authorized_keys"
        _keygen(self.identity, "balsam-test-user")
        self.authorized_keys.write_text(self.identity.with_suffix(".pub").read_text())
        lines = []
        for name, address in hosts.items():
            key = self.host_key(name)
            _keygen(key, f"host-{name}")
            kind, blob = key.with_suffix(".pub").read_text().split()[:2]
            lines.append(f"{name},{address} {kind} {blob}\n")
        self.known_hosts.write_text("".join(lines))

    def host_key(self, host: str) -> Path:
        return self.folder / f"host_{host}_ed25519"


def start_sshd(bed: NetnsBed, host: str, keys: SshKeys) -> subprocess.Popen:
    """sshd on ``host``, in the foreground (``-D``), once it accepts connections."""
    address = bed.hosts[host].address
    config = keys.folder / f"sshd_{host}.conf"
    config.write_text(
        f"ListenAddress {address}\nPort 22\nHostKey {keys.host_key(host)}\nPidFile {keys.folder / f'sshd_{host}.pid'}\n"
        f"AuthorizedKeysFile {keys.authorized_keys}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\n"
        # The test's folders live under /tmp (world-writable): sshd's ownership checks of the key's path would refuse them.
        "StrictModes no\nLogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder, made by Debian's service otherwise
    log = open(keys.folder / f"sshd_{host}.log", "ab")
    process = bed.popen(host, [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    probe = ("import socket, sys, time\nend = time.monotonic() + 10\nwhile True:\n    try:\n"
             "        socket.create_connection((sys.argv[1], 22), timeout=1).close(); break\n    except OSError:\n"
             "        if time.monotonic() > end: sys.exit(1)\n        time.sleep(0.02)\n")  # fmt: skip
    began = time.monotonic()
    ready = bed.run(host, ["python3", "-c", probe, address], check=False, timeout=30)
    if ready.returncode != 0 or process.poll() is not None:
        text = (keys.folder / f"sshd_{host}.log").read_text(errors="replace")
        raise AssertionError(f"sshd on {host} did not start: {text}")
    process.ready_in = time.monotonic() - began  # type: ignore[attr-defined]
    return process


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True,
                   capture_output=True)  # fmt: skip

