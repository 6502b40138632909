"""The original Balsam (0.x) mapped onto today's model: one definition of each mapping, used by
the old commands (``balsam.site.cli.compat_cmds``) and the old Python API (``balsam.launcher.dag``).

- An old app (``--executable "echo hello,"``) is an app whose command template is the executable's
  words, taken literally, followed by ``{*args}``: a job's ``args`` parameter, split into words
  like a command line (``shlex.split``) and passed as that many arguments, never through a shell.
- An old job's ``--num-nodes``, ``--ranks-per-node``, ``--threads-per-rank``,
  ``--node-packing-count`` and ``--wall-time-minutes`` are today's resources of the same meaning.
- The states are the same as the original's (CREATED ... JOB_FINISHED, FAILED, USER_KILLED).
"""

from __future__ import annotations

import shlex
from typing import Any

from balsam.errors import BalsamError
from balsam.site.templates import literal_template

ARGS = "args"  # the parameter that carries an old job's --args
# Old option names -> today's resource fields.
RESOURCES = {
    "num_nodes": "nodes", "ranks_per_node": "ranks_per_node", "threads_per_rank": "threads_per_rank",
    "node_packing_count": "node_packing_count", "wall_time_minutes": "wall_time_min",
}  # fmt: skip


def split_words(text: str, what: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise BalsamError(f"cannot split {what} {text!r} into words: {exc}") from None


def app_command(executable: str) -> str:
    """The command template of an old app: its executable's words, then the job's ``{*args}``."""
    words = split_words(executable, "--executable")
    if not words:
        raise BalsamError("--executable is empty: give the program to run, e.g. --executable 'echo hello,'")
    return f"{literal_template(words)} {{*{ARGS}}}"


def step_command(script: str, what: str) -> str | None:
    """An old --preprocess/--postprocess (a script path, maybe with arguments), as a literal step."""
    if not script or not script.strip():
        return None
    return literal_template(split_words(script, what))


def parse_envs(envs: list[str]) -> dict[str, str]:
    """Old ``--envs``: ``K=V`` items, each maybe several joined by ':' (the old environ_vars form)."""
    found: dict[str, str] = {}
    for item in envs:
        pieces = item.split(":")
        for piece in pieces if all("=" in p for p in pieces) else [item]:
            key, sep, value = piece.partition("=")
            if not sep or not key.strip():
                raise BalsamError(f"--envs {item!r}: give variables as NAME=VALUE")
            found[key.strip()] = value
    return found


def job_fields(
    *,
    name: str | None = None,
    workflow: str | None = None,
    args: str | list[str] | None = None,
    data: dict[str, Any] | None = None,
    parents: list[int] | None = None,
    **resources: Any,
) -> dict[str, Any]:
    """Today's job fields (for ``Site.add_job``) from an old job's; unknown old fields are refused."""
    unknown = sorted(set(resources) - set(RESOURCES))
    if unknown:
        mapped = ", ".join(["name", "workflow", "args", "data", "parents", *RESOURCES])
        raise BalsamError(f"the old job field {unknown[0]!r} has no counterpart here (mapped fields: {mapped})")
    fields: dict[str, Any] = {RESOURCES[key]: value for key, value in resources.items() if value is not None}
    if name is not None:
        fields["name"] = name
    if workflow is not None:
        fields["workflow"] = workflow
    if data:
        fields["data"] = dict(data)
    if parents:
        fields["parents"] = list(parents)
    fields["params"] = {ARGS: args_text(args)}
    return fields


def args_text(args: str | list[str] | None) -> str:
    """An old job's args as one command-line text: a list (argparse's nargs='*') is joined by spaces,
    as the original Balsam did."""
    if args is None:
        return ""
    if isinstance(args, (list, tuple)):
        return " ".join(str(a) for a in args)
    return str(args)


def check_old_app(template_params: tuple[str, ...] | list[str], app: str) -> None:
    """Old-style jobs fill ``{*args}`` only: an app with other placeholders needs today's command."""
    if list(template_params) != [ARGS]:
        named = ", ".join(template_params) or "no placeholders"
        raise BalsamError(
            f"app {app!r} takes parameters {named}, not the old --args: add the job with "
            f"`balsam job add --app {app} -p NAME=VALUE ...`"
        )


def kill(site: Any, job_id: int, recursive: bool, message: str = "killed by user") -> list[int]:
    """Kill a job and, with ``recursive``, every job that depends on it (old ``killjob --recursive``);
    descendants that already ended stay as they ended. Returns the ids killed."""
    from balsam.states import FINAL_STATES, JobState

    ids, queue = [job_id], [job_id]
    while recursive and queue:
        for child in site.children(queue.pop()):
            if child not in ids:
                ids.append(child)
                queue.append(child)
    killed = []
    for one in ids:
        if one == job_id or JobState(site.job(one).state) not in FINAL_STATES:
            site.kill_job(one, message=message)
            killed.append(one)
    return killed


def modern(argv: list[str]) -> str:
    """The one line that names today's command for an old one."""
    return "Balsam 0.x command; today: " + shlex.join(argv)
