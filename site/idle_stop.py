"""Nothing left behind: a site's embedded database stops itself once nobody uses it.

Any command may start the embedded server (``balsam job ls`` on a stopped site does). So that
trying things does not leave servers running, a small watcher process runs beside each started
server (``python -m balsam.site.idle_stop --site SITE``) and stops it once it has been unused for
``database.idle_stop_min`` minutes. Unused means all of:

- no process on this host has the site's database open: every process that connects through
  ``balsam.site.db.engine.connect`` (commands, scripts using the Python API, the agent, local
  launchers) holds a shared ``flock`` on ``SITE/db/in-use`` for as long as it lives, and touches
  it, so its mtime is the last time anyone here opened the database;
- no client is connected to the server (``pg_stat_activity``): launchers on other hosts, and
  anyone else logged in;
- no agent runs (its locked pid file, ``balsam.site.agent``);
- no batch job of a cluster scheduler is queued or running (``batch_jobs``): its launcher will need
  the database when it starts, on a compute node that cannot start it. Local batch jobs are
  processes on this host: they hold the in-use lock while they run and start the server if they
  need it.

It stops the server holding the start/stop lock of the cluster and the in-use lock exclusively,
so a command that opens the database at that moment waits for the stop and then starts it again.
The watcher holds one connection to the server and wakes when it closes: stopped by anyone else,
the watcher ends at once. A server started again gets a new watcher (and every ``connect`` makes
sure one runs).
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from balsam import daemon
from balsam.postgres import is_local_address
from balsam.site.settings import SiteSettings, settings_from_argv

log = logging.getLogger("balsam.site.idle_stop")

IN_USE_FILE, PID_FILE, LOG_FILE = "in-use", "idle-stop.pid", "idle-stop.log"
APPLICATION_NAME = "balsam idle-stop"  # its own connection, which is no use of the database
# A watcher spawned while the last one is still leaving (its server just stopped) waits this long for its pid file.
TAKEOVER_S = 15.0

# The lock files this process holds on sites' databases, by database folder, with how many of its
# connections (``Site`` objects) use each: the lock goes with the last one.
_held: dict[Path, list] = {}
# The databases this process started a watcher for.
_spawned: dict[Path, subprocess.Popen] = {}


def applies(settings: SiteSettings) -> bool:
    """Whether this process manages the site's own embedded server (not a collaborator's login)."""
    return settings.database.mode == "embedded" and settings.credentials is None


def hold_in_use(settings: SiteSettings) -> None:
    """Mark the database as used by this process until ``release_in_use`` (or its exit): a shared
    lock, and the file's mtime set to now."""
    if not applies(settings) or not settings.db_dir.is_dir() or not is_local_address(settings.database.host):
        return  # a compute node, which cannot start the server anyway, is seen by its connections
    path = settings.db_dir / IN_USE_FILE
    held = _held.get(settings.db_dir)
    if held is None:
        try:
            handle = open(path, "a")
        except OSError:
            return  # not ours to write (another user's site): the server's own connection list still counts us
        # Blocks only while a watcher is stopping the server (about a second); then we start it again.
        fcntl.flock(handle, fcntl.LOCK_SH)
        held = _held[settings.db_dir] = [handle, 0]
    held[1] += 1
    os.utime(path)


def release_in_use(settings: SiteSettings) -> None:
    """One use of the database by this process ended; the last one lets go of the lock (and sets the mtime)."""
    held = _held.get(settings.db_dir)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _held[settings.db_dir]
        handle = held[0]
        try:
            os.utime(settings.db_dir / IN_USE_FILE)
        except OSError:
            pass
        handle.close()  # closing the file releases its lock


def watcher_pid(settings: SiteSettings) -> int | None:
    return daemon.daemon_pid(settings.logs_dir / PID_FILE)


def ensure_watcher(settings: SiteSettings) -> None:
    """Start the site's idle watcher unless one runs (or the setting says never to stop)."""
    if not applies(settings) or not settings.database.idle_stop_min or not is_local_address(settings.database.host):
        return
    if watcher_pid(settings):
        return
    if not settings.settings_file.exists():
        return  # a site being made (`balsam init`): its first connection starts the watcher
    spawned = _spawned.get(settings.db_dir)
    if spawned is not None and spawned.poll() is None:
        return  # started by this process a moment ago, and not yet holding its pid file
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.logs_dir / "idle-stop.out", "ab") as out:
        _spawned[settings.db_dir] = subprocess.Popen(
            [sys.executable, "-m", "balsam.site.idle_stop", "--site", str(settings.path)],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=settings.path,
        )  # fmt: skip


