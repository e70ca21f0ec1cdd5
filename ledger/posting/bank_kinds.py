"""Deciding the kinds banks send through the gateway (counter payments and their reversals) and
the debit engine reports (direct debits' results), against a batch's prefetched state.

Rules where docs/spec/INTERFACE.md is silent are in docs/ledger.md; the main ones are here.
"""
from __future__ import annotations

from config import notices
from ledger.audit import bank_actor
from ledger.ids import bank_number, id_year
from ledger.money import AMOUNT_LIMIT, fits
from ledger.posting.kinds import DEBIT_METHOD, METHODS, CounterPayment, DebitResult, PaymentReversal
from ledger.posting.model import Bill, New, Payment, Result
from ledger.posting.rules import Rules


class BankKinds(Rules):
    def counter_payment(self, p: CounterPayment) -> tuple[Result, bool]:
        ident = self.identity(p)
        if (answered := self.answered_before(ident, p.digest)) is not None:
            return answered
        bd = self.clock.business_date(p.received_at)
        fields = {"business_date": bd.isoformat()}

        def decline(code: str, detail: str) -> tuple[Result, bool]:
            return self.remember(ident, p, Result(code, dict(fields), detail)), False

        if p.bank_code not in self.known_banks:
            return decline("58", f"bank {p.bank_code} is not registered with the ledger")
        if taken := self.rrn_taken(p):
            return decline("94", taken)
        if self.orphaned(p.bank_code, ident[1:]):
            return decline("12", "this payment was reversed before it arrived")
        if p.method not in METHODS:
            return decline("30", f"PM must be 01, 02 or 03, not {p.method!r}")
        if p.method == "03" and not p.cheque_no:
            return decline("30", "CQ (cheque number) is mandatory with PM 03")
        cust = self.customers.get(p.customer_no)
        if cust is None:
            return decline("14", "no such customer")
        if cust.status != "A":
            return decline("B2", "customer suspended" if cust.status == "S" else "customer closed")
        if p.amount <= 0:
            return decline("13", "amount must be greater than 0")
        open_bills = cust.open_bills()
        owing = sum(b.owing for b in open_bills)
        due = max(0, owing - cust.prepaid)
        if due == 0 and cust.prepay_allowed != "Y":
            return decline("B1", "nothing due and prepayment not allowed for this customer")
        if p.amount < due:
            return decline("13", f"amount {p.amount} is less than the total due {due}")
        if not fits(cust.prepaid + p.amount - owing):   # funds cover owing here: the rest is prepaid
            return decline("13", f"amount {p.amount} would take the prepaid balance past {AMOUNT_LIMIT - 1} fen")
        pay = Payment(New(), p.bank_code, "C", cust.customer_no, p.amount, bd, None)
        self.rows["payments"].append({
            "payment_id": pay.ref, "channel": "C", "bank_code": p.bank_code, "customer_no": cust.customer_no,
            "id_year": ident[1], "transmitted": p.transmitted, "stan": p.stan, "rrn": p.rrn, "business_date": bd,
            "amount": p.amount, "method": p.method, "cheque_no": p.cheque_no if p.method == "03" else None,
            "receipt_no": pay, "terminal_id": p.terminal_id or None, "branch_id": p.branch_id or None,
            "debit_id": None, "source": "B", "created_at": self.now})
        actor = bank_actor(p.bank_code)
        periods = self.pay_bills(pay, cust, open_bills, bd, actor, use_prepaid=True)
        self.feed_payment("payment", pay, cust)
        self.payments_by_identity.setdefault(ident[1:], []).append(pay)
        self.notice(cust, "payment", "payment", pay.ref, self.payment_text(cust, pay, periods))
        self.audit(actor, "payment.post", "payment", pay.ref, amount=p.amount, customer_no=cust.customer_no,
                   rrn=p.rrn, stan=p.stan, transmitted=p.transmitted, method=p.method, excess=pay.excess)
        fields["prepaid_balance"] = cust.prepaid
        return self.remember(ident, p, Result("00", fields, "", pay)), False

    @staticmethod
    def payment_text(cust, pay: Payment, periods: list[str]) -> notices.Sms:
        """The SMS of a payment: the bills it paid, or (none) the prepaid balance it left."""
        if periods:
            return notices.payment_received(cust.customer_no, periods, pay.amount - pay.excess)
        return notices.payment_received(cust.customer_no, [], pay.amount, cust.prepaid)

    def payment_reversal(self, r: PaymentReversal) -> tuple[Result, bool]:
        ident = self.identity(r)
        if (answered := self.answered_before(ident, r.digest)) is not None:
            return answered
        bd = self.clock.business_date(r.received_at)
        fields = {"business_date": bd.isoformat()}

        def decline(code: str, detail: str) -> tuple[Result, bool]:
            return self.remember(ident, r, Result(code, dict(fields), detail)), False

        if taken := self.rrn_taken(r):
            return decline("94", taken)
        okey = self.orig_identity(r)
        found = [p for p in self.payments_by_identity.get(okey, ()) if bank_number(p.bank_code) == bank_number(r.orig_bank_code)]
        if not found:
            self.remember_orphan(r, okey)
            return decline("25", "original payment not found; it will be declined if it arrives")
        pay = found[0]
        # §4.5 names every 12 a reversal of a payment found can get: field 32 or CN not the
        # original's, the day reconciled, or the payment no longer exactly undoable (in reverse)
        if bank_number(r.bank_code) != bank_number(pay.bank_code):
            return decline("12", "a bank can only reverse its own payments (field 90 names another bank)")
        if r.amount != pay.amount:
            return decline("13", f"amount {r.amount} differs from the original's {pay.amount}")
        if r.customer_no and r.customer_no != pay.customer_no:
            return decline("12", "CN differs from the original payment's customer")
        if pay.reversed:
            return self.remember(ident, r, Result("00", fields, "", pay)), False
        if (pay.bank_code, pay.business_date) in self.closed:
            return decline("12", f"business date {pay.business_date.isoformat()} already reconciled; reversal not allowed")
        cust = self.customers[pay.customer_no]
        problem = self.reverse(pay, cust, bd, bank_actor(r.bank_code), "B", (ident[1], r.transmitted, r.stan), "")
        if problem:
            return decline("12", problem)
        fields["prepaid_balance"] = cust.prepaid
        return self.remember(ident, r, Result("00", fields, "", pay)), False

    def remember_orphan(self, r: PaymentReversal, okey: tuple) -> None:
        """A bank's reversal of its own payment that has not arrived: the payment is declined if it
        comes. One naming another bank's payment is not kept: it could not have reversed it."""
        if bank_number(r.orig_bank_code) != bank_number(r.bank_code) or self.orphaned(r.orig_bank_code, okey):
            return
        self.orphans.setdefault(okey, []).append(r.bank_code)
        self.rows["orphans"].append({"bank_code": r.bank_code, "id_year": okey[0],
                                     "orig_transmitted": r.orig_transmitted, "orig_stan": r.orig_stan,
                                     "amount": r.amount, "created_at": self.now})
        self.audit(bank_actor(r.bank_code), "reversal.orphan", "request",
                   f"{r.bank_code}:{okey[0]}:{r.orig_transmitted}:{r.orig_stan}", amount=r.amount,
                   transmitted=r.transmitted, stan=r.stan)

    # ---------------------------------------------------------------- direct debits
    ALLOWED = {"approved": ("pending", "sent", "unknown"), "declined": ("pending", "sent", "unknown"),
               "unknown": ("pending", "sent"), "reversed": ("approved", "sent", "unknown")}

    def debit_result(self, d: DebitResult) -> tuple[Result, bool]:
        debit = self.debits.get(d.debit_id)
        if debit is None:
            return Result("25", {}, f"no debit {d.debit_id}"), False
        if d.result not in self.ALLOWED:
            raise ValueError(f"unknown debit result {d.result!r}")
        state = debit["state"]
        bd = self._debit_date(debit, d.at)
        fields = {"business_date": bd.isoformat(), "state": state}
        if state == d.result:
            return Result("00", fields, "already recorded"), True
        if state not in self.ALLOWED[d.result]:
            return Result("12", fields, f"debit is {state}; cannot become {d.result}"), False
        cust = self.customers[debit["customer_no"]]
        periods = sorted({self.bills[b].period for b, _ in debit.get("bills", ()) if b in self.bills})
        result = Result("00", fields)
        if d.result == "approved":
            rrn_key = (debit["bank_code"], "D", bd, self._debit_rrn(debit))
            if rrn_key in self.used_rrns:
                return Result("94", fields, f"RRN {rrn_key[3]} already used by another payment"), False
            pay = Payment(New(), debit["bank_code"], "D", cust.customer_no, int(debit["amount"]), bd, None,
                           d.debit_id)
            transmitted = debit["transmitted"] or f"F{d.debit_id:09d}"[-10:]
            self.rows["payments"].append({
                "payment_id": pay.ref, "channel": "D", "bank_code": debit["bank_code"],
                "customer_no": cust.customer_no, "id_year": id_year(transmitted, d.at) if debit["transmitted"]
                else bd.year, "transmitted": transmitted, "stan": debit["stan"] or "000000",
                "rrn": rrn_key[3], "business_date": bd, "amount": pay.amount, "method": DEBIT_METHOD,
                "cheque_no": None, "receipt_no": pay, "terminal_id": None, "branch_id": None,
                "debit_id": d.debit_id, "source": "B", "created_at": self.now})
            self.used_rrns[rrn_key] = None
            amounts = dict(debit.get("bills", ()))
            targets = sorted((self.bills[b] for b in amounts if b in self.bills), key=Bill.sort_key)
            self.pay_bills(pay, cust, targets, bd, d.actor, use_prepaid=False, amounts=amounts)
            self.feed_payment("debit_payment", pay, cust)
            self.payments_by_debit[d.debit_id] = pay
            self.notice(cust, "debit_ok", "debit", d.debit_id,
                        notices.debit_succeeded(cust.customer_no, periods, pay.amount))
            self.audit(d.actor, "debit.approved", "debit", d.debit_id, payment=pay.ref, amount=pay.amount,
                       excess=pay.excess, approval_code=d.approval_code)
            result = Result("00", fields, "", pay)
        elif d.result == "declined":
            self.notice(cust, "debit_failed", "debit", d.debit_id,
                        notices.debit_failed(cust.customer_no, periods, int(debit["amount"]), d.response_code or ""))
            self.audit(d.actor, "debit.declined", "debit", d.debit_id, response_code=d.response_code, reason=d.detail)
        elif d.result == "unknown":
            self.audit(d.actor, "debit.unknown", "debit", d.debit_id, reason=d.detail)
        else:  # reversed
            pay = self.payments_by_debit.get(d.debit_id)
            if pay is not None and not pay.reversed:
                problem = self.reverse(pay, cust, self.clock.business_date(d.at), d.actor, "D", None,
                                       d.detail or "debit reversed by the bank")
                if problem:
                    return Result("12", fields, problem), False
            self.audit(d.actor, "debit.reversed", "debit", d.debit_id, posted=pay is not None, reason=d.detail)
        self.rows["debit_updates"].append({
            "debit_id": d.debit_id, "state": d.result,
            "response_code": d.response_code if d.response_code is not None else debit["response_code"],
            "approval_code": d.approval_code if d.approval_code is not None else debit["approval_code"],
            "updated_at": self.now})
        self.rows["debit_attempts"].append({
            "debit_id": d.debit_id, "event": d.result, "mti": None, "response_code": d.response_code,
            "detail": d.detail[:200], "actor": d.actor, "at": d.at})
        debit["state"] = d.result
        fields["state"] = d.result
        return result, False
