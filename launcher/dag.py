"""The original Balsam's (0.x) Python API for users' scripts, as far as it maps onto today's site.

    from balsam.launcher.dag import BalsamJob, add_job, spawn_child, kill, current_job

    job = add_job(name="hi", workflow="test", application="SayHello", args="world 1")
    child = BalsamJob(name="next", workflow="test", application="SayHello", args="again")
    child.save()

Inside a running job, ``current_job`` is that job (``None`` elsewhere) and ``spawn_child`` adds
a job that waits for it. Jobs are those of the active site (``$BALSAM_SITE``, which the launcher
sets for every job). An old job's fields map as ``balsam.site.compat`` says; fields that have no
counterpart (``url_in``, ``stage_out_files``, ``environ_vars`` of a job, ...) are refused by name.
Today's API is ``balsam.site`` (``Site``, ``current_job``, ``spawn_child``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from balsam.errors import BalsamError
from balsam.site import compat, dynamic
from balsam.site.api import Site
from balsam.site.workdir import workdir

__all__ = ["BalsamJob", "add_job", "spawn_child", "kill", "current_job"]  # noqa: F822 (current_job: module __getattr__)

_site: Site | None = None


def _open() -> Site:
    """One connection for the script's life (a script adds many jobs; each would reconnect)."""
    global _site
    if _site is None:
        _site = Site.open()
    return _site


class BalsamJob:
    """An old-style job: set its fields, then ``save()``; a saved one can be changed and saved again."""

    _FIELDS = ("name", "workflow", "application", "args", "data", *compat.RESOURCES)

    def __init__(self, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(self._FIELDS))
        if unknown:
            raise BalsamError(f"BalsamJob has no field {unknown[0]!r} here (fields: {', '.join(self._FIELDS)})")
        self.job_id: int | None = None
        self.name: str = fields.get("name", "")
        self.workflow: str = fields.get("workflow", "default")
        self.application: str = fields.get("application", "")
        self.args: str = compat.args_text(fields.get("args"))
        self.data: dict[str, Any] = dict(fields.get("data") or {})
        self.num_nodes: int = fields.get("num_nodes", 1)
        self.ranks_per_node: int = fields.get("ranks_per_node", 1)
        self.threads_per_rank: int = fields.get("threads_per_rank", 1)
        self.node_packing_count: int = fields.get("node_packing_count", 1)
        self.wall_time_minutes: float | None = fields.get("wall_time_minutes")
        self.state: str = "CREATED"
        self._parents: list[int] = []

    @property
    def pk(self) -> int | None:
        return self.job_id

    @property
    def working_directory(self) -> Path | None:
        """Where the job runs (and its job.out and job.err land)."""
        if self.job_id is None:
            return None
        return workdir(_open().settings.data_dir, self.workflow, self.job_id)

    def _fields(self) -> dict[str, Any]:
        return compat.job_fields(
            name=self.name, workflow=self.workflow, args=self.args, data=self.data, parents=self._parents,
            num_nodes=self.num_nodes, ranks_per_node=self.ranks_per_node, threads_per_rank=self.threads_per_rank,
            node_packing_count=self.node_packing_count, wall_time_minutes=self.wall_time_minutes,
        )  # fmt: skip

    def save(self) -> BalsamJob:
        """Add the job (first save) or write its changed fields (a job no launcher holds)."""
        site = _open()
        fields = self._fields()
        compat.split_words(fields["params"][compat.ARGS], "args")
        if self.job_id is None:
            if not self.application:
                raise BalsamError("a BalsamJob needs an application")
            compat.check_old_app(site.app(self.application).parameters, self.application)
            job = site.add_job(self.application, **fields)
        else:
            fields.pop("parents", None)
            job = site.modify_job(self.job_id, **fields)
        self._load(job)
        return self

    def refresh_from_db(self) -> None:
        if self.job_id is not None:
            self._load(_open().job(self.job_id))

    def _load(self, job: Any) -> None:
        self.job_id, self.name, self.workflow, self.state = job.id, job.name, job.workflow, job.state
        self.application = job.app.name
        self.args = str(job.parameters.get(compat.ARGS, ""))
        self.data = dict(job.data)
        self.num_nodes, self.ranks_per_node, self.threads_per_rank = job.nodes, job.ranks_per_node, job.threads_per_rank
        self.node_packing_count, self.wall_time_minutes = job.node_packing_count, job.wall_time_min

    @classmethod
    def get(cls, job_id: int) -> BalsamJob:
        job = cls.__new__(cls)
        job._parents = []
        job._load(_open().job(job_id))
        return job

    def __repr__(self) -> str:
        return f"BalsamJob(id={self.job_id}, name={self.name!r}, workflow={self.workflow!r}, state={self.state})"


def add_job(**fields: Any) -> BalsamJob:
    """Make and save a job in one call (the old ``dag.add_job``)."""
    return BalsamJob(**fields).save()


def spawn_child(clone: bool = False, **fields: Any) -> BalsamJob:
    """A new job that runs after the current one finishes; with ``clone``, a copy of it with ``fields`` changed."""
    me = _current()
    if me is None:
        raise BalsamError(f"spawn_child runs inside a Balsam job: {dynamic.JOB_ID_VARIABLE} is not set")
    if clone:
        base = {key: getattr(me, key) for key in BalsamJob._FIELDS}
        fields = {**base, **fields}
    fields.setdefault("workflow", me.workflow)
    child = BalsamJob(**fields)
    site = _open()
    compat.check_old_app(site.app(child.application).parameters, child.application)
    spec = child._fields()
    child._load(dynamic.spawn_child(child.application, params=spec.pop("params"), site=site, **spec))
    return child


def kill(job: BalsamJob | int, recursive: bool = False) -> None:
    """Kill a job (and, with ``recursive``, every job that depends on it)."""
    compat.kill(_open(), job.job_id if isinstance(job, BalsamJob) else int(job), recursive, "killed by balsam.launcher.dag.kill")


def _current() -> BalsamJob | None:
    try:
        job_id = dynamic.current_job_id()
    except BalsamError:
        return None
    return BalsamJob.get(job_id)


def __getattr__(name: str) -> Any:
    # `current_job` is read when used, not at import: a script may import this module outside a job.
    if name == "current_job":
        return _current()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
