"""Bulk inserts with PostgreSQL's COPY: an order of magnitude faster than INSERTs for many rows."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.orm import Session


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
    return json.dumps(value, separators=(",", ":")) if value else empty


def copy_rows(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table`` inside the session's transaction."""
    buffer = io.StringIO()
    buffer.writelines("\t".join(map(copy_field, row)) + "\n" for row in rows)
    buffer.seek(0)
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
    finally:
        cursor.close()
