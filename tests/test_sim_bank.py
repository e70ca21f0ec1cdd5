"""The debit-channel bank host simulator (gateway/sim/bank.py) over real sockets on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from engines.link import debit_fields, reversal_fields
from gateway.sim.bank import Account, BankHost, Behaviour, load_accounts, parse_rates
from gateway.sim.client import connect
from config.clock import SYSTEM_CLOCK
from iso8583_specs import codec
from iso8583_specs.dialects import get_dialect
from iso8583_specs.keys import read_sign_on_field48
from iso8583_specs.links import Stans, times_at
from iso8583_specs.tlv import Tlv

BANK = "01020000"
ZMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
BD = date(2026, 3, 14)


def accounts():
    return {"A1": Account(100_000), "A2": Account(500, 0), "LIM": Account(1_000_000, 2_000),
            "SHUT": Account(100_000, 0, "C")}


class Gw:
    """The gateway side of a test: a CounterClient (matches by 7/11/32) plus sign-on and MAK."""

    def __init__(self, client, dialect):
        self.client, self.dialect = client, dialect
        self.mak = None
        self.stans = Stans(100)

    async def sign_on(self):
        fields = {**times_at(SYSTEM_CLOCK.local()), "11": self.stans.next(), "32": BANK, "70": "001"}
        answer = await self.client.request(codec.encode(self.dialect, "0800", fields), (fields["7"], fields["11"], BANK))
        assert answer.message.fields["39"] == "00"
        self.mak = read_sign_on_field48(ZMK, answer.message.fields["48"])
        return answer.message

    def debit_fields(self, account="A1", amount=1000, stan=None, rrn=None, customer="C001"):
        stan = stan or self.stans.next()
        return debit_fields(bank_code=BANK, transmitted="0314101500", stan=stan, rrn=rrn or stan.zfill(12),
                            customer_no=customer, account_no=account, bills=[("202602", amount, 0)])

    async def send(self, mti, fields, mac_key="current"):
        key = self.mak if mac_key == "current" else mac_key
        iso = codec.encode(self.dialect, mti, fields, mac_key=key)
        answer = await self.client.request(iso, (fields["7"], fields["11"].zfill(6), fields["32"]))
        return answer.message

    def mac_ok(self, message) -> bool:
        return codec.verify_mac(self.dialect, message.raw, self.mak)


@pytest.fixture
def make_host():
    hosts = []

    def make(behaviour=None, dialect="ascii", accts=None, **kw):
        host = BankHost(reactor, BANK, get_dialect(dialect), ZMK, accts or accounts(), behaviour or Behaviour(),
                        business_date=BD, **kw)
        host.start()
        hosts.append(host)
        return host
    yield make
    for host in hosts:
        pytest_twisted.blockon(host.stop())


async def gw_for(host, dialect="ascii", sign_on=True) -> Gw:
    d = get_dialect(dialect)
    client = await connect(reactor, "127.0.0.1", host.port, d)
    gw = Gw(client, d)
    if sign_on:
        await gw.sign_on()
    return gw


async def until(cond, timeout=5.0):
    waited = 0.0
    while not cond():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


@pytest.mark.parametrize("dialect", ["ascii", "bcd"])
@pytest_twisted.ensureDeferred
async def test_sign_on_issues_a_mak_under_the_zmk_and_debit_is_approved(make_host, dialect):
    host = make_host(dialect=dialect)
    gw = await gw_for(host, dialect)
    assert gw.mak == host.mak
    answer = await gw.send("0200", gw.debit_fields("A1", 1234))
    assert answer.mti == "0210" and answer.fields["39"] == "00"
    assert gw.mac_ok(answer)
    assert len(answer.fields["38"]) == 6 and answer.fields["15"] == "0314"
    assert answer.fields["4"] == "000000001234" and answer.fields["102"] == "A1"
    assert host.accounts["A1"].balance == 100_000 - 1234
    (rec,) = host.applied.values()
    assert rec.identity == (BANK, "0314101500", answer.fields["11"]) and rec.approval == answer.fields["38"]
    assert rec.customer == "C001" and rec.amount == 1234
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_declines_are_real(make_host):
    host = make_host()
    gw = await gw_for(host)
    codes = {}
    for name, account, amount in [("unknown", "NOPE", 100), ("closed", "SHUT", 100), ("limit", "LIM", 2_001),
                                  ("at_limit", "LIM", 2_000), ("funds", "A2", 501), ("exact", "A2", 500)]:
        answer = await gw.send("0200", gw.debit_fields(account, amount))
        assert gw.mac_ok(answer)
        codes[name] = answer.fields["39"]
    assert codes == {"unknown": "14", "closed": "57", "limit": "61", "at_limit": "00", "funds": "51", "exact": "00"}
    assert host.accounts["A2"].balance == 0 and host.accounts["LIM"].balance == 998_000
    assert host.accounts["SHUT"].balance == 100_000 and len(host.applied) == 2
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_91_before_sign_on_without_mac_and_A0_for_a_bad_mac(make_host):
    host = make_host()
    gw = await gw_for(host, sign_on=False)
    answer = await gw.send("0200", gw.debit_fields(), mac_key=bytes(16))
    assert answer.fields["39"] == "91" and "128" not in answer.fields and "64" not in answer.fields
    await gw.sign_on()
    answer = await gw.send("0200", gw.debit_fields(), mac_key=bytes.fromhex("11" * 16))
    assert answer.fields["39"] == "A0" and gw.mac_ok(answer)
    assert not host.applied and host.accounts["A1"].balance == 100_000
    assert host.counters["mac_failures"] == 1 and host.counters["not_signed_on"] == 1
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_old_mak_accepted_for_the_grace_period(make_host):
    host = make_host()
    gw = await gw_for(host)
    old = gw.mak
    await gw.sign_on()
    assert gw.mak != old
    answer = await gw.send("0200", gw.debit_fields(), mac_key=old)
    assert answer.fields["39"] == "00" and gw.mac_ok(answer)  # answered under the new key
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_duplicate_debit_answered_again_never_applied_twice(make_host):
    host = make_host()
    gw = await gw_for(host)
    fields = gw.debit_fields("A1", 700)
    first = await gw.send("0200", fields)
    again = await gw.send("0200", fields)
    assert first.fields == again.fields
    assert again.fields["39"] == "00" and again.fields["38"] == first.fields["38"]
    assert host.accounts["A1"].balance == 100_000 - 700 and len(host.applied) == 1
    assert host.counters["duplicates"] == 1
    other = dict(fields, **{"4": "000000000800", "48": Tlv([("CN", "C001"), ("BI", "202602000000000800000000000000")]).encode()})
    answer = await gw.send("0200", other)
    assert answer.fields["39"] == "94" and host.accounts["A1"].balance == 100_000 - 700
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_duplicates_are_literal_after_A0_too(make_host):
    """docs/spec/INTERFACE.md §4.7 to the letter: an A0 is an answer. The refused request MACed
    again under the right key is the same request (its identity and content; the MAC is not
    content, as a 0421 shows) and gets the same A0; a different request under its identity gets
    94; so does a new identity reusing its RRN. Only a new identity with a new RRN is applied. A
    reversal carries its original's RRN (the spec's vectors) and is no duplicate."""
    host = make_host()
    gw = await gw_for(host)
    fields = gw.debit_fields("A1", 700, stan="000501", rrn="000000000501")
    assert (await gw.send("0200", fields, mac_key=bytes.fromhex("11" * 16))).fields["39"] == "A0"
    again = await gw.send("0200", fields)                  # the same request, MACed with the bank's key
    assert again.fields["39"] == "A0" and gw.mac_ok(again)
    other = dict(fields, **{"4": "000000000800", "48": Tlv([("CN", "C001"),
                                                            ("BI", "202602000000000800000000000000")]).encode()})
    assert (await gw.send("0200", other)).fields["39"] == "94"
    new_identity = dict(fields, **{"7": "0314101501", "12": "101501", "11": "000502"})
    assert (await gw.send("0200", new_identity)).fields["39"] == "94"     # the A0'd request's RRN
    fresh = dict(new_identity, **{"11": "000503", "37": "100000000501"})
    assert (await gw.send("0200", fresh)).fields["39"] == "00"
    assert not host.books.preempted and host.accounts["A1"].balance == 100_000 - 700 and len(host.applied) == 1
    assert (host.counters["duplicate_identity_94"], host.counters["duplicate_rrn_94"]) == (1, 1)
    rev = reversal_fields(fresh, transmitted="0314101600", stan="000504")
    assert rev["37"] == fresh["37"] and (await gw.send("0420", rev)).fields["39"] == "00"
    assert (await gw.send("0421", rev)).fields["39"] == "00" and host.accounts["A1"].balance == 100_000
    stray = reversal_fields(dict(fresh, **{"11": "000999"}), transmitted="0314101700", stan="000505")
    assert (await gw.send("0420", stray)).fields["39"] == "94"            # another debit's RRN
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_reversal_credits_back_once_also_when_repeated(make_host):
    host = make_host()
    gw = await gw_for(host)
    debit = gw.debit_fields("A1", 900)
    assert (await gw.send("0200", debit)).fields["39"] == "00"
    rev = reversal_fields(debit, transmitted="0314101600", stan=gw.stans.next())
    answer = await gw.send("0420", rev)
    assert answer.mti == "0430" and answer.fields["39"] == "00" and answer.fields["90"] == rev["90"]
    assert gw.mac_ok(answer)
    assert host.accounts["A1"].balance == 100_000
    repeat = await gw.send("0421", rev)
    assert repeat.mti == "0430" and repeat.fields["39"] == "00"
    rev2 = reversal_fields(debit, transmitted="0314101700", stan=gw.stans.next())  # a new reversal, same original
    assert (await gw.send("0420", rev2)).fields["39"] == "00"
    assert host.accounts["A1"].balance == 100_000
    (rec,) = host.applied.values()
    assert rec.reversed and host.reversals[rec.identity].credited
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_reversal_before_original_then_original_declined(make_host):
    host = make_host()
    gw = await gw_for(host)
    debit = gw.debit_fields("A1", 900)
    rev = reversal_fields(debit, transmitted="0314101600", stan=gw.stans.next())
    assert (await gw.send("0421", rev)).fields["39"] == "00"  # repeat of a 0420 never seen: processed as it
    late = await gw.send("0200", debit)
    assert late.fields["39"] == "12" and "38" not in late.fields
    assert not host.applied and host.accounts["A1"].balance == 100_000
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_reversal_of_a_declined_debit_changes_nothing(make_host):
    host = make_host()
    gw = await gw_for(host)
    debit = gw.debit_fields("A2", 501)
    assert (await gw.send("0200", debit)).fields["39"] == "51"
    rev = reversal_fields(debit, transmitted="0314101600", stan=gw.stans.next())
    assert (await gw.send("0420", rev)).fields["39"] == "00"
    assert host.accounts["A2"].balance == 500 and not host.books.preempted
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_format_error_answered_30_with_ER(make_host):
    host = make_host()
    gw = await gw_for(host)
    fields = gw.debit_fields()
    del fields["102"]
    answer = await gw.send("0200", fields)
    assert answer.fields["39"] == "30" and "102" in Tlv.parse(answer.fields["48"]).get("ER")
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_forced_declines_drop_and_duplicate_behaviour(make_host):
    host = make_host(Behaviour(declines={"05": 1.0}))
    gw = await gw_for(host)
    assert (await gw.send("0200", gw.debit_fields())).fields["39"] == "05"
    assert (await gw.send("0200", gw.debit_fields("NOPE"))).fields["39"] == "14"  # account checks come first
    host.behaviour = Behaviour(drop_after_apply=1.0)
    fields = gw.debit_fields("A1", 300)
    iso = codec.encode(gw.dialect, "0200", fields, mac_key=gw.mak)
    gw.client.send_raw(iso)
    await until(lambda: host.counters["dropped_after_apply"] == 1)
    assert host.accounts["A1"].balance == 100_000 - 300 and len(host.applied) == 1
    host.behaviour = Behaviour(drop_before_apply=1.0)
    gw.client.send_raw(codec.encode(gw.dialect, "0200", gw.debit_fields("A1", 5), mac_key=gw.mak))
    await until(lambda: host.counters["dropped_before_apply"] == 1)
    assert len(host.applied) == 1
    # the dropped-after-apply debit, sent again, is answered as applied (not applied twice)
    host.behaviour = Behaviour(duplicate_rate=1.0, latency_ms=5)
    answer = await gw.send("0200", fields)
    assert answer.fields["39"] == "00" and host.accounts["A1"].balance == 100_000 - 300
    await until(lambda: host.counters["duplicates_sent"] == 1)
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_disconnect_applies_then_closes(make_host):
    host = make_host(Behaviour(disconnect=1.0))
    gw = await gw_for(host)
    d = gw.send("0200", gw.debit_fields("A1", 10))
    with pytest.raises(ConnectionError):
        await d
    assert len(host.applied) == 1 and host.counters["disconnects"] == 1


@pytest_twisted.ensureDeferred
async def test_latency_holds_answers_and_counts_in_flight(make_host):
    host = make_host(Behaviour(latency_ms=30, latency_dist="uniform"), seed=7)
    gw = await gw_for(host)
    answers = await defer.gatherResults([defer.ensureDeferred(gw.send("0200", gw.debit_fields("A1", 1 + i)))
                                         for i in range(20)])
    assert [a.fields["4"] for a in answers] == [f"{1 + i:012d}" for i in range(20)]
    assert 1 < host.max_in_flight_seen <= 20 and host.in_flight == 0
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_host_echo_answered_by_client(make_host):
    host = make_host(Behaviour(echo_interval_s=0.05))
    gw = await gw_for(host)
    await until(lambda: host.counters["echo_answers"] >= 2)
    assert gw.client.echoes_answered >= 2
    gw.client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_day_file_format_and_totals(make_host, tmp_path):
    host = make_host(accts={"A1": Account(100_000), "A2": Account(100_000)})
    gw = await gw_for(host)
    d1 = gw.debit_fields("A1", 1000, customer="C1", rrn="000000000001")
    d2 = gw.debit_fields("A2", 2500, customer="C2", rrn="000000000002")
    d3 = gw.debit_fields("NOPE", 99, customer="C3", rrn="000000000003")
    for f in (d1, d2, d3):
        await gw.send("0200", f)
    await gw.send("0420", reversal_fields(d2, transmitted="0314101600", stan=gw.stans.next()))
    path = host.write_day_file(tmp_path)
    assert path.name == f"{BANK}_20260314.txt"
    lines = path.read_bytes().decode("gbk").split("\n")
    assert lines[-1] == "" and lines[0] == f"H|{BANK}|20260314|2|1000"
    approvals = {r.rrn: r.approval for r in host.applied.values()}
    assert lines[1:3] == [
        f"D|D|20260314101500|{d1['11']}|000000000001|C1|1000|S|{approvals['000000000001']}",
        f"D|D|20260314101500|{d2['11']}|000000000002|C2|2500|R|{approvals['000000000002']}",
    ]
    assert host.write_day_file(tmp_path, date(2026, 3, 15)).read_text() == f"H|{BANK}|20260315|0|0\n"
    gw.client.transport.loseConnection()


def test_december_transmission_on_a_january_business_date():
    from gateway.sim.bank_state import _transmission
    assert _transmission("1231235959", date(2027, 1, 1)) == "20261231235959"
    assert _transmission("0101000001", date(2027, 1, 1)) == "20270101000001"


def test_accounts_csv_and_rates(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text("account_no,balance,limit,status\nA1,100,0,A\nA2,5,3,c\nA3,7\n")
    assert load_accounts(path) == {"A1": Account(100, 0, "A"), "A2": Account(5, 3, "C"), "A3": Account(7, 0, "A")}
    assert parse_rates("51=0.02, 05=0.01") == {"51": 0.02, "05": 0.01}
    with pytest.raises(ValueError):
        parse_rates("5=0.1")
    with pytest.raises(ValueError):
        Behaviour(declines={"51": 0.7, "05": 0.6})


def test_cli_serves_until_sigterm_and_writes_the_day_file(tmp_path):
    accounts_csv = tmp_path / "accounts.csv"
    accounts_csv.write_text("A1,100000\n")
    env = {**os.environ, "SIM_ZMK": ZMK.hex()}
    proc = subprocess.Popen([sys.executable, "-m", "gridpay", "sim", "bank", "--bank", BANK, "--zmk-env", "SIM_ZMK",
                             "--accounts", str(accounts_csv), "--business-date", "2026-03-14", "--latency-ms", "1",
                             "--day-file-dir", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parent.parent)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        script = f"""
