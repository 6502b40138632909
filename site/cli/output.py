"""How the CLI shows things: rich tables for people, ``--json`` for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from balsam import terminal
if TYPE_CHECKING:  # the models (SQLAlchemy) load with the first command that reads the database
    from balsam.site.db.models import App, Job, JobEvent

# What data holds is shown, never obeyed: controls escaped, no markup (balsam.terminal).
console = terminal.LazyConsole()
err_console = terminal.LazyConsole(stderr=True)
# Free-text columns wrap; every other column keeps its values whole.
_WRAPPING = frozenset({"PARAMS", "TAGS", "MESSAGE", "COMMAND", "VALUE", "ENV", "DESCRIPTION"})


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    terminal.print_table(console, columns, rows, _WRAPPING, title)


def compact(mapping: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in mapping.items())


def app_record(app: App) -> dict[str, Any]:
    return {
        "name": app.name, "command": app.command_template, "parameters": app.parameters, "env": app.environment,
        "preprocess": app.preprocess, "postprocess": app.postprocess, "on_error": app.on_error,
        "max_retries": app.max_retries, "on_timeout": app.on_timeout, "image": app.image,
        "description": app.description, "launch": app.launch, "created_at": app.created_at,
    }  # fmt: skip


def job_record(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "name": job.name, "workflow": job.workflow, "app": job.app.name, "state": job.state,
        "params": job.parameters, "nodes": job.nodes, "ranks_per_node": job.ranks_per_node,
        "threads_per_rank": job.threads_per_rank, "gpus_per_rank": job.gpus_per_rank,
        "node_packing_count": job.node_packing_count, "wall_time_min": job.wall_time_min, "tags": job.tags, "data": job.data,
        "inputs": job.input_files, "outputs": job.output_files, "stage_in": job.stage_in, "stage_out": job.stage_out,
        "return_code": job.return_code,
        "error_tail": job.error_tail, "retry_count": job.retry_count, "pending_parents": job.pending_parents,
        "created_by": job.created_by, "created_at": job.created_at, "updated_at": job.updated_at,
    }  # fmt: skip


def event_record(event: JobEvent) -> dict[str, Any]:
    return {"time": event.timestamp, "from": event.from_state, "to": event.to_state, "message": event.message}


def local_time(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
