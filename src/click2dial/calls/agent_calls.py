"""Calls placed by an agent (SPEC §4): an INVITE to ``sip:<callee>@<server>``
from a registered phone or a browser softphone becomes a click-to-dial call.

It owns the SIP edge of that entry: the digest check with a 407 challenge
(the registrar's digest server, nonces and failure blocking, so a password
guesser is blocked whichever request it guesses with), the mapping of the
INVITE onto the REST payload, and the mapping of a refusal onto a SIP final
response.  Everything else (validation, permissions, limits, busy agents,
CDRs, notifications) is the call service's, exactly as for a REST call; the
call itself then runs in the same flow, entered with
:class:`~.flow.StartIncoming`.

The INVITE's headers:

* the Request-URI user is the ``callee``;
* ``X-Teleforge-Outbound-Id`` (alias ``X-Platforma-Outbound-ID``) the
  ``outbound_id``;
* ``X-Teleforge-Contact-Ref`` (aliases ``X-Teleforge-Call-Ref``,
  ``X-Platforma-Call-Ref``) the ``contact_ref``;
* the ``agent`` is the authenticated extension, never a header.

A refused call gets a final response that says why: one
``Warning: 399 <host> "<field>: <rule>"`` per field error, and the service's
title as the reason phrase.  Statuses: 403 for permissions (and an agent of
no integrator), 486 when the agent already has a live call, 503 with
``Retry-After`` over a limit or while the node cannot take calls, 484 when
every validation error is the callee's (the number dialled is not a number),
400 for the other validation errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..config import IntegratorConfig
from ..registrar import Registrar
from ..sip.aio import Call
from ..vocabulary import CallSource
from .rules import FieldError
from .service import CallError, CallService

log = logging.getLogger(__name__)

#: Payload field → the INVITE headers that carry it, first match wins.
HEADERS: dict[str, tuple[str, ...]] = {
    "outbound_id": ("X-Teleforge-Outbound-Id", "X-Platforma-Outbound-ID"),
    "contact_ref": ("X-Teleforge-Contact-Ref", "X-Teleforge-Call-Ref", "X-Platforma-Call-Ref"),
}


def sip_refusal(error: CallError) -> int:
    """The SIP status of a refused call request (see the module docstring)."""
    if error.status == 403:
        return 403
    if error.status == 409:
        return 486
    if error.status in (429, 503):
        return 503
    if error.status == 422:
        if error.errors and all(e.field == "callee" for e in error.errors):
            return 484
        return 400
    return 500


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def warnings_for(host: str, errors: list[FieldError]) -> list[tuple[str, str]]:
    """One RFC 3261 §20.43 ``Warning`` (code 399, miscellaneous) per field error."""
    return [("Warning", f'399 {host} "{_quoted(f"{e.field}: {e.rule}")}"') for e in errors]


def _phrase(text: str) -> str:
    """A reason phrase: one line of printable text."""
    return " ".join(text.split()) or "Refused"


class AgentCalls:
    """The ``on_invite`` handler of INVITEs outside any dialog."""

    def __init__(
        self,
        *,
        registrar: Registrar,
        service: Callable[[], CallService | None],
        integrator_of: Callable[[str], IntegratorConfig | None],
        host: str,
    ) -> None:
        self.registrar = registrar
        self.service = service
        self.integrator_of = integrator_of
        self.host = host

    async def on_invite(self, call: Call) -> None:
        request, tx = call.request, call.server_tx
        assert request is not None and tx is not None
        agent, status, headers = self.registrar.authenticate(
            request, tx.target.host, request.from_.uri.user or ""
        )
        if agent is None:
            # Nothing of an unauthenticated INVITE goes further than this.
            call.reject(status, headers)
            return
        integrator = self.integrator_of(agent)
        service = self.service()
        if integrator is None or service is None:
            why = "agent: no_integrator" if integrator is None else "the service is starting"
            log.warning("agent %s placed a call but %s", agent, why)
            code = 403 if integrator is None else 503
            extra = [("Retry-After", "5")] if integrator is not None else []
            call.reject(code, [("Warning", f'399 {self.host} "{why}"'), *extra])
            return
        payload: dict[str, object] = {"agent": agent, "callee": request.uri.user or ""}
        for field, names in HEADERS.items():
            for name in names:
                value = request.headers.get(name)
                if value is not None:
                    payload[field] = value.strip()
                    break
        # Handed off before the call starts: from here on the flow answers
        # the INVITE (a refusal below answers it at once).
        call.handed_off = True
        try:
            await service.place(
                integrator, payload, source=CallSource.WEBRTC.value, agent_call=call
            )
        except CallError as exc:
            headers = warnings_for(self.host, exc.errors)
            if exc.retry_after is not None:
                headers.append(("Retry-After", str(exc.retry_after)))
            log.info("agent %s: call to %s refused: %s", agent, payload["callee"], exc.title)
            if not call.ended.done():  # not cancelled meanwhile
                call.reject(sip_refusal(exc), headers, _phrase(exc.title))
        except Exception:
            if not call.ended.done():
                call.reject(500)
            raise
