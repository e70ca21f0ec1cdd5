"""Strings one character too long, through the bulk statements on PostgreSQL: refused, never cut.

PostgreSQL casts a string to VARCHAR(n) by cutting it short without a word, where assigning it to a
VARCHAR(n) column refuses it ("value too long"). The bulk writes (``runtime.bulk_sql``: unnest of
arrays, or scalars) and key look-ups (``in_list``, ``key_filters``) cast their parameters; cast to
the column's length, a bank file's over-long field was stored cut and an over-long key matched the
key it starts with. They cast to the unsized type now: the column refuses what does not fit and a
key matches only itself."""
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.exc import DataError

from runtime.bulk_sql import Writes, in_list, insert_rows, key_filters

meta = MetaData()
codes = Table("length_checked", meta, Column("k", Integer, primary_key=True), Column("code", String(5)))


@pytest.fixture
def engine(pg_url):
    engine = create_engine(pg_url)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(codes.insert(), [{"k": 1, "code": "ABCDE"}])
    yield engine
    engine.dispose()


def stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(codes).order_by(codes.c.k))]


@pytest.mark.parametrize("rows", [1, 2], ids=["one row (scalars)", "two rows (arrays)"])
def test_an_insert_of_a_string_too_long_is_refused_not_cut(engine, rows):
    batch = [{"k": 10 + i, "code": "ABCDEF" if i == 0 else "XY"} for i in range(rows)]
    with pytest.raises(DataError, match="too long"):
        with engine.begin() as conn:
            insert_rows(conn, codes, batch)
    with pytest.raises(DataError, match="too long"):
        with engine.begin() as conn:
            writes = Writes(conn)
            writes.insert(codes, batch)
            writes.flush(commit=True)
    assert stored(engine) == [(1, "ABCDE")]


def test_an_update_to_a_string_too_long_is_refused_not_cut(engine):
    with pytest.raises(DataError, match="too long"):
        with engine.begin() as conn:
            writes = Writes(conn)
            writes.update(codes, "k", [{"k": 1, "code": "ABCDEF"}])
            writes.flush()
    assert stored(engine) == [(1, "ABCDE")]


def test_a_key_one_character_too_long_matches_nothing(engine):
    with engine.connect() as conn:
        assert conn.execute(select(codes.c.k).where(in_list("postgresql", codes.c.code, "ids")),
                            {"ids": ["ABCDEF"]}).all() == []
        assert [conn.execute(select(codes.c.k).where(f)).all() for f in key_filters(conn, codes.c.code,
                                                                                     ["ABCDEF"])] == [[]]
        assert conn.execute(select(codes.c.k).where(in_list("postgresql", codes.c.code, "ids")),
                            {"ids": ["ABCDE"]}).scalars().all() == [1]
