"""Test support for the store: a database per test on either backend, and
builders for calls and notifications."""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from click2dial.store import CallRecord, Notification, Store, open_store

T = TypeVar("T")

PG_URL = os.environ.get("CLICK2DIAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")
T0 = 1_700_000_000.0

_refs = itertools.count(1)


def make_call(**overrides: Any) -> CallRecord:
    values: dict[str, Any] = {
        "call_ref": f"c-{next(_refs):06d}-{uuid.uuid4().hex[:6]}",
        "integrator": "acme",
        "agent": "1001",
        "callee": "27110000099",
        "outbound_id": "27110000001",
        "outbound_id_requested": "random",
        "contact_ref": "ticket-1",
        "call_type": "outbound",
        "created_at": T0,
        "node_id": "node-a",
    }
    values.update(overrides)
    return CallRecord(**values)


def make_notification(call: CallRecord, **overrides: Any) -> Notification:
    values: dict[str, Any] = {
        "integrator": call.integrator,
        "kind": "cdr",
        "call_ref": call.call_ref,
        "payload": {"type": "cdr", "payload": {"call_ref": call.call_ref, "end_code": 16}},
        "target": "redis",
        "created_at": T0 + 10,
    }
    values.update(overrides)
    return Notification(**values)


def end_fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "ended_at": T0 + 60,
        "end_reason": "callee_hungup",
        "end_code": 16,
        "sip_status": 200,
        "sip_reason": "OK",
        "hangup_side": "callee",
    }
    values.update(overrides)
    return values


@dataclass
class Db:
    """An opened store on one backend, and the loop it lives on.

    ``run`` drives a coroutine on that loop (an ``asyncio.Runner`` is
    ``asyncio.run`` that keeps its loop between calls, which a connection
    pool needs).
    """

    kind: str
    url: str
    runner: asyncio.Runner
    store: Store

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(asyncio.wait_for(coro, 15))

    def new_store(self) -> Store:
        """Another, unopened store on the same database."""
        return open_store(self.url)

    def reopen(self) -> Store:
        self.run(self.store.close())
        self.store = self.new_store()
        self.run(self.store.open())
        return self.store

    def execute_raw(self, sql: str) -> None:
        """Run one SQL statement on the database, bypassing the store."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            try:
                conn.execute(sql)
            finally:
                conn.close()
        else:
            self.run(pg_execute(self.url, sql))


async def pg_execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_schema_url(schema: str) -> str:
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}search_path={schema}"
