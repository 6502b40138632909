"""The one error type that reaches a user as a plain message (CLI exit status 1), not a traceback."""

from typing import Any


class BalsamError(Exception):
    """A problem the user can fix: bad input, a missing site, an illegal request."""


class BadRequest(BalsamError):
    """The request itself is wrong (a bad name, a negative count, a malformed message), whatever is stored."""


class NotFound(BalsamError):
    """The request names a workflow, task, job or site that is not there."""


class IllegalTransition(BalsamError):
    """A job was asked to move between two states that the state machine does not connect."""

    def __init__(self, job_id: int | None, from_state: str, to_state: str) -> None:
        who = f"job {job_id}" if job_id is not None else "a job"
        super().__init__(f"illegal transition for {who}: {from_state} -> {to_state}")
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state


class IllegalTaskMove(IllegalTransition):
    """The coordinator was asked to move an Argo task in a way its table of moves does not allow."""

    def __init__(self, task_id: str, move: str, from_state: str, to_state: str) -> None:
        BalsamError.__init__(self, f"illegal move '{move}' for task {task_id}: {from_state or '(new)'} -> {to_state}")
        self.job_id = None
        self.task_id = task_id
        self.move = move
        self.from_state = from_state
        self.to_state = to_state


class SpecError(BalsamError):
    """Every problem found in a request (a workflow, a task, a job), each naming what it is about."""

    MAX_SHOWN = 20  # problems listed by str()

    def __init__(self, problems, source: str | None = None) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        self.source = source  # the file (or "spec") the problems were found in, if any
        super().__init__(self.problems, source)

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return prefix + self.problems[0]
        lines = [f"{prefix}{len(self.problems)} problems:"]
        lines += [f"  {problem}" for problem in self.problems[: self.MAX_SHOWN]]
        if len(self.problems) > self.MAX_SHOWN:
            lines.append(f"  ... and {len(self.problems) - self.MAX_SHOWN} more")
        return "\n".join(lines)


def describe(value: Any) -> str:
    """A value's type and a short repr, for "got ..." in messages (a value may be huge)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"int of about {int(value.bit_length() * 0.30103) + 1} digits"  # repr() refuses over 4,300
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if isinstance(value, str) else f"{type(value).__name__} {text}"
