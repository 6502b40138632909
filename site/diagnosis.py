"""What is wrong with a site, in plain words: what `balsam site status` (and `site start`) tell a user.

Each finding is one sentence that names the problem and the command that fixes it: a site linked
to Argo but not enrolled or not connected, jobs waiting while nothing will run them (the elastic
queue off, no batch job, no launcher), jobs too big for any batch job the site can have, and
children blocked by a parent that failed or was killed. Read-only: it changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

# Enough ids to act on; the count says how many there are in all.
_SHOWN = 5


def argo_findings(settings: Any, agent: dict[str, Any]) -> list[str]:
    """The site's link to its coordinator, from its settings, credential and the agent's report."""
    address = settings.argo.address
    if not address:
        return []
    found = []
    enrol = (f"ask the coordinator's owner for an enrolment token (`argo site enrol {settings.name}` there), then "
             f"`balsam site start --argo {address} --enrol-token TOKEN` here")  # fmt: skip
    if not settings.argo_credential_file.exists():
        found.append(f"not enrolled with Argo at {address}: this site has no credential; {enrol}")
    if not agent.get("running"):
        found.append(f"linked to Argo at {address}, but no agent runs to sync with it: `balsam site start`")
        return found
    link = agent.get("argo") or {}
    if link and not link.get("connected"):
        error = str(link.get("last_error") or "no answer yet")
        line = f"not connected to Argo at {address}: {error}"
        if "UNAUTHENTICATED" in error and settings.argo_credential_file.exists():
            line += f"; the coordinator does not accept this site's credential (revoked, expired, or another coordinator): {enrol}"
        found.append(line)
    return found


def job_findings(site: Any, agent: dict[str, Any]) -> list[str]:
    """Jobs that wait for something that will not come, from the site's database."""
    settings = site.settings
    found = []
    with site.session() as session:
        waiting = session.execute(
            text("SELECT count(*) FROM jobs WHERE state IN ('READY', 'RESTART_READY', 'STAGED_IN', 'PREPROCESSED')")
        ).scalar_one()
        live_batch = session.execute(
            text("SELECT count(*) FROM batch_jobs WHERE state IN ('pending_submission', 'queued', 'running')")
        ).scalar_one()
        launchers = session.execute(
            text("SELECT count(*) FROM launchers WHERE state = 'running' "
                 "AND heartbeat_at > now() - make_interval(secs => lease_seconds)")  # fmt: skip
        ).scalar_one()
        limit, why = node_limit(settings)
        big = []
        if limit is not None:
            big = session.execute(
                text("SELECT id, nodes FROM jobs WHERE nodes > :limit AND state NOT IN ('JOB_FINISHED', 'FAILED', 'USER_KILLED') "
                     "ORDER BY id LIMIT :shown"),
                {"limit": limit, "shown": _SHOWN + 1},
            ).all()  # fmt: skip
        blocked = session.execute(
            text("SELECT c.id AS child, p.parent_id AS parent, j.state FROM jobs c "
                 "JOIN job_parents p ON p.child_id = c.id JOIN jobs j ON j.id = p.parent_id "
                 "WHERE c.state = 'AWAITING_PARENTS' AND j.state IN ('FAILED', 'USER_KILLED') ORDER BY c.id, p.parent_id")
        ).all()  # fmt: skip
    if waiting and not live_batch and not launchers:
        if not settings.elastic_queue.enabled:
            found.append(f"{waiting} job(s) wait to run, but nothing will run them: the elastic queue is off and no batch job "
                         "or launcher is up; turn it on (`balsam site set --elastic-queue`), or submit one "
                         "(`balsam submit-launch -n NODES -t MINUTES`), or run here (`balsam launcher --until-idle`)")  # fmt: skip
        elif not agent.get("running"):
            found.append(f"{waiting} job(s) wait to run and the elastic queue is on, but no agent runs it: `balsam site start`")
    if big:
        shown = ", ".join(f"job {row.id} ({row.nodes} nodes)" for row in big[:_SHOWN]) + (", ..." if len(big) > _SHOWN else "")
        found.append(f"job(s) too big for any batch job here ({why}): {shown}; give them fewer nodes "
                     "(`balsam job modify ID --nodes N`) or the site a scheduler that has more")  # fmt: skip
    if blocked:
        children = sorted({row.child for row in blocked})
        example = blocked[0]
        found.append(f"{len(children)} job(s) wait for a parent that ended without finishing, and will not run: e.g. job "
                     f"{example.child} waits for job {example.parent} ({example.state}); reset the parent "
                     f"(`balsam job reset {example.parent}`) or kill the waiting job (`balsam job kill {example.child}`)")  # fmt: skip
    return found


def node_limit(settings: Any) -> tuple[int | None, str]:
    """The most nodes one batch job of this site can have, and why; None when only the scheduler knows."""
    if settings.scheduler.name == "local":
        return 1, "the local scheduler has this host alone: 1 node"
    if settings.elastic_queue.enabled:
        return settings.elastic_queue.max_nodes, f"elastic_queue.max_nodes is {settings.elastic_queue.max_nodes}"
    return None, ""
