"""A site's folder and its settings file, and how the active site is found.

A site folder holds ``balsam-site.toml`` (the settings), ``logs/``, ``data/`` (job working
folders), ``batch/`` (the scripts of batch jobs and their output) and, for an embedded database,
``db/`` (the PostgreSQL cluster and its password file).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import tomli_w

from balsam.errors import BalsamError
from balsam.inputs import read_text
from balsam.postgres import DatabaseSettings
from balsam.private_files import check_private

SETTINGS_FILE = "balsam-site.toml"
SITE_ENV = "BALSAM_SITE"
# A person's own database login (`balsam site user add` writes one), used instead of the site's role.
CREDENTIALS_ENV = "BALSAM_DB_CREDENTIALS"


SCHEDULERS = ("local", "slurm", "pbs", "cobalt", "lsf")


@dataclass
class SchedulerSettings:
    """The batch scheduler launchers are submitted to, and what may be charged on it."""

    name: str = "local"
    project: str = ""  # the default -A of batch jobs
    queue: str = ""  # the default -q (partition, for Slurm)
    # What `submit-launch` and `qsub` may ask for; empty means anything.
    allowed_projects: list[str] = field(default_factory=list)
    allowed_queues: list[str] = field(default_factory=list)
    # Extra options the site's submit command needs, as they are (e.g. ["-l", "filesystems=home"]).
    submit_args: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.name not in SCHEDULERS:
            raise BalsamError(f"scheduler.name must be one of {', '.join(SCHEDULERS)}, got {self.name!r}")
        if not all(isinstance(arg, str) for arg in self.submit_args):
            raise BalsamError(f"scheduler.submit_args must be a list of strings, got {self.submit_args!r}")

    def check_allowed(self, project: str, queue: str) -> None:
        """Refuse a project or queue outside the site's lists, naming the allowed ones."""
        for what, value, allowed in (("project", project, self.allowed_projects), ("queue", queue, self.allowed_queues)):
            if allowed and value not in allowed:
                raise BalsamError(f"{what} {value!r} is not allowed at this site; allowed: {', '.join(allowed)}")


