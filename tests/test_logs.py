"""The text log line: the same time stamp as logging's own formatter gives
(the date and time are formatted once a second), fields appended as
key=value, and a traceback kept below the line."""

from __future__ import annotations

import io
import logging

from click2dial.logs import TextFormatter, configure


def record(created: float, msg: str = "m", **fields: object) -> logging.LogRecord:
    r = logging.makeLogRecord({"msg": msg, "levelname": "INFO", "name": "t", "fields": fields})
    r.created = created
    r.msecs = (created - int(created)) * 1000
    return r


def test_time_stamps_match_logging_across_seconds_and_days() -> None:
    ours = TextFormatter()
    theirs = logging.Formatter()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0005, 1_700_000_001.5,
                    1_700_000_000.25, 1_700_086_399.999, 1_700_086_400.001):  # fmt: skip
        r = record(created)
        assert ours.formatTime(r) == theirs.formatTime(r), created


def test_a_line_carries_its_fields_and_keeps_a_traceback_below() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    configure("text", "info", stream)
    log = logging.getLogger("click2dial.test")
    try:
        log.info("call placed", extra={"fields": {"call_ref": "c-1", "note": "two words"}})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed", extra={"fields": {"call_ref": "c-2"}})
    finally:  # the other tests' logging as it was
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in libraries.items():
            logging.getLogger(name).setLevel(old)
    first, second, *trace = stream.getvalue().splitlines()
    assert first.endswith('INFO click2dial.test: call placed call_ref=c-1 note="two words"')
    assert second.endswith("ERROR click2dial.test: failed call_ref=c-2")
    assert trace[0] == "Traceback (most recent call last):" and trace[-1] == "RuntimeError: boom"
