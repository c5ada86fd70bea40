"""HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 2617,
RFC 7616, RFC 8760).

This module owns the authentication header grammar (``WWW-Authenticate``,
``Proxy-Authenticate``, ``Authorization``, ``Proxy-Authorization``), the
client side that answers a challenge (:class:`DigestClient`) and the server
side that issues challenges and checks credentials (:class:`DigestServer`).
It only turns header values into header values: deciding which requests
need credentials, and resending them, is the user agent's job.

Algorithms: MD5, MD5-sess, SHA-256 and SHA-256-sess.  Anything else raises
:class:`UnsupportedAuthError` on the client so the caller can fail the
request instead of sending credentials the server cannot check.

Server nonces are stateless: ``base64url(issue time || salt || HMAC)``, the
HMAC (SHA-256, keyed with the server secret) covering the issue time, the
salt, the realm and the algorithm.  Any server holding the secret can check
a nonce without a shared store, and a nonce minted for SHA-256 cannot be
replayed with MD5.  The only state kept is the highest nonce-count seen per
nonce, in a bounded map, to refuse replays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import SipError, SipParseError
from .headers import quote

__all__ = [
    "ALGORITHMS",
    "CLIENT_NONCE_MEMORY",
    "AuthResult",
    "Challenge",
    "DigestClient",
    "DigestServer",
    "UnsupportedAuthError",
    "parse_challenge",
    "parse_challenges",
    "parse_credentials",
    "select_challenges",
]


class UnsupportedAuthError(SipError):
    """A challenge this client cannot answer: a scheme other than Digest, an
    unknown algorithm, or only unknown qop values.  The request that drew the
    challenge should fail rather than be retried."""


# -- hashing -------------------------------------------------------------------


def _md5(data: bytes) -> str:
    # MD5 is mandated by the protocol here, not chosen for its strength.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Canonical spelling of each supported algorithm, keyed by its upper case.
ALGORITHMS: dict[str, str] = {
    "MD5": "MD5",
    "MD5-SESS": "MD5-sess",
    "SHA-256": "SHA-256",
    "SHA-256-SESS": "SHA-256-sess",
}
_HASHES: dict[str, Callable[[bytes], str]] = {"MD5": _md5, "SHA-256": _sha256}


def _hash_for(algorithm: str) -> tuple[Callable[[bytes], str], bool]:
    """``(H, is_sess)`` for an algorithm name, case-insensitively."""
    upper = algorithm.upper()
    if upper not in ALGORITHMS:
        raise UnsupportedAuthError(f"unsupported digest algorithm {algorithm!r}")
    sess = upper.endswith("-SESS")
    return _HASHES[upper.removesuffix("-SESS")], sess


def _response(
    algorithm: str,
    *,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The request-digest of RFC 7616 §3.4.1 (RFC 2069 form when no qop)."""
    digest, sess = _hash_for(algorithm)

    def h(text: str) -> str:
        return digest(text.encode())

    ha1 = h(f"{username}:{realm}:{password}")
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 = f"{a2}:{digest(body)}"
    ha2 = h(a2)
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# -- header grammar --------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Unquoted values: RFC 7235 says token, but real servers send base64 nonces
# (with '/', '+', '=') unquoted, so take anything up to a separator.
_BARE_VALUE = re.compile(r'[^\s,"]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_PARAM_START = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=")


@dataclass(slots=True)
class _Parsed:
    scheme: str
    params: list[tuple[str, str]] = field(default_factory=list)


def _parse_auth_header(value: str) -> list[_Parsed]:
    """Split a header value into challenges (or credentials): a scheme
    followed by comma-separated ``name=value`` pairs.  A new scheme may start
    after any comma (RFC 7235 §4.1 allows several challenges in one value)."""
    items: list[_Parsed] = []
    pos = 0
    n = len(value)

    def skip(p: int, commas: bool = False) -> int:
        while p < n and (value[p] in " \t\r\n" or (commas and value[p] == ",")):
            p += 1
        return p

    pos = skip(pos, commas=True)
    while pos < n:
        param = _PARAM_START.match(value, pos)
        if param is None:
            scheme = _TOKEN.match(value, pos)
            if scheme is None:
                raise SipParseError(f"malformed auth header: {value[:80]!r}")
            items.append(_Parsed(scheme.group()))
            pos = scheme.end()
            if pos < n and value[pos] not in " \t\r\n,":
                raise SipParseError(f"malformed auth scheme: {value[:80]!r}")
        else:
            if not items:
                raise SipParseError(f"auth parameter before a scheme: {value[:80]!r}")
            pos = skip(param.end())
            quoted = _QUOTED.match(value, pos)
            if quoted is not None:
                raw = quoted.group(1)
                text = _ESCAPE.sub(r"\1", raw) if "\\" in raw else raw
                pos = quoted.end()
            else:
                bare = _BARE_VALUE.match(value, pos)
                if bare is None:
                    raise SipParseError(f"auth parameter without a value: {value[:80]!r}")
                text = bare.group()
                pos = bare.end()
            items[-1].params.append((param.group(1).lower(), text))
            pos = skip(pos)
            if pos < n and value[pos] != ",":
                raise SipParseError(f"junk after auth parameter: {value[pos : pos + 80]!r}")
        pos = skip(pos, commas=True)
    if not items:
        raise SipParseError("empty auth header")
    return items


def _param_dict(item: _Parsed) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, text in item.params:
        # A repeated parameter would let two parsers disagree on its value.
        if name in params:
            raise SipParseError(f"repeated auth parameter {name!r}")
        params[name] = text
    return params


@dataclass(slots=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` challenge.

    ``algorithm`` is as the server spelled it (``"MD5"`` when absent), ``qop``
    the lower-cased offered qop values, empty for an RFC 2069 challenge.
    """

    scheme: str
    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    stale: bool = False

    @property
    def supported(self) -> bool:
        """Whether :class:`DigestClient` can answer this challenge."""
        if self.scheme.lower() != "digest" or self.algorithm.upper() not in ALGORITHMS:
            return False
        if self.qop and not {"auth", "auth-int"} & set(self.qop):
            return False
        return bool(self.qop) or not self.algorithm.upper().endswith("-SESS")


def _challenge_from(item: _Parsed) -> Challenge:
    params = _param_dict(item)
    is_digest = item.scheme.lower() == "digest"
    if is_digest and ("realm" not in params or "nonce" not in params):
        raise SipParseError("Digest challenge without realm or nonce")
    qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    return Challenge(
        scheme=item.scheme,
        realm=params.get("realm", ""),
        nonce=params.get("nonce", ""),
        opaque=params.get("opaque"),
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        stale=params.get("stale", "").lower() == "true",
    )


def parse_challenges(value: str) -> list[Challenge]:
    """Every challenge in one ``WWW-Authenticate``/``Proxy-Authenticate``
    value.  Raises :class:`SipParseError` on malformed input.  Non-Digest
    schemes are returned too (``realm``/``nonce`` empty if absent)."""
    return [_challenge_from(item) for item in _parse_auth_header(value)]


def parse_challenge(value: str) -> Challenge:
    """The single challenge in a header value (SIP sends one per header
    field).  Raises :class:`SipParseError` on malformed input or if the value
    holds more than one challenge; use :func:`parse_challenges` for that."""
    challenges = parse_challenges(value)
    if len(challenges) != 1:
        raise SipParseError(f"expected one challenge, found {len(challenges)}")
    return challenges[0]


def select_challenges(challenges: Iterable[Challenge]) -> list[Challenge]:
    """The challenges to answer: per realm, the topmost one this client
    supports (RFC 8760 §2.4), in the order the realms first appear.

    Pass every ``WWW-Authenticate`` and ``Proxy-Authenticate`` challenge of a
    response in header order; an empty result means none can be answered.
    """
    chosen: dict[str, Challenge] = {}
    for challenge in challenges:
        if challenge.supported and challenge.realm not in chosen:
            chosen[challenge.realm] = challenge
    return list(chosen.values())


def parse_credentials(value: str) -> dict[str, str]:
    """The parameters of a Digest ``Authorization``/``Proxy-Authorization``
    value: lower-case names, unquoted values.  Raises :class:`SipParseError`
    if the value is malformed, is not Digest, holds more than one set of
    credentials or repeats a parameter."""
    items = _parse_auth_header(value)
    if len(items) != 1:
        raise SipParseError("expected one set of credentials")
    if items[0].scheme.lower() != "digest":
        raise SipParseError(f"unsupported credentials scheme {items[0].scheme!r}")
    return _param_dict(items[0])


# -- client --------------------------------------------------------------------

#: How many nonces a client remembers nonce-counts for; one per realm is the
#: usual need (a proxy and a registrar), a handful covers forking.
CLIENT_NONCE_MEMORY = 32


def _new_cnonce() -> str:
    return secrets.token_hex(16)


class DigestClient:
    """Answers Digest challenges for one set of credentials.

    The client remembers a nonce-count per nonce so that reusing a nonce for
    the next request (as a registrar refresh does) sends ``nc`` 2, 3, ...;
    a new nonce starts again at 1.
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] = _new_cnonce,
    ) -> None:
        self.username = username
        self.password = password
        self._cnonce_factory = cnonce_factory
        # nonce -> (last nc sent, first cnonce sent), least recently used first
        self._nonce_counts: OrderedDict[str, tuple[int, str]] = OrderedDict()

    def _next_use(self, nonce: str) -> tuple[int, str]:
        """``(nc, cnonce of the first use)`` for the next request on ``nonce``."""
        count, first_cnonce = self._nonce_counts.pop(nonce, (0, ""))
        count += 1
        if count == 1:
            first_cnonce = self._cnonce_factory()
        self._nonce_counts[nonce] = (count, first_cnonce)
        while len(self._nonce_counts) > CLIENT_NONCE_MEMORY:
            self._nonce_counts.popitem(last=False)
        return count, first_cnonce

    def authorization(
        self, challenge: Challenge | str, method: str, uri: str, body: bytes = b""
    ) -> str:
        """The ``Authorization``/``Proxy-Authorization`` value answering
        ``challenge`` for a request ``method uri`` (with ``body``, which only
        matters for qop=auth-int).

        Raises :class:`UnsupportedAuthError` if the challenge cannot be
        answered and :class:`SipParseError` if a string challenge is malformed.
        """
        if isinstance(challenge, str):
            challenge = parse_challenge(challenge)
        if challenge.scheme.lower() != "digest":
            raise UnsupportedAuthError(f"unsupported auth scheme {challenge.scheme!r}")
        _hash_for(challenge.algorithm)
        qop: str | None
        if not challenge.qop:
            qop = None
            if challenge.algorithm.upper().endswith("-SESS"):
                # -sess mixes in a cnonce, which RFC 2617 only sends with qop.
                raise UnsupportedAuthError(f"{challenge.algorithm} challenge without qop")
        elif "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        else:
            raise UnsupportedAuthError(f"unsupported qop {','.join(challenge.qop)!r}")

        nc = cnonce = ""
        if qop is not None:
            count, cnonce = self._next_use(challenge.nonce)
            nc = f"{count:08x}"
            if count > 1 and not challenge.algorithm.upper().endswith("-SESS"):
                # A -sess session key is bound to the first cnonce (RFC 2617
                # §3.2.2.2), so only the other algorithms get a fresh one.
                cnonce = self._cnonce_factory()
        response = _response(
            challenge.algorithm,
            username=self.username,
            realm=challenge.realm,
            password=self.password,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        parts = [
            f"username={quote(self.username)}",
            f"realm={quote(challenge.realm)}",
            f"nonce={quote(challenge.nonce)}",
            f"uri={quote(uri)}",
            f"response={quote(response)}",
            f"algorithm={challenge.algorithm}",
        ]
        if qop is not None:
            parts.append(f"cnonce={quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={quote(challenge.opaque)}")
        if qop is not None:
            parts.extend([f"qop={qop}", f"nc={nc}"])
        return "Digest " + ", ".join(parts)


# -- server --------------------------------------------------------------------

OK = "ok"
NO_SUCH_USER = "no such user"
BAD_RESPONSE = "bad response"
STALE_NONCE = "stale nonce"
BAD_NONCE = "bad nonce"
REPLAYED_NC = "replayed nc"
REALM_MISMATCH = "realm mismatch"
MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of :meth:`DigestServer.verify`.

    ``reason`` is one of ``"ok"``, ``"no such user"``, ``"bad response"``,
    ``"stale nonce"``, ``"replayed nc"``, ``"bad nonce"``,
    ``"realm mismatch"`` or ``"malformed"``; it is for logs, and must not be
    shown to the peer (telling "no such user" from "bad response" would let
    it enumerate accounts).  When ``stale`` is set the credentials were right
    but the nonce can no longer be used: re-challenge with ``stale=True`` so
    the client retries without asking its user again.
    """

    ok: bool
    username: str | None = None
    reason: str = OK
    stale: bool = False


_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{64}")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_TS = struct.Struct(">Q")
_SALT_SIZE = 8


class DigestServer:
    """Issues Digest challenges for one realm and verifies credentials.

    ``secret`` keys the nonce HMAC: servers sharing it accept each other's
    nonces; changing it invalidates every outstanding nonce.  Nonces older
    than ``nonce_lifetime`` seconds are answered with a stale re-challenge.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_lifetime: float = 300.0,
        *,
        max_tracked_nonces: int = 10000,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret needs at least 16 bytes")
        if nonce_lifetime <= 0 or max_tracked_nonces < 1:
            raise ValueError("nonce_lifetime and max_tracked_nonces must be positive")
        self.realm = realm
        self._secret = secret
        self.nonce_lifetime = nonce_lifetime
        self._max_tracked = max_tracked_nonces
        # nonce -> (issue time, highest nc accepted), in order of first use.
        self._seen: dict[str, tuple[int, int]] = {}
        # Newest issue time of any nonce dropped from _seen; see _check_nc.
        self._forgotten_upto = -1

    # -- nonces ----------------------------------------------------------------

    def _mac(self, payload: bytes, algorithm: str) -> bytes:
        msg = payload + b"\x00" + self.realm.encode() + b"\x00" + algorithm.encode()
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def _make_nonce(self, issued: int, algorithm: str) -> str:
        # The salt keeps two challenges issued in the same second apart, so
        # their nonce-counts are tracked separately.
        payload = _TS.pack(issued) + secrets.token_bytes(_SALT_SIZE)
        raw = payload + self._mac(payload, algorithm)
        return base64.urlsafe_b64encode(raw).decode()

    def _nonce_issued(self, nonce: str, algorithm: str) -> int | None:
        """Issue time of a nonce this server minted for ``algorithm``, else
        ``None``."""
        if not _NONCE_RE.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        payload, mac = raw[: _TS.size + _SALT_SIZE], raw[_TS.size + _SALT_SIZE :]
        if not hmac.compare_digest(mac, self._mac(payload, algorithm)):
            return None
        issued: int = _TS.unpack_from(payload)[0]
        return issued

    def challenge(
        self, *, stale: bool = False, algorithm: str = "MD5", now: float | None = None
    ) -> str:
        """A ``WWW-Authenticate``/``Proxy-Authenticate`` value with a fresh
        nonce and ``qop="auth"``.  Raises :class:`UnsupportedAuthError` for an
        unknown algorithm."""
        canonical = ALGORITHMS.get(algorithm.upper())
        if canonical is None:
            raise UnsupportedAuthError(f"unsupported digest algorithm {algorithm!r}")
        issued = int(time.time() if now is None else now)
        nonce = self._make_nonce(max(issued, 0), canonical)
        value = (
            f"Digest realm={quote(self.realm)}, nonce={quote(nonce)}, "
            f'algorithm={canonical}, qop="auth"'
        )
        return value + ", stale=true" if stale else value

    # -- verification ------------------------------------------------------------

    def verify(
        self,
        method: str,
        value: str,
        password_for: Callable[[str], str | None],
        *,
        now: float | None = None,
    ) -> AuthResult:
        """Check an ``Authorization``/``Proxy-Authorization`` value sent with a
        ``method`` request.  ``password_for`` maps a username to its password
        (``None`` for no such user).

        The digest is checked before the nonce's age, so ``stale`` is only
        ever set for a client that knows the password (RFC 7616 §3.3).
        """
        current = time.time() if now is None else now
        try:
            params = parse_credentials(value)
        except SipParseError:
            return AuthResult(False, None, MALFORMED)
        username = params.get("username")
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if username is None or any(key not in params for key in required):
            # qop is required: we always offer it, and without nc there is no
            # replay protection (RFC 2069 clients are refused on purpose).
            return AuthResult(False, username, MALFORMED)
        if params["realm"] != self.realm:
            return AuthResult(False, username, REALM_MISMATCH)
        algorithm = ALGORITHMS.get(params.get("algorithm", "MD5").upper())
        nc = params["nc"]
        if (
            algorithm is None
            or params["qop"].lower() != "auth"
            or not _NC_RE.fullmatch(nc)
            or not _HEX_RE.fullmatch(params["response"])
        ):
            return AuthResult(False, username, MALFORMED)
        nonce = params["nonce"]
        issued = self._nonce_issued(nonce, algorithm)
        if issued is None:
            return AuthResult(False, username, BAD_NONCE)
        password = password_for(username)
        # Hash even for an unknown user so that timing does not tell the
        # peer which usernames exist.
        expected = _response(
            algorithm,
            username=username,
            realm=self.realm,
            password=password or "",
            nonce=nonce,
            method=method,
            uri=params["uri"],
            qop="auth",
            nc=nc,
            cnonce=params["cnonce"],
        )
        matches = hmac.compare_digest(expected, params["response"].lower())
        if password is None:
            return AuthResult(False, username, NO_SUCH_USER)
        if not matches:
            return AuthResult(False, username, BAD_RESPONSE)
        age = current - issued
        if age > self.nonce_lifetime or age < -self.nonce_lifetime:
            return AuthResult(False, username, STALE_NONCE, stale=True)
        if not self._check_nc(nonce, issued, int(nc, 16), current):
            return AuthResult(False, username, REPLAYED_NC, stale=True)
        return AuthResult(True, username, OK)

    def _check_nc(self, nonce: str, issued: int, nc: int, now: float) -> bool:
        """Record ``nc`` for ``nonce`` if it is higher than any seen before."""
        seen = self._seen.get(nonce)
        if seen is None:
            if issued <= self._forgotten_upto:
                # This nonce's history may have been forgotten, so any nc
                # might be a replay; a stale re-challenge costs an honest
                # client one round trip.
                return False
            last = 0
        else:
            last = seen[1]
        if nc <= last:
            return False
        self._seen[nonce] = (issued, nc)
        self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        # Entries stay in order of first use, which follows issue time closely
        # enough that expired ones collect at the front: pruning is amortised
        # O(1) per request instead of a scan of the whole map.
        horizon = now - self.nonce_lifetime
        while self._seen:
            nonce, (issued, _) = next(iter(self._seen.items()))
            if issued >= horizon and len(self._seen) <= self._max_tracked:
                break
            del self._seen[nonce]
            self._forgotten_upto = max(self._forgotten_upto, issued)
