"""The bills file, applied a chunk at a time: new bills, their journal entries and notices, and
prepaid balances paying them."""
from __future__ import annotations

from datetime import date

from config import notices
from ledger.posting import apply_prepaid, lock_customers
from ledger.posting.writes import BillJournal
from runtime.bulk_sql import RowWriter
from ledger.schema import bills, outbox
from ledger.imports.applying import _File, _lookup, _query
from ledger.imports.formats import LineError
from ledger.imports.line_checks import _check_bill
from ledger.imports.reading import _Reader


def _bill_content(no: str, period: str, principal: int, penalty: int, due: str, category: str) -> str:
    return f"{no}|{period}|{principal}|{penalty}|{due}|{category}"


class _BillsFile(_File):
    kind = "bills"

    def __init__(self, ctx, result, path, reader):
        super().__init__(ctx, result, path, reader)
        self.bills = RowWriter(self.conn, bills, ("bill_id", "customer_no", "period", "principal", "penalty", "due_date",
                                                "category", "kind", "import_id", "created_at"))
        self.journal = BillJournal(self.conn)
        self.outbox = RowWriter(self.conn, outbox, ("customer_no", "mobile", "kind", "ref", "text", "params", "state",
                                                  "attempts", "next_attempt_at", "created_at"))
        self.unwritten = False                  # lines with a good bill id not written (seen holds them)
        self.again: list[tuple[int, str]] = []  # lines giving a bill written from this file with other content
        self.waiting: list[tuple] = []          # their new bills (and notice facts): told once prepaid is applied

    def chunk(self, items):
        conn, r, errors, import_id = self.conn, self.r, self.errors, self.import_id
        dialect = conn.dialect.name
        mobiles, funded = {}, set()   # the chunk's customers with a prepaid balance
        wording = {}                  # of those with a mobile: (collection type, active agreement's account)
        for no, mobile, prepaid, collection, account in _lookup(conn, _query("mobiles", dialect),
                                                                {v[0] for _, v in items}):
            mobiles[no] = mobile
            if mobile:
                wording[no] = (collection, account)
            if prepaid is not None and prepaid > 0:
                funded.add(no)
        ids = [v[2] for _, v in items]
        known = {row.bill_id: row for row in _lookup(conn, _query("bills", dialect), ids)}
        # lines not written (unknown customer) whose bill id a later line may give again
        earlier = self.seen.get(i for i in ids if i not in known) if self.unwritten else {}
        first: dict[str, tuple[int, str]] = {}
        unwritten, new = [], []
        skipped = 0
        for line, v in items:
            no, period, bill_id, principal, penalty, due, category = v
            unknown = no not in mobiles
            if unknown:
                errors.append(LineError(line, "customer_no", f"unknown customer {no}"))
            old = known.get(bill_id)
            mine = old is not None and old.import_id == import_id   # written from an earlier line of this file
            if old is None or mine:
                content = _bill_content(no, period, principal, penalty, due, category)
                before = first.get(bill_id) or earlier.get(bill_id)
                if before is None and mine:
                    if content == _bill_content(old.customer_no, old.period, old.principal, old.penalty,
                                                old.due_date.isoformat(), old.category):
                        skipped += 1
                    else:   # its first line is looked up at the end: only a rejected file needs it
                        self.again.append((line, bill_id))
                    continue
                if before is not None:
                    first_line, first_content = before
                    if first_content == content:
                        skipped += 1
                    else:
                        errors.append(LineError(line, "bill_id", f"bill {bill_id} appears again with other "
                                                                 f"content (first on line {first_line})"))
                    continue
                first[bill_id] = (line, content)
                if unknown:
                    unwritten.append((bill_id, line, None, content))
                else:
                    new.append(v)
                continue
            diffs = [f for f, a, b in (("customer_no", old.customer_no, no), ("period", old.period, period),
                                       ("principal", old.principal, principal), ("penalty", old.penalty, penalty),
                                       ("due_date", old.due_date.isoformat(), due),
                                       ("category", old.category, category)) if a != b]
            if old.kind != "O":
                diffs.insert(0, "kind")
            if diffs:
                errors.append(LineError(line, "bill_id", f"bill {bill_id} was imported before with other "
                                                         f"content ({', '.join(diffs)} differ); corrections are made "
                                                         f"with 'gridpay ledger correct'"))
            else:
                skipped += 1
        if unwritten:
            self.seen.add(unwritten)
            self.unwritten = True
        r.created += len(new)
        r.applied += len(new)
        r.skipped += skipped
        if new:
            self._write(new, mobiles, funded, wording)

    def _write(self, new: list[tuple], mobiles: dict, funded: set[str], wording: dict) -> None:
        ctx = self.ctx
        at, day, actor, import_id = ctx.at_db, ctx.day_db, ctx.actor, self.import_id
        if ctx.pg:   # binary COPY takes a date; SQLite stores the text the file has
            self.bills.write([(bill_id, no, period, principal, penalty, date.fromisoformat(due), category, "O",
                               import_id, at) for no, period, bill_id, principal, penalty, due, category in new])
        else:
            self.bills.write([(bill_id, no, period, principal, penalty, due, category, "O", import_id, at)
                              for no, period, bill_id, principal, penalty, due, category in new])
        self.journal.write(new, day, actor, at)
        rows = []
        for v in new:
            no = v[0]
            mobile = mobiles.get(no)
            if no in funded:
                self.waiting.append((v, mobile, wording.get(no)))
            elif mobile:
                rows.append(self._notice(v, mobile, wording[no], paid=False))
        self.outbox.write(rows)
        self.r.notices += len(rows)

    def _first_lines(self) -> None:
        """The lines giving a bill id again with other content, once the file is read: the first
        line of each such bill id (read the file again; only a rejected file comes here)."""
        wanted = {bill_id for _, bill_id in self.again}
        firsts: dict[str, int] = {}
        for line, row in _Reader(self.path, "bills", []):
            if row[2] in wanted and row[2] not in firsts and _check_bill(line, row, []) is not None:
                firsts[row[2]] = line
        for line, bill_id in self.again:
            self.errors.append(LineError(line, "bill_id", f"bill {bill_id} appears again with other content "
                                                          f"(first on line {firsts[bill_id]})"))

    def _notice(self, v: tuple, mobile: str, wording: tuple, paid: bool) -> tuple:
        no, period, bill_id, principal, penalty, due, _ = v
        if paid:
            sms = notices.bill_paid_from_prepaid(no, period, principal + penalty)
        else:
            sms = notices.bill_notice(no, period, principal + penalty, date.fromisoformat(due), *wording)
        at = self.ctx.at_db
        return (no, mobile, "bill_notice", f"bill:{bill_id}", sms.text, sms.params, "pending", 0, at, at)

    def finish(self):
        super().finish()
        if self.again:
            self._first_lines()
        funded = sorted({v[0] for v, _, _ in self.waiting})   # with a prepaid balance and a new bill
        if self.errors or not funded:
            return
        ctx = self.ctx
        lock_customers(self.conn, funded)
        paid = {bill_id for _, bill_id, _ in apply_prepaid(self.conn, funded, at=ctx.at,
                                                             business_date=ctx.business_date, actor=ctx.actor)}
        rows = []
        for v, mobile, wording in self.waiting:
            if v[2] in paid:
                self.r.prepaid_applied += 1
            if mobile:
                rows.append(self._notice(v, mobile, wording, paid=v[2] in paid))
        self.outbox.write(rows)
        self.r.notices += len(rows)