def started_note(settings: SiteSettings) -> str:
    """What a command that started the server says of when it stops."""
    minutes = settings.database.idle_stop_min
    if not minutes:
        return "it runs until `balsam site stop`"
    return f"it stops itself once unused for {minutes:g} min (database.idle_stop_min; `balsam site set --db-idle-stop MIN`)"


class Watcher:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.settings = SiteSettings.load(path)
        self.last_used = time.time()
        self.conn = None

    def _connect(self):
        import psycopg2

        from balsam.site.postgres import EmbeddedPostgres

        db = self.settings.database
        return psycopg2.connect(
            host=db.host, port=db.port, user=db.user, dbname=db.name, password=EmbeddedPostgres(self.settings).password,
            connect_timeout=10, application_name=APPLICATION_NAME, **db.ssl_params(self.settings.db_dir),
        )  # fmt: skip

    def busy(self, holding_in_use: bool = False) -> str:
        """Why the database is in use now ("" when it is not); ``holding_in_use``: we hold its lock already."""
        from balsam.site.agent import agent_pid
        from balsam.site.batch import LIVE_STATES

        if agent_pid(self.settings):
            return "the agent runs"
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND application_name <> %s", (APPLICATION_NAME,),
            )  # fmt: skip
            clients = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM batch_jobs WHERE scheduler <> 'local' AND state = ANY(%s)", (list(LIVE_STATES),))
            batch_jobs = cur.fetchone()[0]
        self.conn.rollback()  # no transaction left open between rounds
        if clients:
            return f"{clients} client(s) connected"
        if batch_jobs:
            return f"{batch_jobs} batch job(s) of the scheduler queued or running"
        if not holding_in_use and not _lock_is_free(self.settings.db_dir / IN_USE_FILE):
            return "a process on this host has it open"
        return ""

    def idle_s(self) -> float:
        try:
            self.last_used = max(self.last_used, (self.settings.db_dir / IN_USE_FILE).stat().st_mtime)
        except FileNotFoundError:
            pass
        return time.time() - self.last_used

    def run(self) -> str:
        """Watch until the server stops (by us or anyone); returns what happened."""
        import psycopg2

        try:
            self.conn = self._connect()
        except psycopg2.OperationalError as exc:
            return f"nothing to watch: the server does not answer ({str(exc).strip().splitlines()[0]})"
        while True:
            limit_s = 60.0 * self.settings.database.idle_stop_min
            if not limit_s:
                return "database.idle_stop_min is 0: the server runs until stopped"
            poll_s = min(30.0, max(0.2, limit_s / 10))
            # Wakes early when the server closes our connection: it was stopped by someone else.
            readable, _, _ = select.select([self.conn.fileno()], [], [], poll_s)
            if readable and not self._still_connected():
                return "the server stopped"
            if self.busy():
                self.last_used = time.time()
            elif self.idle_s() >= limit_s and self._stop_if_idle(limit_s):
                return f"stopped the server: unused for {limit_s / 60:g} min"
            self.settings = SiteSettings.load(self.path)  # the idle period may have been changed

    def _still_connected(self) -> bool:
        try:
            self.conn.poll()
            with self.conn.cursor() as cur:
                cur.execute("SELECT 1")
            self.conn.rollback()
            return True
        except Exception:
            return False

    def _stop_if_idle(self, limit_s: float) -> bool:
        """Stop the server, unless someone came in meanwhile: checked again under both locks."""
        from balsam.site.postgres import EmbeddedPostgres

        server = EmbeddedPostgres(self.settings)
        with server.lock():
            with open(self.settings.db_dir / IN_USE_FILE, "a") as in_use:
                try:
                    fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # a process opened it just now
                why = self.busy(holding_in_use=True)
                if why or self.idle_s() < limit_s:
                    return False
                self.conn.close()
                server.stop_locked()
                return True


def _lock_is_free(path: Path) -> bool:
    try:
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    settings = settings_from_argv("python -m balsam.site.idle_stop", "Stop a site's embedded database once unused.", argv)
    pid_file = settings.logs_dir / PID_FILE
    logging.basicConfig(filename=settings.logs_dir / LOG_FILE, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    deadline = time.monotonic() + TAKEOVER_S
    while (handle := daemon.hold_pid_file(pid_file)) is None:
        if time.monotonic() > deadline:
            return 0  # another watcher serves this server
        time.sleep(0.2)
    try:
        daemon.mark_ready(handle)
        watcher = Watcher(settings.path)
        try:
            said = watcher.run()
        except Exception as exc:  # the server not reachable at all: nothing to watch
            said = f"stopped watching: {type(exc).__name__}: {str(exc).strip()}"
        log.info("%s", said)
    finally:
        daemon.release_pid_file(handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
