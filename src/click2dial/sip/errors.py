"""The SIP core's error types.

Everything that can go wrong while reading bytes from the wire is a
:class:`SipParseError`; callers catch that one type and nothing else.
"""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error the SIP core raises on purpose."""


class SipParseError(SipError, ValueError):
    """Malformed or over-limit SIP input.

    ``status`` is the response a server should send when the bad input was a
    request it could still answer (400 by default, 505 for an unknown
    version, 413/494 for size limits).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SipStateError(SipError):
    """An operation that the current transaction or dialog state forbids."""
