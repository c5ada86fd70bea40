"""Random identifiers (SIP tags, branches, Call-IDs, call refs, RTP
sequence starts): the kernel's CSPRNG, read in blocks.

A call draws about twenty of them; one ``getrandom`` system call each was
about 2 % of a call's CPU.  The bytes are the same ``os.urandom`` bytes,
handed out once each; a forked child starts with an empty block so that
parent and child never share one.
"""

from __future__ import annotations

import os

_BLOCK = 4096


class _Pool:
    __slots__ = ("at", "block")

    def __init__(self) -> None:
        self.block = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        at = self.at
        if at + n > len(self.block):
            self.block = os.urandom(max(_BLOCK, n))
            at = 0
        self.at = at + n
        return self.block[at : at + n]

    def reset(self) -> None:
        self.block = b""
        self.at = 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


def token_bytes(n: int) -> bytes:
    """``n`` random bytes."""
    return _pool.take(n)


def token_hex(n: int) -> str:
    """``n`` random bytes as ``2n`` hex digits."""
    return _pool.take(n).hex()


def randbits(k: int) -> int:
    """A random integer of ``k`` bits (``0 <= x < 2**k``)."""
    value = int.from_bytes(_pool.take((k + 7) // 8), "big")
    return value >> (-k % 8)


def uuid4() -> str:
    """A random (version 4) UUID in its text form."""
    raw = bytearray(_pool.take(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
