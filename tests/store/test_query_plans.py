"""SQLite's query plans for the statements a call runs: each reads an index
bounded by the live calls or the call itself, never the integrator's whole
history, whose size grows without end.

Checked with EXPLAIN QUERY PLAN on a migrated database that holds ended
calls, as a node's database does after a day: the count of an integrator's
live calls (run for every new call, inside the insert's job) once took the
index of every call the integrator ever had, and its cost grew with the
history (3 ms per call after 7,500 calls)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click2dial.store import sqlite as store_sqlite
from click2dial.store.migrations import apply_sqlite
from click2dial.store.sqlite import SQL
from tests.store.support import make_call


def plan(conn: sqlite3.Connection, stmt: tuple[str, tuple[object, ...]]) -> list[str]:
    return [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + stmt[0], stmt[1])]


def database(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    apply_sqlite(conn)
    ended = []
    for i in range(300):
        call = make_call(agent=f"1{i % 20:03d}", state="ended", ended_at=1.0)
        ended.append(SQL.call_params(call))
    conn.executemany(SQL.call_insert, ended)
    conn.execute("ANALYZE")  # statistics change nothing: the plan is fixed
    return conn


def test_the_live_count_of_a_new_call_reads_only_the_live_calls(tmp_path: Path) -> None:
    conn = database(tmp_path)
    for stmt in (
        store_sqlite.count_live("acme"),
        store_sqlite.count_live("acme", ("c-1", "c-2")),
    ):
        assert plan(conn, stmt) == ["SEARCH calls USING INDEX calls_live_agent (integrator=?)"]
        assert conn.execute(*stmt).fetchone() == (0,)  # the ended calls are not counted


def test_the_per_call_statements_never_scan_the_history(tmp_path: Path) -> None:
    conn = database(tmp_path)
    per_call = {
        "agent busy": SQL.live_call_of_agent("acme", "1001"),
        "replay": SQL.call_by_key("acme", "key-1"),
        "live": SQL.is_live("c-1"),
        "update": SQL.update_call("c-1", {"agent_leg": "answered"}),
        "dialog": SQL.save_dialog("c-1", "agent_dialog", {"call_id": "x"}),
        "get": SQL.call_by_ref("c-1", "acme"),
        "end": SQL.finish_call(
            "c-1", (2.0, "callee_hungup", None, None, None, "callee"), returning=True
        ),
    }
    for name, stmt in per_call.items():
        steps = plan(conn, stmt)
        assert all(step.startswith("SEARCH") for step in steps), (name, steps)
        assert not any("calls_by_" in step for step in steps), (name, steps)
