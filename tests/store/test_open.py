"""Opening stores: URLs, migrations (repeatable, concurrent, refusing a newer
schema) and the life cycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from click2dial.store import SchemaTooNewError, StoreError, open_store, sqlite_path
from click2dial.store.migrations import LATEST, MIGRATIONS, POSTGRES, SQLITE
from click2dial.store.postgres import PostgresStore
from click2dial.store.sqlite import SQLiteStore
from tests.store.support import Db, make_call


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///click2dial.db", "click2dial.db"),
        ("sqlite:///var/lib/c2d.db", "var/lib/c2d.db"),
        ("sqlite:////var/lib/c2d.db", "/var/lib/c2d.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path(url) == path
    store = open_store(url)
    assert isinstance(store, SQLiteStore) and store.path == path


@pytest.mark.parametrize("url", ["postgresql://u@db/click2dial", "postgres://db/c2d?sslmode=off"])
def test_postgres_urls(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, PostgresStore) and store.dsn == url


@pytest.mark.parametrize(
    "url", ["mysql://db/x", "sqlite:", "sqlite://relative.db", "sqlite:///", "", "sqlite:///a?b=1"]
)
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_in_memory_sqlite_works() -> None:
    async def main() -> None:
        async with open_store("sqlite://:memory:") as store:
            call = make_call()
            await store.create_call(call)
            assert await store.get_call("acme", call.call_ref) == call

    asyncio.run(main())


def test_sqlite_in_a_missing_folder_is_refused_by_name(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/nowhere/c2d.db")
    with pytest.raises(StoreError, match="nowhere"):
        asyncio.run(store.open())


def test_a_closed_store_refuses_work() -> None:
    async def main() -> None:
        store = open_store("sqlite://:memory:")
        with pytest.raises(StoreError):
            await store.get_call("acme", "x")
        await store.open()
        await store.close()
        await store.close()
        with pytest.raises(StoreError):
            await store.get_call("acme", "x")

    asyncio.run(main())


def test_migrations_are_numbered_and_render_for_both_dialects() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    for migration in MIGRATIONS:
        for dialect in (SQLITE, POSTGRES):
            assert all("{" not in s for s in migration.render(dialect))


def test_opening_again_and_concurrently_migrates_once(db: Db) -> None:
    async def main() -> None:
        call = make_call()
        await db.store.create_call(call)
        others = [db.new_store() for _ in range(3)]
        await asyncio.gather(*(s.open() for s in others))
        try:
            for store in others:
                assert await store.schema_version() == LATEST
                assert await store.get_call("acme", call.call_ref) == call
        finally:
            await asyncio.gather(*(s.close() for s in others))
        assert await db.store.schema_version() == LATEST

    db.run(main())
    db.reopen()
    assert db.run(db.store.schema_version()) == LATEST


def test_concurrent_first_opens_of_an_empty_database(fresh_db: Db) -> None:
    """Several nodes starting on a database nobody has migrated yet."""

    fresh_db.run(fresh_db.store.close())
    for table in ("calls", "notifications", "bindings", "nodes", "schema_version"):
        fresh_db.execute_raw(f"DROP TABLE {table}")

    async def main() -> None:
        stores = [fresh_db.new_store() for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            assert [await s.schema_version() for s in stores] == [LATEST] * 4
            await stores[0].create_call(make_call())
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    fresh_db.run(main())
    fresh_db.reopen()


def test_a_schema_from_a_newer_release_is_refused(fresh_db: Db) -> None:
    fresh_db.execute_raw(
        f"INSERT INTO schema_version (version, name, applied_at) VALUES ({LATEST + 1}, 'x', 0)"
    )
    with pytest.raises(SchemaTooNewError, match=str(LATEST + 1)):
        fresh_db.reopen()


def test_database_failures_surface_as_store_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-database.db"
    garbage.write_bytes(b"this is not SQLite" * 100)

    async def main() -> None:
        with pytest.raises(StoreError, match="SQLite"):
            await open_store(f"sqlite:///{garbage}").open()
        # Port 1 on loopback: nothing listens, the connection is refused.
        with pytest.raises(StoreError, match="PostgreSQL"):
            await open_store("postgresql://postgres@127.0.0.1:1/test").open()

    asyncio.run(main())
