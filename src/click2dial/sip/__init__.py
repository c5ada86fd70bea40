"""Click2Dial's SIP stack.

The core (everything in this package except :mod:`click2dial.sip.aio`) is
sans-IO: bytes and timer ticks in, events and bytes out.  The asyncio
adapters in :mod:`click2dial.sip.aio` own the sockets and the clock.
"""
