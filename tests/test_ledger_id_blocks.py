"""Ids reserved before insert (ledger/ids.py): on PostgreSQL a connection takes a block of each
table's sequence and hands ids out from it, so a group commit mostly sends no statement for its
ids; every id stays unique across connections, and a connection that dies takes its block with it
(a gap, never a reuse)."""
from __future__ import annotations

from sqlalchemy import event, text

from ledger.db import make_engine
from ledger.ids import ID_BLOCK, reserve_ids_many
from ledger.schema import journal_entries, payments
from ledger_helpers import new_engine


def _statements(engine) -> list[str]:
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: sent.append(statement))
    return sent


def test_a_connection_hands_out_its_block_then_takes_another(pg_url):
    new_engine(pg_url).dispose()   # the schema
    engine = make_engine(pg_url, pool_size=1)
    sent = _statements(engine)
    try:
        got = []
        for n in (3, 5, ID_BLOCK - 8, 1):   # 3 + 5 + 56 = one block; the last id is the next block's
            with engine.begin() as conn:
                sent.clear()
                pays, entries = reserve_ids_many(conn, [(payments, n), (journal_entries, 1)])
                assert len(pays) == n and len(entries) == 1
                got.append((pays, [s for s in sent if "nextval" in s]))
        assert [len(asked) for _, asked in got] == [1, 0, 0, 1]   # the first batch and the block's end only
        ids = [i for pays, _ in got for i in pays]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) == ID_BLOCK + 1
        with engine.begin() as conn:   # more than a block at once: as many as asked, in one statement
            sent.clear()
            (big,) = reserve_ids_many(conn, [(payments, 3 * ID_BLOCK)])
        assert len(big) == 3 * ID_BLOCK and not set(big) & set(ids)
        assert len([s for s in sent if "nextval" in s]) == 1
    finally:
        engine.dispose()


def test_two_connections_never_share_an_id_and_a_dead_one_takes_its_block_with_it(pg_url):
    admin = new_engine(pg_url)
    a, b = make_engine(pg_url, pool_size=1), make_engine(pg_url, pool_size=1)
    try:
        seen: list[int] = []
        for _ in range(40):
            for engine in (a, b):
                with engine.begin() as conn:
                    seen += reserve_ids_many(conn, [(payments, 3)])[0]
        assert len(seen) == len(set(seen)) == 240
        with a.connect() as conn:
            pid = conn.connection.driver_connection.info.backend_pid
        with admin.connect() as conn:
            conn.execute(text("select pg_terminate_backend(:p)"), {"p": pid})
        # the pool finds its connection dead (pre-ping) and opens another, with no block of its own
        with a.begin() as conn:
            (after,) = reserve_ids_many(conn, [(payments, 2)])
        assert not set(after) & set(seen) and min(after) > max(seen)
    finally:
        for engine in (a, b, admin):
            engine.dispose()
