"""The softphone page (``GET /phone``): the static files that ``make phone``
bundles from ``web/phone`` into ``click2dial/static/phone``, and
``/phone/config.json``, which tells the page where to register: the
WebSocket URL of the server's own ``ws:``/``wss:`` SIP listener and the SIP
domain of the agents' addresses.

No API key guards these: the page holds no secret (the agent types the SIP
password), and the configuration names nothing a phone could not learn by
registering.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

#: Where ``make phone`` (``npm run build`` in web/phone) writes the page.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "phone"
PAGE = "index.html"

#: The only kinds of file served; anything else in the folder is not.
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}

# The page loads its own script and style only, talks to this server and to
# its SIP WebSocket listener (another port: hence the ws:/wss: schemes), and
# is never framed.  The query string may carry a password (tests, kiosks):
# no Referer leaves with it.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# Names are not content-hashed: browsers revalidate (ETag) before each use.
_REVALIDATE = "no-cache"

_WILDCARD = frozenset({"", "0.0.0.0", "::", "*"})


@dataclass(frozen=True)
class WebSocketListener:
    """One ``ws:``/``wss:`` SIP listener, with the port it is bound to."""

    transport: Literal["ws", "wss"]
    host: str
    port: int


def _needs_browser_host(host: str) -> bool:
    """Whether a listener's host means nothing to a browser elsewhere: a
    wildcard (every address) or loopback (the address the page was loaded
    from is the one that reaches us, e.g. through a tunnel or a proxy)."""
    bare = host.strip("[]")
    if bare in _WILDCARD or bare.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def websocket_url(listeners: Sequence[WebSocketListener], browser_host: str) -> str | None:
    """The URL the page registers on: the first ``wss:`` listener, else the
    first ``ws:`` one, path ``/ws`` (RFC 7118); ``None`` without either."""
    ordered = sorted(listeners, key=lambda item: item.transport != "wss")
    if not ordered:
        return None
    chosen = ordered[0]
    host = browser_host if _needs_browser_host(chosen.host) else chosen.host
    return f"{chosen.transport}://{_url_host(host)}:{chosen.port}/ws"


@dataclass(frozen=True)
class _Asset:
    body: bytes
    etag: str
    mtime_ns: int


@dataclass
class PhoneSite:
    """The endpoints of the softphone page.  ``listeners`` is asked at each
    ``config.json`` request (the bound ports are known once SIP started);
    ``sip_domain`` is the host of the agents' addresses (``[sip]
    public_host``), the browser's host when unset."""

    listeners: Callable[[], Sequence[WebSocketListener]] = tuple
    sip_domain: str | None = None
    static_dir: Path = STATIC_DIR
    _cache: dict[str, _Asset] = field(default_factory=dict, repr=False)

    def served_files(self) -> set[str]:
        """The asset names ``/phone/{file}`` serves: files of the static
        folder with a known type (the page itself is ``/phone`` only: its
        relative links resolve from there)."""
        try:
            entries = list(self.static_dir.iterdir())
        except OSError:
            return set()
        return {p.name for p in entries if p.suffix in CONTENT_TYPES and p.is_file()}

    async def _load(self, name: str) -> _Asset | None:
        path = self.static_dir / name
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._cache.get(name)
        if cached is not None and cached.mtime_ns == mtime_ns:
            return cached
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return None
        asset = _Asset(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"', mtime_ns)
        self._cache[name] = asset
        return asset

    @staticmethod
    def _respond(
        request: Request, asset: _Asset, media_type: str, headers: dict[str, str]
    ) -> Response:
        headers = {**headers, "ETag": asset.etag, "Cache-Control": _REVALIDATE}
        wanted = request.headers.get("if-none-match", "")
        if asset.etag in (tag.strip() for tag in wanted.split(",")) or wanted.strip() == "*":
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=media_type, headers=headers)

    async def page(self, request: Request) -> Response | None:
        """The page; ``None`` when it was not built."""
        asset = await self._load(PAGE)
        if asset is None:
            return None
        return self._respond(request, asset, "text/html; charset=utf-8", _PAGE_HEADERS)

    async def asset(self, request: Request) -> Response | None:
        """One of :meth:`served_files`; ``None`` for any other name."""
        name = request.path_params["file"]
        # Only names listed in the folder: no path of the client's making is
        # ever opened (no "..", no separators, no hidden files by accident).
        asset = await self._load(name) if name in self.served_files() else None
        if asset is None:
            return None
        media_type = CONTENT_TYPES[Path(name).suffix]
        return self._respond(request, asset, media_type, {"X-Content-Type-Options": "nosniff"})

    async def config(self, request: Request) -> Response:
        browser_host = request.url.hostname or "localhost"
        listeners = list(self.listeners())
        return JSONResponse(
            {
                "websocket_url": websocket_url(listeners, browser_host),
                "websocket_urls": [websocket_url([item], browser_host) for item in listeners],
                "sip_domain": self.sip_domain or browser_host,
            },
            headers={"Cache-Control": "no-store"},
        )
