"""Bulk inserts with PostgreSQL's COPY: an order of magnitude faster than INSERTs for many rows.

``copy_rows`` takes rows of Python values; a hot caller (``site.db.jobstore.insert_jobs``) formats
its lines itself with ``copy_field`` and ``json_copy_field`` and hands them to ``copy_lines``, so
that no per-row tuple or per-field call is made for what is the same for many rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2
from sqlalchemy.orm import Session

# One encoder for every JSON column: ``json.dumps`` with options builds a new encoder per call.
_encode = json.JSONEncoder(separators=(",", ":")).encode

# Characters COPY asks for at a time: large enough that each round trip carries many rows.
_CHUNK = 256 * 1024


def copy_field(value: Any) -> str:
    """One field of PostgreSQL's COPY text format."""
    if value is None:
        return r"\N"
    text_value = value if isinstance(value, str) else str(value)
    if "\\" in text_value or "\t" in text_value or "\n" in text_value or "\r" in text_value:
        text_value = text_value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text_value


def json_field(value: Any, empty: str) -> str:
    """A JSON column's text; ``empty`` for a falsy value (the common case, skipping the encoder)."""
    return _encode(value) if value else empty


def json_copy_field(value: Any, empty: str) -> str:
    """A JSON column's text as a COPY field (``copy_field(json_field(value, empty))``).

    The encoder escapes every control character and every non-ASCII one, so only a backslash
    (of an escape it wrote) needs doubling for COPY.
    """
    if not value:
        return empty
    text_value = _encode(value)
    return text_value.replace("\\", "\\\\") if "\\" in text_value else text_value


class _LineReader(io.TextIOBase):
    """A file over an iterable of lines, read by COPY as it sends.

    Lines are made only when COPY asks for the next chunk, so the server parses and indexes one
    chunk while Python makes the next: on two cores the two overlap instead of taking turns.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.failure: BaseException | None = None  # what the lines raised, for copy_lines to raise again

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        try:
            return self._read(size)
        except BaseException as exc:
            self.failure = exc
            raise

    def _read(self, size: int | None) -> str:
        if size is None or size < 0:
            return "".join(self._lines)
        chunk: list[str] = []
        length = 0
        for line in self._lines:
            chunk.append(line)
            length += len(line)
            if length >= size:
                break
        return "".join(chunk)


def copy_lines(session: Session, table: str, columns: Sequence[str], lines: Iterable[str]) -> None:
    """COPY already formatted lines (fields by ``copy_field``, tab-separated, newline-ended) into ``table``.

    ``lines`` may be a generator: it is drawn as COPY sends (see ``_LineReader``); an exception it
    raises aborts the COPY, and the session's transaction with it.
    """
    reader = _LineReader(lines)
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", reader, size=_CHUNK)
    except psycopg2.Error:
        if reader.failure is not None:  # psycopg2 reports it as a cancelled COPY; the cause is ours
            raise reader.failure from None
        raise
    finally:
        cursor.close()


def copy_rows(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table`` inside the session's transaction."""
    copy_lines(session, table, columns, ("\t".join(map(copy_field, row)) + "\n" for row in rows))
