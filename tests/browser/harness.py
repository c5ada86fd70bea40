"""Headless Chromium for the tests, driven through playwright-core.

:class:`Browser` runs ``node tests/browser/driver.mjs`` (which launches
Debian's ``/usr/bin/chromium`` with a fresh profile and the flags WebRTC
needs on loopback) and talks to it in JSON lines: ``goto``, ``fill``,
``click``, ``check``, ``evaluate``, ``screenshot``.  :meth:`Browser.wait_for`
polls a JavaScript expression until it is truthy or a deadline passes.  The
page's console goes to stderr (pytest shows it for a failing test).

The softphone helpers (:meth:`Browser.open_phone`, :meth:`Browser.login`,
:meth:`Browser.place`, :meth:`Browser.phone`) use the page that
``make phone`` builds and the server serves at ``/phone``; they drive its
form as an agent would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "driver.mjs"
WEB_PHONE = ROOT / "web" / "phone"
#: Seconds Chromium may take to start, and any single command.
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 20.0
POLL_INTERVAL = 0.05


class BrowserError(AssertionError):
    """A command the browser could not carry out (a missing selector, a
    script error, a page that did not load)."""


class Browser:
    """One Chromium with one page; ``async with Browser() as browser``."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.version = ""
        self._ids = 0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Browser:
        node = shutil.which("node")
        assert node, "node is needed (Node.js 20, like npm for `make phone`)"
        assert (WEB_PHONE / "node_modules" / "playwright-core").is_dir(), (
            "playwright-core is not installed: run `make phone`"
        )
        self.process = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            str(WEB_PHONE),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Inherited: the page's console and Chromium's complaints land in
            # the test's captured stderr.
            stderr=None,
            # A screenshot's JSON answer is short; the limit is for safety.
            limit=1 << 20,
        )
        try:
            hello = await asyncio.wait_for(self._read(), START_TIMEOUT)
        except BaseException:
            await self._stop()
            raise
        if not hello.get("ready"):
            await self._stop()
            raise BrowserError(f"the browser driver did not start: {hello}")
        self.version = str(hello.get("version", ""))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _read(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            code = await self.process.wait()
            raise BrowserError(f"the browser driver exited ({code}); see stderr")
        message: dict[str, Any] = json.loads(line)
        return message

    async def command(self, cmd: str, timeout: float = COMMAND_TIMEOUT, **args: Any) -> Any:
        """Run one driver command; its value, or :class:`BrowserError`."""
        async with self._lock:
            process = self.process
            assert process is not None and process.stdin is not None, "the browser is closed"
            self._ids += 1
            ident = self._ids
            process.stdin.write(json.dumps({"id": ident, "cmd": cmd, **args}).encode() + b"\n")
            await process.stdin.drain()
            answer = await asyncio.wait_for(self._read(), timeout)
        if answer.get("id") != ident:
            raise BrowserError(f"answer out of order: {answer}")
        if not answer.get("ok"):
            raise BrowserError(f"{cmd} {args}: {answer.get('error')}")
        return answer.get("value")

    async def goto(self, url: str) -> int | None:
        """Load ``url``; the HTTP status of the document."""
        status: int | None = await self.command("goto", url=url)
        return status

    async def fill(self, selector: str, value: str) -> None:
        await self.command("fill", selector=selector, value=value)

    async def click(self, selector: str) -> None:
        await self.command("click", selector=selector)

    async def check(self, selector: str, checked: bool = True) -> None:
        await self.command("check", selector=selector, checked=checked)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        return await self.command("evaluate", expression=expression)

    async def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page at ``path``."""
        await self.command("screenshot", path=str(path))
        return path

    async def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll ``expression`` until it is truthy; its value.  Fails after
        ``timeout`` seconds with the last value it had."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"still {value!r} after {timeout} s: {expression}")
            await asyncio.sleep(POLL_INTERVAL)

    async def close(self) -> None:
        """Close Chromium and the driver (killed if they do not go)."""
        process = self.process
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(BrowserError, ConnectionError, TimeoutError):
                await self.command("close", timeout=10)
        await self._stop()

    async def _stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            # SIGTERM: the driver closes Chromium itself; SIGKILL as a last resort.
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    # ------------------------------------------------------------ softphone

    async def open_phone(self, base_url: str, **query: str) -> dict[str, Any]:
        """Load ``{base_url}/phone`` (``query``: ``ext``, ``password``,
        ``autoanswer``, ``autologin``, ``server``, ``domain``; ``sipdebug="1"``
        puts every SIP message in the console, hence in the test's stderr)
        and wait for it to have read its configuration; the page's state."""
        url = f"{base_url}/phone" + (f"?{urlencode(query)}" if query else "")
        status = await self.goto(url)
        assert status == 200, f"GET {url}: {status}"
        await self.wait_for("window.phone && window.phone.ready")
        return await self.phone()

    async def phone(self) -> dict[str, Any]:
        """The page's state (``window.phone``): ``registered``,
        ``registration``, ``call``, ``connectionState``, the RTP counts
        (``inboundRtpPackets``, ``outboundRtpPackets``), ``transport`` (ICE and
        DTLS states and the chosen candidate pair), ``log``."""
        state: dict[str, Any] = await self.evaluate("JSON.parse(JSON.stringify(window.phone))")
        return state

    async def login(
        self, ext: str, password: str, *, autoanswer: bool = False, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Fill the login form and log in; once registration succeeded or
        failed, the page's state."""
        await self.fill("#ext", ext)
        await self.fill("#password", password)
        await self.check("#autoanswer", autoanswer)
        await self.click("#login")
        await self.wait_for("['registered', 'failed'].includes(window.phone.registration)", timeout)
        return await self.phone()

    async def place(
        self, callee: str, outbound_id: str = "", contact_ref: str = ""
    ) -> dict[str, Any]:
        """Fill the dial form and call; the page's state right after."""
        await self.fill("#callee", callee)
        await self.fill("#outbound-id", outbound_id)
        await self.fill("#contact-ref", contact_ref)
        await self.click("#call")
        await self.wait_for("window.phone.call !== null")
        return await self.phone()

    async def wait_call(
        self, states: str | tuple[str, ...], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait until the current call is in one of ``states`` (``ringing``,
        ``calling``, ``answering``, ``established``, ``ended``); the call."""
        wanted = json.dumps([states] if isinstance(states, str) else list(states))
        await self.wait_for(
            f"window.phone.call !== null && {wanted}.includes(window.phone.call.state)", timeout
        )
        call: dict[str, Any] = (await self.phone())["call"]
        return call
