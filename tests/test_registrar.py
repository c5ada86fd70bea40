"""The registrar's REGISTER handling (RFC 3261 §10.3) on a real SQLite store:
digest challenge and replay, expiry, 423, the maximum, several contacts,
un-REGISTER, ``Contact: *``, reordered REGISTERs, blocking after repeated
failures.  REGISTERs are parsed from wire text and handed to the registrar
as the user agent would; the clock is the test's (expiry without waiting).
baresip and sipp register over the network in tests/e2e/test_registrar.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click2dial.registrar import Registrar, RegistrarConfig
from click2dial.sip.auth import DigestClient
from click2dial.sip.message import Request, parse_message
from click2dial.sip.transaction import Target
from click2dial.store import open_store

PASSWORDS = {"1001": "pw-1001", "1002": "pw-1002"}


@dataclass
class FakeTx:
    """Stands for the server transaction: the registrar reads only where the
    request came from."""

    target: Target


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Phone:
    """Builds REGISTERs of one extension and answers the challenges."""

    def __init__(self, registrar: Registrar, ext: str, password: str, source: str = "10.0.0.9"):
        self.registrar, self.ext = registrar, ext
        self.client = DigestClient(ext, password)
        self.call_id = f"reg-{ext}@{source}"
        self.cseq = 0
        self.tx = FakeTx(Target("udp", source, 5062))

    def build(self, contacts: list[str] | str, expires: int | None, auth: str | None,
              call_id: str | None = None, cseq: int | None = None) -> Request:  # fmt: skip
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        lines = [
            "REGISTER sip:127.0.0.1 SIP/2.0",
            *self.vias(f"z9hG4bK{cseq}x{id(self)}"),
            f"From: <sip:{self.ext}@127.0.0.1>;tag=f1",
            f"To: <sip:{self.ext}@127.0.0.1>",
            f"Call-ID: {call_id or self.call_id}",
            f"CSeq: {cseq} REGISTER",
        ]
        if contacts == "*":
            lines.append("Contact: *")
        else:
            lines += [f"Contact: {c}" for c in contacts]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        message = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
        assert isinstance(message, Request)
        return message

    def vias(self, branch: str) -> list[str]:
        return [f"Via: SIP/2.0/UDP 10.0.0.9:5062;branch={branch}"]

    async def send(self, request: Request) -> tuple[int, list[tuple[str, str]]]:
        return await self.registrar._register(request, self.tx)  # type: ignore[arg-type]

    async def register(
        self, contacts: list[str] | str, expires: int | None = None, **kw: Any
    ) -> tuple[int, list[tuple[str, str]]]:
        """A REGISTER, its 401, and the REGISTER with credentials."""
        status, headers = await self.send(self.build(contacts, expires, None, **kw))
        if status != 401:
            return status, headers
        challenge = dict(headers)["WWW-Authenticate"]
        auth = self.client.authorization(challenge, "REGISTER", "sip:127.0.0.1")
        kw.pop("cseq", None)
        return await self.send(self.build(contacts, expires, auth, **kw))


def contacts_of(headers: list[tuple[str, str]]) -> dict[str, int]:
    out = {}
    for name, value in headers:
        if name == "Contact":
            uri, _, expires = value.partition(";expires=")
            out[uri.strip("<>")] = int(expires)
    return out


@dataclass
class Env:
    registrar: Registrar
    clock: Clock

    def phone(self, ext: str = "1001", source: str = "10.0.0.9", password: str = "") -> Phone:
        return Phone(self.registrar, ext, password or PASSWORDS[ext], source)


def run(tmp_path: Path, body: Callable[[Env], Coroutine[Any, Any, None]], **config: Any) -> None:
    async def main() -> None:
        async with _env(tmp_path, **config) as env:
            await body(env)

    asyncio.run(asyncio.wait_for(main(), 30))


@asynccontextmanager
async def _env(tmp_path: Path, **config: Any) -> AsyncIterator[Env]:
    store = open_store(f"sqlite:///{tmp_path}/reg.db")
    await store.open()
    clock = Clock()
    registrar = Registrar(
        store, PASSWORDS, RegistrarConfig(realm="127.0.0.1", **config), clock=clock
    )
    await registrar.start()
    try:
        yield Env(registrar, clock)
    finally:
        await registrar.close()
        await store.close()


A = "<sip:1001@10.0.0.9:5062>"
B = "<sip:1001@10.0.0.10:5064;transport=tcp>"


def test_challenge_then_binding_with_expiry_stored_and_purged(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        phone = env.phone()
        status, headers = await phone.send(phone.build([A], 120, None))
        assert status == 401
        challenges = [v for n, v in headers if n == "WWW-Authenticate"]
        assert len(challenges) == 1 and "algorithm=MD5" in challenges[0]
        status, headers = await phone.register([A], 120)
        assert status == 200 and contacts_of(headers) == {"sip:1001@10.0.0.9:5062": 120}
        (binding,) = env.registrar.contacts("1001")
        assert (binding.transport, binding.host, binding.port) == ("udp", "10.0.0.9", 5062)
        assert await env.registrar.store.bindings("1001", now=env.clock.now) == [binding]
        env.clock.now += 119
        assert len(env.registrar.contacts("1001")) == 1
        env.clock.now += 2
        assert env.registrar.contacts("1001") == []  # expired: ignored at once
        await env.registrar.refresh()  # and purged from the store
        assert await env.registrar.store.bindings("1001", now=0) == []

    run(tmp_path, body)


def test_sha256_challenge_and_replayed_credentials(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        phone = env.phone()
        status, headers = await phone.send(phone.build([A], 120, None))
        assert status == 401
        challenges = [v for n, v in headers if n == "WWW-Authenticate"]
        assert ["SHA-256" in c for c in challenges] == [True, False]
        auth = phone.client.authorization(challenges[0], "REGISTER", "sip:127.0.0.1")
        assert "algorithm=SHA-256" in auth
        request = phone.build([A], 120, auth)
        assert (await phone.send(request))[0] == 200
        # The same Authorization again (same nonce and nc): a replay.
        status, headers = await phone.send(phone.build([A], 120, auth))
        assert status == 401 and "stale=true" in dict(headers)["WWW-Authenticate"]

    run(tmp_path, body, algorithms=("SHA-256", "MD5"))


def test_423_under_the_minimum_and_the_maximum_clamp(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        phone = env.phone()
        status, headers = await phone.register([A], 30)
        assert status == 423 and dict(headers)["Min-Expires"] == "60"
        assert env.registrar.contacts("1001") == []
        status, headers = await phone.register([f"{A};expires=7200"])
        assert status == 200 and contacts_of(headers) == {"sip:1001@10.0.0.9:5062": 3600}

    run(tmp_path, body)


def test_several_contacts_unregister_and_star(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        phone = env.phone()
        status, headers = await phone.register([A, f"{B};expires=300"], 600)
        assert status == 200
        assert contacts_of(headers) == {
            "sip:1001@10.0.0.9:5062": 600,
            "sip:1001@10.0.0.10:5064;transport=tcp": 300,
        }
        other = env.phone(source="10.0.0.11")  # another phone of the same agent
        status, headers = await other.register(["<sip:1001@10.0.0.11>"], 600)
        assert status == 200 and len(contacts_of(headers)) == 3
        assert len(env.registrar.contacts("1001")) == 3
        # Un-REGISTER one contact.
        status, headers = await phone.register([f"{B};expires=0"])
        assert status == 200 and "sip:1001@10.0.0.10:5064;transport=tcp" not in contacts_of(headers)
        assert len(await env.registrar.store.bindings("1001", now=env.clock.now)) == 2
        # A query (no Contact) lists the bindings.
        status, headers = await phone.register([])
        assert status == 200 and len(contacts_of(headers)) == 2
        # "*" needs Expires: 0.
        assert (await phone.register("*", 60))[0] == 400
        status, headers = await phone.register("*", 0)
        assert status == 200 and contacts_of(headers) == {}
        assert env.registrar.contacts("1001") == []
        assert await env.registrar.store.bindings("1001", now=0) == []

    run(tmp_path, body)


def test_a_reordered_register_of_the_same_call_id_is_refused(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        phone = env.phone()
        assert (await phone.register([A], 600))[0] == 200  # CSeq 2, after the 401's 1
        status, headers = await phone.send(phone.build([A], 60, None))
        auth = phone.client.authorization(
            dict(headers)["WWW-Authenticate"], "REGISTER", "sip:127.0.0.1"
        )
        # Valid credentials, but CSeq 1 of the same Call-ID: an older REGISTER.
        status, _ = await phone.send(phone.build([A], 60, auth, cseq=1))
        assert status == 500
        (binding,) = env.registrar.contacts("1001")
        assert binding.expires_at == env.clock.now + 600 and binding.cseq == 2

    run(tmp_path, body)


def test_repeated_failures_block_the_source_and_the_extension(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        scanner = env.phone(source="198.51.100.7", password="guess")
        for _ in range(5):
            assert (await scanner.register([A], 600))[0] == 403
        # Blocked: even the right password from there gets 403, no challenge.
        right = env.phone(source="198.51.100.7")
        assert (await right.send(right.build([A], 600, None)))[0] == 403
        other_ext = env.phone("1002", source="198.51.100.7")
        assert (await other_ext.send(other_ext.build([A], 600, None)))[0] == 403
        # The extension is blocked from anywhere too, 1002 elsewhere is not.
        elsewhere = env.phone(source="10.0.0.9")
        assert (await elsewhere.register([A], 600))[0] == 403
        assert (await env.phone("1002").register(["<sip:1002@10.0.0.9>"], 600))[0] == 200
        # Until the block expires.
        env.clock.now += 301
        assert (await elsewhere.register([A], 600))[0] == 200
        assert env.registrar.blocked_count >= 3

    run(tmp_path, body)


def test_a_binding_taken_on_another_node_is_read_on_a_miss_or_when_stale(
    tmp_path: Path,
) -> None:
    async def body(env: Env) -> None:
        # A second node on the same store, started after nothing was bound:
        # its periodic refresh is far away (refresh_interval).
        other = Registrar(
            env.registrar.store, PASSWORDS,
            RegistrarConfig(realm="127.0.0.1", node_id="node-2", lookup_ttl=5), clock=env.clock,
        )  # fmt: skip
        await other.start()
        try:
            assert (await env.phone().register([A], 600))[0] == 200
            assert other.contacts("1001") == []
            await other.lookup("1001")  # a miss: read from the store
            (binding,) = other.contacts("1001")
            assert (binding.host, binding.port) == ("10.0.0.9", 5062)
            # The phone moves (another flow, same contact) on node 1: node 2's
            # copy is trusted for lookup_ttl, then read again.
            moved = env.phone(source="10.0.0.77")
            moved.call_id = "reg-1001-moved"
            assert (await moved.register([A], 600))[0] == 200
            env.clock.now += 4
            await other.lookup("1001")
            assert other.contacts("1001")[0].host == "10.0.0.9"
            env.clock.now += 2
            await other.lookup("1001")
            assert other.contacts("1001")[0].host == "10.0.0.77"
            # Unbound on node 1: gone from node 2 at the next stale lookup.
            assert (await moved.register([A], 0))[0] == 200
            env.clock.now += 6
            await other.lookup("1001")
            assert other.contacts("1001") == []
        finally:
            await other.close()

    run(tmp_path, body, node_id="node-1")


class EdgePhone(Phone):
    """A phone whose REGISTERs a SIP edge relays: the edge's Via on top, the
    phone's own below it with the address the edge received it from."""

    def __init__(self, registrar: Registrar, ext: str, password: str, client: str) -> None:
        super().__init__(registrar, ext, password, client)
        self.tx = FakeTx(Target("udp", "10.0.0.1", 5060))

    def vias(self, branch: str) -> list[str]:
        client = self.call_id.split("@", 1)[1]
        return [
            f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}-edge",
            f"Via: SIP/2.0/UDP 10.0.0.9:5062;received={client};branch={branch}",
        ]


