"""The store fixtures: every store test runs on SQLite and on PostgreSQL.

* ``db``: an opened store on an empty database.  SQLite gets a new file per
  test; PostgreSQL shares one schema per session, migrated once and emptied
  before each test (creating and migrating a schema per test would triple the
  run time).
* ``fresh_db``: like ``db``, but PostgreSQL gets a schema of its own, dropped
  afterwards — for tests that alter the schema itself.

PostgreSQL tests fail (they are never skipped) when no server answers at
``CLICK2DIAL_TEST_POSTGRES`` (default: the local test database).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from click2dial.store import open_store
from tests.store.support import BACKENDS, PG_URL, Db, pg_execute, pg_schema_url


@contextmanager
def _pg_schema() -> Iterator[str]:
    """A new PostgreSQL schema; yields its store URL."""
    schema = f"c2d_test_{uuid.uuid4().hex[:16]}"
    try:
        asyncio.run(pg_execute(PG_URL, f'CREATE SCHEMA "{schema}"'))
    except OSError as exc:
        # Never a skip: the store's promises must hold on PostgreSQL too.  On
        # this kind of machine: pg_ctlcluster --skip-systemctl-redirect 15 main start
        pytest.fail(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    try:
        yield pg_schema_url(schema)
    finally:
        asyncio.run(pg_execute(PG_URL, f'DROP SCHEMA "{schema}" CASCADE'))


@contextmanager
def _opened(
    kind: str, url: str, *, empty_first: bool = False, shared: bool = False
) -> Iterator[Db]:
    with asyncio.Runner() as runner:
        db = Db(kind, url, runner, open_store(url, shared=shared))
        try:
            runner.run(db.store.open())
            if empty_first:
                # DELETE, not TRUNCATE: on a few rows it is 50 times faster.
                runner.run(
                    pg_execute(
                        url,
                        "DELETE FROM calls; DELETE FROM notifications; DELETE FROM bindings;"
                        " DELETE FROM nodes",
                    )
                )
            yield db
        finally:
            runner.run(db.store.close())


@pytest.fixture(scope="session")
def shared_pg_url() -> Iterator[str]:
    with _pg_schema() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        with _opened("sqlite", f"sqlite:///{tmp_path / 'click2dial.db'}") as db:
            yield db
    else:
        url: str = request.getfixturevalue("shared_pg_url")
        with _opened("postgres", url, empty_first=True) as db:
            yield db


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        with _opened("sqlite", f"sqlite:///{tmp_path / 'click2dial.db'}") as db:
            yield db
    else:
        with _pg_schema() as url, _opened("postgres", url) as db:
            yield db
