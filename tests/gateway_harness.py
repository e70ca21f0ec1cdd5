"""A gateway running in the test's reactor on real sockets and a real database, and a bank to talk to it."""
from __future__ import annotations

import os
from datetime import datetime
from zoneinfo import ZoneInfo

from twisted.internet import defer
from twisted.internet.task import Clock

from config.settings import Settings
from gateway.daemon import Gateway
from gateway.sim.client import connect
from iso8583_specs import codec
from iso8583_specs import keys as wire_keys
from iso8583_specs.dialects import get_dialect
from iso8583_specs.links import Stans
from ledger import migrate

ZMKS = {"01020000": "0123456789ABCDEFFEDCBA9876543210", "01030000": "00112233445566778899AABBCCDDEEFF",
        "01050000": "FEDCBA9876543210F0E1D2C3B4A59687"}
DIALECT_OF = {"01020000": "ascii", "01030000": "ascii", "01050000": "bcd"}
SHANGHAI = ZoneInfo("Asia/Shanghai")


def set_zmk_env() -> None:
    for bank, zmk in ZMKS.items():
        os.environ[f"GRIDPAY_TEST_ZMK_{bank}"] = zmk


def settings_tree(db_url: str, **bank_overrides) -> dict:
    """A gateway's configuration for tests; the banks' ZMKs are in the environment it names."""
    set_zmk_env()
    banks = {code: {"name": f"test bank {code}", "dialect": DIALECT_OF[code], "zmk_env": f"GRIDPAY_TEST_ZMK_{code}",
                    "channels": ["counter"], "idle_timeout_s": 300, "frame_timeout_s": 10,
                    **bank_overrides.get(code, {})} for code in ZMKS}
    return {
        "database": {"url": db_url, "group_commit_wait_ms": 1},
        "gateway": {"metrics_port": 0, "echo_interval_s": 60, "key_grace_s": 60, "listeners": [
            {"name": "ascii", "port": 0, "dialect": "ascii", "banks": ["01020000", "01030000"]},
            {"name": "bcd", "port": 0, "dialect": "bcd", "banks": ["01050000"]},
        ]},
        "banks": banks,
    }


def make_settings(db_url: str, **bank_overrides) -> Settings:
    set_zmk_env()
    return Settings.model_validate(settings_tree(db_url, **bank_overrides))


async def start_gateway(reactor, db_url: str, clock: Clock | None = None, settings: Settings | None = None,
                        upgrade: bool = True) -> Gateway:
    if upgrade:
        migrate.upgrade(db_url)
    gateway = Gateway(settings or make_settings(db_url), reactor, clock=clock)
    await gateway.start()
    return gateway


class Bank:
    """A bank's counter system in a test: builds requests, sends them, returns the decoded answers."""

    def __init__(self, reactor, gateway: Gateway, code: str = "01020000"):
        self.reactor, self.gateway, self.code = reactor, gateway, code
        self.dialect = get_dialect(DIALECT_OF[code])
        self.listener = "ascii" if DIALECT_OF[code] == "ascii" else "bcd"
        self.stans = Stans(1)
        self.mak: bytes | None = None
        self.client = None
        self.rrn = 0

    async def connect(self):
        self.client = await connect(self.reactor, "127.0.0.1", self.gateway.port_of(self.listener), self.dialect)
        return self

    def close(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()

    # --- building ---------------------------------------------------------------------

    def head(self, stan: str | None = None, when: datetime | None = None) -> dict:
        local = (when or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
        return {"7": local.strftime("%m%d%H%M%S"), "11": stan or self.stans.next(), "12": local.strftime("%H%M%S"),
                "13": local.strftime("%m%d"), "32": self.code}

    def next_rrn(self) -> str:
        self.rrn += 1
        return f"{self.rrn:012d}"

    def financial(self, pc: str, tags: str, rrn: str | None = None, **extra) -> dict:
        return {**self.head(), "3": pc, "37": rrn or self.next_rrn(), "41": "TERM0001", "42": "BR4401000000001",
                "48": tags, "49": "156", **extra}

    def inquiry_fields(self, customer: str) -> dict:
        return self.financial("310000", f"CN{len(customer):03d}{customer}")

    def payment_fields(self, customer: str, amount: int, method: str = "01", cheque: str | None = None,
                       rrn: str | None = None) -> dict:
        tags = f"CN{len(customer):03d}{customer}PM002{method}"
        if cheque:
            tags += f"CQ{len(cheque):03d}{cheque}"
        return self.financial("500000", tags, rrn=rrn, **{"4": f"{amount:012d}"})

    def reversal_fields(self, payment: dict, amount: int | None = None, orig_bank: str | None = None,
                        rrn: str | None = None) -> dict:
        customer_tags = payment["48"].split("PM")[0]
        original = f"0200{payment['11']}{payment['7']}{int(orig_bank or payment['32']):011d}{'0' * 11}"
        return self.financial("500000", customer_tags, rrn=rrn or payment["37"],
                              **{"4": f"{amount if amount is not None else int(payment['4']):012d}", "90": original})

    # --- sending ----------------------------------------------------------------------

    def encode(self, mti: str, fields: dict, key: bytes | None | bool = True) -> bytes:
        mac_key = self.mak if key is True else (key or None)
        return codec.encode(self.dialect, mti, fields, mac_key=mac_key)

    async def send(self, mti: str, fields: dict, key: bytes | None | bool = True):
        return await self.send_raw(self.encode(mti, fields, key), fields)

    async def send_raw(self, iso: bytes, fields: dict):
        answer = await self.client.request(iso, (fields["7"], fields["11"], fields["32"]))
        return answer

    async def sign_on(self):
        answer = await self.send("0800", {**self.head(), "70": "001"}, key=False)
        assert answer.message.fields["39"] == "00"
        self.mak = wire_keys.read_sign_on_field48(bytes.fromhex(ZMKS[self.code]), answer.message.fields["48"])
        return answer

    def mac_ok(self, answer, key: bytes | None = None) -> bool:
        return codec.verify_mac(self.dialect, answer.raw, key or self.mak)


async def connected_bank(reactor, gateway, code="01020000", sign_on=True) -> Bank:
    bank = await Bank(reactor, gateway, code).connect()
    if sign_on:
        await bank.sign_on()
    return bank


async def answer_or_none(bank, mti: str, fields: dict, within: float):
    """The gateway's answer, or None when none came within ``within`` seconds."""
    from twisted.internet import reactor

    d = bank.client.request(bank.encode(mti, fields), (fields["7"], fields["11"], fields["32"]))
    got = defer.Deferred()
    d.addBoth(lambda result: None if got.called else got.callback(result))
    timer = reactor.callLater(within, lambda: None if got.called else got.callback(None))
    answer = await got
    if timer.active():
        timer.cancel()
    return answer


def code_of(answer) -> str:
    return answer.message.fields["39"]


def tags(answer) -> dict:
    tlv = answer.message.tlv
    return {tag: tlv.getall(tag) if tag == "BI" else tlv.get(tag) for tag, _ in tlv}


@defer.inlineCallbacks
def stop_all(gateway, *banks):
    for bank in banks:
        bank.close()
    yield gateway.stop()
    gateway.engine.dispose()
