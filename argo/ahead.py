"""Which waiting tasks go to their parents' site before their parents end: a pure function over plain rows.

A task sent ahead becomes a job at that site waiting for its parents' jobs; their end releases it in
the site's own database, in the launcher's commit of that end, and the next launcher look starts it.
The coordinator is then off the path from a parent's end to its child's start: two transactions
instead of a report, a release, a placement round, an assignment and its confirmation.

A waiting task (AWAITING_PARENTS, unplaced, not blocked) is sent ahead to site S when

1. every parent that has not finished is placed at S and has not ended (one site for all of them:
   the child's job can wait only for jobs of its own site);
2. each of its inputs that is an output of such a parent is one that parent declares: the site is
   told it as ``TASK/OUTPUT`` and finds it in that parent's job folder, where it will be once the
   parent ends (its stage-in, a link on the same filesystem, runs once the child is released);
3. S is up, offers its app and has no cap on its tasks (a cap means: hold the work back here);
4. it could go to no other site: it is pinned to S, or no other site that is up offers its app.

Rule 4 is why sending ahead costs nothing: placement, choosing when the task is released, would have
no choice either. A task that another site could take waits to be placed when it is released, by
the load of the sites then (sent ahead by its parents' site alone, the tasks of a workflow whose
first one landed at one site all followed it there: WfCommons' Epigenomics ran 1.55x Parsl's
makespan in one run instead of 1.05x, every task at one of two sites). So a chain pinned to one site, or a
workflow at a one-site federation, goes ahead whole.

What goes ahead is fenced as every assignment is (it starts only once the site has confirmed it, and
under the site's lease), and taken back when a task it waits for fails or is killed
(``taskstore.block_descendants``: withdrawn, with a kill order to the site) or is placed again
elsewhere (``taskstore.replace`` moves every unconfirmed task of the site, and a child is sent after
its parents, so it is unconfirmed whenever one of them is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from balsam.states import FINAL_STATES, JobState

S = JobState


@dataclass(frozen=True)
class Parent:
    id: str
    name: str
    site: str | None
    state: str
    attempt: int
    outputs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SiteRoom:
    """What decides whether a site takes tasks ahead of time."""

    up: bool
    apps: frozenset[str]
    capped: bool


@dataclass(frozen=True)
class Ahead:
    task_id: str
    site: str
    waits_for: Mapping[str, int]  # the parents' task ids -> their attempts at the site


def choose(waiting: Iterable[tuple[str, str, str | None, Mapping[str, str]]], parents: Mapping[str, Sequence[Parent]],
           sites: Mapping[str, SiteRoom]) -> list[Ahead]:  # fmt: skip
    """The tasks to send ahead: ``waiting`` gives (task id, app, pin, inputs) of each candidate,
    ``parents`` each one's parents, ``sites`` each site by name."""
    chosen = []
    for task_id, app, pin, inputs in waiting:
        unfinished = [p for p in parents.get(task_id, ()) if p.state != S.JOB_FINISHED]
        where = {p.site for p in unfinished}
        if not unfinished or len(where) != 1 or None in where:
            continue
        (site,) = where
        if any(p.state in FINAL_STATES for p in unfinished):
            continue
        if pin not in (None, site):
            continue
        if pin is None and any(name != site and other.up and app in other.apps for name, other in sites.items()):
            continue  # another site could take it: placement chooses once it is released
        declared = {p.name: p.outputs for p in unfinished}
        if any("://" not in source and (parent := source.partition("/"))[0] in declared and parent[2] not in declared[parent[0]]
               for source in inputs.values()):  # fmt: skip
            continue
        room = sites.get(site)
        if room is None or not room.up or app not in room.apps or room.capped:
            continue
        chosen.append(Ahead(task_id, site, {p.id: p.attempt for p in unfinished}))
    return chosen
