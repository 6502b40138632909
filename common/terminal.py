"""Text for a terminal: data is shown, never obeyed.

Job names, parameters, tags, messages and app names are whatever their authors typed, and
``balsam job ls`` or ``argo tasks`` print them on someone else's terminal. Two things would let
that data act instead of being read: control characters (an escape sequence can clear the
screen, retitle the window, fake lines or hide text) and rich's markup (``[red]`` or
``[link=...]`` in a name would be interpreted). So every console of both commands is a
``Console`` from here: markup and emoji codes are off, and every string it prints has its control
characters escaped (``\\x1b``), newlines too when they would break a table row. Our own styling
is given as ``rich.text.Text`` spans, never as markup in a string.

Rich itself is imported on first use (``Console`` is made when first named, ``LazyConsole`` when
first printed to): a command that prints nothing through it, such as ``balsam --help``, does not
wait for it.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

# C0 and C1 controls, DEL, and the Unicode format characters that reorder or hide text (bidi
# overrides and isolates, zero-width marks, line and paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_CONTROL_KEEPING_LINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\x1b``), so it can only be read."""
    pattern = _CONTROL_KEEPING_LINES if keep_newlines else _CONTROL
    return pattern.sub(_escaped, text)


@functools.cache
def _console_class() -> type:
    from rich import console as rich_console
    from rich.text import Text

    class Console(rich_console.Console):
        """A rich console that never interprets what it prints: no markup, no emoji codes, controls escaped."""

        def __init__(self, stderr: bool = False) -> None:
            stream = sys.stderr if stderr else sys.stdout
            # Piped output is for reading or grepping, not for an 80-column terminal: do not fold it
            # (lines stay whole: soft wrap; tables get a wide page).
            piped = not stream.isatty()
            super().__init__(stderr=stderr, highlight=False, markup=False, emoji=False, width=250 if piped else None, soft_wrap=piped)

        def render_str(self, text: str, **options: Any) -> Text:
            options.update(markup=False, emoji=False)
            return super().render_str(shown(text, keep_newlines=True), **options)

    return Console


def __getattr__(name: str) -> Any:
    if name == "Console":  # the class, made (and rich loaded) when first named
        return _console_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LazyConsole:
    """A ``Console`` made when first used: a module can keep one at hand without loading rich."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = _console_class()(stderr=self._stderr)
        return getattr(self._console, name)


def print_table(console: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]], wrapping: Iterable[str] = (),
                title: str | None = None) -> None:  # fmt: skip
    """A plain table; each cell's text escaped (newlines too: a cell stays on its row)."""
    from rich.table import Table
    from rich.text import Text

    wrapping = frozenset(wrapping)
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in wrapping)
    for row in rows:
        table.add_row(*(Text(shown("" if cell is None else str(cell))) for cell in row))
    console.print(table)


def print_error(console: Any, message: str) -> None:
    """``error: MESSAGE`` on one line (a message of several problems keeps its own lines)."""
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), " ", shown(str(message), keep_newlines=True)), soft_wrap=True)
