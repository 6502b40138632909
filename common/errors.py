"""The one error type that reaches a user as a plain message (CLI exit status 1), not a traceback."""


class BalsamError(Exception):
    """A problem the user can fix: bad input, a missing site, an illegal request."""


class IllegalTransition(BalsamError):
    """A job was asked to move between two states that the state machine does not connect."""

    def __init__(self, job_id: int | None, from_state: str, to_state: str) -> None:
        who = f"job {job_id}" if job_id is not None else "a job"
        super().__init__(f"illegal transition for {who}: {from_state} -> {to_state}")
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state
