"""The notification outbox: claiming due rows, delivery and failure
bookkeeping, redelivery and statistics — on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

from click2dial.store import Notification
from tests.store.support import T0, Db, make_call, make_notification

NOW = T0 + 100


def queue(db: Db, count: int, **overrides: object) -> list[Notification]:
    call = make_call()
    rows = [make_notification(call, created_at=T0 + i, **overrides) for i in range(count)]
    db.run(db.store.enqueue(rows))
    return rows


def test_due_rows_are_claimed_oldest_first_for_a_lease(db: Db) -> None:
    rows = queue(db, 3)
    # Another group's row (its own order): it is not held behind these.
    later = queue(db, 1, next_attempt_at=NOW + 5, target="webhook")

    due = db.run(db.store.due_notifications(NOW, lease=30))
    assert [n.id for n in due] == [n.id for n in rows]
    assert all(n.next_attempt_at == NOW + 30 and n.attempts == 0 for n in due)
    assert due[0].payload == rows[0].payload and due[0].target == "redis"
    # Claimed: nobody else gets them until the lease runs out.
    assert db.run(db.store.due_notifications(NOW + 1)) == []
    assert [n.id for n in db.run(db.store.due_notifications(NOW + 10, lease=30))] == [later[0].id]
    # A worker that died holding them: they come due again.
    again = db.run(db.store.due_notifications(NOW + 31, limit=2))
    assert [n.id for n in again] == [n.id for n in rows[:2]]


def test_a_group_stays_with_the_worker_holding_its_oldest_row(db: Db) -> None:
    first, second = queue(db, 2)
    (other,) = queue(db, 1, target="webhook")
    store = db.store

    assert [n.id for n in db.run(store.due_notifications(NOW, limit=1))] == [first.id]
    # The second row is due, but its group is claimed: another worker taking
    # it could deliver it before the first.  Other groups go on.
    assert [n.id for n in db.run(store.due_notifications(NOW))] == [other.id]
    assert db.run(store.due_notifications(NOW + 1)) == []
    assert db.run(store.mark_delivered(first.id, NOW + 1))
    assert [n.id for n in db.run(store.due_notifications(NOW + 1))] == [second.id]


def test_a_row_in_back_off_holds_its_younger_rows_back(db: Db) -> None:
    failing, younger = queue(db, 2)
    store = db.store
    db.run(store.due_notifications(NOW, limit=1))
    assert db.run(store.mark_failed(failing.id, "redis: down", NOW + 10))

    assert db.run(store.due_notifications(NOW + 5)) == []
    due = db.run(store.due_notifications(NOW + 10))
    assert [n.id for n in due] == [failing.id, younger.id]


def test_concurrent_claims_hand_a_group_to_one_worker(db: Db) -> None:
    rows = queue(db, 10)

    async def main() -> list[list[Notification]]:
        return await asyncio.gather(*(db.store.due_notifications(NOW, limit=3) for _ in range(4)))

    batches = [[n.id for n in batch] for batch in db.run(main())]
    # One worker gets the three oldest rows; nobody gets younger ones while
    # it holds them (whatever order the claims ran in).
    assert sorted(batches, key=len, reverse=True) == [[n.id for n in rows[:3]], [], [], []]


def test_concurrent_workers_claim_disjoint_rows(db: Db) -> None:
    rows = queue(db, 30)

    async def main() -> list[list[Notification]]:
        return await asyncio.gather(*(db.store.due_notifications(NOW, limit=30) for _ in range(4)))

    claimed = [n.id for batch in db.run(main()) for n in batch]
    assert sorted(claimed) == sorted(n.id for n in rows)


def test_delivered_and_failed_bookkeeping(db: Db) -> None:
    ok, bad = queue(db, 2)
    store = db.store
    db.run(store.due_notifications(NOW))

    assert db.run(store.mark_delivered(ok.id, NOW + 1))
    assert not db.run(store.mark_delivered(ok.id, NOW + 2))  # first delivery time stands
    assert db.run(store.mark_failed(bad.id, "redis: connection refused", NOW + 10))
    assert db.run(store.mark_failed(bad.id, "redis: timeout", NOW + 20))
    assert not db.run(store.mark_failed(ok.id, "late", NOW + 20))
    assert not db.run(store.mark_failed("no-such-id", "x", NOW))

    (pending,) = db.run(store.undelivered("acme"))
    assert pending.id == bad.id
    assert (pending.attempts, pending.last_error, pending.next_attempt_at) == (
        2,
        "redis: timeout",
        NOW + 20,
    )
    assert db.run(store.due_notifications(NOW + 19)) == []
    assert [n.id for n in db.run(store.due_notifications(NOW + 20))] == [bad.id]


def test_redeliver_sends_again_with_a_fresh_budget(db: Db) -> None:
    sent, failing = queue(db, 2)
    store = db.store
    db.run(store.due_notifications(NOW))
    db.run(store.mark_delivered(sent.id, NOW + 1))
    db.run(store.mark_failed(failing.id, "webhook: 500", NOW + 3600))

    assert not db.run(store.redeliver("globex", sent.id, now=NOW + 2))  # not theirs
    assert not db.run(store.redeliver("acme", "no-such-id", now=NOW + 2))
    assert db.run(store.redeliver("acme", sent.id, now=NOW + 2))
    assert db.run(store.redeliver("acme", failing.id, now=NOW + 2))

    due = db.run(store.due_notifications(NOW + 2))
    assert [(n.id, n.attempts, n.delivered_at, n.last_error) for n in due] == [
        (sent.id, 0, None, None),
        (failing.id, 0, None, None),
    ]


def test_undelivered_is_per_integrator_and_limited(db: Db) -> None:
    mine = queue(db, 3)
    other = make_call(integrator="globex")
    db.run(db.store.enqueue([make_notification(other, kind="agent", target="webhook")]))

    assert [n.id for n in db.run(db.store.undelivered("acme", limit=2))] == [n.id for n in mine[:2]]
    (theirs,) = db.run(db.store.undelivered("globex"))
    assert (theirs.kind, theirs.target, theirs.integrator) == ("agent", "webhook", "globex")
    assert db.run(db.store.undelivered("nobody")) == []


def test_outbox_stats(db: Db) -> None:
    store = db.store
    empty = db.run(store.outbox_stats(now=NOW))
    assert empty == {"pending": 0, "delivered": 0, "retries": 0, "oldest_pending_age": 0.0}

    a, b, c = queue(db, 3)
    queue_other = make_notification(make_call(integrator="globex"), created_at=T0 + 50)
    db.run(store.enqueue([queue_other]))
    db.run(store.due_notifications(NOW))
    db.run(store.mark_delivered(a.id, NOW))
    db.run(store.mark_failed(b.id, "down", NOW + 5))

    assert db.run(store.outbox_stats(now=NOW)) == {
        "pending": 3,
        "delivered": 1,
        "retries": 1,
        "oldest_pending_age": NOW - b.created_at,
    }
    assert db.run(store.outbox_stats(now=NOW, integrator="globex")) == {
        "pending": 1,
        "delivered": 0,
        "retries": 0,
        "oldest_pending_age": NOW - (T0 + 50),
    }
    assert c.created_at > b.created_at


def test_payload_json_round_trips(db: Db) -> None:
    payload = {
        "type": "cdr",
        "payload": {
            "call_ref": "c-1",
            "call_time": 12.5,
            "recording_url": None,
            "nested": {"list": [1, "two", {"three": True}]},
            "text": "Zoë — ☎",
        },
    }
    (row,) = queue(db, 1, payload=payload)
    (got,) = db.run(db.store.undelivered("acme"))
    assert got.payload == payload and got.id == row.id
