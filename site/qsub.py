"""``balsam qsub``: a batch-style request (nodes, minutes, a command or script) as a site job.

Instead of one batch job per request, the request becomes a job of the site's database, which
the elastic queue packs with others into launcher batch jobs. The command needs no app: each
distinct command line gets a script-launched app of its own (``qsub-NAME-HASH``), made on first
use. It runs once, unchanged, on the first of its nodes, and reaches the others through
``BALSAM_JOB_NODES``, as a batch script would through its scheduler's node list.

Options missing from the command line are read from the script's own directives
(``#PBS``, ``#SBATCH``, ``#COBALT``, ``#BSUB``), so an existing batch script works as it is.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from balsam.errors import BalsamError
from balsam.site.api import Site
from balsam.site.db.models import App, Job
from balsam.site.scheduler.base import parse_minutes
from balsam.site.templates import literal_template as command_template


@dataclass(frozen=True)
class Directives:
    nodes: int | None = None
    minutes: int | None = None
    project: str | None = None
    queue: str | None = None


SCRIPT_HEAD = 1 << 20  # bytes of a script read for its directives

# (prefix, option) -> field. PBS resources come as -l key=value lists, handled apart.
_OPTIONS = {
    ("#SBATCH", "-N"): "nodes", ("#SBATCH", "--nodes"): "nodes", ("#SBATCH", "-t"): "minutes",
    ("#SBATCH", "--time"): "minutes", ("#SBATCH", "-A"): "project", ("#SBATCH", "--account"): "project",
    ("#SBATCH", "-p"): "queue", ("#SBATCH", "--partition"): "queue",
    ("#PBS", "-A"): "project", ("#PBS", "-q"): "queue",
    ("#COBALT", "-n"): "nodes", ("#COBALT", "--nodecount"): "nodes", ("#COBALT", "-t"): "minutes",
    ("#COBALT", "--time"): "minutes", ("#COBALT", "-A"): "project", ("#COBALT", "--project"): "project",
    ("#COBALT", "-q"): "queue", ("#COBALT", "--queue"): "queue",
    ("#BSUB", "-nnodes"): "nodes", ("#BSUB", "-W"): "minutes", ("#BSUB", "-P"): "project", ("#BSUB", "-q"): "queue",
}  # fmt: skip


def read_directives(script_text: str) -> Directives:
    """The nodes, wall time, project and queue a batch script asks for in its directives."""
    found: dict[str, object] = {}
    for number, line in enumerate(script_text.splitlines(), start=1):
        line = line.strip()
        prefix = line.split(maxsplit=1)[0] if line else ""
        if prefix not in {"#SBATCH", "#PBS", "#COBALT", "#BSUB"}:
            continue
        try:
            words = shlex.split(line[len(prefix) :])
        except ValueError as exc:
            raise BalsamError(f"line {number} of the script: cannot read directive {line!r}: {exc}") from None
        for option, value in _pairs(words):
            if prefix == "#PBS" and option == "-l":
                _pbs_resources(value, found, number)
            elif (prefix, option) in _OPTIONS:
                found[_OPTIONS[(prefix, option)]] = _value(_OPTIONS[(prefix, option)], value, prefix, number)
    return Directives(**found)  # type: ignore[arg-type]


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    """``-N 2``, ``--nodes=2`` and ``--nodes 2`` as (option, value) pairs."""
    pairs, i = [], 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and "=" in word:
            option, value = word.split("=", 1)
            pairs.append((option, value))
        elif word.startswith("-") and i + 1 < len(words):
            pairs.append((word, words[i + 1]))
            i += 1
        i += 1
    return pairs


def _pbs_resources(value: str, found: dict[str, object], number: int) -> None:
    for item in value.split(","):
        key, _, amount = item.partition("=")
        if key in ("select", "nodes"):
            # select=2:ncpus=64 or nodes=2:ppn=16: the count comes first.
            found["nodes"] = _value("nodes", amount.split(":")[0], "#PBS", number)
        elif key == "walltime":
            found["minutes"] = _value("minutes", amount, "#PBS", number)


def _value(field: str, text: str, prefix: str, number: int) -> object:
    try:
        if field == "nodes":
            return int(text)
        if field == "minutes":
            # Slurm's two-part times are minutes:seconds; PBS, Cobalt and LSF mean hours:minutes.
            minutes = parse_minutes(text, two_parts="mm:ss" if prefix == "#SBATCH" else "hh:mm")
            if minutes is None:
                raise ValueError("unlimited")
            return minutes
    except ValueError:
        raise BalsamError(f"line {number} of the script: {prefix} gives {field} as {text!r}, which is not a valid value") from None
    return text


def app_name(argv: list[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(argv[0]).name)[:60] or "command"
    digest = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:10]
    return f"qsub-{stem}-{digest}"


def submit(
    site: Site,
    argv: list[str],
    nodes: int | None = None,
    minutes: int | None = None,
    project: str | None = None,
    queue: str | None = None,
    name: str = "",
    workflow: str = "qsub",
) -> Job:
    """Add the request as a job (making its app if new); returns the job."""
    if not argv:
        raise BalsamError("qsub needs a command or a script to run (after --)")
    argv = list(argv)
    script = Path(argv[0])
    directives = Directives()
    if script.is_file():
        argv[0] = str(script.resolve())  # the job runs in its own folder; keep the path valid there
        try:
            with open(script, "rb") as handle:  # directives are at the top: a large program is not read whole
                directives = read_directives(handle.read(SCRIPT_HEAD).decode(errors="replace"))
        except OSError as exc:
            raise BalsamError(f"cannot read script {script}: {exc}") from None
    nodes = nodes if nodes is not None else directives.nodes or 1
    minutes = minutes if minutes is not None else directives.minutes
    if minutes is None:
        raise BalsamError("give the wall time with -t MINUTES (or a #PBS/#SBATCH/#COBALT/#BSUB directive in the script)")
    project = project if project is not None else directives.project or ""
    queue = queue if queue is not None else directives.queue or ""
    if nodes < 1:
        raise BalsamError(f"-n must be at least 1 node, got {nodes}")
    if minutes <= 0:
        raise BalsamError(f"-t must be a positive number of minutes, got {minutes}")
    site.settings.scheduler.check_allowed(project or site.settings.scheduler.project, queue or site.settings.scheduler.queue)
    template = command_template(argv)
    with site.session() as session:
        existing = session.scalar(select(App.name).where(App.command_template == template, App.launch == "script"))
    if existing is None:
        existing = app_name(argv)
        try:
            site.add_app(existing, template, launch="script", description=f"made by balsam qsub for: {shlex.join(argv)}")
        except BalsamError:
            with site.session() as session:  # made meanwhile by a qsub racing this one?
                if session.scalar(select(App.id).where(App.name == existing)) is None:
                    raise
    data = {"qsub": {"project": project, "queue": queue}} if project or queue else {}
    return site.add_job(existing, name=name or Path(argv[0]).name, workflow=workflow, nodes=nodes, wall_time_min=minutes,
                        tags={"qsub": "true"}, data=data)  # fmt: skip
