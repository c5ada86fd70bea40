"""Registrar bindings in the store: written, replaced, read back, expired and
purged — on SQLite and PostgreSQL alike."""

from __future__ import annotations

from dataclasses import replace

from click2dial.store import Binding
from tests.store.support import Db


def binding(contact: str, expires_at: float, **extra: object) -> Binding:
    fields: dict[str, object] = {
        "agent": "1001", "contact": contact, "expires_at": expires_at, "transport": "tcp",
        "host": "203.0.113.9", "port": 40123, "call_id": "reg-1@x", "cseq": 3,
        "node_id": "n1", "updated_at": 1000.0,
    } | extra  # fmt: skip
    return Binding(**fields)  # type: ignore[arg-type]


def test_bindings_round_trip_replace_expire_and_purge(db: Db) -> None:
    a = binding("sip:1001@10.0.0.5:5060", 2000.0)
    b = binding("sip:1001@10.0.0.6:5070;transport=tcp", 1500.0, port=40200)
    other = binding("sip:1002@10.0.0.7", 2000.0, agent="1002")

    async def main() -> None:
        store = db.store
        for item in (a, b, other):
            await store.save_binding(item)
        assert await store.bindings("1001", now=1000.0) == [a, b]
        assert await store.bindings(now=1000.0) == [a, b, other]
        # A refresh replaces the row of (agent, contact).
        refreshed = replace(a, expires_at=3000.0, cseq=4, port=40999)
        await store.save_binding(refreshed)
        assert await store.bindings("1001", now=1000.0) == [refreshed, b]
        # Expired rows are not read, then purged.
        assert await store.bindings("1001", now=1600.0) == [refreshed]
        assert await store.purge_bindings(1600.0) == 1
        assert await store.bindings("1001", now=0.0) == [refreshed]
        assert await store.delete_binding("1001", refreshed.contact)
        assert not await store.delete_binding("1001", refreshed.contact)
        assert await store.bindings("1001", now=0.0) == []
        assert await store.bindings("1002", now=0.0) == [other]

    db.run(main())
