"""The banks of the posting simulation: the requests they send, chosen by the seed's random.Random.

Kinds (docs/spec/INTERFACE.md §4.4, §4.5, §4.7, §6): a new payment (exact, partial, over the due
amount, zero, a stale amount; cash, transfer, cheque with or without its number; now and then an
unknown customer or an unregistered bank); an exact repeat of any earlier request (0200 again,
0421); a different request under an earlier identity; a reversal of an earlier payment (right,
wrong amount, wrong CN, by another bank); a reversal before its payment, and that payment later;
a request reusing another payment's RRN; a payment of the other bank with the same fields 7 and
11 as an earlier one (STANs are per bank); and the bank's follow-up of a request that got no
answer or 96: its 0420 (then 0421s) or the 0200 again.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from config.clock import ManualClock

from ledger.posting import CounterPayment, PaymentReversal
from ledger_helpers import digest, payment, reversal
from posting_sim_model import Model, received

BANKS = ("0102", "0103")
UNREGISTERED = "0199"
UNKNOWN_CUSTOMER = "X0000001"

KINDS = {"pay": 30, "repeat": 10, "clash": 4, "reverse": 14, "reverse_wrong": 5, "orphan": 4, "late": 5,
         "rrn_reuse": 4, "twin": 3}
RACE_UNSAFE = {"reverse_wrong"}   # a wrong CN locks another customer: no known serial order


@dataclass
class Sent:
    posting: CounterPayment | PaymentReversal
    answers: list[str] = field(default_factory=list)   # codes seen, "" for none

    @property
    def settled(self) -> bool:
        return bool(self.answers) and self.answers[-1] not in ("", "96")


class Bank:
    def __init__(self, rng: random.Random, model: Model, clock: ManualClock):
        self.rng, self.model, self.clock = rng, model, clock
        self.stans = {b: rng.randrange(1, 900_000) for b in BANKS + (UNREGISTERED,)}
        self.rrn = rng.randrange(1, 10 ** 9)
        self.sent: list[Sent] = []
        self.payments: list[Sent] = []
        self.awaited: list[CounterPayment] = []    # payments reversed before they were sent
        self.follow: dict[int, Sent] = {}          # payment sent -> its 0420 (repeated as 0421 until answered)

    # ------------------------------------------------------------------ what a step sends
    def requests(self, n: int, race_safe: bool = False) -> list[tuple[str, Sent]]:
        return [self.request(race_safe) for _ in range(n)]

    def request(self, race_safe: bool = False) -> tuple[str, Sent]:
        self.clock.advance(self.rng.randint(1, 60))
        open_ = [s for s in self.sent if not s.settled and s.answers]
        if open_ and self.rng.random() < 0.5:
            return self.follow_up(self.rng.choice(open_))
        kinds = {k: w for k, w in KINDS.items() if not (race_safe and k in RACE_UNSAFE)}
        kind = self.rng.choices(list(kinds), list(kinds.values()))[0]
        made = getattr(self, kind)()
        return made if made is not None else ("pay", self.send(self.new_payment()))

    def send(self, posting, record: bool = True) -> Sent:
        sent = Sent(posting)
        if record:
            self.sent.append(sent)
            if isinstance(posting, CounterPayment):
                self.payments.append(sent)
        return sent

    # ------------------------------------------------------------------ kinds
    def pay(self):
        return "pay", self.send(self.new_payment())

    def repeat(self):
        if not self.sent:
            return None
        first = self.rng.choice(self.sent)
        return ("repeat 0421" if isinstance(first.posting, PaymentReversal) else "repeat 0200"), \
            self.again(first)

    def clash(self):
        """Another request under an earlier request's identity (fields 32, 7, 11): other content."""
        if not self.sent:
            return None
        p = self.rng.choice(self.sent).posting
        amount = p.amount + self.rng.randint(1, 500)
        other = replace(p, amount=amount, digest=digest("clash", p.digest, amount), received_at=self.clock.now())
        return "clash", self.send(other, record=False)

    def reverse(self):
        if not self.payments:
            return None
        return "reverse", self.send(self.reversal_of(self.rng.choice(self.payments).posting))

    def reverse_wrong(self):
        """A reversal §4.5 declines: another amount (13), another CN (12), another bank's (12)."""
        if not self.payments:
            return None
        p = self.rng.choice(self.payments).posting
        how = self.rng.choice(("amount", "cn", "bank"))
        if how == "amount":
            r = self.reversal_of(p, amount=max(1, p.amount + self.rng.choice((-1, 1)) * self.rng.randint(1, 100)))
        elif how == "cn":
            others = sorted(set(self.model.customers) - {p.customer_no}) or [UNKNOWN_CUSTOMER]
            r = self.reversal_of(p, customer_no=self.rng.choice(others))
        else:
            r = self.reversal_of(p, bank=next(b for b in BANKS if b != p.bank_code) if p.bank_code in BANKS
                                 else BANKS[0])
        return f"reverse_wrong {how}", self.send(r)

    def orphan(self):
        """The bank reverses a payment the gateway has not seen (it never arrived, yet)."""
        p = self.new_payment()
        self.awaited.append(p)
        return "orphan", self.send(self.reversal_of(p))

    def late(self):
        if not self.awaited:
            return None
        p = self.awaited.pop(self.rng.randrange(len(self.awaited)))
        return "late", self.send(received(p, self.clock.now()))

    def rrn_reuse(self):
        """A new request with the RRN of an earlier payment of the same bank."""
        if not self.payments:
            return None
        rrn = self.rng.choice(self.payments).posting
        if self.rng.random() < 0.7:
            p = self.new_payment(bank=rrn.bank_code)
            return "rrn_reuse pay", self.send(replace(p, rrn=rrn.rrn, digest=digest("rrn", p.digest, rrn.rrn)))
        target = self.rng.choice(self.payments).posting
        r = self.reversal_of(target, rrn=rrn.rrn, bank=rrn.bank_code)
        return "rrn_reuse reverse", self.send(r)

    def twin(self):
        """The other bank's payment under the same fields 7 and 11 as an earlier payment."""
        if not self.payments:
            return None
        p = self.rng.choice(self.payments).posting
        bank = next(b for b in BANKS if b != p.bank_code)
        q = self.new_payment(bank=bank)
        q = replace(q, transmitted=p.transmitted, stan=p.stan, digest=digest("twin", q.digest, p.transmitted, p.stan))
        return "twin", self.send(q)

    def follow_up(self, sent: Sent):
        """§6: no answer (or 96) to a 0200: its 0420, repeated as 0421; or the 0200 again."""
        p = sent.posting
        if isinstance(p, PaymentReversal) or self.rng.random() < 0.4:
            return ("follow_up 0421" if isinstance(p, PaymentReversal) else "follow_up 0200"), self.again(sent)
        key = id(sent)
        if key in self.follow:
            return "follow_up 0421", self.again(self.follow[key])
        self.follow[key] = self.send(self.reversal_of(p))
        return "follow_up 0420", self.follow[key]

    def again(self, sent: Sent) -> Sent:
        """The same request (identity and content) arriving now; its answers count for the first."""
        sent.posting = received(sent.posting, self.clock.now())
        return sent

    # ------------------------------------------------------------------ building requests
    def next_stan(self, bank: str) -> str:
        self.stans[bank] = self.stans[bank] % 999_999 + 1
        return f"{self.stans[bank]:06d}"

    def next_rrn(self) -> str:
        self.rrn += 1
        return f"{self.rrn % 10 ** 12:012d}"

    def new_payment(self, bank: str | None = None) -> CounterPayment:
        rng = self.rng
        bank = bank or (UNREGISTERED if rng.random() < 0.02 else rng.choice(BANKS))
        customers = sorted(self.model.customers)
        customer = UNKNOWN_CUSTOMER if rng.random() < 0.03 else rng.choice(customers)
        due = self.model.due(customer)
        mode = rng.choices(("exact", "over", "partial", "zero", "stale"), (50, 20, 10, 3, 17))[0]
        amount = {"exact": due or rng.randint(1, 30_000), "over": due + rng.randint(1, 20_000), "zero": 0,
                  "partial": rng.randint(1, due - 1) if due > 1 else due,
                  "stale": rng.randint(1, 50_000)}[mode]
        method = rng.choices(("01", "02", "03", "03-"), (50, 35, 12, 3))[0]
        cheque = f"CQ{rng.randrange(10 ** 6):06d}" if method == "03" else None
        at = self.clock.now()
        return payment(bank, customer, amount, stan=self.next_stan(bank), rrn=self.next_rrn(), at=at,
                       method=method[:2], cheque_no=cheque)

    def reversal_of(self, p: CounterPayment, **kw) -> PaymentReversal:
        """Its RRN: the payment's (ISO 8583 practice) or one of its own."""
        bank = kw.pop("bank", p.bank_code)
        rrn = kw.pop("rrn", None) or (p.rrn if self.rng.random() < 0.7 else self.next_rrn())
        return reversal(p, at=self.clock.now(), stan=self.next_stan(bank) if bank in self.stans else None,
                        bank=bank, rrn=rrn, **kw)
