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
from balsam.postgres import DatabaseSettings

SETTINGS_FILE = "balsam-site.toml"
SITE_ENV = "BALSAM_SITE"


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
    default_job_min: float = 10.0  # run time assumed for a job with no wall-time estimate
    interval_s: float = 10.0  # how often the agent looks

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
class SiteSettings:
    path: Path
    name: str
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    elastic_queue: ElasticQueueSettings = field(default_factory=ElasticQueueSettings)
    argo: ArgoLinkSettings = field(default_factory=ArgoLinkSettings)

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

    def save(self) -> None:
        db = self.database
        doc = {
            "site": {"name": self.name},
            "database": {"mode": db.mode, "url": db.url}
            if db.mode == "external"
            else {"mode": db.mode, "host": db.host, "port": db.port, "user": db.user, "name": db.name},
            "scheduler": asdict(self.scheduler),
            "elastic_queue": asdict(self.elastic_queue),
            "argo": asdict(self.argo),
        }
        # Owner-only: with an external server the file holds the database password.
        tmp = self.settings_file.with_suffix(".toml.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(tomli_w.dumps(doc))
        tmp.replace(self.settings_file)

    @classmethod
    def load(cls, path: Path) -> SiteSettings:
        path = Path(path).resolve()
        file = path / SETTINGS_FILE
        if not file.is_file():
            raise BalsamError(f"{path} is not a Balsam site (no {SETTINGS_FILE}); create one with `balsam init {path}`")
        try:
            doc = tomllib.loads(file.read_text())
            site = doc["site"]
            db = DatabaseSettings(**doc.get("database", {}))
            scheduler = _section(SchedulerSettings, doc, "scheduler")
            elastic = _section(ElasticQueueSettings, doc, "elastic_queue")
            argo = _section(ArgoLinkSettings, doc, "argo")
            scheduler.check()
            elastic.check()
            argo.check()
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise BalsamError(f"{file} is malformed: {exc}") from None
        except BalsamError as exc:
            raise BalsamError(f"{file}: {exc}") from None
        return cls(path=path, name=str(site["name"]), database=db, scheduler=scheduler, elastic_queue=elastic, argo=argo)


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
