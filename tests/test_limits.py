"""The limits' configuration keys and the pieces of limits.py and pike.py
that need no server (the served behaviour: tests/e2e/test_limits.py)."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from click2dial.config import ConfigError, parse_config
from click2dial.limits import AcceptErrorLog
from click2dial.sip.pike import Pike

BASE = '[integrators.acme]\napi_keys = ["acme-key-0123456789abcdef"]\n'


def test_limit_keys_have_defaults_and_are_read() -> None:
    config = parse_config(BASE, "c.toml")
    assert config.server.keep_alive_timeout == 75
    assert config.server.max_connections_per_source == 128
    assert config.sip.max_connections_per_source == 64
    assert config.sip.idle_timeout_without_dialog == 30
    text = "[server]\nheader_timeout = 3\n[sip]\nrequest_rate = 0\n" + BASE
    config = parse_config(text, "c.toml")
    assert config.server.header_timeout == 3 and config.sip.request_rate == 0


def test_bad_limit_keys_are_named() -> None:
    text = (
        "[server]\nheader_timeout = 0\nmax_connections = -1\n"
        "[sip]\nidle_timeout = 20\nidle_timeout_without_dialog = 30\n"
        "request_rate = 10\nrequest_burst = 5\n" + BASE
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.toml")
    problems = "\n".join(caught.value.problems)
    for key in ("server.header_timeout", "server.max_connections",
                "sip.idle_timeout_without_dialog", "sip.request_burst"):  # fmt: skip
        assert f"c.toml: {key}: " in problems


def test_pike_allows_the_burst_then_the_rate_and_never_limits_the_exempt() -> None:
    pike = Pike(rate=5, burst=10, exempt=frozenset({"10.0.0.1"}))
    assert sum(pike.allow("10.0.0.9", 0.0) for _ in range(50)) == 10
    assert sum(pike.allow("10.0.0.9", 1.0) for _ in range(50)) == 5  # refilled by one second
    assert pike.allow("10.0.0.8", 1.0)  # another source has its own bucket
    assert all(pike.allow("10.0.0.1", 1.0) for _ in range(1000))


def test_accept_failures_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    # The context asyncio's accept loop reports an EMFILE with, 1,000 times.
    handler = AcceptErrorLog(interval=60)

    async def flood() -> None:
        loop = asyncio.get_running_loop()
        handler.install(loop)
        for _ in range(1000):
            loop.call_exception_handler(
                {"message": AcceptErrorLog.MESSAGE, "exception": OSError(errno.EMFILE, "x")}
            )

    with caplog.at_level(logging.ERROR, logger="click2dial.limits"):
        asyncio.run(flood())
    assert handler.count == 1000
    assert len([r for r in caplog.records if r.name == "click2dial.limits"]) == 1
