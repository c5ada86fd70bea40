"""The ``click2dial`` command line: ``serve`` runs the service.

Until call control lands (issue: click-to-dial calls end to end), ``serve``
runs the SIP edge on its embedded defaults: it answers OPTIONS pings and
turns calls away with 503 and ``Retry-After``, so that peers and monitoring
can already be pointed at it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from . import __version__
from .sip.aio import Call, Listen, UserAgent, UserAgentConfig

DEFAULT_LISTEN = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
log = logging.getLogger("click2dial")


async def _serve(listen: list[Listen], stop: asyncio.Event | None = None) -> None:
    async def on_invite(call: Call) -> None:
        call.reject(503, headers=[("Retry-After", "60")])

    config = UserAgentConfig(listen, user_agent=f"Click2Dial/{__version__}")
    async with UserAgent(config, on_invite=on_invite) as ua:
        for transport in ("udp", "tcp"):
            with contextlib.suppress(KeyError):
                host, port = ua.address(transport)
                log.info("SIP listening on %s:%s:%d", transport, host, port)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="click2dial", description="Click-to-dial service")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service on the embedded defaults")
    serve.add_argument(
        "--sip-listen",
        action="append",
        metavar="TRANSPORT:HOST:PORT",
        help="SIP listener, repeatable (default: udp and tcp on 127.0.0.1:5060)",
    )
    serve.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        try:
            listen = [Listen.parse(item) for item in args.sip_listen or DEFAULT_LISTEN]
        except ValueError as exc:
            parser.error(str(exc))
        try:
            asyncio.run(_serve(listen))
        except OSError as exc:
            print(f"click2dial: cannot listen: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
