"""How many connections a listener accepts per wake-up, for HTTP and SIP alike.

A leaf of the standard library only, so that the SIP transport can use it
without importing the HTTP stack.
"""

from __future__ import annotations

import socket

#: Connections asyncio accepts in one go per listener (its ``backlog``
#: argument), before any protocol has seen them and could refuse them.
#: asyncio accepts as many as the backlog per wake-up; kept small, the
#: descriptors in flight stay within the reserve (room for three batches per
#: listener is added to it).  :func:`widen_backlog` then gives the kernel
#: queue its full length again, so a burst does not drop SYNs.
ACCEPT_BATCH = 32
LISTEN_BACKLOG = 1024


def widen_backlog(sock: socket.socket) -> None:
    """Give a listening socket's kernel queue its full length (after asyncio
    has set it to :data:`ACCEPT_BATCH`)."""
    sock.listen(LISTEN_BACKLOG)