@dataclass
class ElasticQueueSettings:
    """Limits within which the site agent submits launcher batch jobs sized to the backlog."""

    enabled: bool = False
    job_mode: str = "mpi"  # the launchers it submits: mpi | serial
    max_queued: int = 1  # batch jobs waiting in the scheduler at once (running ones do not count)
    max_nodes: int = 1  # per batch job
    min_nodes: int = 1
    min_wall_min: int = 10
    max_wall_min: int = 60
    use_backfill: bool = False  # size jobs to fit the scheduler's idle nodes when it shows them
    # Run time assumed for a job with no wall-time estimate and no performance model yet: small, so
    # a burst of short tasks does not ask for an allocation per ten minutes of imagined work.
    default_job_min: float = 1.0
    interval_s: float = 10.0  # how often the agent looks
    # Its launchers stay this long once idle: the next level of a DAG, or the next task Argo places
    # here, finds one running instead of waiting for a new batch job.
    linger_s: float = 30.0
    # Nodes of all its batch jobs together, running and queued (0: no limit but max_queued). The
    # local scheduler has one host: at most one launcher there whatever this says.
    max_total_nodes: int = 0

    def check(self) -> None:
        if self.job_mode not in ("mpi", "serial"):
            raise BalsamError(f"elastic_queue.job_mode must be 'mpi' or 'serial', got {self.job_mode!r}")
        for name in ("max_queued", "max_nodes", "min_nodes", "min_wall_min", "max_wall_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BalsamError(f"elastic_queue.{name} must be a whole number >= 1, got {value!r}")
        if self.min_nodes > self.max_nodes:
            raise BalsamError(f"elastic_queue.min_nodes ({self.min_nodes}) is above max_nodes ({self.max_nodes})")
        if self.min_wall_min > self.max_wall_min:
            raise BalsamError(f"elastic_queue.min_wall_min ({self.min_wall_min}) is above max_wall_min ({self.max_wall_min})")
        for name in ("default_job_min", "interval_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise BalsamError(f"elastic_queue.{name} must be a positive number, got {value!r}")
        if isinstance(self.linger_s, bool) or not isinstance(self.linger_s, int | float) or not 0 <= self.linger_s <= 86400:
            raise BalsamError(f"elastic_queue.linger_s must be a number of seconds from 0 to 86400, got {self.linger_s!r}")
        if isinstance(self.max_total_nodes, bool) or not isinstance(self.max_total_nodes, int) or self.max_total_nodes < 0:
            raise BalsamError(f"elastic_queue.max_total_nodes must be a whole number >= 0, got {self.max_total_nodes!r}")


@dataclass
class ArgoLinkSettings:
    """The site's link to an Argo coordinator (``balsam site start --argo ADDRESS``)."""

    address: str = ""  # empty: the site works alone
    heartbeat_s: float = 2.0
    # The wait reported to Argo while no launcher runs: how long a new batch job usually queues here.
    queue_wait_s: float = 60.0
    max_tasks: int = 0  # Argo places at most this many unfinished tasks here (0: no cap)
    nodes: int = 0  # nodes Argo may count on at once (0: elastic_queue.max_nodes)
    transfer_endpoint: str = ""
    # TLS: the CA that signed the coordinator's certificate (empty: plain text), and this site's
    # own certificate and key for a coordinator that requires them (mutual TLS).
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def check(self) -> None:
        for name in ("heartbeat_s", "queue_wait_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (name == "heartbeat_s" and value == 0):
                raise BalsamError(f"argo.{name} must be a positive number, got {value!r}")
        for name in ("max_tasks", "nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BalsamError(f"argo.{name} must be a whole number >= 0, got {value!r}")


@dataclass
class WebSettings:
    """The site's own dashboard (``balsam site start --web ADDRESS``; docs/web.md), served by its agent."""

    address: str = ""  # HOST:PORT; empty: none
    # TLS: a folder with server.pem and server.key (as `argo certs init` makes); needed off loopback.
    tls_dir: str = ""

    def check(self) -> None:
        if not isinstance(self.address, str) or not isinstance(self.tls_dir, str):
            raise BalsamError("web.address and web.tls_dir must be text")
        if self.address:
            host, sep, port = self.address.rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise BalsamError(f"web.address must be HOST:PORT (a port from 0 to 65535), got {self.address!r}")
            from balsam.postgres import is_loopback

            if not self.tls_dir and not is_loopback(host.strip("[]") or "127.0.0.1"):
                raise BalsamError(f"refusing to serve the site's dashboard without TLS on {self.address}, which is reachable "
                                  "from other machines: its token would cross the network in clear. Keep it on 127.0.0.1 "
                                  "(and reach it with `ssh -L PORT:127.0.0.1:PORT HOST`), or give --web-tls-dir DIR")  # fmt: skip


@dataclass
class TransferSettings:
    """How the site agent moves the files jobs declare (stage-in before a run, stage-out after)."""

    slots: int = 4  # transfer tasks in flight at once (each may carry many files of many jobs)
    max_items: int = 1000  # files (or folders) in one transfer task
    retries: int = 3  # attempts at a file before its job fails
    retry_delay_s: float = 5.0  # before a failed file is tried again (doubled each attempt)
    verify_checksum: bool = False  # also compare checksums, not only sizes
    link: bool = True  # hard-link local files that are on the same filesystem instead of copying
    interval_s: float = 1.0  # how often the agent looks for work and polls transfer tasks
    # Extra local folders a stage-out may write into (and a stage-in read from), besides the site's data folder.
    allowed_roots: list[str] = field(default_factory=list)
    # Extra local folders a stage-in may read from (only), such as shared inputs or other sites' data folders.
    read_roots: list[str] = field(default_factory=list)
    # Globus: this site's collection (endpoint) id, and the path at that collection of the site folder
    # (empty: the site folder's own absolute path, as on a collection rooted at /).
    globus_endpoint: str = ""
    globus_root: str = ""
    globus_client_id: str = ""  # a registered native app's client id (`balsam globus login`)
    globus_sync_level: str = "checksum"  # exists | size | mtime | checksum
    globus_deadline_min: int = 0  # 0: none
    # rsync over ssh, for sites that share no filesystem (docs/transfers.md). ssh_host: how other sites
    # reach this site's files ([USER@]HOST[:PORT]); set, this site's outputs are registered as ssh://ssh_host/path.
    ssh_host: str = ""
    ssh_identity: str = ""  # the private key ssh logs in with
    ssh_known_hosts: str = ""  # the other hosts' keys: no host key is accepted on first sight
    ssh_roots: list[str] = field(default_factory=list)  # ssh://HOST/abs/path folders a stage-in may read from, a stage-out write to
    ssh_connect_timeout_s: float = 10.0

    def check(self) -> None:
        for name in ("slots", "max_items", "retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "retries" else 1):
                raise BalsamError(f"transfer.{name} must be a whole number >= {0 if name == 'retries' else 1}, got {value!r}")
        for name in ("retry_delay_s", "interval_s", "ssh_connect_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise BalsamError(f"transfer.{name} must be a positive number, got {value!r}")
        for name in ("verify_checksum", "link"):
            if not isinstance(getattr(self, name), bool):
                raise BalsamError(f"transfer.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("allowed_roots", "read_roots"):
            roots = getattr(self, name)
            if not isinstance(roots, list) or not all(isinstance(r, str) and r.startswith("/") for r in roots):
                raise BalsamError(f"transfer.{name} must be a list of absolute paths, got {roots!r}")
        if self.globus_sync_level not in ("exists", "size", "mtime", "checksum"):
            raise BalsamError(f"transfer.globus_sync_level must be one of exists, size, mtime, checksum, got {self.globus_sync_level!r}")
        if self.globus_root and not self.globus_root.startswith("/"):
            raise BalsamError(f"transfer.globus_root must be an absolute path at the collection, got {self.globus_root!r}")
        if isinstance(self.globus_deadline_min, bool) or not isinstance(self.globus_deadline_min, int) or self.globus_deadline_min < 0:
            raise BalsamError(f"transfer.globus_deadline_min must be a whole number >= 0, got {self.globus_deadline_min!r}")
        from balsam.transfer.base import SSH_HOST

        if not isinstance(self.ssh_host, str) or (self.ssh_host and not SSH_HOST.match(self.ssh_host)):
            raise BalsamError(f"transfer.ssh_host must be [USER@]HOST[:PORT], got {self.ssh_host!r}")
        for name in ("ssh_identity", "ssh_known_hosts"):
            value = getattr(self, name)
            if not isinstance(value, str) or (value and not value.startswith("/")):
                raise BalsamError(f"transfer.{name} must be an absolute path, got {value!r}")
        if not isinstance(self.ssh_roots, list) or not all(isinstance(r, str) and r.startswith("ssh://") for r in self.ssh_roots):
            raise BalsamError(f"transfer.ssh_roots must be a list of ssh://HOST/abs/path locations, got {self.ssh_roots!r}")


@dataclass
class PerfSettings:
    """How performance models learnt from finished runs size jobs (``--nodes auto``, ``--wall-time auto``) and batch jobs."""

    min_efficiency: float = 0.5  # `--nodes auto`: the widest node count whose parallel efficiency stays at least this
    wall_time_quantile: float = 0.95  # `--wall-time auto`: this quantile of the runs' overruns of the fit...
    wall_time_margin: float = 0.2  # ...plus this fraction on top
    min_runs: int = 3  # finished runs an app needs before its model is used
    max_runs: int = 2000  # the most recent runs of an app a fit uses (keeps each fit cheap)
    elastic_queue: bool = True  # the elastic queue counts predicted run times for jobs without a wall time
    # The numeric job parameter each app's run time scales with (app name -> parameter name).
    features: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("min_efficiency", "wall_time_quantile"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                raise BalsamError(f"perf.{name} must be a number in (0, 1], got {value!r}")
        if isinstance(self.wall_time_margin, bool) or not isinstance(self.wall_time_margin, int | float) or not self.wall_time_margin >= 0:
            raise BalsamError(f"perf.wall_time_margin must be a number >= 0, got {self.wall_time_margin!r}")
        for name, low in (("min_runs", 2), ("max_runs", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BalsamError(f"perf.{name} must be a whole number >= {low}, got {value!r}")
        if self.max_runs < self.min_runs:
            raise BalsamError(f"perf.max_runs ({self.max_runs}) is below min_runs ({self.min_runs})")
        if not isinstance(self.elastic_queue, bool):
            raise BalsamError(f"perf.elastic_queue must be true or false, got {self.elastic_queue!r}")
        if not isinstance(self.features, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.features.items()):
            raise BalsamError(f"perf.features must map app names to parameter names, got {self.features!r}")


@dataclass
class DbCredentials:
    """One person's login to a site's database, from a file of theirs (``$BALSAM_DB_CREDENTIALS``).

    ``user`` and ``password`` replace the site's own login on the site's address (so a moved port
    still works); ``url``, when given, replaces the whole address. ``role`` is what `balsam site
    user add` granted, kept only to explain a refusal: the database decides what the login may do.
    """

    file: Path
    user: str = ""
    password: str = ""
    url: str = ""
    role: str = ""


def load_credentials(file: str | Path) -> DbCredentials:
    path = Path(file).expanduser().resolve()
    if not path.exists():
        raise BalsamError(f"{CREDENTIALS_ENV}: no credentials file {path}")
    text = read_text(path)
    try:
        doc = tomllib.loads(text)
        section = doc["database"]
        creds = DbCredentials(file=path, **section)
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise BalsamError(f"credentials file {path} is malformed (it needs a [database] with user and password): {exc}") from None
    if not (creds.url or (creds.user and creds.password)):
        raise BalsamError(f"credentials file {path} needs [database] user and password (or url)")
    check_private(path)
    return creds


@dataclass
class SiteSettings:
    path: Path
    name: str
    # The Unix group the site is shared with ("": private to its owner); see balsam.site.access.protect_site.
    group: str = ""
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    elastic_queue: ElasticQueueSettings = field(default_factory=ElasticQueueSettings)
    argo: ArgoLinkSettings = field(default_factory=ArgoLinkSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    perf: PerfSettings = field(default_factory=PerfSettings)
    web: WebSettings = field(default_factory=WebSettings)
    # Set from $BALSAM_DB_CREDENTIALS by load(); never saved into the settings file.
    credentials: DbCredentials | None = None

    @property
    def settings_file(self) -> Path:
        return self.path / SETTINGS_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def db_dir(self) -> Path:
        return self.path / "db"

    @property
    def batch_dir(self) -> Path:
        return self.path / "batch"

    @property
    def argo_credential_file(self) -> Path:
        """The site's Argo credential (from `--enrol-token`, renewed by the agent), owner-only."""
        return self.path / "argo-credential.json"

    @property
    def web_token_file(self) -> Path:
        """The token of the site's dashboard (made by the agent when it first serves one), owner-only."""
        return self.path / "web-token"

    @property
    def globus_tokens_file(self) -> Path:
        """Globus tokens from `balsam globus login`, readable by the owner only."""
        return self.path / "globus-tokens.json"

    def save(self) -> None:
        db = self.database
        doc = {
            "site": {"name": self.name, **({"group": self.group} if self.group else {})},
            "database": {"mode": db.mode, "url": db.url}
            if db.mode == "external"
            else {k: v for k, v in asdict(db).items() if k != "url"},
            "scheduler": asdict(self.scheduler),
            "elastic_queue": asdict(self.elastic_queue),
            "argo": asdict(self.argo),
            "transfer": asdict(self.transfer),
            "perf": asdict(self.perf),
            **({"web": asdict(self.web)} if self.web != WebSettings() else {}),
        }
        # Owner-only when it holds a database password (an external URL with one). Otherwise a mode
        # the owner chose is kept, so a file shared with collaborators (chmod g+r) stays shared.
        mode = 0o600
        if not self.holds_password() and self.settings_file.exists():
            mode = os.stat(self.settings_file).st_mode & 0o777
        tmp = self.settings_file.with_suffix(".toml.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(tomli_w.dumps(doc))
        os.chmod(tmp, mode)
        tmp.replace(self.settings_file)

    def holds_password(self) -> bool:
        """Whether the settings file holds a database password (an external URL with one)."""
        from sqlalchemy.engine import make_url  # here: settings stays a light module

        db = self.database
        if db.mode != "external" or not db.url:
            return False
        try:
            return bool(make_url(db.url).password)
        except Exception:  # a malformed URL fails on connect, with its own message
            return True

    @classmethod
    def load(cls, path: Path) -> SiteSettings:
        path = Path(path).resolve()
        file = path / SETTINGS_FILE
        if not file.is_file():
            raise BalsamError(f"{path} is not a Balsam site (no {SETTINGS_FILE}); create one with `balsam init {path}`")
        text = read_text(file)
        try:
            doc = tomllib.loads(text)
            site = doc["site"]
            db = _section(DatabaseSettings, doc, "database")
            db.check()
            scheduler = _section(SchedulerSettings, doc, "scheduler")
            elastic = _section(ElasticQueueSettings, doc, "elastic_queue")
            argo = _section(ArgoLinkSettings, doc, "argo")
            transfer = _section(TransferSettings, doc, "transfer")
            perf = _section(PerfSettings, doc, "perf")
            web = _section(WebSettings, doc, "web")
            scheduler.check()
            elastic.check()
            argo.check()
            transfer.check()
            perf.check()
            web.check()
            check_idle_stop(db.idle_stop_min)
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise BalsamError(f"{file} is malformed: {exc}") from None
        except BalsamError as exc:
            raise BalsamError(f"{file}: {exc}") from None
        credentials = load_credentials(os.environ[CREDENTIALS_ENV]) if os.environ.get(CREDENTIALS_ENV) else None
        group = site.get("group", "")
        if not isinstance(group, str):
            raise BalsamError(f"{file}: site.group must be the name of a group, got {group!r}")
        return cls(path=path, name=str(site["name"]), group=group, database=db, scheduler=scheduler, elastic_queue=elastic, argo=argo,
                   transfer=transfer, perf=perf, web=web, credentials=credentials)


# The common choices `balsam init` and `balsam site set` take as options (no TOML editing):
# option name -> (section, setting).
CHOICES = {
    "scheduler": ("scheduler", "name"), "project": ("scheduler", "project"), "queue": ("scheduler", "queue"),
    "elastic_queue": ("elastic_queue", "enabled"), "job_mode": ("elastic_queue", "job_mode"),
    "max_nodes": ("elastic_queue", "max_nodes"), "max_queued": ("elastic_queue", "max_queued"),
    "max_wall_min": ("elastic_queue", "max_wall_min"), "idle_stop_min": ("database", "idle_stop_min"),
}  # fmt: skip


def apply_choices(settings: SiteSettings, **choices: object) -> list[str]:
    """Set the given choices (None: left as is), check them as a loaded file would be, and return
    one line per change ("scheduler.name = 'slurm'")."""
    changed = []
    if choices.get("idle_stop_min") is not None and settings.database.mode == "external":
        raise BalsamError("the site's database is an external server, which Balsam neither starts nor stops: "
                          "the idle stop is for an embedded one")  # fmt: skip
    for option, value in choices.items():
        if value is None:
            continue
        section, name = CHOICES[option]
        holder = getattr(settings, section)
        if getattr(holder, name) != value:
            setattr(holder, name, value)
            changed.append(f"{section}.{name} = {value!r}")
    if settings.elastic_queue.min_nodes > settings.elastic_queue.max_nodes:
        settings.elastic_queue.min_nodes = settings.elastic_queue.max_nodes
    if settings.elastic_queue.min_wall_min > settings.elastic_queue.max_wall_min:
        settings.elastic_queue.min_wall_min = settings.elastic_queue.max_wall_min
    settings.scheduler.check()
    settings.elastic_queue.check()
    check_idle_stop(settings.database.idle_stop_min)
    return changed


def check_idle_stop(minutes: object) -> None:
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes < 0:
        raise BalsamError(f"database.idle_stop_min must be a number of minutes >= 0 (0: never), got {minutes!r}")


def _section(kind, doc: dict, name: str):
    values = doc.get(name, {})
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BalsamError(f"unknown setting {name}.{unknown[0]} (known: {', '.join(sorted(known))})")
    return kind(**values)


def find_site(start: Path | None = None) -> Path:
    """The active site: ``$BALSAM_SITE``, else the nearest site folder enclosing ``start`` (the cwd)."""
    env = os.environ.get(SITE_ENV)
    if env:
        path = Path(env).expanduser()
        if not (path / SETTINGS_FILE).is_file():
            raise BalsamError(f"{SITE_ENV}={env} is not a Balsam site (no {SETTINGS_FILE} there)")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
    raise BalsamError(
        f"no Balsam site here: {here} is not inside a site folder and {SITE_ENV} is not set. "
        "Create a site with `balsam init PATH`, then work inside it or set BALSAM_SITE=PATH."
    )


def settings_from_argv(prog: str, description: str, argv: list[str] | None) -> SiteSettings:
    """The settings of the site named by ``--site`` on the command line of a site daemon (``python -m ...``)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--site", type=Path, required=True)
    return SiteSettings.load(parser.parse_args(argv).site)
