"""Marking a month's rows on the database itself (temporary tables of the archive's transaction), so
that the archive's memory stays flat whatever the month's size: no key is held in Python.

- ``archive_nodes`` (tbl, k): every candidate row, by table name and key (as text);
- ``archive_ties`` (a_tbl, a_k, b_tbl, b_k): two rows that go together or stay together (``a`` a
  candidate; ``b`` one or not: a tie to a row that is not a candidate keeps ``a``);
- ``archive_kept`` (tbl, k): rows that stay, seeded by the selection's rules, then spread along the
  ties, a wave at a time, until a wave reaches nothing new (a group stays whole);
- ``archive_go_<table>`` (k, typed as the table's key): the candidates not kept, what the month's
  files and removals read.
"""
from __future__ import annotations

from sqlalchemy import (
    Column, Index, MetaData, String, Table, and_, cast, delete, exists, func, insert, literal, select, text,
)

_temporary = MetaData()
KEY = String(64)


def _table(name: str, *columns, keys: tuple = ()) -> Table:
    return Table(name, _temporary, *columns, *(Index(f"ix_{name}_{i}", *k) for i, k in enumerate(keys)),
                 prefixes=["TEMPORARY"])


def _row_ref(prefix: str = "", primary_key: bool = True) -> list[Column]:
    return [Column(f"{prefix}tbl", String(30), primary_key=primary_key),
            Column(f"{prefix}k", KEY, primary_key=primary_key)]


def _go_table(name: str, key: Column) -> Table:
    full = f"archive_go_{name}"
    if full in _temporary.tables:
        return _temporary.tables[full]
    return _table(full, Column("k", key.type, primary_key=True))


nodes = _table("archive_nodes", *_row_ref())
ties = _table("archive_ties", *_row_ref("a_", False), *_row_ref("b_", False),
              keys=(("a_tbl", "a_k"), ("b_tbl", "b_k")))
kept = _table("archive_kept", *_row_ref())
wave = _table("archive_wave", *_row_ref())
reached = _table("archive_reached", *_row_ref())
_SHARED = (nodes, ties, kept, wave, reached)


class Marks:
    """The temporary tables of one month's archive on ``conn`` (created empty; ``drop`` at the end)."""

    def __init__(self, conn, keys: dict[str, Column]):
        """``keys``: table name -> its key column (the go table's type)."""
        self.conn = conn
        self.go = {name: _go_table(name, col) for name, col in keys.items()}
        self.drop()
        for t in (*_SHARED, *self.go.values()):
            t.create(conn)

    def drop(self) -> None:
        """Drop the temporary tables (named in the temporary schema: never a table of the ledger)."""
        schema = "pg_temp" if self.conn.dialect.name == "postgresql" else "temp"
        for t in (*_SHARED, *self.go.values()):
            self.conn.execute(text(f"DROP TABLE IF EXISTS {schema}.{t.name}"))

    def analyze(self, *tables: Table) -> None:
        """PostgreSQL's autovacuum never analyzes a temporary table: without this the planner guesses."""
        if self.conn.dialect.name == "postgresql":
            for t in tables or _SHARED:
                self.conn.execute(text(f"ANALYZE {t.name}"))

    def add_nodes(self, name: str, key, *where) -> None:
        self.conn.execute(insert(nodes).from_select(["tbl", "k"], select(literal(name, String), cast(key, KEY))
                                                    .where(*where)))

    def add_ties(self, a: str, a_key, b: str, b_key, *where, select_from=None) -> None:
        query = select(literal(a, String), cast(a_key, KEY), literal(b, String), cast(b_key, KEY)).where(
            b_key.is_not(None), *where)
        if select_from is not None:
            query = query.select_from(select_from)
        self.conn.execute(insert(ties).from_select(["a_tbl", "a_k", "b_tbl", "b_k"], query))

    def keep(self, name: str, key, *where, select_from=None) -> None:
        """The rows ``key`` (a column) names where ``where`` stay, with their groups."""
        value = cast(key, KEY)
        query = select(literal(name, String), value).distinct().where(
            key.is_not(None), *where, ~exists().where(kept.c.tbl == name, kept.c.k == value))
        if select_from is not None:
            query = query.select_from(select_from)
        self.conn.execute(insert(kept).from_select(["tbl", "k"], query))

    def keep_tied_to_others(self) -> None:
        """A tie to a row that is not a candidate (newer, not final, open) keeps the candidate."""
        t = ties.c
        self.keep_from(select(t.a_tbl, t.a_k).distinct().where(
            ~exists().where(nodes.c.tbl == t.b_tbl, nodes.c.k == t.b_k)))

    def keep_from(self, query) -> None:
        """Rows (tbl, k) a query names stay."""
        q = query.subquery()
        self.conn.execute(insert(kept).from_select(["tbl", "k"], select(q.c[0], q.c[1]).where(
            ~exists().where(kept.c.tbl == q.c[0], kept.c.k == q.c[1]))))

    def spread(self) -> None:
        """Every row tied, however far, to a kept row is kept."""
        conn = self.conn
        conn.execute(delete(wave))
        conn.execute(insert(wave).from_select(["tbl", "k"], select(kept.c.tbl, kept.c.k)))
        while True:
            conn.execute(delete(reached))
            for near, far in (("a_", "b_"), ("b_", "a_")):
                tbl, k = ties.c[f"{far}tbl"], ties.c[f"{far}k"]
                conn.execute(insert(reached).from_select(["tbl", "k"], select(tbl, k).distinct().select_from(
                    ties.join(wave, and_(wave.c.tbl == ties.c[f"{near}tbl"], wave.c.k == ties.c[f"{near}k"])))
                    .where(~exists().where(kept.c.tbl == tbl, kept.c.k == k),
                           ~exists().where(reached.c.tbl == tbl, reached.c.k == k))))
            if not conn.execute(select(func.count()).select_from(reached)).scalar_one():
                return
            conn.execute(insert(kept).from_select(["tbl", "k"], select(reached.c.tbl, reached.c.k)))
            conn.execute(delete(wave))
            conn.execute(insert(wave).from_select(["tbl", "k"], select(reached.c.tbl, reached.c.k)))

    def settle(self, name: str) -> None:
        """``archive_go_<name>``: the table's candidates not kept."""
        go = self.go[name]
        n = nodes.c
        self.conn.execute(insert(go).from_select(["k"], select(cast(n.k, go.c.k.type)).where(
            n.tbl == name, ~exists().where(kept.c.tbl == name, kept.c.k == n.k))))

    def fill(self, name: str, key, *where) -> None:
        """``archive_go_<name>`` from a query (rows that follow others: feed rows, drop records)."""
        self.conn.execute(insert(self.go[name]).from_select(["k"], select(key).distinct().where(*where)))

    def going(self, name: str):
        """SQL: the keys of ``name``'s rows that go (an IN subquery)."""
        return select(self.go[name].c.k)

    def count(self, name: str) -> int:
        return self.conn.execute(select(func.count()).select_from(self.go[name])).scalar_one()
