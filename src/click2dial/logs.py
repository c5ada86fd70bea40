"""Log output: the text or JSON-lines format, the level, and the structured
fields of a line.

A line's structured fields are passed as ``extra={"fields": {...}}``; the
JSON format puts them beside ``ts``, ``level``, ``logger`` and ``msg``, the
text format appends them as ``key=value``.  Nothing here filters secrets:
no code logs one (tests grep a whole run's output for every configured
secret), and fields are chosen by the caller, never a whole config object.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

FORMATS: Final = ("text", "json")
LEVELS: Final = ("debug", "info", "warning", "error")
FORMAT_ENV: Final = "CLICK2DIAL_LOG_FORMAT"
LEVEL_ENV: Final = "CLICK2DIAL_LOG_LEVEL"

_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, then the structured fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # The date and time to the second are formatted once a second, not
        # once a line (strftime is most of the cost of a short line).
        second = int(record.created)
        if second != self._second:
            self._stamp = super().formatTime(record, datefmt).rpartition(",")[0]
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = fields_of(record)
        if not fields:
            return text
        extra = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        head, newline, rest = text.partition("\n")  # keep a traceback below the line
        return f"{head} {extra}{newline}{rest}"


#: A value with blanks or quotes is written as a JSON string.
_NEEDS_QUOTES = re.compile(r'[\s"]')


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return json.dumps(text) if not text or _NEEDS_QUOTES.search(text) else text


def resolve(
    log_format: str | None, level: str | None, default_level: str = "info"
) -> tuple[str, str]:
    """The format and level: the command line's, else the environment's,
    else text and ``default_level``.  Raises ValueError for an unknown one."""
    chosen_format = (log_format or os.environ.get(FORMAT_ENV) or "text").lower()
    chosen_level = (level or os.environ.get(LEVEL_ENV) or default_level).lower()
    if chosen_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {chosen_format!r}")
    if chosen_level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {chosen_level!r}")
    return chosen_format, chosen_level


def configure(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Send every log line to ``stream`` (stderr) in the chosen format."""
    # Nothing printed names the caller's file and line, the thread or the
    # process: LogRecord need not find them for each line (the logging
    # HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries say little worth an operator's time below a warning, and at
    # debug they would print request details (asyncpg, httpx).
    for name in ("asyncio", "httpx", "httpcore", "uvicorn", "asyncpg", "redis"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
