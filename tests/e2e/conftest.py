"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.private_pg import PrivatePostgres, usable


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL of this test's own (stop and start it at will);
    stopped and removed afterwards, whatever happened."""
    problem = usable()
    if problem is not None:
        pytest.fail(problem)  # never a skip: the durability promise must be shown
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()
