"""A bank's counter system for the end-to-end day: ``python -m scripts.e2e.bank_counter``.

Like ``gridpay sim counter`` (same messages, same checks: MAC, echoed fields, response codes), but
it behaves like a real bank's front-end when a gateway goes away in the middle of the day:

- its connections are spread over the gateways given (``--ports``); a connection that is lost is
  re-established to the next gateway in the list (round robin, retrying until ``--failover-s``);
- a payment (0200) whose answer never came (connection lost, or no answer in ``--timeout``) is
  reversed, as a bank does: 0420, repeated as 0421 with the same identity until a 0430 comes.
  ``00`` means the gateway had it and it is now reversed (the bank's file shows it with status R);
  ``25`` means the gateway never had it (the bank's file does not show it: nothing happened);
- a reversal (0420) whose answer never came is repeated as 0421 until answered.

It writes a journal (``--journal FILE``, JSON): every payment the bank considers made, with the
fields the bank's docs/spec/INTERFACE.md §7.1 file needs (field 7, STAN, RRN, customer, amount, method, cheque number,
receipt) and its final status S or R, plus the unanswered payments and how they ended.
That journal is the bank's truth for its transaction file.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter

from twisted.internet import defer, task

from gateway.sim.client import connect
from config.clock import SYSTEM_CLOCK
from iso8583_specs import codec
from iso8583_specs import keys as wire_keys
from iso8583_specs.links import Stans, times_at


class Unanswered(Exception):
    pass


class Mismatch(Exception):
    pass


class Slot:
    """One of the bank's connections; reconnects to the next gateway when lost."""

    def __init__(self, bank: "CounterBank", index: int):
        self.bank, self.index = bank, index
        self.port_i = index % len(bank.ports)
        self.client = None
        self._connecting: defer.Deferred | None = None

    async def get(self):
        if self.client is not None and self.client.transport is not None and self.client.transport.connected:
            return self.client
        if self._connecting is None:
            self._connecting = defer.ensureDeferred(self._connect())
            try:
                await self._connecting
            finally:
                self._connecting = None
        else:
            await self._connecting
        if self.client is None:
            raise ConnectionError("no gateway reachable")
        return self.client

    async def _connect(self):
        b = self.bank
        deadline = time.monotonic() + b.failover_s
        first = self.client is None
        if not first:
            self.port_i = (self.port_i + 1) % len(b.ports)   # fail over to the next gateway
            b.stats["reconnects"] += 1
        self.client = None
        while True:
            port = b.ports[self.port_i]
            try:
                self.client = await connect(b.reactor, "127.0.0.1", port, b.dialect)
                b.stats[f"connected_{port}"] += 1
                return
            except Exception:  # noqa: BLE001 - refused while a gateway restarts
                if time.monotonic() > deadline:
                    return
                self.port_i = (self.port_i + 1) % len(b.ports)
                await task.deferLater(b.reactor, 0.3, lambda: None)


