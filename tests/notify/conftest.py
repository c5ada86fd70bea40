"""Fixtures of the notification tests: a redis-server of the test's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify.support import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
