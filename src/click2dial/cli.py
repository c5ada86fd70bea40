"""The ``click2dial`` command: ``serve``, ``check-config``, ``demo``, and the
operator's ``calls`` and ``hangup``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from . import __version__
from .config import (
    Config,
    ConfigError,
    check_config,
    load_effective_config,
    resolve_config_path,
)
from .logs import FORMAT_ENV, FORMATS, LEVEL_ENV, LEVELS, configure, resolve

log = logging.getLogger("click2dial")


def _serve(config_path: str | None, worker: int | None, log_args: list[str]) -> int:
    try:
        config = load_effective_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    if worker is None and config.server.workers > 1:
        from .workers import Supervisor, worker_argv

        return Supervisor(worker_argv(config_path, log_args), config.server.workers).run()
    if worker is not None:
        from .workers import worker_config

        config = worker_config(config, worker)
    with asyncio.Runner(loop_factory=_loop_factory(config.server.event_loop)) as runner:
        return runner.run(_run(config))


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``[server] event_loop``: uvloop unless asked otherwise (or missing)."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on the asyncio event loop")
            return None
        return uvloop.new_event_loop
    return None


async def _run(config: Config) -> int:
    from .app import Click2Dial

    service = Click2Dial(config)
    # The signals are handled before the start: the HTTP port answers (and a
    # supervisor may already send SIGTERM) before start() has returned, and a
    # SIGTERM then must stop the node cleanly once it has started, not kill
    # it half way.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except OSError as exc:
        print(f"click2dial: cannot start: {exc}", file=sys.stderr)
        await service.stop()
        return 1
    source = config.source or "the embedded defaults"
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    log.info("Click2Dial %s running on %s; HTTP port %d; event loop %s; node %s", __version__,
             source, service.http_port(), loop_name, config.server.node_id)  # fmt: skip
    if config.server.worker is not None:
        from .workers import report_ready

        report_ready()
    _tune_gc()
    await stop.wait()
    log.info("stopping: hanging up live calls")
    await service.stop()
    return 0


#: Allocations between young-generation collections (CPython's default is
#: 700).  A call allocates a few thousand objects (SIP messages, SDP, the
#: flow's events and actions) and nearly all of them die young, by reference
#: counting; collecting every 700 allocations only walked them again, and
#: the older generations' sweeps stalled the loop: POST p99 at 100 calls/s
#: went from 168 ms to 36 ms with this (docs/benchmarks.md).
GC_YOUNG_THRESHOLD = 50_000


def _tune_gc() -> None:
    """After start-up: what was built to run (configuration, modules, the
    app) is kept out of every later collection, and young collections run
    less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="click2dial", description="Click-to-dial service")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", help="configuration file (default: $CLICK2DIAL_CONFIG, "
                       "else the embedded defaults)")  # fmt: skip
    serve.add_argument(
        "--log-format",
        type=str.lower,
        choices=FORMATS,
        help=f"text (default) or json lines (default: ${FORMAT_ENV})",
    )
    serve.add_argument("--log-level", type=str.lower, choices=LEVELS,
                       help=f"default: ${LEVEL_ENV}, else info")  # fmt: skip
    # Set by the supervisor of ``[server] workers`` on each worker's command line.
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--config", help="configuration file (default: $CLICK2DIAL_CONFIG)")
    demo = sub.add_parser("demo", help="place one call against a simulated phone and trunk")
    demo.add_argument("--log-level", type=str.lower, choices=LEVELS, default="warning")
    calls = sub.add_parser("calls", help="list the calls live on this node (operator listener)")
    calls.add_argument("--config", help="configuration file (default: $CLICK2DIAL_CONFIG)")
    hangup = sub.add_parser("hangup", help="hang up a live call (operator listener)")
    hangup.add_argument("call_ref")
    hangup.add_argument("--config", help="configuration file (default: $CLICK2DIAL_CONFIG)")
    args = parser.parse_args(argv)
    try:
        log_format, log_level = resolve(
            getattr(args, "log_format", None),
            getattr(args, "log_level", None),
            "info" if args.command == "serve" else "warning",
        )
    except ValueError as exc:
        parser.error(str(exc))
    configure(log_format, log_level)
    if args.command in ("calls", "hangup"):
        from .operator import calls_command, hangup_command

        if args.command == "calls":
            return calls_command(args.config)
        return hangup_command(args.config, args.call_ref)
    if args.command == "serve":
        log_args = [f"--log-format={log_format}", f"--log-level={log_level}"]
        return _serve(args.config, args.worker, log_args)
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
