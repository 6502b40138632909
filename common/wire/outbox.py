"""The numbered, exactly-once message protocol, the same in both directions of the sync channel.

A sender numbers its messages 1, 2, 3, ... per peer, in the transaction that decides them (the
counter is a column of a row the numbering locks), and keeps each in an outbox table until the peer
acknowledges it. A receiver applies a batch and records the highest number applied in one
transaction; numbers it has applied are skipped, a gap is refused (``SyncGap``: the peer must
resend from the last acknowledgement). After a reconnection each side tells the other the highest
number it applied, and sending resumes from there. Nothing is lost (a message leaves the outbox only
once applied) and nothing is applied twice (the high mark moves with the apply).

Envelopes are sized by bytes, not by count: ``pending`` returns messages whose bodies add up to at
most ``ENVELOPE_BYTES`` (but always at least one), well inside the channel's message limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session

from balsam.errors import BadRequest, BalsamError
from balsam.pgcopy import copy_rows

MAX_SEQ = 2**63 - 1  # numbers are stored as bigint
ENVELOPE_BYTES = 4 * 1024 * 1024  # a quarter of balsam.wire.channel.MAX_MESSAGE_BYTES
MAX_BATCH = 500


class SyncGap(BalsamError):
    """A peer skipped message numbers: it must reconnect and resend from the last acknowledgement."""


class BadSequence(BadRequest):
    """A sequence number no sender could have given (negative, or beyond a bigint)."""


class Numbered(Protocol):
    seq: int

    def SerializeToString(self) -> bytes: ...


M = TypeVar("M", bound=Numbered)


def check_seq(seq: int, what: str) -> int:
    if not 0 <= seq <= MAX_SEQ:
        raise BadSequence(f"{what} {seq} is not a message number (0 to {MAX_SEQ})")
    return seq


def fresh(messages: Sequence[M], last_applied: int, peer: str) -> list[M]:
    """The messages not applied yet, checked to follow ``last_applied`` without a gap."""
    expected = last_applied + 1
    new = []
    for message in messages:
        check_seq(message.seq, f"{peer}: message number")
        if message.seq < expected:
            continue  # applied before: a resend after a lost acknowledgement
        if message.seq != expected:
            raise SyncGap(f"{peer}: expected message {expected}, got {message.seq}")
        new.append(message)
        expected += 1
    return new


@dataclass(frozen=True)
class Outbox:
    """An outbox table ``(seq, body)`` (with ``key_column`` when it holds messages for several peers)
    and the row whose ``last_seq`` numbers them (``counter_table``, keyed by ``counter_key``).

    Numbering locks the counter's row until the transaction ends, so keep in that row nothing else
    that other transactions write (the coordinator's sites have a table of counters of their own)."""

    table: str
    counter_table: str
    key_column: str | None = None
    counter_key: str | None = None

    def enqueue(self, session: Session, messages: Sequence[Numbered], key: str | None = None) -> None:
        """Number ``messages`` after the peer's last number (setting their ``seq``) and keep them."""
        if not messages:
            return
        where, args = self._where(self.counter_key, key)
        last = session.execute(
            text(f"UPDATE {self.counter_table} SET last_seq = last_seq + :n {where} RETURNING last_seq"), {"n": len(messages), **args}
        ).scalar_one()
        first = last - len(messages) + 1
        rows = []
        for offset, message in enumerate(messages):
            message.seq = first + offset
            body = "\\x" + message.SerializeToString().hex()
            rows.append((key, message.seq, body) if self.key_column else (message.seq, body))
        columns = (self.key_column, "seq", "body") if self.key_column else ("seq", "body")
        copy_rows(session, self.table, columns, rows)

    def last_seq(self, session: Session, key: str | None = None) -> int:
        """The highest number given so far (committed, or by this transaction), without locking it."""
        where, args = self._where(self.counter_key, key)
        return int(session.execute(text(f"SELECT last_seq FROM {self.counter_table} {where}"), args).scalar_one())

    def pending(self, session: Session, after: int, key: str | None = None, max_bytes: int = ENVELOPE_BYTES,
                limit: int = MAX_BATCH) -> list[bytes]:  # fmt: skip
        """The serialized messages after number ``after``, in order: as many as fit in ``max_bytes``
        (at least one), at most ``limit``."""
        where, args = self._where(self.key_column, key, "AND")
        return list(session.execute(
            text(
                "SELECT body FROM ("
                "  SELECT seq, body, sum(octet_length(body)) OVER (ORDER BY seq) AS upto, row_number() OVER (ORDER BY seq) AS i"
                f"  FROM (SELECT seq, body FROM {self.table} WHERE seq > :after {where} ORDER BY seq LIMIT :n) first_ones"
                ") sized WHERE upto <= :max OR i = 1 ORDER BY seq"
            ),
            {"after": after, "n": limit, "max": max_bytes, **args},
        ).scalars())  # fmt: skip

    def acknowledge(self, session: Session, seq: int, key: str | None = None) -> None:
        """The peer applied every message up to ``seq``: they can go."""
        where, args = self._where(self.key_column, key, "AND")
        session.execute(text(f"DELETE FROM {self.table} WHERE seq <= :seq {where}"), {"seq": seq, **args})

    @staticmethod
    def _where(column: str | None, key: str | None, joiner: str = "WHERE") -> tuple[str, dict[str, str]]:
        if column is None:
            return "", {}
        return f"{joiner} {column} = :key", {"key": key}
