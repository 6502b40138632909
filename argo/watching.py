"""``argo watch``: plain event lines, or on a terminal a live display of where the work stands.

Piped (or with ``--events``) it prints one line per event, as a log to read or grep. On a terminal
it draws, redrawn four times a second: the task counts by state with a bar coloured by state, the
rate at which tasks end (``balsam.progress.Throughput`` over the events' own times) and the time
left at that rate, and the last few events. The counts come from the coordinator's Summary (the
truth, also for tasks whose events were filtered out or happened before the stream began), asked
again at most twice a second while events arrive and every two seconds otherwise; the events come
from the Watch stream, read on a thread of its own so that the display keeps its pace.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from balsam.progress import Throughput, duration_text
from balsam.states import FINAL_STATES, JobState
from balsam.terminal import shown

RECENT = 8  # event lines under the counts
BAR_WIDTH = 50
COUNTS_BUSY_S, COUNTS_IDLE_S = 0.5, 2.0  # how often the counts are asked again, with and without events
STYLE = {"JOB_FINISHED": "green", "FAILED": "red", "USER_KILLED": "magenta", "RUNNING": "yellow", "RUN_ERROR": "red",
         "RUN_TIMEOUT": "red", "RESTART_READY": "yellow", "AWAITING_PARENTS": "bright_black"}  # fmt: skip
ORDER = [s.value for s in JobState]
FINAL = {s.value for s in FINAL_STATES}


def event_line(event: Any) -> str:
    """One event as one line: ``HH:MM:SS.mmm  TASK @SITE  FROM -> TO  MESSAGE`` (or a workflow's end, a site's news)."""
    from balsam.wire.convert import state_name

    when = event.at.ToDatetime().strftime("%H:%M:%S.%f")[:-3]  # milliseconds: DAG hops take a few
    if event.workflow_status:
        return f"{when}  workflow {event.workflow_id} {event.workflow_status}: {event.message}"
    if not event.task_id:  # a site's own news: its health
        return f"{when}  {event.message}"
    before = state_name(event.from_state) if event.from_state else "-"
    where = f" @{event.site}" if event.site else ""
    return f"{when}  {event.task_id}{where}  {before} -> {state_name(event.to_state)}  {event.message}"


class Board:
    """What the live display shows: counts by state, the rate of endings, the last events."""

    def __init__(self, workflow_id: int, window_s: float = 60.0) -> None:
        self.workflow_id = workflow_id
        self.title = f"workflow {workflow_id}" if workflow_id else "every workflow"
        self.status = ""
        self.counts: dict[str, int] = {}
        self.ended = Throughput(window_s)
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.events = 0

    def saw(self, event: Any) -> None:
        from balsam.wire.convert import state_name

        self.events += 1
        self.recent.append(event_line(event))
        if event.workflow_status:
            self.status = event.workflow_status
        elif event.task_id and event.to_state and state_name(event.to_state) in FINAL:
            self.ended.add(1, event.at.ToDatetime().timestamp() if event.at.seconds else None)

    def counted(self, counts: dict[str, int]) -> None:
        self.counts = dict(counts)

    def render(self, now: float | None = None) -> Group:
        total = sum(self.counts.values())
        done = sum(n for s, n in self.counts.items() if s in FINAL)
        head = Text.assemble((shown(self.title), "bold"), f"{': ' + shown(self.status) if self.status else ''} · {total:,} tasks · {done:,} ended")
        if total:
            head.append(f" ({100 * done / total:.1f}%)")
        rate = self.ended.rate(now)
        left = self.ended.time_left_s(total - done, now)
        pace = Text(f"rate {rate:,.1f} tasks/s (last {self.ended.window_s:.0f} s) · time left "
                    f"{'none' if total and done == total else ('about ' + duration_text(left)) if left is not None else '? (no task has ended yet)'}")  # fmt: skip
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("STATE")
        table.add_column("TASKS", justify="right")
        for state in sorted(self.counts, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
            table.add_row(Text(shown(state), style=STYLE.get(state, "")), f"{self.counts[state]:,}")
        recent = Text("\n".join(shown(line) for line in self.recent) or "(no event yet)", style="bright_black")
        return Group(head, self._bar(total), pace, table, Text(f"last events ({self.events:,} seen):", style="bold"), recent)

    def _bar(self, total: int) -> Text:
        bar = Text()
        if not total:
            return Text("·" * BAR_WIDTH, style="bright_black")
        shown_cells = 0
        for state in sorted(self.counts, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
            cells = round(BAR_WIDTH * self.counts[state] / total)
            cells = min(cells, BAR_WIDTH - shown_cells)
            bar.append("█" * cells, style=STYLE.get(state, "blue"))
            shown_cells += cells
        bar.append("░" * (BAR_WIDTH - shown_cells), style="bright_black")
        return bar


def counts_now(client: Any, workflow_id: int, site: str) -> dict[str, int]:
    """The coordinator's task counts by state (of one workflow, or of every one the caller may see)."""
    counts: Counter[str] = Counter()
    for row in client.summary(workflow_id, site):
        counts[row["state"]] += row["count"]
    return dict(counts)


def print_events(client: Any, console: Any, workflow_id: int, site: str, states: list[str]) -> None:
    """The plain form: one line per event, history first, until the workflow ends."""
    for event in client.watch(workflow_id, site=site, states=states, until_done=bool(workflow_id)):
        console.print(event_line(event))


def show_live(client: Any, console: Any, workflow_id: int, site: str, states: list[str]) -> str:
    """The live display, until the workflow ends (or, for every workflow, until interrupted); the
    workflow's final status ('' when it did not end)."""
    from rich.live import Live

    board = Board(workflow_id)
    if workflow_id:
        report = client.status(workflow_id)
        board.title = f"workflow {workflow_id} {report['name']!r}"
        board.status = report["status"]
    events: queue.Queue[Any] = queue.Queue()
    failure: list[BaseException] = []
    end = object()

    def read() -> None:
        try:
            for event in client.watch(workflow_id, site=site, states=states, until_done=bool(workflow_id)):
                events.put(event)
        except BaseException as exc:  # noqa: BLE001 (shown by the main thread)
            failure.append(exc)
        finally:
            events.put(end)

    threading.Thread(target=read, name="watch", daemon=True).start()
    board.counted(counts_now(client, workflow_id, site))
    asked = time.monotonic()
    with Live(board.render(), console=getattr(console, "made", console), refresh_per_second=4, transient=False) as live:
        finished = False
        while not finished:
            fresh = False
            try:
                item = events.get(timeout=0.25)
                while True:  # everything that has arrived, then one redraw
                    if item is end:
                        finished = True
                        break
                    board.saw(item)
                    fresh = True
                    item = events.get_nowait()
            except queue.Empty:
                pass
            if finished or time.monotonic() - asked >= (COUNTS_BUSY_S if fresh else COUNTS_IDLE_S):
                board.counted(counts_now(client, workflow_id, site))
                asked = time.monotonic()
            live.update(board.render())
    if failure:
        raise failure[0]
    return board.status
