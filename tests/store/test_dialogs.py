"""Saved SIP dialogs of live calls (what crash recovery hangs up): saved per
leg, read back as they were, gone with the end of the call — on SQLite and
PostgreSQL alike."""

from __future__ import annotations

from typing import Any

import pytest

from click2dial.store.migrations import LATEST
from tests.store.support import Db, end_fields, make_call, make_notification


def snapshot(call_id: str, cseq: int = 1, **extra: Any) -> dict[str, Any]:
    """The shape ``Dialog.snapshot()`` gives (this layer does not read it)."""
    return {
        "role": "uac",
        "call_id": call_id,
        "local": '"Agent ünï" <sip:c2d@127.0.0.1:5060>;tag=ab12',
        "remote": "<sip:1001@127.0.0.1:5070>;tag=cd34",
        "remote_target": "sip:agent@127.0.0.1:5070;transport=udp",
        "route_set": ["<sip:p1.example.com;lr>"],
        "local_cseq": cseq,
        "remote_cseq": None,
        "transport": "udp",
    } | extra


def test_both_legs_are_saved_and_read_back_as_they_were(db: Db) -> None:
    call = make_call()
    agent = snapshot("agent-leg@x", 3, flow=["udp", "203.0.113.9", 40000])
    callee = snapshot("callee-leg@x", 1, role="uac", remote_cseq=7)

    async def main() -> None:
        await db.store.create_call(call)
        assert await db.store.dialogs_of(call.call_ref) == {}
        await db.store.save_dialog(call.call_ref, "agent", agent)
        assert await db.store.dialogs_of(call.call_ref) == {"agent": agent}
        await db.store.save_dialog(call.call_ref, "callee", callee)
        assert await db.store.dialogs_of(call.call_ref) == {"agent": agent, "callee": callee}
        # The call record itself is untouched by it.
        assert await db.store.get_call("acme", call.call_ref) == call

    db.run(main())


def test_a_later_save_of_a_leg_replaces_the_earlier_one(db: Db) -> None:
    call = make_call()

    async def main() -> None:
        await db.store.create_call(call)
        await db.store.save_dialog(call.call_ref, "agent", snapshot("a@x", 1))
        await db.store.save_dialog(call.call_ref, "agent", snapshot("a@x", 9))
        assert await db.store.dialogs_of(call.call_ref) == {"agent": snapshot("a@x", 9)}

    db.run(main())


def test_the_end_of_the_call_drops_its_dialogs(db: Db) -> None:
    call = make_call()

    async def main() -> None:
        await db.store.create_call(call)
        await db.store.save_dialog(call.call_ref, "agent", snapshot("a@x"))
        await db.store.save_dialog(call.call_ref, "callee", snapshot("c@x"))
        ended = await db.store.finish_call(
            call.call_ref, notifications=[make_notification(call)], **end_fields()
        )
        assert ended is not None
        assert await db.store.dialogs_of(call.call_ref) == {}

    db.run(main())
    db.execute_raw(
        "UPDATE calls SET state = 'talking' WHERE agent_dialog IS NULL AND callee_dialog IS NULL"
        f" AND call_ref = '{call.call_ref}'"
    )
    # Nothing is left behind in the row: revived by hand, the call has no
    # dialogs (had the columns not been cleared, the UPDATE would not match).
    assert db.run(db.store.dialogs_of(call.call_ref)) == {}
    assert db.run(db.store.get_call("acme", call.call_ref)).state == "talking"  # type: ignore[union-attr]


def test_nothing_is_saved_for_an_ended_or_unknown_call(db: Db) -> None:
    call = make_call()

    async def main() -> None:
        await db.store.create_call(call)
        await db.store.finish_call(call.call_ref, **end_fields())
        # A save that lands after the end (the two raced) must not revive a
        # dialog that recovery would then hang up again.
        await db.store.save_dialog(call.call_ref, "callee", snapshot("late@x"))
        await db.store.save_dialog("no-such-call", "agent", snapshot("x@x"))
        assert await db.store.dialogs_of(call.call_ref) == {}
        assert await db.store.dialogs_of("no-such-call") == {}

    db.run(main())


@pytest.mark.parametrize("leg", ["trunk", "Agent", "agent_dialog", ""])
def test_an_unknown_leg_is_refused(db: Db, leg: str) -> None:
    call = make_call()
    db.run(db.store.create_call(call))
    with pytest.raises(ValueError, match="leg"):
        db.run(db.store.save_dialog(call.call_ref, leg, snapshot("x@x")))


def test_a_database_from_before_saved_dialogs_is_upgraded_with_its_live_calls(
    fresh_db: Db,
) -> None:
    call = make_call()
    fresh_db.run(fresh_db.store.create_call(call))
    fresh_db.run(fresh_db.store.close())
    # Back to schema 1, as an older release left it.
    fresh_db.execute_raw("ALTER TABLE calls DROP COLUMN agent_dialog")
    fresh_db.execute_raw("ALTER TABLE calls DROP COLUMN callee_dialog")
    fresh_db.execute_raw("DROP TABLE bindings")  # schema 3
    fresh_db.execute_raw("DROP TABLE nodes")  # schema 4
    if fresh_db.kind == "postgres":
        fresh_db.execute_raw("DROP FUNCTION click2dial_limits")  # schema 5
    fresh_db.execute_raw("DELETE FROM schema_version WHERE version >= 2")
    fresh_db.reopen()
    assert fresh_db.run(fresh_db.store.schema_version()) == LATEST
    assert fresh_db.run(fresh_db.store.get_call("acme", call.call_ref)) == call
    fresh_db.run(fresh_db.store.save_dialog(call.call_ref, "callee", snapshot("c@x")))
    assert fresh_db.run(fresh_db.store.dialogs_of(call.call_ref)) == {"callee": snapshot("c@x")}
