"""What a job or an Argo task asks of the machine: one type, one naming and one set of checks.

A site's job (``balsam job add --nodes 2``, a job file's ``nodes: 2``) and an Argo task (a workflow
spec's ``resources: {nodes: 2}``) name the same things the same way, and both are checked here.
The database columns and the wire message (``balsam.v1.Resources``) use the same names.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from balsam.errors import describe

MAX_COUNT = 2**31 - 1  # the counts travel as int32 and are stored as integer
MAX_WALL_TIME_MIN = 10**7  # about 19 years: anything above is a slip (and a huge integer would not fit a float)
COUNT_MINIMUMS = {"nodes": 1, "ranks_per_node": 1, "threads_per_rank": 1, "gpus_per_rank": 0, "node_packing_count": 1}


@dataclass(frozen=True, slots=True)
class Resources:
    nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    gpus_per_rank: int = 0
    # How many such jobs share one node (serial mode): each takes 1/node_packing_count of it.
    node_packing_count: int = 1
    wall_time_min: float | None = None  # an estimate, for sizing batch jobs and placement

    def given(self) -> dict[str, Any]:
        """The fields that differ from the defaults: what a user would have had to write."""
        if self is DEFAULT:  # most tasks: no field to compare
            return {}
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) != getattr(DEFAULT, name)}


FIELDS = tuple(f.name for f in fields(Resources))
DEFAULT = Resources()  # shared: most jobs of a big campaign ask for nothing special


def resources_from(values: Mapping[Any, Any], prefix: str = "") -> tuple[Resources, list[str]]:
    """Resources from ``{name: value}`` (a missing or None value: the default), and the problems
    found, each naming its field as ``prefix + name``; with problems, the resources are the defaults."""
    problems: list[str] = []
    given: dict[str, Any] = {}
    for key, value in values.items():
        if key not in COUNT_MINIMUMS and key != "wall_time_min":
            close = difflib.get_close_matches(key, FIELDS, n=1) if isinstance(key, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(FIELDS)})"
            problems.append(f"unknown resource {describe(key)}{hint}")
        elif value is not None:
            problem = value_problem(key, value)
            if problem:
                problems.append(f"{prefix}{key} {problem}")
            else:
                given[key] = float(value) if key == "wall_time_min" else value
    if problems:
        return DEFAULT, problems
    return (Resources(**given) if given else DEFAULT), []


def value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the resource ``name`` (which must be one), or None."""
    low = COUNT_MINIMUMS.get(name)
    if low is not None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
            return f"must be a whole number from {low} to {MAX_COUNT}, got {describe(value)}"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_WALL_TIME_MIN:
        return f"must be a positive number of minutes up to {MAX_WALL_TIME_MIN}, got {describe(value)}"
    return None