import socket, sys
from engines.link import debit_fields
from iso8583_specs import codec
from iso8583_specs.dialects import get_dialect
from iso8583_specs.framing import encode_frame
from iso8583_specs.keys import read_sign_on_field48
d = get_dialect("ascii"); s = socket.create_connection(("127.0.0.1", {port}))
def ask(mti, f, key=None):
    s.sendall(encode_frame(d.framing, codec.encode(d, mti, f, mac_key=key)))
    n = int(s.recv(4)); data = b""
    while len(data) < n: data += s.recv(n - len(data))
    return codec.decode(d, data)
m = ask("0800", {{"7": "0314101500", "11": "000001", "12": "101500", "13": "0314", "32": "{BANK}", "70": "001"}})
mak = read_sign_on_field48(bytes.fromhex("{ZMK.hex()}"), m.fields["48"])
f = debit_fields(bank_code="{BANK}", transmitted="0314101501", stan="000002", rrn="000000000009", customer_no="C9",
                 account_no="A1", bills=[("202602", 4200, 0)])
print(ask("0200", f, mak).fields["39"])
"""
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                             cwd=Path(__file__).parent.parent)
        assert out.stdout.strip() == "00", out.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    summary = json.loads(rest.strip().splitlines()[-1])
    assert summary["applied"] == 1 and summary["debited_fen"] == 4200
    text = Path(summary["day_file"]).read_text(encoding="gbk")
    assert text.startswith(f"H|{BANK}|20260314|1|4200\nD|D|20260314101501|000002|000000000009|C9|4200|S|")
