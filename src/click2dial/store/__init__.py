"""Persistence for calls and the notification outbox.

``open_store(url)`` picks the backend from the database URL in the
configuration; everything else talks to the :class:`Store` interface.
"""

from __future__ import annotations

from click2dial.store.base import (
    AgentBusyError,
    InvalidCursorError,
    OutboxStats,
    Store,
    StoreError,
    StoreUnavailableError,
)
from click2dial.store.migrations import SchemaTooNewError
from click2dial.store.model import Binding, CallRecord, NodeRecord, Notification

__all__ = [
    "AgentBusyError",
    "Binding",
    "CallRecord",
    "InvalidCursorError",
    "NodeRecord",
    "Notification",
    "OutboxStats",
    "SchemaTooNewError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
    "sqlite_path",
]


def sqlite_path(url: str) -> str:
    """The file behind a ``sqlite://`` URL.

    ``sqlite:///relative.db`` is relative to the working folder,
    ``sqlite:////abs/path.db`` is absolute, ``sqlite://:memory:`` (or
    ``sqlite:///:memory:``) is a throw-away in-memory database.
    """
    rest = url.removeprefix("sqlite://")
    if rest == ":memory:":
        return rest
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
        raise StoreError(
            f"bad SQLite URL {url!r}: use sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite://:memory:"
        )
    return rest[1:]


def open_store(url: str, *, shared: bool = False) -> Store:
    """A store for ``url``, not yet opened: ``await store.open()`` or use
    ``async with open_store(url) as store:``.  ``shared``: other processes
    use a SQLite file at the same time (the workers of one node).

    Raises :class:`StoreError` for a URL it cannot serve.
    """
    if url.startswith("sqlite://"):
        from click2dial.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url), shared=shared)
    if url.startswith(("postgresql://", "postgres://")):
        # Imported here so that SQLite-only installations never load asyncpg.
        from click2dial.store.postgres import PostgresStore

        return PostgresStore(url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StoreError(f"unsupported database URL scheme {scheme!r}: use sqlite:// or postgresql://")
