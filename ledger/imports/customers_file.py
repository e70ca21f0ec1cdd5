"""The customers file, applied a chunk at a time."""
from __future__ import annotations

import operator

from sqlalchemy import bindparam, update

from runtime.bulk_sql import RowWriter
from ledger.schema import customer_history, customers
from ledger.imports.applying import _CUSTOMER_FIELDS, _CUSTOMER_OPTIONAL, _File, _lookup, _query
from ledger.imports.formats import LineError


class _CustomersFile(_File):
    kind = "customers"

    def __init__(self, ctx, result, path, reader):
        super().__init__(ctx, result, path, reader)
        self.customers = RowWriter(self.conn, customers, ("customer_no", *_CUSTOMER_FIELDS, *_CUSTOMER_OPTIONAL,
                                                        "version", "updated_at"))
        self.history = RowWriter(self.conn, customer_history, ("customer_no", "version", *_CUSTOMER_FIELDS,
                                                             *_CUSTOMER_OPTIONAL, "import_id", "recorded_at"))
        self.fields: tuple[str, ...] = ()

    def chunk(self, items):
        if not self.fields:   # the header has been read: the columns the file gives
            self.fields = self.reader.columns[1:]
            self.current = operator.attrgetter(*self.fields)           # of a row of the customers table
            self.missing = _CUSTOMER_OPTIONAL[len(self.fields) - len(_CUSTOMER_FIELDS):]   # kept as they are
            self.kept = lambda row: tuple(getattr(row, name) for name in self.missing)
        conn, r, errors = self.conn, self.r, self.errors
        keys = [key for _, key, _ in items]
        earlier = self.seen.get(keys)
        known = {row.customer_no: row for row in _lookup(conn, _query("customers", conn.dialect.name),
                                                         sorted({k for _, k, v in items if v is not None}))}
        first: dict[str, int] = {}
        new, changed = [], []
        for line, key, values in items:
            seen = first.get(key) or earlier.get(key, (None,))[0]
            if seen is not None:
                errors.append(LineError(line, "customer_no", f"{key} appears again (first on line {seen})"))
                continue
            first[key] = line
            if values is None:
                continue
            old = known.get(key)
            if old is None:
                new.append(values)
            elif self.current(old) != values[1:]:
                changed.append((old, values))
        self.seen.add([(key, line, None, None) for key, line in first.items()])
        r.created += len(new)
        r.updated += len(changed)
        r.applied += len(new) + len(changed)
        r.skipped += sum(1 for _, _, v in items if v is not None) - len(new) - len(changed)
        self._write(new, changed)

    def _write(self, new: list[tuple], changed: list[tuple]) -> None:
        conn, at, import_id, fields = self.conn, self.ctx.at_db, self.import_id, self.fields
        absent = (None,) * len(self.missing)   # a new customer's columns the file does not give
        self.customers.write([(*v, *absent, 1, at) for v in new])
        if changed:
            conn.execute(update(customers).where(customers.c.customer_no == bindparam("key"))
                         .values({f: bindparam(f) for f in (*fields, "version", "updated_at")}),
                         [{**dict(zip(fields, v[1:])), "key": v[0], "version": old.version + 1,
                           "updated_at": self.ctx.at} for old, v in changed])
        self.history.write([(v[0], 1, *v[1:], *absent, import_id, at) for v in new] +
                           [(v[0], old.version + 1, *v[1:], *self.kept(old), import_id, at) for old, v in changed])
        given = fields[len(_CUSTOMER_FIELDS):]   # the optional columns the file has
        audits = [self.audit("customer.create", "customer", v[0], {
            "customer_name": v[1], "customer_type": v[2], "import_id": import_id, "mobile": v[5],
            "prepay_allowed": v[4], "status": v[3], "version": 1, **dict(zip(given, v[6:]))}) for v in new]
        for old, v in changed:
            audits.append(self.audit("customer.update", "customer", v[0], {
                "import_id": import_id, "version": old.version + 1,
                "changes": {f: [o, n] for f, o, n in zip(fields, self.current(old), v[1:]) if o != n}}))
        self.audits.write(audits)


