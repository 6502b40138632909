"""Stopping a site: its agent, the launchers of its batch jobs, then its embedded database server.

One sequence for `balsam site stop` and for the sites ``argo demo`` and the benches make. The
launchers of queued and running batch jobs need the database: those the elastic queue submitted are
the agent's and go with it (cancelled, and for the local scheduler waited for, so they give their
jobs back while the database is still there); stopping the database under the user's own batch jobs
is refused unless ``force`` cancels them too. The agent stops before the batch jobs are listed for
cancelling, so that none it submits is missed. (With an external database, or an embedded one not
running, no batch job is cancelled: the database outlives the stop, or is not there to ask.)
Without this, a stopped site's local launchers went on for a minute or more against a database that
was gone.
"""

from __future__ import annotations

from collections.abc import Callable

from balsam.errors import BalsamError
from balsam.site.settings import SiteSettings


def stop_site(settings: SiteSettings, force: bool = False, say: Callable[[str], None] = print,
              warn: Callable[[str], None] = print) -> None:  # fmt: skip
    """Stop the site's agent, cancel the launchers' batch jobs, then stop its embedded database
    (an external one is left alone). ``say`` is told each thing done, ``warn`` what could not be."""
    from balsam.site.agent import stop_agent
    from balsam.site.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(settings) if settings.database.mode == "embedded" else None
    if server is not None and server.is_running():
        _cancel_batch_jobs(settings, force, say, warn)
    stopped_agent = stop_agent(settings)
    if stopped_agent:
        say(f"agent (pid {stopped_agent}) stopped")
    if server is None:
        say(f"site {settings.name} uses an external database server; nothing to stop")
        return
    stopped = server.stop()
    say(f"database of site {settings.name} {'stopped' if stopped else 'was not running'}")


def _cancel_batch_jobs(settings: SiteSettings, force: bool, say: Callable[[str], None], warn: Callable[[str], None]) -> None:
    from balsam.site.agent import stop_agent
    from balsam.site.api import Site
    from balsam.site.batch import BatchQueue
    from balsam.site.scheduler.base import SchedulerError

    with Site(settings) as site:
        queue = BatchQueue(site)
        try:
            queue.sync()
        except SchedulerError as exc:
            warn(f"warning: cannot ask the scheduler for its batch jobs' states ({exc}); using the last known ones")
        users = [row for row in queue.list() if row.origin != "elastic"]
        if users and not force:
            listed = ", ".join(f"{row.id} ({row.state})" for row in users)
            raise BalsamError(
                f"site {settings.name} has batch jobs whose launchers use its database: {listed}. "
                "Wait for them to end (`balsam queue ls`), cancel them (`balsam queue rm ID`), "
                "or cancel them and stop with `balsam site stop --force`"
            )
        # The agent first, then the list again: what its elastic queue submitted meanwhile is on it.
        stopped_agent = stop_agent(settings)
        if stopped_agent:
            say(f"agent (pid {stopped_agent}) stopped")
        live = queue.list()
        if not live:
            return
        for row in queue.cancel_and_wait([row.id for row in live]):
            say(f"batch job {row.id} ({row.scheduler} {row.scheduler_id or '-'}, by {row.origin}) cancelled")
        left = queue.list()
        if left:
            warn(f"warning: batch job(s) {', '.join(str(r.id) for r in left)} not known to have ended yet "
                 "(`balsam queue ls` shows them once the site is started again)")  # fmt: skip