class CounterBank:
    def __init__(self, reactor, args):
        from iso8583_specs.dialects import get_dialect

        self.reactor = reactor
        self.dialect = get_dialect(args.dialect)
        self.bank = args.bank
        self.zmk = bytes.fromhex(os.environ[args.zmk_env].strip())
        self.ports = [int(p) for p in args.ports.split(",")]
        self.timeout = args.timeout
        self.failover_s = args.failover_s
        self.random = random.Random(args.seed)
        self.stans = Stans(self.random.randint(1, 800000))
        self.rrn_prefix = f"{args.seed % 10000:04d}"
        self.rrn_n = 0
        self.terminal = f"T{self.bank[-4:]}001"
        self.branch = f"BR{self.bank}00001"[:15]
        with open(args.customers) as fh:
            self.customers = [c.strip() for c in fh if c.strip()]
        self.cheque_rate = args.cheque_rate
        w = dict(p.split("=") for p in args.mix.split(","))
        self.mix = {k: int(v) for k, v in w.items()}
        self.rate = args.rate
        self.slots = [Slot(self, i) for i in range(args.connections)]
        self.window = args.window
        self.mak: bytes | None = None
        self.paid: list[dict] = []          # payments approved and not reversed (candidates for reversal/repeat)
        self.journal: dict[str, dict] = {}  # rrn -> payment as the bank sees it
        self.unanswered: list[dict] = []
        self.mismatches: list[str] = []
        self.stats: Counter = Counter()
        self._next = 0.0

    # --- helpers ---------------------------------------------------------------------------

    def head(self) -> dict:
        return {**times_at(SYSTEM_CLOCK.local()), "11": self.stans.next(), "32": self.bank}

    def next_rrn(self) -> str:
        self.rrn_n += 1
        return f"{self.rrn_prefix}{self.rrn_n:08d}"

    async def request(self, slot: Slot, mti: str, fields: dict, mac: bool = True, iso: bytes | None = None):
        """Send and wait; Unanswered when the connection is lost or no answer comes in time."""
        try:
            client = await slot.get()
        except ConnectionError as exc:
            raise Unanswered(str(exc)) from None
        if iso is None:
            iso = codec.encode(self.dialect, mti, fields, mac_key=self.mak if mac else None)
        identity = (fields["7"], fields["11"], fields["32"])
        d = client.request(iso, identity)
        self.stats["messages"] += 1
        d.addTimeout(self.timeout, self.reactor)
        try:
            answer = await d
        except (ConnectionError, defer.TimeoutError, defer.CancelledError) as exc:
            client.waiting.pop(identity, None)
            self.stats["unanswered"] += 1
            if isinstance(exc, defer.TimeoutError) and client.transport is not None:
                client.transport.loseConnection()   # a stuck connection: start afresh
            raise Unanswered(type(exc).__name__) from None
        answer.request_fields = fields
        code = answer.message.fields.get("39", "??")
        self.stats[f"code_{code}"] += 1
        if code not in ("91",) and answer.message.mti != "0810" and self.mak is not None:
            if not codec.verify_mac(self.dialect, answer.raw, self.mak):
                raise Mismatch(f"{mti} {fields.get('37')}: the answer's MAC does not verify")
        return answer

    def expect(self, answer, codes, what, echoed=()):
        got = answer.message.fields.get("39")
        if got not in codes:
            er = ""
            try:
                er = answer.message.tlv.get("ER") or ""
            except Exception:  # noqa: BLE001
                pass
            raise Mismatch(f"{what}: expected {'/'.join(codes)}, got {got} {er}".rstrip())
        for f in echoed:
            if answer.message.fields.get(f) != answer.request_fields.get(f):
                raise Mismatch(f"{what}: field {f} not echoed ({answer.message.fields.get(f)!r})")
        return got

    # --- the day ---------------------------------------------------------------------------

    async def run(self) -> None:
        answer = await self.request(self.slots[0], "0800", {**self.head(), "70": "001"}, mac=False)
        self.expect(answer, ("00",), "sign-on")
        self.mak = wire_keys.read_sign_on_field48(self.zmk, answer.message.fields["48"])
        self.queue = list(self.customers)
        self.started = time.monotonic()
        workers = [defer.ensureDeferred(self.worker(s)) for s in self.slots for _ in range(self.window)]
        await defer.gatherResults(workers, consumeErrors=True)
        # reversals of the payments whose answer never came, once every worker is done
        for u in self.unanswered:
            if u.get("outcome") is None:
                await self.resolve_unanswered(self.slots[0], u)

    async def throttle(self) -> None:
        if self.rate <= 0:
            return
        now = self.reactor.seconds()
        self._next = max(self._next, now) + 1.0 / self.rate
        if self._next - now > 0.0005:
            await task.deferLater(self.reactor, self._next - now, lambda: None)

    async def worker(self, slot: Slot) -> None:
        while self.queue:
            await self.throttle()
            ops = ["pay", "reverse", "repeat"]
            weights = [self.mix.get("pay", 100), self.mix.get("reverse", 0) if self.paid else 0,
                       self.mix.get("repeat", 0) if self.paid else 0]
            op = self.random.choices(ops, weights=weights)[0]
            self.stats[f"op_{op}"] += 1
            try:
                await getattr(self, op)(slot)
            except Mismatch as exc:
                self.mismatches.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - never lose a worker silently
                self.mismatches.append(f"{op}: {type(exc).__name__}: {exc}")

    async def pay(self, slot: Slot) -> None:
        if not self.queue:
            return
        customer = self.queue.pop(0)
        rrn = self.next_rrn()
        cn = f"CN{len(customer):03d}{customer}"
        common = {"37": rrn, "41": self.terminal, "42": self.branch, "49": "156"}
        try:
            inquiry = await self.request(slot, "0100", {**self.head(), **common, "3": "310000", "48": cn})
        except Unanswered:
            self.stats["inquiry_unanswered"] += 1
            return
        self.expect(inquiry, ("00",), f"inquiry {customer}")
        due = int(inquiry.message.fields["4"])
        if due == 0:
            self.stats["nothing_due"] += 1
            return
        method, cheque = "01", None
        tags = cn + "PM00201"
        if self.random.random() < self.cheque_rate:
            method, cheque = "03", f"CQ{self.bank[-4:]}{rrn[-6:]}"
            tags = cn + "PM00203" + f"CQ{len(cheque):03d}{cheque}"
        fields = {**self.head(), **common, "3": "500000", "4": f"{due:012d}", "48": tags}
        iso = codec.encode(self.dialect, "0200", fields, mac_key=self.mak)
        record = {"rrn": rrn, "stan": fields["11"], "f7": fields["7"], "customer": customer, "amount": due,
                  "method": method, "cheque": cheque, "receipt": None, "status": None, "fields": fields, "iso": iso}
        try:
            answer = await self.request(slot, "0200", fields, iso=iso)
        except Unanswered as exc:
            record["why"] = str(exc)
            self.unanswered.append(record)
            await self.resolve_unanswered(slot, record)
            return
        self.expect(answer, ("00",), f"payment {customer}", echoed=("4", "37", "41", "42", "49", "3"))
        receipt = answer.message.tlv.get("RN")
        if not receipt:
            raise Mismatch(f"payment {customer}: approved without a receipt number")
        record.update(receipt=receipt, status="S")
        self.journal[rrn] = record
        self.paid.append(record)

    def reversal_fields(self, record: dict) -> dict:
        of = record["fields"]
        return {**self.head(), "3": "500000", "4": of["4"], "37": of["37"], "41": self.terminal, "42": self.branch,
                "49": "156", "48": f"CN{len(record['customer']):03d}{record['customer']}",
                "90": f"0200{of['11']}{of['7']}{int(of['32']):011d}{'0' * 11}"}

    async def reverse_until_answered(self, slot: Slot, fields: dict, what: str):
        """0420, then 0421 (same identity and content) until a 0430 comes back."""
        mti = "0420"
        deadline = time.monotonic() + self.failover_s
        while True:
            try:
                return await self.request(slot, mti, fields)
            except Unanswered:
                self.stats["reversal_repeats"] += 1
                if time.monotonic() > deadline:
                    raise Mismatch(f"{what}: reversal never answered") from None
                mti = "0421"
                await task.deferLater(self.reactor, 0.3, lambda: None)

    async def resolve_unanswered(self, slot: Slot, record: dict) -> None:
        answer = await self.reverse_until_answered(slot, self.reversal_fields(record),
                                                   f"reversal of unanswered payment {record['rrn']}")
        code = self.expect(answer, ("00", "25"), f"reversal of unanswered payment {record['rrn']}", echoed=("4", "90"))
        record["outcome"] = "reversed" if code == "00" else "not_found"
        self.stats[f"unanswered_{record['outcome']}"] += 1
        if code == "00":   # the gateway had it: the bank's file shows the payment, reversed
            record["status"] = "R"
            self.journal[record["rrn"]] = record

    async def reverse(self, slot: Slot) -> None:
        record = self.paid.pop(self.random.randrange(len(self.paid)))
        answer = await self.reverse_until_answered(slot, self.reversal_fields(record), f"reversal of {record['rrn']}")
        self.expect(answer, ("00",), f"reversal of {record['receipt']}", echoed=("4", "90"))
        record["status"] = "R"

    async def repeat(self, slot: Slot) -> None:
        record = self.random.choice(self.paid)
        try:
            answer = await self.request(slot, "0200", record["fields"], iso=record["iso"])
        except Unanswered:
            return   # a repeat of an answered request: nothing to settle
        if answer.message.fields.get("39") == "A0":   # the MAK changed since (re-sign-on): not a finding
            self.stats["repeat_old_mak"] += 1
            return
        self.expect(answer, ("00",), f"repeat of {record['receipt']}")
        if answer.message.tlv.get("RN") != record["receipt"]:
            raise Mismatch(f"repeat of {record['receipt']}: answered with receipt {answer.message.tlv.get('RN')}")

    def dump(self, path: str) -> None:
        def clean(r):
            return {k: v for k, v in r.items() if k not in ("fields", "iso")}
        out = {"bank": self.bank, "payments": [clean(r) for r in self.journal.values()],
               "unanswered": [clean(r) for r in self.unanswered], "mismatches": self.mismatches,
               "stats": dict(self.stats), "seconds": round(time.monotonic() - self.started, 2)}
        tmp = path + ".part"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.e2e.bank_counter", description=__doc__.split("\n")[0])
    p.add_argument("--ports", required=True, help="gateway counter ports, comma-separated (connections spread)")
    p.add_argument("--bank", required=True)
    p.add_argument("--dialect", default="ascii")
    p.add_argument("--zmk-env", required=True)
    p.add_argument("--customers", required=True)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--mix", default="pay=85,reverse=8,repeat=7")
    p.add_argument("--cheque-rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--failover-s", type=float, default=90.0)
    p.add_argument("--journal", required=True)
    args = p.parse_args(argv)
    from runtime.bootstrap import install_reactor

    reactor = install_reactor()
    bank = CounterBank(reactor, args)
    state = {}

    async def go(_r):
        try:
            await bank.run()
        except Exception as exc:  # noqa: BLE001
            state["error"] = f"{type(exc).__name__}: {exc}"
        for s in bank.slots:
            if s.client is not None and s.client.transport is not None:
                s.client.transport.loseConnection()

    try:
        task.react(lambda r: defer.ensureDeferred(go(r)))
    except SystemExit as exc:
        if exc.code:
            raise
    if "error" in state:
        bank.mismatches.append(state["error"])
    bank.dump(args.journal)
    print(json.dumps({"bank": bank.bank, "payments": len(bank.journal), "mismatches": len(bank.mismatches),
                      "stats": dict(bank.stats)}), flush=True)
    return 1 if bank.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
