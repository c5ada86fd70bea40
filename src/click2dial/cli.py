"""The ``click2dial`` command: ``serve``, ``check-config`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import __version__
from .config import ConfigError, check_config, load_effective_config, resolve_config_path

log = logging.getLogger("click2dial")


async def _serve(config_path: str | None) -> int:
    from .app import Click2Dial

    try:
        config = load_effective_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    service = Click2Dial(config)
    try:
        await service.start()
    except OSError as exc:
        print(f"click2dial: cannot start: {exc}", file=sys.stderr)
        await service.stop()
        return 1
    source = config.source or "the embedded defaults"
    log.info("Click2Dial %s running on %s; HTTP port %d", __version__, source,
             service.http_port())  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: hanging up live calls")
    await service.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="click2dial", description="Click-to-dial service")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", help="configuration file (default: $CLICK2DIAL_CONFIG, "
                       "else the embedded defaults)")  # fmt: skip
    serve.add_argument("--log-level", default="INFO")
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--config", help="configuration file (default: $CLICK2DIAL_CONFIG)")
    demo = sub.add_parser("demo", help="place one call against a simulated phone and trunk")
    demo.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        return asyncio.run(_serve(args.config))
    if args.command == "check-config":
        path = resolve_config_path(args.config)
        if path is None:
            print("click2dial check-config: give --config FILE or set CLICK2DIAL_CONFIG",
                  file=sys.stderr)  # fmt: skip
            return 2
        problems = check_config(path)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{path}: OK")
        return 1 if problems else 0
    from .demo import run_demo

    return asyncio.run(run_demo())


if __name__ == "__main__":
    sys.exit(main())
