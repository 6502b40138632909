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
import shutil
import sys
import unicodedata
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
            super().__init__(stderr=stderr, highlight=False, markup=False, emoji=False, width=PIPED_WIDTH if piped else None, soft_wrap=piped)

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

    @property
    def stream(self) -> Any:
        """Where it writes (the current sys.stdout or sys.stderr), without making the console."""
        return sys.stderr if self._stderr else sys.stdout

    def print(self, *objects: Any, **options: Any) -> None:
        """Plain text is written as the console would (controls escaped, lines whole; the terminal
        folds a long one) without loading rich; styled text and options go through rich."""
        if options or not all(isinstance(item, str) for item in objects):
            return self.__getattr__("print")(*objects, **options)
        stream = self.stream
        stream.write(shown(" ".join(objects), keep_newlines=True) + "\n")
        stream.flush()

    @property
    def made(self) -> Any:
        """The rich ``Console`` itself, for what takes one (``Live``, ``Progress``): they use it as a
        context manager, which this stand-in cannot forward (Python looks such methods up on the type)."""
        if self._console is None:
            self._console = _console_class()(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made, name)


def print_table(console: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]], wrapping: Iterable[str] = (),
                title: str | None = None) -> None:  # fmt: skip
    """A plain table: columns two spaces apart, each cell's text escaped (newlines too: a cell stays
    on its row). Written here rather than by rich, whose table layout of a hundred rows took longer
    than all the rest of `balsam job ls`. On a terminal the header is bold and the ``wrapping``
    columns wrap to fit its width; piped output gets a page 250 columns wide, as the consoles do."""
    stream = console.stream if isinstance(console, LazyConsole) else console.file
    terminal = stream.isatty()
    width = shutil.get_terminal_size().columns if terminal else PIPED_WIDTH
    cells = [[shown("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [max([_width(column), *(_width(row[i]) for row in cells)]) for i, column in enumerate(columns)]
    _fit(widths, [i for i, column in enumerate(columns) if column in frozenset(wrapping)], columns, width)
    lines = [title] if title else []
    header = "  ".join(_pad(column, w) for column, w in zip(columns, widths, strict=True))
    lines.append(f"\x1b[1m{header}\x1b[0m" if terminal else header)
    for row in cells:
        parts = [_wrap(cell, w) for cell, w in zip(row, widths, strict=True)]
        for k in range(max(len(part) for part in parts)):
            lines.append("  ".join(_pad(part[k] if k < len(part) else "", w) for part, w in zip(parts, widths, strict=True)))
    stream.write("\n".join(lines) + "\n")
    stream.flush()


PIPED_WIDTH = 250  # the page of piped output (Console does the same)


def _width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text) if not text.isascii() else len(text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _fit(widths: list[int], wrapping: list[int], columns: Sequence[str], page: int) -> None:
    """Narrow the wrapping columns (widest first, never below their header or 10) until the row fits the page."""
    excess = sum(widths) + 2 * (len(widths) - 1) - page
    while excess > 0:
        room = [i for i in wrapping if widths[i] > max(10, _width(columns[i]))]
        if not room:
            return  # it cannot fit: the terminal folds it
        widest = max(room, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1


def _wrap(text: str, width: int) -> list[str]:
    if _width(text) <= width:
        return [text]
    lines, line = [], ""
    for word in text.split(" "):
        while _width(word) > width:  # a word longer than the column is cut
            if line:
                lines.append(line)
                line = ""
            cut = width
            while _width(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{line} {word}" if line else word
        if _width(candidate) <= width:
            line = candidate
        else:
            lines.append(line)
            line = word
    lines.append(line)
    return lines


def print_error(console: Any, message: str) -> None:
    """``error: MESSAGE`` on one line (a message of several problems keeps its own lines)."""
    from rich.text import Text

    console.print(Text.assemble(("error:", "bold red"), " ", shown(str(message), keep_newlines=True)), soft_wrap=True)
