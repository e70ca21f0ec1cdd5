"""The debit agreements file, applied a chunk at a time."""
from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select, text, update

from ledger.ids import reserve_ids_for_bulk
from runtime.bulk_sql import RowWriter, key_filters
from ledger.schema import agreements, banks, customers
from ledger.imports.applying import _AGREEMENT_FIELDS, _File, _seen_table
from ledger.imports.formats import HEADERS, LineError

class _AgreementsFile(_File):
    kind = "agreements"

    def __init__(self, ctx, result, path, reader):
        super().__init__(ctx, result, path, reader)
        self.banks_known: set[str] = set()
        self.agreements = RowWriter(self.conn, agreements, ("id", "customer_no", "bank_code", "account_no",
                                                          "account_name", "status", "debit_limit", "version",
                                                          "updated_at"))

    def _banks(self, codes: set[str]) -> set[str]:
        """The codes not in the banks table (those allowed are added to it)."""
        conn, ctx = self.conn, self.ctx
        unknown = codes - self.banks_known
        if unknown:
            self.banks_known.update(conn.execute(select(banks.c.bank_code)
                                                 .where(banks.c.bank_code.in_(sorted(unknown)))).scalars())
        missing = sorted(codes - self.banks_known)
        allowed = [code for code in missing if ctx.known_banks is None or code in ctx.known_banks]
        if allowed:
            names = ctx.known_banks or {}
            conn.execute(insert(banks), [{"bank_code": code, "name": str(names.get(code, ""))[:100],
                                          "created_at": ctx.at} for code in allowed])
            self.audits.write([self.audit("bank.create", "bank", code, {"import_id": self.import_id})
                               for code in allowed])
            self.banks_known.update(allowed)
            self.r.banks_added = sorted({*self.r.banks_added, *allowed})
        return set(missing) - set(allowed)

    def chunk(self, items):
        conn, r, errors, import_id, at = self.conn, self.r, self.errors, self.import_id, self.ctx.at_db
        nos = {v[0] for _, v in items}
        known_customers = set()
        for where in key_filters(conn, customers.c.customer_no, nos):
            known_customers.update(conn.execute(select(customers.c.customer_no).where(where)).scalars())
        unknown_banks = self._banks({v[1] for _, v in items})
        current: dict[tuple, object] = {}
        for where in key_filters(conn, agreements.c.customer_no, nos):
            query = select(agreements).where(where)
            if self.ctx.pg:
                # locks in a fixed order, that of the unique index: ordered by id, the planner walked
                # the primary key past every row this transaction had written (they have no
                # statistics yet), and a 536,000-line file slowed to 400 lines/s
                query = query.order_by(agreements.c.customer_no, agreements.c.bank_code,
                                         agreements.c.account_no).with_for_update()
            for row in conn.execute(query):
                current[(row.customer_no, row.bank_code, row.account_no)] = row
        keys = {"\t".join(v[:3]): (line, v) for line, v in reversed(items)}
        earlier = self.seen.get(keys)
        first: dict[str, int] = {}
        new, changed, seen_rows = [], [], []
        for line, v in items:
            no, bank, account = v[:3]
            key = f"{no}\t{bank}\t{account}"
            before = first.get(key) or earlier.get(key, (None,))[0]
            if before is not None:
                errors.append(LineError(line, "account_no",
                                        f"agreement {no}/{bank}/{account} appears again (first on line {before})"))
                continue
            first[key] = line
            bad = False
            if no not in known_customers:
                errors.append(LineError(line, "customer_no", f"unknown customer {no}"))
                bad = True
            if bank in unknown_banks:
                errors.append(LineError(line, "bank_code", f"unknown bank {bank} (not in the configuration's banks "
                                                           f"nor the banks table)"))
                bad = True
            if bad:
                seen_rows.append((key, line, None, None))
                continue
            seen_rows.append((key, line, no, None))   # owner: written, counted in the check of active ones
            old = current.get((no, bank, account))
            if old is None:
                new.append(v)
            elif (old.account_name, old.status, old.debit_limit) != v[3:]:
                changed.append((old, v))
        self.seen.add(seen_rows)
        r.created += len(new)
        r.updated += len(changed)
        r.applied += len(new) + len(changed)
        r.skipped += len(seen_rows) - len(new) - len(changed)
        # cancellations first, so that a customer never has two active agreements mid-way
        changed.sort(key=lambda pair: pair[1][4] != "C")
        if changed:
            conn.execute(update(agreements).where(agreements.c.id == bindparam("key"))
                         .values({f: bindparam(f) for f in (*_AGREEMENT_FIELDS, "version", "updated_at")}),
                         [{**dict(zip(_AGREEMENT_FIELDS, v[3:])), "key": old.id, "version": old.version + 1,
                           "updated_at": self.ctx.at} for old, v in changed])
        ids = reserve_ids_for_bulk(conn, agreements, len(new))
        self.agreements.write([(agreement_id, *v, 1, at) for agreement_id, v in zip(ids, new)])
        audits = [self.audit("agreement.create", "agreement", agreement_id, {
            "import_id": import_id, "version": 1, **dict(zip(HEADERS["agreements"], v))})
            for v, agreement_id in zip(new, ids)]
        audits += [self.audit("agreement.update", "agreement", old.id, {
            "import_id": import_id, "version": old.version + 1, "customer_no": v[0], "bank_code": v[1],
            "account_no": v[2], "changes": {f: [o, n] for f, o, n in zip(
                _AGREEMENT_FIELDS, (old.account_name, old.status, old.debit_limit), v[3:]) if o != n}})
            for old, v in changed]
        self.audits.write(audits)


    def finish(self):
        """At most one active agreement per customer of the file, once all of it is written."""
        conn, s, a = self.conn, _seen_table.c, agreements.c
        if self.ctx.pg:
            # statistics that count this transaction's rows (ANALYZE does): without them the planner
            # took the file's 536,000 keys for a handful and this query ran for minutes
            conn.execute(text("ANALYZE gridpay_import_seen, agreements"))
        owners = select(s.owner).where(s.owner.is_not(None))
        crowded = conn.execute(select(a.customer_no).where(a.status == "A", a.customer_no.in_(owners))
                               .group_by(a.customer_no).having(func.count() > 1)).scalars().all()
        for where in key_filters(conn, a.customer_no, crowded):
            rows = conn.execute(select(a.customer_no, a.bank_code, a.account_no)
                                .where(where, a.status == "A")).all()
            lines = self.seen.get("\t".join(row) for row in rows)
            by_customer: dict[str, list] = {}
            for no, bank, account in rows:
                line = lines.get(f"{no}\t{bank}\t{account}", (None,))[0]
                by_customer.setdefault(no, []).append((line or 0, (no, bank, account)))
            for no, active in sorted(by_customer.items()):
                active.sort()
                names = ", ".join(f"{k[1]}/{k[2]}" + (f" (line {ln})" if ln else " (already active)")
                                  for ln, k in active)
                for line, _ in active:
                    if line:
                        self.errors.append(LineError(line, "status", f"customer {no} would have {len(active)} "
                                                                     f"active agreements: {names}; at most one may be "
                                                                     f"active"))
        super().finish()