def test_failures_through_an_edge_block_the_client_behind_it_not_the_edge(
    tmp_path: Path,
) -> None:
    async def body(env: Env) -> None:
        registrar = env.registrar
        guesser = EdgePhone(registrar, "1001", "guess", "198.51.100.7")
        for _ in range(5):
            assert (await guesser.register([A], 600))[0] == 403
        # The guesser's address is blocked, even for another extension...
        blocked = EdgePhone(registrar, "1002", PASSWORDS["1002"], "198.51.100.7")
        assert (await blocked.send(blocked.build([A], 600, None)))[0] == 403
        # ...the edge itself and the phones behind it are not.
        other = EdgePhone(registrar, "1002", PASSWORDS["1002"], "203.0.113.20")
        assert (await other.register(["<sip:1002@10.0.0.9>"], 600))[0] == 200
        (binding,) = registrar.contacts("1002")
        assert (binding.host, binding.port) == ("10.0.0.1", 5060)  # the flow: the edge

    run(tmp_path, body, edges=frozenset({"10.0.0.1"}))


def test_without_edges_the_via_chain_is_not_trusted(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        # The same relayed REGISTERs from an address not configured as an
        # edge: a client could write any Via, so failures count against the
        # address they came from.
        guesser = EdgePhone(env.registrar, "1001", "guess", "198.51.100.7")
        for _ in range(5):
            assert (await guesser.register([A], 600))[0] == 403
        other = EdgePhone(env.registrar, "1002", PASSWORDS["1002"], "203.0.113.20")
        assert (await other.send(other.build([A], 600, None)))[0] == 403

    run(tmp_path, body)


def test_a_challenge_of_one_node_is_answered_on_another_with_a_shared_nonce_secret(
    tmp_path: Path,
) -> None:
    secret = b"one-secret-for-every-node"

    async def body(env: Env) -> None:
        store = env.registrar.store
        shared, own = (
            Registrar(
                store,
                PASSWORDS,
                RegistrarConfig(realm="127.0.0.1", nonce_secret=key),
                clock=env.clock,
            )
            for key in (secret, b"this-node-has-its-own-secret")
        )
        phone = env.phone()
        status, headers = await phone.send(phone.build([A], 600, None))
        assert status == 401
        auth = phone.client.authorization(
            dict(headers)["WWW-Authenticate"], "REGISTER", "sip:127.0.0.1"
        )
        phone.registrar = own  # the edge sent the retry to another node
        assert (await phone.send(phone.build([A], 600, auth)))[0] == 403
        phone.registrar = shared
        assert (await phone.send(phone.build([A], 600, auth)))[0] == 200
        assert [b.contact for b in await store.bindings("1001", now=env.clock.now)] == [
            "sip:1001@10.0.0.9:5062"
        ]

    run(tmp_path, body, nonce_secret=secret)


def test_a_register_on_another_node_sees_the_bindings_taken_on_the_first(
    tmp_path: Path,
) -> None:
    async def body(env: Env) -> None:
        other = Registrar(
            env.registrar.store, PASSWORDS,
            RegistrarConfig(realm="127.0.0.1", nonce_secret=b"n" * 32), clock=env.clock,
        )  # fmt: skip
        await other.start()
        try:
            assert (await env.phone().register([A, B], 600))[0] == 200
            # The phone's next REGISTERs reach the second node: a query
            # lists both bindings, "*" removes both from the store.
            phone = Phone(other, "1001", PASSWORDS["1001"])
            status, headers = await phone.register([], None)
            assert status == 200 and set(contacts_of(headers)) == {
                "sip:1001@10.0.0.9:5062",
                "sip:1001@10.0.0.10:5064;transport=tcp",
            }
            assert (await phone.register("*", 0))[0] == 200
            assert await env.registrar.store.bindings("1001", now=env.clock.now) == []
        finally:
            await other.close()

    run(tmp_path, body)
