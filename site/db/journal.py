"""A launcher's journal: the changes it could not write yet, kept in a file that outlives it.

While the site's database is away a launcher appends each change it has not written to
``SITE/logs/launchers/ID.journal`` (one JSON line per change, fsync'ed), and deletes the file once
they are in the database. Should the launcher die first, whoever finds it lost
(``balsam.site.db.leases.reap_lost``, run by the agent and by other launchers) applies the journal
before taking its jobs back: a finished task stays finished, and is not run again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from balsam.site.db.jobstore import Change
from balsam.states import JobState, Step


def journal_path(logs_dir: Path, launcher_id: int) -> Path:
    return Path(logs_dir) / "launchers" / f"{launcher_id}.journal"


def append(path: Path, changes: Sequence[Change], rescues: dict[int, dict[str, Any]]) -> None:
    """Add changes not written yet to the journal, durably (fsync): they survive this process."""
    if not changes:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for change in changes:
        doc = {"job": change.job_id, "steps": [[s.state.value, s.message, s.at.isoformat() if s.at else None] for s in change.steps],
               "fields": change.fields}  # fmt: skip
        if change.job_id in rescues:
            doc["rescue"] = rescues[change.job_id]
        lines.append(json.dumps(doc, default=str) + "\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, "".join(lines).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> tuple[list[Change], dict[int, dict[str, Any]]]:
    """The journal's changes and rescue specs (a torn last line, from a crash mid-write, is left out)."""
    changes: list[Change] = []
    rescues: dict[int, dict[str, Any]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return changes, rescues
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        steps = [Step(JobState(state), message, datetime.fromisoformat(at) if at else None) for state, message, at in doc["steps"]]
        changes.append(Change(int(doc["job"]), steps, dict(doc.get("fields") or {})))
        if "rescue" in doc:
            rescues[int(doc["job"])] = doc["rescue"]
    return changes, rescues


@dataclass
class Journal:
    """The journal of one launcher: what it appended since its last successful write."""

    path: Path
    _kept: set[int] = field(default_factory=set)  # id() of the changes in the file already
    _rescued: set[int] = field(default_factory=set)

    def keep(self, changes: Sequence[Change], rescues: dict[int, dict[str, Any]]) -> None:
        """Append the changes (and rescue specs) not in the file yet; ``changes`` is every one not written."""
        new = [change for change in changes if id(change) not in self._kept]
        append(self.path, new, {k: v for k, v in rescues.items() if k not in self._rescued})
        self._kept.update(id(change) for change in new)
        self._rescued |= set(rescues)

    def clear(self) -> None:
        """Everything in it is in the database now."""
        if self._kept or self._rescued:
            self.path.unlink(missing_ok=True)
        self._kept = set()
        self._rescued = set()
