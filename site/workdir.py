"""Where a job's files live: ``SITE/data/WORKFLOW/JOB_ID``, the one rule the launcher, the transfer
service and the Argo sync all follow."""

from __future__ import annotations

import re
from pathlib import Path

# Workflow names are free text; as a folder name, anything but these characters becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def workdir(data_dir: Path, workflow: str, job_id: int) -> Path:
    """The job's working folder; never outside ``data_dir``, whatever the workflow is called."""
    name = _UNSAFE.sub("_", workflow)[:100]
    if name in ("", ".", ".."):
        name = "_" + name
    return data_dir / name / str(job_id)
